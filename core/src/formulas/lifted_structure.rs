//! Lifted structure losses (Oh Song et al., CVPR 2016; the generalized form
//! of Hermans et al. 2017), as PML 2.9's `LiftedStructureLoss` and
//! `GeneralizedLiftedStructureLoss`.

use super::rows::{Lse, logaddexp};
use super::tape::{self, Mat, TapeWeights, lse};
use super::{
    BatchFormula, ListSizes, Row, RowValue, Score, Weighting, finite, row_and_grad_by_parts,
};
use crate::device::MetricDevice;
use crate::distance::fork;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// Both margins of a lifted structure loss: finite, `0 ≤ pos_margin <
/// neg_margin`.
fn check_margins(what: &'static str, pos: f32, neg: f32) -> Result<(), MetricLossError> {
    finite(what, pos)?;
    finite(what, neg)?;
    if pos < 0.0 || neg <= pos {
        return Err(MetricLossError::InvalidConfig(format!(
            "{what}: need 0 <= pos_margin < neg_margin, got pos_margin {pos}, neg_margin {neg}"
        )));
    }
    Ok(())
}

/// Lifted structure: for each positive pair `(a, p)`, on Euclidean
/// distances `d` of L2-normalized embeddings,
///
/// `ℓ_ap = ½ [ ln Σ_{(k, n) ∈ N_a ∪ N_p} e^{m_n − d_kn} + d_ap − m_p ]+²`
///
/// — the negatives of **both** ends of the pair — and the loss the mean of
/// `ℓ` over the positive pairs (PML's `MeanReducer`). Pairs count as often
/// as they were mined.
///
/// PML's behaviour kept here, where it may surprise:
/// - the `½` (PML: "each positive pair will be counted twice") halves the
///   paper's value, since the mean also counts each pair twice;
/// - a positive pair neither of whose ends has a negative pair gets a
///   log-sum-exp of 0, not `−∞`: `ℓ = ½ [d_ap − m_p]+²`;
/// - a batch without a positive or without a negative pair gives 0, and so
///   does one whose lists hold at most one pair each;
/// - the embeddings are L2-normalized (PML's `LpDistance()` default), and
///   this form needs a square matrix (PML reads `p` as a row index too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiftedStructure {
    /// `m_n`, how far negatives are pushed (PML's `neg_margin`, default 1).
    pub neg_margin: f32,
    /// `m_p`, below which positives cost nothing (PML's `pos_margin`, default 0).
    pub pos_margin: f32,
}

impl BatchFormula for LiftedStructure {
    const NAME: &'static str = "LiftedStructureLoss";
    const SCORE: Score = Score::UnitEuclidean;
    const WEIGHTING: Weighting = Weighting::Count;
    const SHARED: bool = true;

    fn check(&self) -> Result<(), MetricLossError> {
        check_margins("lifted structure margins", self.pos_margin, self.neg_margin)
    }

    fn margins(&self) -> MiningMargins {
        MiningMargins {
            pos_margin: self.pos_margin,
            margin: self.neg_margin,
        }
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.pair_based_zero()
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        d: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (d, tape) = d.split_tape();
        let own = lse(
            d.clone()
                .put_tape(tape)
                .try_negate()?
                .try_add(self.neg_margin)?,
            &w.neg_log,
        )?;
        // ln(e^{Λ_a} + e^{Λ_p}) for every (a, p); 0 where neither end has a negative
        let (own, other) = fork(own)?;
        let both = tape::logaddexp(
            w.rows_of(own)?.try_contiguous()?,
            w.cols_of(other)?.try_contiguous()?,
        )?;
        let has_neg = w.has_neg.as_vec();
        let either: Vec<f32> = has_neg
            .iter()
            .flat_map(|&a| has_neg.iter().map(move |&p| a.max(p)))
            .collect();
        let either = d.device().try_tensor_from_vec(either, w.shape)?;
        let h = both
            .try_mul(either)?
            .try_add(d.retaped::<T>())?
            .try_sub(self.pos_margin)?
            .try_relu()?;
        let sum = tape::total(h.try_square()?.try_mul(0.5)?.try_mul(w.pos.clone())?)?;
        tape::ratio(sum, w.pos_per_row.iter().sum())
    }

