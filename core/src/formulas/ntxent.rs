//! NT-Xent (SimCLR's normalized temperature-scaled cross entropy;
//! InfoNCE), as PML 2.9's `NTXentLoss`.

use super::rows::{Lse, logaddexp, sigmoid, softplus};
use super::tape::{self, Mat, TapeWeights, lse};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting, positive};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// `ln` of the smallest positive normal `f32` (PML's `small_val`).
pub(crate) const LN_TINY: f64 = -87.336_544_750_553_1;

/// NT-Xent: for each positive pair `(a, p)`, with `x = s / τ` on cosine
/// similarities,
///
/// `ℓ_ap = −ln(e^{x_ap} / (e^{x_ap} + Σ_{n ∈ N_a} e^{x_an}))`
///
/// and the loss the mean of `ℓ` over the positive pairs (PML's
/// `MeanReducer` on `pos_pair` losses). Pairs count as often as they were
/// mined. Computed as `softplus(lse_n(x_an) − x_ap)`: finite at any
/// temperature (no exponential of `x` is ever formed).
///
/// PML's behaviour kept here, where it may surprise:
/// - PML adds its `small_val` (the smallest normal `f32`, `≈ 1.2e-38`)
///   inside the log, `−ln(e^{−ℓ} + 1.2e-38)`: a pair whose true loss
///   exceeds about 87.3 is capped there, with a vanishing gradient. This
///   happens at low temperatures (0.01) for badly ranked pairs; the same cap
///   is applied here, computed stably (`−logaddexp(−ℓ, ln 1.2e-38)`);
/// - a batch without a positive or without a negative pair gives 0, and so
///   does one whose lists hold at most one pair each;
/// - a positive pair whose anchor has no negative pair costs 0;
/// - the embeddings are L2-normalized (PML's `CosineSimilarity()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NtXent {
    /// `τ` (PML's `temperature`, default 0.07); `> 0`.
    pub temperature: f32,
}

impl BatchFormula for NtXent {
    const NAME: &'static str = "NTXentLoss";
    const SCORE: Score = Score::Cosine;
    const WEIGHTING: Weighting = Weighting::Count;

    fn check(&self) -> Result<(), MetricLossError> {
        positive("NT-Xent temperature", self.temperature)
    }

    /// No margin: [`EVERY_PAIR`](super::EVERY_PAIR).
    fn margins(&self) -> MiningMargins {
        super::EVERY_PAIR
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.pair_based_zero()
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        s: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (x, tape) = s.try_div(self.temperature)?.split_tape();
        // ln Σ_n e^{x_an}: about −1e30 for an anchor without negatives
        let negatives = lse(x.clone().put_tape(tape), &w.neg_log)?;
        let l = tape::softplus(w.rows_of(negatives)?.try_sub(x.retaped::<T>())?)?;
        // PML's cap: −ln(e^{−ℓ} + tiny)
        let tiny = x
            .device()
            .try_ones_like(&w.shape)?
            .try_mul(LN_TINY as f32)?;
        let capped = tape::logaddexp(l.try_negate()?, tiny.retaped::<T>())?.try_negate()?;
        let sum = tape::total(capped.try_mul(w.pos.clone())?)?;
        tape::ratio(sum, w.pos_per_row.iter().sum())
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let t = f64::from(self.temperature);
        let neg = self.negatives(row);
        let mut value = 0.0f64;
        let mut count = 0.0f32;
        for (j, &p) in row.pos.iter().enumerate() {
            if p > 0.0 {
                let l = Self::pair(neg, f64::from(row.s[j]) / t);
                value += f64::from(p) * -logaddexp(-l, LN_TINY);
                count += p;
            }
        }
        RowValue {
            value: value as f32,
            count,
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let t = f64::from(self.temperature);
        let Some(neg) = self.negatives(row) else {
            return; // every pair of this row costs 0
        };
        let mut to_negatives = 0.0f64;
        for (j, &p) in row.pos.iter().enumerate() {
            if p > 0.0 {
                let x = f64::from(row.s[j]) / t;
                let l = Self::pair(Some(neg), x);
                let c =
                    f64::from(g) * f64::from(p) * sigmoid(-l - LN_TINY) * sigmoid(neg.value - x);
                ds[j] -= (c / t) as f32;
                to_negatives += c;
            }
        }
        // x = s / τ, the negatives' softmax weights
        let scale = (to_negatives / t) as f32;
        neg.add_grads(row.s, row.neg, (1.0 / self.temperature, 0.0), scale, ds);
    }
}

impl NtXent {
    /// `ln Σ_n e^{x_an}` of a row, `None` without negatives.
    fn negatives(&self, row: &Row) -> Option<Lse> {
        let t = self.temperature;
        Lse::of_affine(row.s, row.neg, (1.0 / t, 0.0), false)
    }

    /// `ℓ = softplus(lse_n − x)`, 0 without negatives.
    fn pair(neg: Option<Lse>, x: f64) -> f64 {
        neg.map_or(0.0, |n| softplus(n.value - x))
    }
}
