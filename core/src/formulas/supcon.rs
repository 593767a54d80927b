//! Supervised contrastive loss (Khosla et al., NeurIPS 2020), as PML 2.9's
//! `SupConLoss`.

use super::exp_sum::{positive_sums, scale_minus, split_exp_sums, split_max};
use super::rows::Lse;
use super::tape::{self, Mat, TapeWeights, lse};
use super::{
    BatchFormula, ListSizes, Row, RowValue, Score, Weighting, positive, row_and_grad_by_parts,
};
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
        let lse = SPLIT.with_borrow_mut(|out| {
            out.resize(row.s.len(), 0.0);
            self.log_denominator(row, out)
        });
        self.value(lse, self.positives(row))
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let Some(d) = SPLIT.with_borrow_mut(|out| {
            out.resize(row.s.len(), 0.0);
            self.log_denominator(row, out)
        }) else {
            return;
        };
        let (_, size) = self.positives(row);
        if size <= 0.0 {
            return;
        }
        with_any(row, |any| {
            // ∂L/∂x_j = any_j·softmax_j − pos_j/|P|, and ∂x/∂s = 1/τ
            let inv = 1.0 / self.temperature;
            Lse { value: d }.add_grads(row.s, any, (inv, 0.0), g * inv, ds);
            let c = (f64::from(g) * f64::from(inv) / size) as f32;
            for (v, &p) in ds.iter_mut().zip(row.pos) {
                if p > 0.0 {
                    *v -= c * p;
                }
            }
        })
    }

    /// The denominator's terms and the gradient in one sweep, one
    /// exponential per entry: `ds_j = g/τ · (e^{x_j − max}/Σ − pos_j/|P|)`
    /// from the terms [`split`](Self::split) leaves in `ds`. The value is
    /// [`row`](BatchFormula::row)'s bit for bit.
    fn row_with_grad(&self, row: &Row, g: f32, ds: &mut [f32]) -> RowValue {
        let c = row.s.len();
        let Some(split) = self.split(row, &mut ds[..c]) else {
            return row_and_grad_by_parts(self, row, g, ds);
        };
        let (sum, size) = self.positives(row);
        let v = self.value(
            split.map(|(m, total)| f64::from(m) + total.ln()),
            (sum, size),
        );
        match split {
            Some((_, total)) if v.count > 0.0 => {
                let gi = f64::from(g) * f64::from(1.0 / self.temperature);
                let (k, kp) = ((gi / total) as f32, (gi / size) as f32);
                scale_minus(&mut ds[..c], row.pos, k, kp);
            }
            _ => ds[..c].fill(0.0),
        }
        v
    }
}

thread_local! {
    /// One row's terms of the denominator, reused (no allocation per row).
    static SPLIT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    /// A row's value and count from `ln Σ_{P ∪ N} e^x` (`None`: no pairs).
    /// `(sum, size)`: [`positives`](Self::positives).
    fn value(&self, lse: Option<f64>, (sum, size): (f64, f64)) -> RowValue {
        let value = match lse {
            Some(d) => ((size * d - sum) / (size + f64::from(f32::MIN_POSITIVE))) as f32,
            None => 0.0,
        };
        RowValue {
            value,
            count: f32::from(u8::from(value > 0.0)),
        }
    }

    /// `ln Σ_{P ∪ N} e^{x}` of a row, `x = s·(1/τ)`, `None` for a row
    /// without pairs: from [`split`](Self::split) (`out` its scratch), or
    /// where a column is in both masks over `P ∪ N` at once.
    fn log_denominator(&self, row: &Row, out: &mut [f32]) -> Option<f64> {
        match self.split(row, out) {
            Some(split) => split.map(|(m, total)| f64::from(m) + total.ln()),
            None => with_any(row, |any| {
                Lse::of_affine(row.s, any, (1.0 / self.temperature, 0.0), false).map(|l| l.value)
            }),
        }
    }

    /// The denominator's shift `max_{P ∪ N} x` and `Σ_{P ∪ N} e^{x − max}`
    /// (the positives' terms and the negatives' summed apart, eight entries
    /// at a time, then added), each term `e^{x_j − max}` left in `out` (0
    /// outside `P ∪ N`); `Some(None)` for a row without pairs, `None` when
    /// a column is in both masks.
    fn split(&self, row: &Row, out: &mut [f32]) -> Option<Option<(f32, f64)>> {
        let a = (1.0 / self.temperature, 0.0);
        let max = match split_max(row.s, (row.pos, row.neg), a, a) {
            (Some(p), Some(n)) => p.max(n),
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => {
                // no pair; a column in both masks is still refused
                let both = row
                    .pos
                    .iter()
                    .zip(row.neg)
                    .any(|(&p, &q)| p > 0.0 && q > 0.0);
                return (!both).then_some(None);
            }
        };
        let x = (a.0, a.1, max);
        let (sp, sn) = split_exp_sums(row.s, (row.pos, row.neg), x, x, out)?;
        Some(Some((max, sp + sn)))
    }

    /// `(Σ_P x, |P|)` of a row, with `x = s·(1/τ)` rounded as the
    /// log-sum-exp reads it (so that a row whose positive dominates gives
    /// exactly `ln Σ − x = 0`, not a rounding error of either sign), in
    /// column order ([`positive_sums`]).
    fn positives(&self, row: &Row) -> (f64, f64) {
        positive_sums(row.s, row.pos, 1.0 / self.temperature)
    }
}