    /// `Λ_i = ln Σ_n w_in e^{m_n − d_in}`, `−∞` without negatives.
    fn shared(&self, row: &Row) -> f32 {
        self.negatives(row)
            .map_or(f32::NEG_INFINITY, |l| l.value as f32)
    }

    fn row(&self, row: &Row, shared: &[f32]) -> RowValue {
        let mut value = 0.0f64;
        let mut count = 0.0f32;
        for (j, &p) in row.pos.iter().enumerate() {
            if p > 0.0 {
                let h = self.hinge(row, shared, j).0;
                value += f64::from(p) * 0.5 * h * h;
                count += p;
            }
        }
        RowValue {
            value: value as f32,
            count,
        }
    }

    fn row_backward(&self, row: &Row, shared: &[f32], g: f32, ds: &mut [f32], dshared: &mut [f32]) {
        let i = row.index;
        for (j, &p) in row.pos.iter().enumerate() {
            if p > 0.0 {
                let (h, both) = self.hinge(row, shared, j);
                let c = f64::from(g) * f64::from(p) * h;
                ds[j] += c as f32;
                if let Some(both) = both {
                    let share = |l: f32| (f64::from(l) - both).exp();
                    dshared[i] += (c * share(shared[i])) as f32;
                    dshared[j] += (c * share(shared[j])) as f32;
                }
            }
        }
    }

    fn shared_backward(&self, row: &Row, dshared: f32, ds: &mut [f32]) {
        if dshared == 0.0 {
            return;
        }
        if let Some(l) = self.negatives(row) {
            // x = m − d: ∂x/∂d = −1
            l.add_grads(row.s, row.neg, (-1.0, self.neg_margin), -dshared, ds);
        }
    }
}

impl LiftedStructure {
    fn negatives(&self, row: &Row) -> Option<Lse> {
        let m = self.neg_margin;
        Lse::of_affine(row.s, row.neg, (-1.0, m), false)
    }

    /// `[Λ_ap + d_ap − m_p]+` of the pair (row, `j`), and `Λ_ap` where it is
    /// a log-add-exp (`None` where neither end has a negative: PML's 0).
    fn hinge(&self, row: &Row, shared: &[f32], j: usize) -> (f64, Option<f64>) {
        let (a, b) = (f64::from(shared[row.index]), f64::from(shared[j]));
        let both = (a > f64::NEG_INFINITY || b > f64::NEG_INFINITY).then(|| logaddexp(a, b));
        let h = both.unwrap_or(0.0) + f64::from(row.s[j]) - f64::from(self.pos_margin);
        (h.max(0.0), both)
    }
}

/// Generalized lifted structure (Hermans et al. 2017, p. 4): per anchor row
/// `i`, on Euclidean distances `d` of L2-normalized embeddings,
///
/// `L_i = [ ln Σ_{p ∈ P_i} e^{d_ip − m_p} + ln Σ_{n ∈ N_i} e^{m_n − d_in} ]+`
///
/// and the loss the mean of `L_i` over **all** rows (PML's `MeanReducer`).
/// Pairs are masks.
///
/// PML's behaviour kept here, where it may surprise:
/// - a row without positive pairs (a class of one) still gives its
///   negative term, `[ln Σ_n e^{m_n − d_in}]+` (its positive log-sum-exp
///   is 0, not `−∞`), and likewise a row without negatives its positive
///   term; a single-class batch is therefore not 0;
/// - a batch whose lists hold at most one pair each gives 0;
/// - the embeddings are L2-normalized (PML's `LpDistance()` default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneralizedLiftedStructure {
    /// `m_n` (PML's `neg_margin`, default 1).
    pub neg_margin: f32,
    /// `m_p` (PML's `pos_margin`, default 0).
    pub pos_margin: f32,
}

