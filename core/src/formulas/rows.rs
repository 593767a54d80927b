//! The row form of the family's formulas: one anchor row at a time, forward
//! and backward, in plain `f32` (sums in `f64`), and the driver that runs a
//! formula over every row of a view of the batch's matrix.

use super::exp_sum::weighted_exp_sum;
use super::{BatchFormula, PairWeights};
use std::cell::RefCell;

/// One anchor row as a formula reads it: its index in the view, its scores
/// against every column, and the weight of each column as a positive and as
/// a negative pair (0 where it is neither).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The row's index in the view (a batch row, for a full view).
    pub index: usize,
    /// `s[j]`: the score of the pair (row, column `j`).
    pub s: &'a [f32],
    /// Positive weight of each column.
    pub pos: &'a [f32],
    /// Negative weight of each column.
    pub neg: &'a [f32],
}

/// What one row adds to the loss `Σ value / Σ count`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowValue {
    /// The row's loss (a sum over its pairs, or its one term).
    pub value: f32,
    /// What the row adds to the divisor: 1 per row (PML's mean over rows),
    /// `[value > 0]` (PML's `AvgNonZeroReducer`), its positive pairs (a mean
    /// over pairs), or its active terms (PML's `DivisorReducer`).
    pub count: f32,
}

/// A weighted log-sum-exp, `ln Σ_j w_j e^{x_j}` over the entries with
/// `w_j > 0`, with what its gradient needs; `None` when there is none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lse {
    /// The value.
    pub value: f64,
}

