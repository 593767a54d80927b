//! Supervised contrastive loss (Khosla et al., NeurIPS 2020), as PML 2.9's
//! `SupConLoss`.

use super::rows::Lse;
use super::tape::{self, Mat, TapeWeights, lse};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting, positive};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// SupCon: per anchor row `i`, with `x = s / τ` on cosine similarities,
///
/// `L_i = −(1/|P_i|) Σ_{p ∈ P_i} (x_ip − ln Σ_{j ∈ P_i ∪ N_i} e^{x_ij})`
///
/// and the loss the mean of `L_i` over the rows where it is `> 0` (PML's
/// default `AvgNonZeroReducer`). Pairs are masks.
///
/// PML's behaviour kept here, where it may surprise:
/// - rows without a positive pair are left out of the mean (their `L_i` is
///   0), and so is a row whose only pair is one positive (`L_i = 0`);
/// - which rows count is decided on each row's value as the row form
///   computes it (in `f64`, from the `f32` similarities), on both paths: at
///   low temperatures a row whose positive dominates has a loss of about
///   `1e-9`, which counts, as in PML evaluated in `f64`; PML in `f32` rounds
///   some of those to 0 and leaves them out;
/// - a batch without a positive or without a negative pair gives 0 (a
///   single-class batch, say), and so does one whose lists hold at most one
///   pair each;
/// - the embeddings are L2-normalized (PML's `CosineSimilarity()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupCon {
    /// `τ` (PML's `temperature`, default 0.1); `> 0`.
    pub temperature: f32,
}

impl BatchFormula for SupCon {
    const NAME: &'static str = "SupConLoss";
    const SCORE: Score = Score::Cosine;
    const WEIGHTING: Weighting = Weighting::Mask;

    fn check(&self) -> Result<(), MetricLossError> {
        positive("SupCon temperature", self.temperature)
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
        let counts = tape::row_counts(self, &s, w);
        let (x, tape) = s.try_div(self.temperature)?.split_tape();
        let denominator = lse(x.clone().put_tape(tape), &w.any_log)?;
        // Σ_p (ln Σ − x_ip) / (|P_i| + tiny): rows without positives give 0
        let per_row = w
            .rows_of(denominator)?
            .try_sub(x.retaped::<T>())?
            .try_mul(w.pos.clone())?
            .try_sum::<(usize,), Axis<1>>()?;
        let sizes: Vec<f32> = w
            .pos_per_row
            .iter()
            .map(|&p| p + f32::MIN_POSITIVE)
            .collect();
        let per_row = per_row.try_div(x.device().try_tensor_from_vec(sizes, (w.shape.0,))?)?;
        tape::mean_counted(per_row, &counts)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let value = match self.denominator(row) {
            Some(d) => {
                let (sum, size) = self.positives(row);
                ((size * d.value - sum) / (size + f64::from(f32::MIN_POSITIVE))) as f32
            }
            None => 0.0,
        };
        RowValue {
            value,
            count: f32::from(u8::from(value > 0.0)),
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let Some(d) = self.denominator(row) else {
            return;
        };
        let (_, size) = self.positives(row);
        if size <= 0.0 {
            return;
        }
        let t = self.temperature;
        for (j, v) in ds.iter_mut().enumerate() {
            let any = f32::from(u8::from(row.pos[j] > 0.0 || row.neg[j] > 0.0));
            let dx = d.grad(row.s[j] / t, any) - f64::from(row.pos[j]) / size;
            *v += (f64::from(g) * dx / f64::from(t)) as f32;
        }
    }
}

impl SupCon {
    /// `ln Σ_{P ∪ N} e^{x}` of a row (each pair once), `None` for a row without pairs.
    fn denominator(&self, row: &Row) -> Option<Lse> {
        let t = self.temperature;
        let xs = row.s.iter().zip(row.pos.iter().zip(row.neg));
        Lse::of(
            xs.map(move |(&s, (&p, &q))| (s / t, f32::from(u8::from(p > 0.0 || q > 0.0)))),
            false,
        )
    }

    /// `(Σ_P x, |P|)` of a row, with `x = s / τ` rounded as the
    /// log-sum-exp reads it (so that a row whose positive dominates gives
    /// exactly `ln Σ − x = 0`, not a rounding error of either sign).
    fn positives(&self, row: &Row) -> (f64, f64) {
        let t = self.temperature;
        row.s
            .iter()
            .zip(row.pos)
            .fold((0.0, 0.0), |(sum, n), (&s, &p)| {
                (sum + f64::from(p) * f64::from(s / t), n + f64::from(p))
            })
    }
}
