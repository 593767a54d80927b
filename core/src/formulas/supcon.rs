//! Supervised contrastive loss (Khosla et al., NeurIPS 2020), as PML 2.9's
//! `SupConLoss`.

use super::rows::Lse;
use super::tape::{self, Mat, TapeWeights, lse};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting, positive};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;
use std::cell::RefCell;

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
        let value = match with_any(row, |any| self.denominator(row, any)) {
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
        with_any(row, |any| {
            let Some(d) = self.denominator(row, any) else {
                return;
            };
            let (_, size) = self.positives(row);
            if size <= 0.0 {
                return;
            }
            // ∂L/∂x_j = any_j·softmax_j − pos_j/|P|, and ∂x/∂s = 1/τ
            let inv = 1.0 / self.temperature;
            d.add_grads(row.s, any, (inv, 0.0), g * inv, ds);
            let c = (f64::from(g) * f64::from(inv) / size) as f32;
            for (v, &p) in ds.iter_mut().zip(row.pos) {
                if p > 0.0 {
                    *v -= c * p;
                }
            }
        })
    }
}

thread_local! {
    /// One row's `[j ∈ P ∪ N]`, reused (no allocation per row).
    static ANY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f([j ∈ P ∪ N] for each column j)` of a row: the weights of SupCon's
/// denominator (each pair once).
fn with_any<R>(row: &Row, f: impl FnOnce(&[f32]) -> R) -> R {
    ANY.with_borrow_mut(|any| {
        any.clear();
        any.extend(
            row.pos
                .iter()
                .zip(row.neg)
                .map(|(&p, &q)| f32::from(u8::from(p > 0.0 || q > 0.0))),
        );
        f(any)
    })
}

impl SupCon {
    /// `ln Σ_{P ∪ N} e^{x}` of a row (`any`: [`with_any`]'s weights), with
    /// `x = s·(1/τ)`, eight entries at a time; `None` for a row without
    /// pairs.
    fn denominator(&self, row: &Row, any: &[f32]) -> Option<Lse> {
        Lse::of_affine(row.s, any, (1.0 / self.temperature, 0.0), false)
    }

    /// `(Σ_P x, |P|)` of a row, with `x = s·(1/τ)` rounded as the
    /// log-sum-exp reads it (so that a row whose positive dominates gives
    /// exactly `ln Σ − x = 0`, not a rounding error of either sign).
    fn positives(&self, row: &Row) -> (f64, f64) {
        let inv = 1.0 / self.temperature;
        row.s
            .iter()
            .zip(row.pos)
            .fold((0.0, 0.0), |(sum, n), (&s, &p)| {
                (sum + f64::from(p) * f64::from(inv * s), n + f64::from(p))
            })
    }
}
