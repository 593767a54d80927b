//! Margin loss (Wu et al., "Sampling Matters in Deep Embedding Learning",
//! ICCV 2017), as PML 2.9's `MarginLoss`.

use super::tape::{self, Mat, TapeWeights};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting, finite};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// Margin loss: for each triplet `(a, p, n)`, on Euclidean distances `d` of
/// L2-normalized embeddings,
///
/// `ℓ = [d_ap − β + α]+ + [β − d_an + α]+`
///
/// with `α` = `margin`, and the loss `Σ ℓ` divided by the number of nonzero
/// hinges (PML's `DivisorReducer`; 0 when none is). The triplets are the
/// miner's (e.g. [`DistanceWeightedMiner`](crate::miners::DistanceWeightedMiner)),
/// or, from pairs, every positive pair with every negative pair of the same
/// anchor (PML's `convert_to_triplets`; for all pairs, every triplet of the
/// batch). Written per anchor: the positive pair `(a, p)` weighs the number
/// of triplets that hold it.
///
/// PML's behaviour kept here, where it may surprise:
/// - `nu` (the paper's `ν`, a penalty `ν β` on the boundary) takes effect
///   only with a learnable `β` (PML's `learn_beta=True`, which this library
///   does not offer yet): with a fixed `β`, PML's regularization term is a
///   constant 0, and so it is here;
/// - a batch without a triplet gives 0 (a single-class batch, say);
/// - the embeddings are L2-normalized (PML's `LpDistance()` default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margin {
    /// `α`, the margin around the boundary (PML's `margin`, default 0.2); `≥ 0`.
    pub margin: f32,
    /// `ν`, the weight of the penalty on `β` (PML's `nu`, default 0); `≥ 0`.
    pub nu: f32,
    /// `β`, the boundary between positive and negative distances (PML's
    /// `beta`, default 1.2).
    pub beta: f32,
}

impl BatchFormula for Margin {
    const NAME: &'static str = "MarginLoss";
    const SCORE: Score = Score::UnitEuclidean;
    const WEIGHTING: Weighting = Weighting::Triplet;

    fn check(&self) -> Result<(), MetricLossError> {
        finite("margin loss beta", self.beta)?;
        for (what, v) in [
            ("margin loss margin", self.margin),
            ("margin loss nu", self.nu),
        ] {
            finite(what, v)?;
            if v < 0.0 {
                return Err(MetricLossError::InvalidConfig(format!(
                    "{what} must be >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }

    /// The pairs with a nonzero hinge: positives beyond `β − α`, negatives
    /// within `β + α`.
    fn margins(&self) -> MiningMargins {
        MiningMargins {
            pos_margin: (self.beta - self.margin).max(0.0),
            margin: (self.beta + self.margin).max(0.0),
        }
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.triplets == 0
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        d: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (sum, divisor) = margin_terms(d, w, self.margin, self.beta)?;
        tape::ratio(sum, divisor)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let (mut value, mut count) = (0.0f64, 0.0f32);
        for (j, (&p, &q)) in row.pos.iter().zip(row.neg).enumerate() {
            let (hp, hn) = self.hinges(row.s[j]);
            for (w, h) in [(p, hp), (q, hn)] {
                if w > 0.0 && h > 0.0 {
                    value += f64::from(w) * f64::from(h);
                    count += w;
                }
            }
        }
        RowValue {
            value: value as f32,
            count,
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        for (j, d) in ds.iter_mut().enumerate() {
            let (hp, hn) = self.hinges(row.s[j]);
            if hp > 0.0 {
                *d += g * row.pos[j];
            }
            if hn > 0.0 {
                *d -= g * row.neg[j];
            }
        }
    }
}

impl Margin {
    /// `([d − β + α]+, [β − d + α]+)`.
    fn hinges(&self, d: f32) -> (f32, f32) {
        (
            (d - self.beta + self.margin).max(0.0),
            (self.beta - d + self.margin).max(0.0),
        )
    }
}

/// `Σ w⁺ [d − β + α]+ + w⁻ [β − d + α]+` on the tape, and the number of
/// nonzero hinges (weighted): the margin loss's sum and PML's divisor.
fn margin_terms<Dev: MetricDevice, T: Tape<f32, Dev>>(
    d: Mat<Dev, T>,
    w: &TapeWeights<Dev>,
    margin: f32,
    beta: f32,
) -> Result<(Tensor<(), f32, Dev, T>, f32), Dev::Err> {
    let (d, tape) = d.split_tape();
    let pos = d
        .clone()
        .put_tape(tape)
        .try_sub(beta - margin)?
        .try_relu()?;
    let neg = d
        .retaped::<T>()
        .try_negate()?
        .try_add(beta + margin)?
        .try_relu()?;
    let active = |h: &Mat<Dev, T>, wt: &Mat<Dev>| -> f32 {
        h.as_vec()
            .iter()
            .zip(wt.as_vec())
            .map(|(&h, w)| if h > 0.0 { w } else { 0.0 })
            .sum()
    };
    let divisor = active(&pos, &w.pos) + active(&neg, &w.neg);
    let sum = tape::total(pos.try_mul(w.pos.clone())?)?
        .try_add(tape::total(neg.try_mul(w.neg.clone())?)?)?;
    Ok((sum, divisor))
}