thread_local! {
    /// The entries of a log-sum-exp with a positive weight, `(x, w)`: one
    /// row's worth per thread, reused (no allocation per row).
    static TERMS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl Lse {
    /// `ln Σ w e^x` over `w > 0`; with `one`, a `+1` inside the log
    /// (`ln(1 + Σ)`: PML's `add_one`), which is never empty. The entries
    /// with `w > 0` are gathered, then their shifted exponentials summed
    /// eight at a time ([`weighted_exp_sum`]).
    pub fn of(xs: impl Iterator<Item = (f32, f32)> + Clone, one: bool) -> Option<Lse> {
        TERMS.with_borrow_mut(|(x, w)| {
            x.clear();
            w.clear();
            let mut max = if one { 0.0f32 } else { f32::NEG_INFINITY };
            for (v, q) in xs {
                if q > 0.0 {
                    max = max.max(v);
                    x.push(v);
                    w.push(q);
                }
            }
            if x.is_empty() && !one {
                return None;
            }
            let mut sum = if one { exp(-f64::from(max)) } else { 0.0 };
            sum += weighted_exp_sum(x, w, max);
            Some(Lse {
                value: f64::from(max) + sum.ln(),
            })
        })
    }

    /// [`of`](Self::of) where `x_j = a·s_j + c` of a row's scores `s`:
    /// read in place, eight entries at a time
    /// ([`affine_max`](super::exp_sum::affine_max),
    /// [`affine_exp_sum`](super::exp_sum::affine_exp_sum)).
    pub fn of_affine(s: &[f32], w: &[f32], (a, c): (f32, f32), one: bool) -> Option<Lse> {
        use super::exp_sum::{affine_exp_sum, affine_max};
        let max = match (affine_max(s, w, (a, c)), one) {
            (Some(m), true) => m.max(0.0),
            (Some(m), false) => m,
            (None, true) => 0.0,
            (None, false) => return None,
        };
        let mut sum = if one { exp(-f64::from(max)) } else { 0.0 };
        sum += affine_exp_sum(s, w, (a, c), max);
        Some(Lse {
            value: f64::from(max) + sum.ln(),
        })
    }

    /// The two `ln(1 + Σ)` log-sum-exps of one row over disjoint masks —
    /// [`of_affine`](Self::of_affine)`(s, wp, p, true)` and `(s, wn, n,
    /// true)`, the same values bit for bit — with their gradient in the same
    /// sweep: `ds_j` set to `scale_p · ∂p/∂xp_j + scale_n · ∂n/∂xn_j` (what
    /// [`add_grads`](Self::add_grads) of each would add to zeros, up to
    /// rounding). One exponential per entry instead of the five of the two
    /// values, their recomputation and the two gradients: the terms of the
    /// sums are kept in `ds`, then scaled by each softmax's `1/Σ`.
    ///
    /// `None` (and `ds` unspecified) when a column is in both masks.
    pub fn pair_with_grads(
        s: &[f32],
        w: (&[f32], &[f32]),
        affine: ((f32, f32), (f32, f32)),
        scales: (f32, f32),
        ds: &mut [f32],
    ) -> Option<(Lse, Lse)> {
        let one = "ln(1 + Σ) always has its 1";
        Self::split_with_grads(s, w, affine, scales, true, ds)
            .map(|(p, n)| (p.expect(one), n.expect(one)))
    }

    /// [`pair_with_grads`](Self::pair_with_grads) with or without the `+1`
    /// inside each log (`one`): without it, a mask with no entry gives
    /// `None` for its log-sum-exp (as [`of_affine`](Self::of_affine) does)
    /// and 0 for its entries' gradients. The values are
    /// [`of_affine`](Self::of_affine)'s bit for bit.
    ///
    /// `None` (and `ds` unspecified) when a column is in both masks.
    pub fn split_with_grads(
        s: &[f32],
        (wp, wn): (&[f32], &[f32]),
        (p, n): ((f32, f32), (f32, f32)),
        (scale_p, scale_n): (f32, f32),
        one: bool,
        ds: &mut [f32],
    ) -> Option<(Option<Lse>, Option<Lse>)> {
        use super::exp_sum::{scale_split, split_exp_sums, split_max};
        // as `of_affine`: with `one` the shift is at least 0 (the 1's exponent)
        let shift = |m: Option<f32>| match (m, one) {
            (Some(m), true) => Some(m.max(0.0)),
            (None, true) => Some(0.0),
            (m, false) => m,
        };
        let (mp, mn) = split_max(s, (wp, wn), p, n);
        let (mp, mn) = (shift(mp), shift(mn));
        let (sp, sn) = split_exp_sums(
            s,
            (wp, wn),
            (p.0, p.1, mp.unwrap_or(0.0)),
            (n.0, n.1, mn.unwrap_or(0.0)),
            ds,
        )?;
        let the_one = |m: f32| if one { exp(-f64::from(m)) } else { 0.0 };
        let lse = |m: Option<f32>, sum: f64| {
            m.map(|m| {
                let sum = the_one(m) + sum;
                (m, sum)
            })
        };
        let (lp, ln) = (lse(mp, sp), lse(mn, sn));
        // ∂(max + ln Σ)/∂x_j = term_j / Σ (an empty mask has no term to scale)
        let factor = |l: Option<(f32, f64)>, scale: f32| {
            l.map_or(0.0, |(_, sum)| (f64::from(scale) / sum) as f32)
        };
        let factors = (factor(lp, scale_p), factor(ln, scale_n));
        scale_split(&mut ds[..s.len()], wp, factors);
        let value = |l: Option<(f32, f64)>| {
            l.map(|(m, sum)| Lse {
                value: f64::from(m) + sum.ln(),
            })
        };
        Some((value(lp), value(ln)))
    }

    /// `out_j += scale · ∂value/∂x_j` for every entry of a row at once,
    /// where `x_j = a·s_j + c` and `w` are the weights the value was taken
    /// over: the softmax weights eight at a time
    /// ([`add_weighted_exp`](super::exp_sum::add_weighted_exp)), in `f32`.
    pub fn add_grads(&self, s: &[f32], w: &[f32], (a, c): (f32, f32), scale: f32, out: &mut [f32]) {
        let shift = (f64::from(c) - self.value) as f32;
        super::exp_sum::add_weighted_exp(s, w, (a, shift), scale, out)
    }

    /// `∂value/∂x_j` for an entry of weight `w`: its softmax weight.
    pub fn grad(&self, x: f32, w: f32) -> f64 {
        if w > 0.0 {
            f64::from(w) * exp(f64::from(x) - self.value)
        } else {
            0.0
        }
    }
}

/// `eˣ` for the arguments of a shifted log-sum-exp (`x ≤ 0` mostly): in
/// `f32` (Cody–Waite reduction and Cephes' `expf` polynomial; 0 below
/// `−87`), returned as `f64` for the sums. Its relative error is below
/// `2⁻²² + |x|·2⁻²⁴`: the polynomial's, plus the rounding of `x` to `f32`
/// (the terms far below the maximum, where the second part grows, are the
/// ones that weigh least in a sum). The
/// gradients' softmax weights ([`Lse::grad`]) and the scalar tails of
/// [`weighted_exp_sum`] call it; `f64::exp` took three to four times as
/// long.
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    if x < -87.0 {
        return 0.0;
    }
    if x > 88.0 {
        return x.exp();
    }
    let x = x as f32;
    // n = round(x / ln 2), by the 1.5·2²³ trick (round to nearest)
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    f64::from(e * scale)
}