impl BatchFormula for GeneralizedLiftedStructure {
    const NAME: &'static str = "GeneralizedLiftedStructureLoss";
    const SCORE: Score = Score::UnitEuclidean;
    const WEIGHTING: Weighting = Weighting::Mask;

    fn check(&self) -> Result<(), MetricLossError> {
        check_margins(
            "generalized lifted structure margins",
            self.pos_margin,
            self.neg_margin,
        )
    }

    fn margins(&self) -> MiningMargins {
        MiningMargins {
            pos_margin: self.pos_margin,
            margin: self.neg_margin,
        }
    }

    fn is_zero(&self, sizes: ListSizes) -> bool {
        sizes.generic_pair_zero()
    }

    fn try_tape<Dev: MetricDevice, T: Tape<f32, Dev>>(
        &self,
        d: Mat<Dev, T>,
        w: &TapeWeights<Dev>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (d, tape) = d.split_tape();
        let pos = lse(
            d.clone().put_tape(tape).try_sub(self.pos_margin)?,
            &w.pos_log,
        )?
        .try_mul(w.has_pos.clone())?;
        let neg = lse(
            d.retaped::<T>().try_negate()?.try_add(self.neg_margin)?,
            &w.neg_log,
        )?
        .try_mul(w.has_neg.clone())?;
        pos.try_add(neg)?
            .try_relu()?
            .try_sum()?
            .try_div(w.shape.0 as f32)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let (p, n) = self.terms(row);
        self.value(p, n)
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let (p, n) = self.terms(row);
        if p.map_or(0.0, |l| l.value) + n.map_or(0.0, |l| l.value) <= 0.0 {
            return;
        }
        // x_p = d − m_p, x_n = m_n − d
        if let Some(l) = p {
            l.add_grads(row.s, row.pos, (1.0, -self.pos_margin), g, ds);
        }
        if let Some(l) = n {
            l.add_grads(row.s, row.neg, (-1.0, self.neg_margin), -g, ds);
        }
    }

    /// Both log-sum-exps and their gradients in one sweep, one exponential
    /// per entry ([`Lse::split_with_grads`]; positive and negative pairs
    /// never share a column, else the two methods run). The value is
    /// [`row`](BatchFormula::row)'s bit for bit.
    fn row_with_grad(&self, row: &Row, g: f32, ds: &mut [f32]) -> RowValue {
        let affine = ((1.0, -self.pos_margin), (-1.0, self.neg_margin));
        let Some((p, n)) =
            Lse::split_with_grads(row.s, (row.pos, row.neg), affine, (g, -g), false, ds)
        else {
            return row_and_grad_by_parts(self, row, g, ds);
        };
        if p.map_or(0.0, |l| l.value) + n.map_or(0.0, |l| l.value) <= 0.0 {
            // the hinge is flat: no gradient (as `row_backward`)
            ds[..row.s.len()].fill(0.0);
        }
        self.value(p, n)
    }
}

impl GeneralizedLiftedStructure {
    /// A row's value from its two terms (an empty one is 0).
    fn value(&self, p: Option<Lse>, n: Option<Lse>) -> RowValue {
        RowValue {
            value: (p.map_or(0.0, |l| l.value) + n.map_or(0.0, |l| l.value)).max(0.0) as f32,
            count: 1.0,
        }
    }

    fn terms(&self, row: &Row) -> (Option<Lse>, Option<Lse>) {
        let (mp, mn) = (self.pos_margin, self.neg_margin);
        (
            Lse::of_affine(row.s, row.pos, (1.0, -mp), false),
            Lse::of_affine(row.s, row.neg, (-1.0, mn), false),
        )
    }
}
