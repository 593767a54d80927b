//! Circle loss (Sun et al., CVPR 2020), pair form, as PML 2.9's `CircleLoss`.

use super::exp_sum::{split_exp_sums, split_max};
use super::rows::{Lse, sigmoid, softplus};
use super::tape::{self, Mat, TapeWeights, lse};
use super::{
    BatchFormula, ListSizes, Row, RowValue, Score, Weighting, finite, positive,
    row_and_grad_by_parts,
};
use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::MiningMargins;
use dfdx::prelude::*;
use std::cell::RefCell;

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
        let value = LOGITS.with_borrow_mut(|z| match self.terms(row, z) {
            Some((p, n)) => softplus(p.value + n.value) as f32,
            None => 0.0,
        });
        RowValue {
            value,
            count: f32::from(u8::from(value > 0.0)),
        }
    }

    fn row_backward(&self, row: &Row, _: &[f32], g: f32, ds: &mut [f32], _: &mut [f32]) {
        LOGITS.with_borrow_mut(|z| {
            let Some((p, n)) = self.terms(row, z) else {
                return;
            };
            let outer = (f64::from(g) * sigmoid(p.value + n.value)) as f32;
            // ∂z/∂s = k (the weights detached): each softmax weight times its
            // slope, as a weight |k|·w ≥ 0 (kp ≤ 0 ≤ kn) and the sign in the scale
            for (((wp, wn), &s), (&p, &q)) in
                z.wp.iter_mut()
                    .zip(z.wn.iter_mut())
                    .zip(row.s)
                    .zip(row.pos.iter().zip(row.neg))
            {
                *wp = -self.pos_z(s).1 * p;
                *wn = self.neg_z(s).1 * q;
            }
            p.add_grads(&z.zp, &z.wp, (1.0, 0.0), -outer, ds);
            n.add_grads(&z.zn, &z.wn, (1.0, 0.0), outer, ds);
        })
    }

    /// Both log-sum-exps and their gradients in one sweep, one exponential
    /// per entry: each entry's logit and slope (`zp`, `wp`: the positives'
    /// where it is one, else the negatives'), the two sums' terms in `ds`
    /// ([`split_exp_sums`]), then `ds_j = outer · k_j · term_j / Σ`. The
    /// value is [`row`](BatchFormula::row)'s bit for bit; positive and
    /// negative pairs never share a column, else the two methods run.
    fn row_with_grad(&self, row: &Row, g: f32, ds: &mut [f32]) -> RowValue {
        let c = row.s.len();
        let done = LOGITS.with_borrow_mut(|z| {
            for v in [&mut z.zp, &mut z.wp] {
                v.resize(c, 0.0);
            }
            for (((zj, kj), &s), &p) in z.zp.iter_mut().zip(z.wp.iter_mut()).zip(row.s).zip(row.pos)
            {
                let ((zp, kp), (zn, kn)) = (self.pos_z(s), self.neg_z(s));
                (*zj, *kj) = if p > 0.0 { (zp, kp) } else { (zn, kn) };
            }
            let one = (1.0, 0.0);
            let (Some(mp), Some(mn)) = split_max(&z.zp, (row.pos, row.neg), one, one) else {
                // no positive or no negative pair: a row of 0 (if the masks are disjoint)
                let both = row
                    .pos
                    .iter()
                    .zip(row.neg)
                    .any(|(&p, &q)| p > 0.0 && q > 0.0);
                ds[..c].fill(0.0);
                return (!both).then_some(RowValue::default());
            };
            let (sp, sn) = split_exp_sums(
                &z.zp,
                (row.pos, row.neg),
                (1.0, 0.0, mp),
                (1.0, 0.0, mn),
                ds,
            )?;
            let (lp, ln) = (f64::from(mp) + sp.ln(), f64::from(mn) + sn.ln());
            let value = softplus(lp + ln) as f32;
            if value > 0.0 {
                let outer = f64::from(g) * sigmoid(lp + ln);
                let (fp, fn_) = ((outer / sp) as f32, (outer / sn) as f32);
                for ((d, &k), &p) in ds[..c].iter_mut().zip(&z.wp).zip(row.pos) {
                    *d *= k * if p > 0.0 { fp } else { fn_ };
                }
            } else {
                ds[..c].fill(0.0);
            }
            Some(RowValue {
                value,
                count: f32::from(u8::from(value > 0.0)),
            })
        });
        match done {
            Some(v) => v,
            None => row_and_grad_by_parts(self, row, g, ds),
        }
    }
}

/// One row's logits and gradient weights, reused (no allocation per row).
#[derive(Default)]
struct Logits {
    zp: Vec<f32>,
    zn: Vec<f32>,
    wp: Vec<f32>,
    wn: Vec<f32>,
}

thread_local! {
    static LOGITS: RefCell<Logits> = RefCell::new(Logits::default());
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

    /// Both log-sum-exps of a row, `None` unless it has both kinds of
    /// pairs: the logits of every entry into `z` (`zp`, `zn`; `wp`, `wn`
    /// sized), then their sums eight entries at a time.
    fn terms(&self, row: &Row, z: &mut Logits) -> Option<(Lse, Lse)> {
        let c = row.s.len();
        for v in [&mut z.zp, &mut z.zn, &mut z.wp, &mut z.wn] {
            v.resize(c, 0.0);
        }
        for ((zp, zn), &s) in z.zp.iter_mut().zip(z.zn.iter_mut()).zip(row.s) {
            *zp = self.pos_z(s).0;
            *zn = self.neg_z(s).0;
        }
        let p = Lse::of_affine(&z.zp, row.pos, (1.0, 0.0), false)?;
        let n = Lse::of_affine(&z.zn, row.neg, (1.0, 0.0), false)?;
        Some((p, n))
    }
}