/// `ln(1 + eˣ)`, stable.
pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e⁻ˣ)`.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(eᵃ + eᵇ)`, stable (either may be `−∞`).
pub(crate) fn logaddexp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// What [`batch_loss_on_rows`] found: the loss and what its backward needs.
#[derive(Debug, Clone)]
pub struct RowsForward {
    /// `Σ value / Σ count` (0 when `Σ count = 0`).
    pub loss: f32,
    /// `Σ count`.
    pub total: f64,
    /// Each row's count (its gradient is 0 where the count is 0).
    pub counts: Vec<f32>,
    /// Each row's shared number (empty unless the formula shares one).
    pub shared: Vec<f32>,
}

/// Runs `f` over every row of the view `w`: `scores(i, buf)` writes the
/// scores of view row `i` into `buf` (`w.cols()` of them). Two passes when
/// the formula shares a number per row (lifted structure), one otherwise.
///
/// This is the row path of the CPU and the contract of a fused kernel: any
/// source of rows (a materialized matrix, a block of Gram tiles) fits.
///
/// ```
/// use metric_loss_core::formulas::{batch_loss_on_rows, MultiSimilarity, PairWeights, Weighting};
/// use metric_loss_core::miners::Tuples;
/// let s = [1.0f32, 0.9, 0.1, 0.9, 1.0, 0.2, 0.1, 0.2, 1.0];
/// let w = PairWeights::try_new(Weighting::Mask, &Tuples::All, &[0, 0, 1]).unwrap();
/// let f = MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5 };
/// let fwd = batch_loss_on_rows(&f, &w, |i, buf| buf.copy_from_slice(&s[3 * i..3 * i + 3]));
/// assert!(fwd.loss > 0.0 && fwd.total == 3.0);
/// ```
pub fn batch_loss_on_rows<F: BatchFormula>(
    f: &F,
    w: &PairWeights,
    mut scores: impl FnMut(usize, &mut [f32]),
) -> RowsForward {
    let (r, c) = (w.rows(), w.cols());
    let mut buf = RowBuffers::new(c);
    let shared: Vec<f32> = if F::SHARED {
        (0..r)
            .map(|i| {
                scores(i, &mut buf.s);
                f.shared(&buf.row(w, i))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut sum = 0.0f64;
    let mut total = 0.0f64;
    let mut counts = Vec::with_capacity(r);
    for i in 0..r {
        scores(i, &mut buf.s);
        let v = f.row(&buf.row(w, i), &shared);
        sum += f64::from(v.value);
        total += f64::from(v.count);
        counts.push(v.count);
    }
    let loss = if total > 0.0 {
        (sum / total) as f32
    } else {
        0.0
    };
    RowsForward {
        loss,
        total,
        counts,
        shared,
    }
}

/// The backward of [`batch_loss_on_rows`] for an upstream gradient
/// `upstream`: calls `out(i, ds)` with `∂L/∂s` of view row `i`, once per row.
pub fn batch_grad_on_rows<F: BatchFormula>(
    f: &F,
    w: &PairWeights,
    fwd: &RowsForward,
    upstream: f32,
    mut scores: impl FnMut(usize, &mut [f32]),
    mut out: impl FnMut(usize, &[f32]),
) {
    let (r, c) = (w.rows(), w.cols());
    if fwd.total <= 0.0 {
        return;
    }
    let scale = (f64::from(upstream) / fwd.total) as f32;
    let g = |i: usize| if fwd.counts[i] > 0.0 { scale } else { 0.0 };
    let mut buf = RowBuffers::new(c);
    let mut ds = vec![0.0f32; c];
    let mut dshared = vec![0.0f32; if F::SHARED { r } else { 0 }];
    if F::SHARED {
        // pass 1: what each row's value sends to the shared numbers
        for i in 0..r {
            scores(i, &mut buf.s);
            ds.iter_mut().for_each(|v| *v = 0.0);
            f.row_backward(&buf.row(w, i), &fwd.shared, g(i), &mut ds, &mut dshared);
        }
    }
    let mut sink = vec![0.0f32; if F::SHARED { r } else { 0 }];
    for i in 0..r {
        scores(i, &mut buf.s);
        ds.iter_mut().for_each(|v| *v = 0.0);
        let row = buf.row(w, i);
        f.row_backward(&row, &fwd.shared, g(i), &mut ds, &mut sink);
        if let Some(&d) = dshared.get(i) {
            f.shared_backward(&row, d, &mut ds);
        }
        out(i, &ds);
    }
}

/// The scratch rows of the driver.
struct RowBuffers {
    s: Vec<f32>,
    pos: Vec<f32>,
    neg: Vec<f32>,
}

impl RowBuffers {
    fn new(c: usize) -> Self {
        Self {
            s: vec![0.0; c],
            pos: vec![0.0; c],
            neg: vec![0.0; c],
        }
    }

    fn row(&mut self, w: &PairWeights, i: usize) -> Row<'_> {
        w.fill_row(i, &mut self.pos, &mut self.neg);
        Row {
            index: i,
            s: &self.s,
            pos: &self.pos,
            neg: &self.neg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_matches_the_definition() {
        let xs = [(1.0f32, 1.0f32), (2.0, 0.0), (-3.0, 2.0)];
        let l = Lse::of(xs.iter().copied(), false).unwrap();
        // (the exponentials are f32: see `exp`)
        let want = (1f64.exp() + 2.0 * (-3f64).exp()).ln();
        assert!((l.value - want).abs() < 1e-6);
        let l1 = Lse::of(xs.iter().copied(), true).unwrap();
        assert!((l1.value - (1.0 + 1f64.exp() + 2.0 * (-3f64).exp()).ln()).abs() < 1e-6);
        assert!(Lse::of([(1.0f32, 0.0f32)].into_iter(), false).is_none());
        assert_eq!(
            Lse::of([(1.0f32, 0.0f32)].into_iter(), true).unwrap().value,
            0.0
        );
        // huge arguments stay finite
        let big = Lse::of([(1e4f32, 1.0f32), (1e4, 1.0)].into_iter(), true).unwrap();
        assert!((big.value - (1e4 + 2f64.ln())).abs() < 1e-9);
        assert!((l.grad(-3.0, 2.0) - 2.0 * (-3f64).exp() / want.exp()).abs() < 1e-7);
    }

    #[test]
    fn pair_with_grads_equals_two_lses_and_their_grads() {
        use crate::formulas::exp_sum::tests::PORTABLE;
        let (p, n) = ((-2.0f32, 1.0f32), (50.0f32, -25.0f32));
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len).map(|j| (j as f32 * 0.37).sin()).collect();
            // disjoint masks, a few columns in neither; weights other than 1
            let wp: Vec<f32> = (0..len).map(|j| [1.0, 0.0, 0.0, 2.0][j % 4]).collect();
            let wn: Vec<f32> = (0..len).map(|j| [0.0, 1.0, 0.0, 0.0][j % 4]).collect();
            for portable in [false, true] {
                PORTABLE.set(portable);
                let want_p = Lse::of_affine(&s, &wp, p, true).unwrap();
                let want_n = Lse::of_affine(&s, &wn, n, true).unwrap();
                let mut want = vec![0.0f32; len];
                want_p.add_grads(&s, &wp, p, -0.7, &mut want);
                want_n.add_grads(&s, &wn, n, 1.3, &mut want);
                let mut ds = vec![f32::NAN; len];
                let (gp, gn) =
                    Lse::pair_with_grads(&s, (&wp, &wn), (p, n), (-0.7, 1.3), &mut ds).unwrap();
                // the values bit for bit; the gradients as `add_grads`'s, and
                // as the f64 softmax weights, up to f32 rounding (an argument
                // near 25 is rounded to 2e-6, so are its exponential's digits)
                assert_eq!(
                    gp.value.to_bits(),
                    want_p.value.to_bits(),
                    "{len} {portable}"
                );
                assert_eq!(
                    gn.value.to_bits(),
                    want_n.value.to_bits(),
                    "{len} {portable}"
                );
                let exact = |j: usize| {
                    let s = f64::from(s[j]);
                    let term = |w: f32, (a, c): (f32, f32), v: f64, g: f64| {
                        g * f64::from(w) * (f64::from(a) * s + f64::from(c) - v).exp()
                    };
                    term(wp[j], p, want_p.value, -0.7) + term(wn[j], n, want_n.value, 1.3)
                };
                for (j, (&got, &want)) in ds.iter().zip(&want).enumerate() {
                    for (what, v) in [("add_grads", f64::from(want)), ("f64", exact(j))] {
                        assert!(
                            (f64::from(got) - v).abs() <= 4e-6 * v.abs() + 1e-30,
                            "{len} entries, portable {portable}, entry {j}: {got} vs {what} {v}"
                        );
                    }
                    if wp[j] == 0.0 && wn[j] == 0.0 {
                        assert_eq!(got, 0.0);
                    }
                }
                // a column in both masks: no answer
                if len > 0 {
                    let mut both = wn.clone();
                    both[0] = 1.0;
                    assert!(
                        Lse::pair_with_grads(&s, (&wp, &both), (p, n), (1.0, 1.0), &mut ds)
                            .is_none()
                    );
                }
                PORTABLE.set(false);
            }
        }
    }

    #[test]
    fn exp_is_f32_accurate() {
        let mut worst = 0.0f64;
        for k in 0..=200_000 {
            let x = -90.0 + 100.0 * f64::from(k) / 200_000.0;
            let (got, want) = (exp(x), x.exp());
            if x < -87.0 {
                assert_eq!(got, 0.0);
            } else {
                // the bound of the doc: 2⁻²² + |x|·2⁻²⁴
                let bound = 2f64.powi(-22) + x.abs() * 2f64.powi(-24);
                worst = worst.max((got - want).abs() / want / bound);
            }
        }
        assert!(worst < 1.0, "relative error {worst} x the bound");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert!(exp(100.0).is_finite() && exp(1000.0).is_infinite());
    }

    #[test]
    fn scalar_helpers() {
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(softplus(-1000.0), 0.0);
        assert_eq!(softplus(1000.0), 1000.0);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(1000.0) == 1.0);
        assert_eq!(
            logaddexp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert!((logaddexp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
    }
}
