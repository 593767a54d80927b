//! Multi-similarity loss (Wang et al., CVPR 2019), as PML 2.9's
//! `MultiSimilarityLoss`.

use super::rows::Lse;
use super::tape::{Mat, TapeWeights, lse, softplus};
use super::{
    BatchFormula, ListSizes, Row, RowValue, Score, Weighting, finite, positive,
    row_and_grad_by_parts,
};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// Multi-similarity: per anchor row `i`, on cosine similarities `s`,
///
/// `L_i = (1/α) ln(1 + Σ_{p ∈ P_i} e^{−α (s_ip − λ)}) + (1/β) ln(1 + Σ_{n ∈ N_i} e^{β (s_in − λ)})`
///
/// with `λ` = `base`, and the loss the mean of `L_i` over **all** rows
/// (PML's `MeanReducer`; a row without positive or negative pairs adds 0
/// to the sum but still counts in the mean). Pairs are masks: a pair mined
/// twice counts once.
///
/// PML's behaviour kept here, where it may surprise:
/// - a single-class batch (no negative pair) still gives the positive
///   term, which pulls the class together;
/// - a batch whose mined lists hold at most one positive and one negative
///   pair gives exactly 0 (PML's `GenericPairLoss` rule);
/// - the embeddings are L2-normalized (PML's `CosineSimilarity()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiSimilarity {
    /// `α`, the weight of positive pairs (PML's `alpha`, default 2); `> 0`.
    pub alpha: f32,
    /// `β`, the weight of negative pairs (PML's `beta`, default 50); `> 0`.
    pub beta: f32,
    /// `λ`, the similarity both terms are measured from (PML's `base`, default 0.5).
    pub base: f32,
}

impl BatchFormula for MultiSimilarity {
    const NAME: &'static str = "MultiSimilarityLoss";
    const SCORE: Score = Score::Cosine;
    const WEIGHTING: Weighting = Weighting::Mask;

    fn check(&self) -> Result<(), MetricLossError> {
        positive("multi-similarity alpha", self.alpha)?;
        positive("multi-similarity beta", self.beta)?;
        finite("multi-similarity base", self.base)
    }

    /// Pairs on the wrong side of `λ`: positives with `s < λ`, negatives with
    /// `s > λ`, i.e. cosine distances `1 − s` beyond `1 − λ` either way.
    fn margins(&self) -> MiningMargins {
        let m = (1.0 - self.base).clamp(0.0, 2.0);
        MiningMargins {
            pos_margin: m,
            margin: m,
        }
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.generic_pair_zero()
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        s: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (a, b, l) = (self.alpha, self.beta, self.base);
        let (s, tape) = s.split_tape();
        // ln(1 + Σ e^x) = softplus(lse(x)); a row without pairs gives softplus(−∞) = 0
        let pos = lse(
            s.clone().put_tape(tape).try_mul(-a)?.try_add(a * l)?,
            &w.pos_log,
        )?;
        let neg = lse(s.retaped::<T>().try_mul(b)?.try_add(-b * l)?, &w.neg_log)?;
        let rows = softplus(pos)?
            .try_div(a)?
            .try_add(softplus(neg)?.try_div(b)?)?;
        rows.try_sum()?.try_div(w.shape.0 as f32)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let (p, n) = self.terms(row);
        self.value(p, n)
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let (p, n) = self.terms(row);
        let (a, b, l) = (self.alpha, self.beta, self.base);
        // ∂/∂s of the positive term's x = α(λ − s) is −α, divided by α; the negative's +β / β
        p.add_grads(row.s, row.pos, (-a, a * l), -g, ds);
        n.add_grads(row.s, row.neg, (b, -b * l), g, ds);
    }

    /// Both log-sum-exps and their gradients in one sweep
    /// ([`Lse::pair_with_grads`]; positive and negative pairs never share a
    /// column, else the two methods run).
    fn row_with_grad(&self, row: &Row, g: f32, ds: &mut [f32]) -> RowValue {
        let (a, b, l) = (self.alpha, self.beta, self.base);
        let affine = ((-a, a * l), (b, -b * l));
        match Lse::pair_with_grads(row.s, (row.pos, row.neg), affine, (-g, g), ds) {
            Some((p, n)) => self.value(p, n),
            None => row_and_grad_by_parts(self, row, g, ds),
        }
    }
}

impl MultiSimilarity {
    /// A row's value from its two terms.
    fn value(&self, p: Lse, n: Lse) -> RowValue {
        RowValue {
            value: (p.value / f64::from(self.alpha) + n.value / f64::from(self.beta)) as f32,
            count: 1.0,
        }
    }

    /// `ln(1 + Σ_P e^{α(λ − s)})` and `ln(1 + Σ_N e^{β(s − λ)})` of a row.
    fn terms(&self, row: &Row) -> (Lse, Lse) {
        let (a, b, l) = (self.alpha, self.beta, self.base);
        let one = "ln(1 + Σ) always has its 1";
        (
            Lse::of_affine(row.s, row.pos, (-a, a * l), true).expect(one),
            Lse::of_affine(row.s, row.neg, (b, -b * l), true).expect(one),
        )
    }
}
