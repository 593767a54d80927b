//! Circle loss (Sun et al., CVPR 2020), pair form, as PML 2.9's `CircleLoss`.

use super::rows::{Lse, sigmoid, softplus};
use super::tape::{self, Mat, TapeWeights, lse};
use super::{BatchFormula, ListSizes, Row, RowValue, Score, Weighting, finite, positive};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;

/// Circle loss: per anchor row `i`, on cosine similarities `s`, with
/// `Δp = 1 − m`, `Δn = m` and the weights `αp = [1 + m − s]+`,
/// `αn = [s + m]+` held constant (PML detaches them),
///
/// `L_i = softplus( ln Σ_{p ∈ P_i} e^{−γ αp (s_ip − Δp)} + ln Σ_{n ∈ N_i} e^{γ αn (s_in − Δn)} )`
///
/// and the loss the mean of `L_i` over the rows where it is `> 0` (PML's
/// `AvgNonZeroReducer`). Rows without a positive or without a negative
/// pair give 0. Pairs are masks. Both sums are log-sum-exps: finite at
/// `γ = 256`.
///
/// PML's behaviour kept here, where it may surprise: the loss is defined on
/// cosine similarity only (PML asserts it); a batch whose lists hold at most
/// one pair each gives 0. PML's softplus returns its input above 20 (a
/// difference below `2e-9`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    /// `m`, the relaxation (PML's `m`, default 0.4); `0 ≤ m < 0.5`, so that
    /// the negatives' optimum `m` stays below the positives' `1 − m`.
    pub m: f32,
    /// `γ`, the scale (PML's `gamma`, default 80); `> 0`.
    pub gamma: f32,
}

impl BatchFormula for Circle {
    const NAME: &'static str = "CircleLoss";
    const SCORE: Score = Score::Cosine;
    const WEIGHTING: Weighting = Weighting::Mask;

    fn check(&self) -> Result<(), MetricLossError> {
        positive("circle gamma", self.gamma)?;
        finite("circle m", self.m)?;
        if !(0.0..0.5).contains(&self.m) {
            return Err(MetricLossError::InvalidConfig(format!(
                "circle m must be in [0, 0.5), got {}: at 0.5 or more the negatives' optimum m \
                 is not below the positives' 1 − m",
                self.m
            )));
        }
        Ok(())
    }

    /// Pairs short of their optimum: positives below `1 − m` (cosine
    /// distance above `m`), negatives above `m` (distance below `1 − m`).
    fn margins(&self) -> MiningMargins {
        MiningMargins {
            pos_margin: self.m,
            margin: 1.0 - self.m,
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
        let (m, g) = (self.m, self.gamma);
        let counts = tape::row_counts(self, &s, w);
        let (s, tape) = s.split_tape();
        // the weights, detached
        let ap = s.clone().try_negate()?.try_add(1.0 + m)?.try_relu()?;
        let an = s.clone().try_add(m)?.try_relu()?;
        let zp = s
            .clone()
            .put_tape(tape)
            .try_sub(1.0 - m)?
            .try_mul(ap)?
            .try_mul(-g)?;
        let zn = s.retaped::<T>().try_sub(m)?.try_mul(an)?.try_mul(g)?;
        let both = w.has_pos.clone().try_mul(w.has_neg.clone())?;
        let rows =
            tape::softplus(lse(zp, &w.pos_log)?.try_add(lse(zn, &w.neg_log)?)?)?.try_mul(both)?;
        tape::mean_counted(rows, &counts)
    }

    fn row(&self, row: &Row, _: &[f32]) -> RowValue {
        let value = match self.terms(row) {
            Some((p, n)) => softplus(p.value + n.value) as f32,
            None => 0.0,
        };
        RowValue {
            value,
            count: f32::from(u8::from(value > 0.0)),
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        let Some((p, n)) = self.terms(row) else {
            return;
        };
        let outer = f64::from(g) * sigmoid(p.value + n.value);
        for (j, d) in ds.iter_mut().enumerate() {
            let s = row.s[j];
            let (zp, kp) = self.pos_z(s);
            let (zn, kn) = self.neg_z(s);
            let dz =
                p.grad(zp, row.pos[j]) * f64::from(kp) + n.grad(zn, row.neg[j]) * f64::from(kn);
            *d += (outer * dz) as f32;
        }
    }
}

impl Circle {
    /// A positive pair's logit and its (detached-weight) slope in `s`.
    fn pos_z(&self, s: f32) -> (f32, f32) {
        let k = -self.gamma * (1.0 + self.m - s).max(0.0);
        (k * (s - (1.0 - self.m)), k)
    }

    /// A negative pair's logit and its slope in `s`.
    fn neg_z(&self, s: f32) -> (f32, f32) {
        let k = self.gamma * (s + self.m).max(0.0);
        (k * (s - self.m), k)
    }

    /// Both log-sum-exps of a row, `None` unless it has both kinds of pairs.
    fn terms(&self, row: &Row) -> Option<(Lse, Lse)> {
        let p = Lse::of(
            row.s
                .iter()
                .zip(row.pos)
                .map(|(&s, &w)| (self.pos_z(s).0, w)),
            false,
        )?;
        let n = Lse::of(
            row.s
                .iter()
                .zip(row.neg)
                .map(|(&s, &w)| (self.neg_z(s).0, w)),
            false,
        )?;
        Some((p, n))
    }
}
