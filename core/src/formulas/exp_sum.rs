//! `Σ w·e^{x − m}`, the inner sum of the family's log-sum-exp, eight lanes
//! at a time: the row forms spend most of their time on it (`N`
//! exponentials per row and pass). AVX2 + FMA where the CPU has them
//! (detected at run time, as the GEMM kernel does), the scalar
//! [`exp`](super::rows::exp) otherwise.
//!
//! The exponential is Cephes' `expf`: `n = round(x / ln 2)`, a Cody–Waite
//! reduction `r = x − n·ln 2` in two parts, a degree-5 polynomial for
//! `eʳ`, scaled by `2ⁿ` in two halves (so that subnormal results and the
//! top of the range come out right). Accuracy: within 2 ulp of the correctly
//! rounded `eˣ` for results at least `f32::MIN_POSITIVE` (`x ≥ −87.33`),
//! within one subnormal step below that, 0 below `−103.97`, `∞` above
//! `88.72`, NaN for NaN (tests cover the whole range).

/// `eˣ` in `f32` over the whole range, portably: the same algorithm as the
/// eight-lane version (without fused multiply-adds).
pub(crate) fn exp_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(LO, HI);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * C1 - n * C2;
    let p = poly(r);
    let n = n as i32;
    let (a, b) = (n >> 1, n - (n >> 1));
    p * pow2(a) * pow2(b)
}

/// Below this `eˣ` rounds to 0 in `f32` (and `2ⁿ` stays within two halves).
const LO: f32 = -104.0;
/// Above this `eˣ` overflows `f32`.
const HI: f32 = 89.0;
/// `ln 2` in two parts (Cody–Waite): `C1` exact in a few bits, `C2` the rest.
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial for `eʳ − 1 − r` over `r²`, `|r| ≤ ln2/2`.
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

fn poly(r: f32) -> f32 {
    let mut p = P[0];
    for &c in &P[1..] {
        p = p * r + c;
    }
    p * r * r + r + 1.0
}

/// `2ᵏ` for `−126 ≤ k ≤ 127` (the halves of `n` are within `[−75, 64]`).
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `Σ_j w_j e^{x_j − max}` in `f64` (each term in `f32`), for `x_j ≤ max`
/// (a log-sum-exp's shifted terms).
pub(crate) fn weighted_exp_sum(xs: &[f32], ws: &[f32], max: f32) -> f64 {
    debug_assert_eq!(xs.len(), ws.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above).
        return unsafe { avx2::weighted_exp_sum(xs, ws, max) };
    }
    scalar_sum(xs, ws, max)
}

fn scalar_sum(xs: &[f32], ws: &[f32], max: f32) -> f64 {
    xs.iter()
        .zip(ws)
        .map(|(&x, &w)| f64::from(w) * super::rows::exp(f64::from(x) - f64::from(max)))
        .sum()
}

/// `out_j += scale · w_j · e^{a·s_j + c}` for every `j` with `w_j > 0`
/// (the others untouched), each term in `f32`, eight at a time where the
/// CPU can: the gradient side of a log-sum-exp over an affine map of a
/// row's scores ([`Lse::add_grads`](super::rows::Lse::add_grads)). An entry
/// of weight 0 adds nothing, even where its exponential would overflow.
pub(crate) fn add_weighted_exp(
    s: &[f32],
    w: &[f32],
    (a, c): (f32, f32),
    scale: f32,
    out: &mut [f32],
) {
    assert!(w.len() >= s.len() && out.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time just above);
        // `w` and `out` are at least as long as `s` (asserted).
        unsafe { avx2::add_weighted_exp(s, w, (a, c), scale, out) };
        return;
    }
    scalar_add(s, w, (a, c), scale, out)
}

fn scalar_add(s: &[f32], w: &[f32], (a, c): (f32, f32), scale: f32, out: &mut [f32]) {
    for ((&s, &w), o) in s.iter().zip(w).zip(out) {
        if w > 0.0 {
            *o += scale * w * exp_f32(a * s + c);
        }
    }
}

/// The largest `x_j = a·s_j + c` over the entries with `w_j > 0`, `None`
/// when no weight is positive: the shift of a log-sum-exp over an affine
/// map of a row's scores, read in place (no entries gathered).
pub(crate) fn affine_max(s: &[f32], w: &[f32], (a, c): (f32, f32)) -> Option<f32> {
    assert!(w.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA (checked just above); `w` is at least as long as `s`.
        return unsafe { avx2::affine_max(s, w, (a, c)) };
    }
    scalar_max(s, w, (a, c), None)
}

fn scalar_max(s: &[f32], w: &[f32], (a, c): (f32, f32), mut max: Option<f32>) -> Option<f32> {
    for (&s, &w) in s.iter().zip(w) {
        if w > 0.0 {
            let x = a.mul_add(s, c);
            max = Some(max.map_or(x, |m: f32| m.max(x)));
        }
    }
    max
}

/// [`affine_max`] of two masks of one row in one sweep:
/// `(affine_max(s, wp, p), affine_max(s, wn, n))`, the same values.
pub(crate) fn split_max(
    s: &[f32],
    (wp, wn): (&[f32], &[f32]),
    p: (f32, f32),
    n: (f32, f32),
) -> (Option<f32>, Option<f32>) {
    assert!(wp.len() >= s.len() && wn.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA (checked just above); `wp` and `wn` are at
        // least as long as `s` (asserted).
        return unsafe { avx2::split_max(s, (wp, wn), p, n) };
    }
    (scalar_max(s, wp, p, None), scalar_max(s, wn, n, None))
}

/// `Σ_j w_j e^{x_j − max}` over the entries with `w_j > 0`, `x_j = a·s_j + c`
/// (each term in `f32`, the sum in `f64`), for the `max` of
/// [`affine_max`] (or above it): the inner sum of that log-sum-exp.
pub(crate) fn affine_exp_sum(s: &[f32], w: &[f32], (a, c): (f32, f32), max: f32) -> f64 {
    assert!(w.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA (checked just above); `w` is at least as long as `s`.
        return unsafe { avx2::affine_exp_sum(s, w, (a, c), max) };
    }
    scalar_affine_sum(s, w, (a, c), max)
}

fn scalar_affine_sum(s: &[f32], w: &[f32], (a, c): (f32, f32), max: f32) -> f64 {
    s.iter()
        .zip(w)
        .filter(|&(_, &w)| w > 0.0)
        .map(|(&s, &w)| f64::from(w) * f64::from(exp_f32(a.mul_add(s, c) - max)))
        .sum()
}

/// The inner sums of two log-sum-exps over one row's two disjoint masks,
/// in one sweep and one exponential per entry: `Σ_j wp_j e^{xp_j − mp}`
/// over `wp_j > 0` and `Σ_j wn_j e^{xn_j − mn}` over `wn_j > 0`, where
/// `xp_j = ap·s_j + cp` and `xn_j = an·s_j + cn` (`p = (ap, cp, mp)`, `n =
/// (an, cn, mn)`). Each sum is bit for bit what [`affine_exp_sum`] gives
/// for its mask (the same terms, added in the same order). Also sets
/// `out_j` to entry `j`'s term (`wp_j e^{xp_j − mp}`, `wn_j e^{xn_j − mn}`,
/// or 0 in neither mask): what the gradient then scales.
///
/// `None` when an entry has both weights `> 0` (`out` is then unspecified).
pub(crate) fn split_exp_sums(
    s: &[f32],
    (wp, wn): (&[f32], &[f32]),
    p: (f32, f32, f32),
    n: (f32, f32, f32),
    out: &mut [f32],
) -> Option<(f64, f64)> {
    assert!(wp.len() >= s.len() && wn.len() >= s.len() && out.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA (checked just above); `wp`, `wn` and `out`
        // are at least as long as `s` (asserted).
        return unsafe {
            // one affine map for both masks (SupCon's denominator): the
            // same arguments, computed once (fewer registers in the loop)
            let bits = |(a, c, m): (f32, f32, f32)| (a.to_bits(), c.to_bits(), m.to_bits());
            if bits(p) == bits(n) {
                avx2::split_exp_sums::<true>(s, (wp, wn), p, n, out)
            } else {
                avx2::split_exp_sums::<false>(s, (wp, wn), p, n, out)
            }
        };
    }
    scalar_split(s, (wp, wn), p, n, out)
}

fn scalar_split(
    s: &[f32],
    (wp, wn): (&[f32], &[f32]),
    (ap, cp, mp): (f32, f32, f32),
    (an, cn, mn): (f32, f32, f32),
    out: &mut [f32],
) -> Option<(f64, f64)> {
    let (mut sp, mut sn) = (0.0f64, 0.0f64);
    for (((&s, &p), &q), o) in s.iter().zip(wp).zip(wn).zip(out) {
        *o = match (p > 0.0, q > 0.0) {
            (true, true) => return None,
            (true, false) => {
                let e = exp_f32(ap.mul_add(s, cp) - mp);
                sp += f64::from(p) * f64::from(e);
                p * e
            }
            (false, true) => {
                let e = exp_f32(an.mul_add(s, cn) - mn);
                sn += f64::from(q) * f64::from(e);
                q * e
            }
            (false, false) => 0.0,
        };
    }
    Some((sp, sn))
}

/// `out_j *= fp` where `wp_j > 0`, `out_j *= fn_` elsewhere: the terms of
/// [`split_exp_sums`] made into the two log-sum-exps' scaled softmax
/// weights.
pub(crate) fn scale_split(out: &mut [f32], wp: &[f32], f: (f32, f32)) {
    assert!(wp.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 (checked just above); `wp` is at least as long as
        // `out` (asserted).
        return unsafe { avx2::scale_split(out, wp, f) };
    }
    scalar_scale_split(out, wp, f)
}

fn scalar_scale_split(out: &mut [f32], wp: &[f32], (fp, fn_): (f32, f32)) {
    for (o, &w) in out.iter_mut().zip(wp) {
        *o *= if w > 0.0 { fp } else { fn_ };
    }
}

/// `out_j = k·out_j − kp·w_j` for every `j` (a product, a product, a
/// difference: no fused multiply-add), eight at a time where the CPU can:
/// SupCon's gradient from its denominator's terms and its positives.
pub(crate) fn scale_minus(out: &mut [f32], w: &[f32], k: f32, kp: f32) {
    assert!(w.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 (checked just above); `w` is at least as long as
        // `out` (asserted).
        return unsafe { avx2::scale_minus(out, w, k, kp) };
    }
    scalar_scale_minus(out, w, k, kp)
}

fn scalar_scale_minus(out: &mut [f32], w: &[f32], k: f32, kp: f32) {
    for (d, &p) in out.iter_mut().zip(w) {
        *d = k * *d - kp * p;
    }
}

/// `(Σ_j w_j·(a·s_j), Σ_j w_j)` over the entries with `w_j > 0`, in `f64`
/// and in column order (each `a·s_j` rounded to `f32` first): eight
/// weights at a time are tested and skipped when none is positive, the
/// others summed one by one, so the result is the plain loop's bit for bit.
pub(crate) fn positive_sums(s: &[f32], w: &[f32], a: f32) -> (f64, f64) {
    assert!(w.len() >= s.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 (checked just above); `w` is at least as long as `s`
        // (asserted).
        return unsafe { avx2::positive_sums(s, w, a) };
    }
    let mut sums = (0.0f64, 0.0f64);
    add_positive(&mut sums, s, w, a);
    sums
}

/// [`positive_sums`]' terms of `s` and `w` added to `(sum, n)` in column
/// order.
fn add_positive((sum, n): &mut (f64, f64), s: &[f32], w: &[f32], a: f32) {
    for (&s, &w) in s.iter().zip(w) {
        if w > 0.0 {
            *sum += f64::from(w) * f64::from(a * s);
            *n += f64::from(w);
        }
    }
}

/// Whether the eight-lane version runs (`std` caches the answer).
#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.get() {
        return false;
    }
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{C1, C2, HI, LO, P};
    use std::arch::x86_64::*;

    /// Eight `eˣ` at once (see the module's accuracy): [`exp8xk`] of one
    /// vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        // SAFETY: AVX2 and FMA (the caller's contract).
        unsafe { exp8xk([x])[0] }
    }

    /// `eˣ` of `K` vectors of eight, each step taken across all `K`
    /// before the next (the same operations on each vector, so the same
    /// bits whatever `K`): the exponential is a chain of a dozen dependent
    /// steps, and `K` independent chains side by side let the core overlap
    /// them (on this machine four at once make a row's exponentials about
    /// a third faster than one after the other).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp8xk<const K: usize>(x: [__m256; K]) -> [__m256; K] {
        // a NaN passes both (`min`/`max` return their second operand when
        // one is NaN) and every step after: no test or blend for it
        let (lo, hi) = (_mm256_set1_ps(LO), _mm256_set1_ps(HI));
        let xc = x.map(|x| _mm256_max_ps(lo, _mm256_min_ps(hi, x)));
        let n = xc.map(|x| {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
                x,
                _mm256_set1_ps(std::f32::consts::LOG2_E),
            ))
        });
        let mut r = xc;
        for k in 0..K {
            r[k] = _mm256_fnmadd_ps(n[k], _mm256_set1_ps(C1), r[k]);
        }
        for k in 0..K {
            r[k] = _mm256_fnmadd_ps(n[k], _mm256_set1_ps(C2), r[k]);
        }
        let mut p = [_mm256_set1_ps(P[0]); K];
        for &c in &P[1..] {
            let c = _mm256_set1_ps(c);
            for k in 0..K {
                p[k] = _mm256_fmadd_ps(p[k], r[k], c);
            }
        }
        let mut out = p;
        let bias = _mm256_set1_epi32(127);
        for k in 0..K {
            let r2 = _mm256_mul_ps(r[k], r[k]);
            let pk = _mm256_add_ps(_mm256_fmadd_ps(p[k], r2, r[k]), _mm256_set1_ps(1.0));
            let ni = _mm256_cvtps_epi32(n[k]);
            let a = _mm256_srai_epi32::<1>(ni);
            let b = _mm256_sub_epi32(ni, a);
            let pa = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(a, bias)));
            let pb = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(b, bias)));
            out[k] = _mm256_mul_ps(_mm256_mul_ps(pk, pa), pb);
        }
        out
    }

    /// [`positive_sums`](super::positive_sums): eight weights tested at
    /// once, the entries with a positive one added one by one in column
    /// order (the plain loop's terms, in its order).
    ///
    /// # Safety
    /// The CPU has AVX2; `w` is at least as long as `s`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn positive_sums(s: &[f32], w: &[f32], a: f32) -> (f64, f64) {
        let zero = _mm256_setzero_ps();
        let mut sums = (0.0f64, 0.0f64);
        let full = s.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ w.len()` (the caller's contract).
            let v = unsafe { _mm256_loadu_ps(w.as_ptr().add(i)) };
            let mut keep = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, zero)) as u32;
            while keep != 0 {
                let j = i + keep.trailing_zeros() as usize;
                keep &= keep - 1;
                sums.0 += f64::from(w[j]) * f64::from(a * s[j]);
                sums.1 += f64::from(w[j]);
            }
        }
        super::add_positive(&mut sums, &s[full..], &w[full..], a);
        sums
    }

    /// [`scale_minus`](super::scale_minus), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2; `w` is at least as long as `out`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_minus(out: &mut [f32], w: &[f32], k: f32, kp: f32) {
        let (vk, vkp) = (_mm256_set1_ps(k), _mm256_set1_ps(kp));
        let full = out.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ out.len() ≤ w.len()` (the caller's contract).
            unsafe {
                let o = out.as_mut_ptr().add(i);
                let p = _mm256_mul_ps(vkp, _mm256_loadu_ps(w.as_ptr().add(i)));
                _mm256_storeu_ps(o, _mm256_sub_ps(_mm256_mul_ps(vk, _mm256_loadu_ps(o)), p));
            }
        }
        super::scalar_scale_minus(&mut out[full..], &w[full..], k, kp);
    }

    /// [`scale_split`](super::scale_split), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2; `wp` is at least as long as `out`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_split(out: &mut [f32], wp: &[f32], (fp, fn_): (f32, f32)) {
        let (vp, vn, zero) = (_mm256_set1_ps(fp), _mm256_set1_ps(fn_), _mm256_setzero_ps());
        let full = out.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ out.len() ≤ wp.len()` (the caller's contract).
            unsafe {
                let w = _mm256_loadu_ps(wp.as_ptr().add(i));
                let f = _mm256_blendv_ps(vn, vp, _mm256_cmp_ps::<_CMP_GT_OQ>(w, zero));
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_loadu_ps(o), f));
            }
        }
        super::scalar_scale_split(&mut out[full..], &wp[full..], (fp, fn_));
    }

    /// [`affine_max`](super::affine_max), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `w` is at least as long as `s`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn affine_max(s: &[f32], w: &[f32], (a, c): (f32, f32)) -> Option<f32> {
        let (va, vc) = (_mm256_set1_ps(a), _mm256_set1_ps(c));
        let (zero, none) = (_mm256_setzero_ps(), _mm256_set1_ps(f32::NEG_INFINITY));
        let mut max = none;
        let mut any = 0;
        let full = s.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ w.len()`; AVX2 + FMA (the caller's contract).
            unsafe {
                let x = _mm256_fmadd_ps(va, _mm256_loadu_ps(s.as_ptr().add(i)), vc);
                let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(w.as_ptr().add(i)), zero);
                any |= _mm256_movemask_ps(keep);
                max = _mm256_max_ps(max, _mm256_blendv_ps(none, x, keep));
            }
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
        let head = (any != 0).then(|| lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        super::scalar_max(&s[full..], &w[full..], (a, c), head)
    }

    /// [`split_max`](super::split_max), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `wp` and `wn` are at least as long as `s`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn split_max(
        s: &[f32],
        (wp, wn): (&[f32], &[f32]),
        (ap, cp): (f32, f32),
        (an, cn): (f32, f32),
    ) -> (Option<f32>, Option<f32>) {
        let (vap, vcp) = (_mm256_set1_ps(ap), _mm256_set1_ps(cp));
        let (van, vcn) = (_mm256_set1_ps(an), _mm256_set1_ps(cn));
        let (zero, none) = (_mm256_setzero_ps(), _mm256_set1_ps(f32::NEG_INFINITY));
        let (mut maxp, mut maxn) = (none, none);
        let (mut anyp, mut anyn) = (0, 0);
        let full = s.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ wp.len(), wn.len()`; AVX2 + FMA (the caller's contract).
            unsafe {
                let sv = _mm256_loadu_ps(s.as_ptr().add(i));
                let kp = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(wp.as_ptr().add(i)), zero);
                let kn = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(wn.as_ptr().add(i)), zero);
                anyp |= _mm256_movemask_ps(kp);
                anyn |= _mm256_movemask_ps(kn);
                let xp = _mm256_fmadd_ps(vap, sv, vcp);
                let xn = _mm256_fmadd_ps(van, sv, vcn);
                maxp = _mm256_max_ps(maxp, _mm256_blendv_ps(none, xp, kp));
                maxn = _mm256_max_ps(maxn, _mm256_blendv_ps(none, xn, kn));
            }
        }
        let (mut lp, mut ln) = ([0.0f32; 8], [0.0f32; 8]);
        // SAFETY: `lp` and `ln` hold eight f32 each.
        unsafe {
            _mm256_storeu_ps(lp.as_mut_ptr(), maxp);
            _mm256_storeu_ps(ln.as_mut_ptr(), maxn);
        }
        let head = |any: i32, l: [f32; 8]| {
            (any != 0).then(|| l.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        };
        (
            super::scalar_max(&s[full..], &wp[full..], (ap, cp), head(anyp, lp)),
            super::scalar_max(&s[full..], &wn[full..], (an, cn), head(anyn, ln)),
        )
    }

    /// [`affine_exp_sum`](super::affine_exp_sum), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `w` is at least as long as `s`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn affine_exp_sum(s: &[f32], w: &[f32], (a, c): (f32, f32), max: f32) -> f64 {
        let (va, vc, m) = (_mm256_set1_ps(a), _mm256_set1_ps(c), _mm256_set1_ps(max));
        let zero = _mm256_setzero_ps();
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let full = s.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ w.len()`; AVX2 + FMA (the caller's contract).
            unsafe {
                let x = _mm256_fmadd_ps(va, _mm256_loadu_ps(s.as_ptr().add(i)), vc);
                let wv = _mm256_loadu_ps(w.as_ptr().add(i));
                let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(wv, zero);
                let t = _mm256_and_ps(_mm256_mul_ps(wv, exp8(_mm256_sub_ps(x, m))), keep);
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
            }
        }
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds four f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
        lanes.iter().sum::<f64>() + super::scalar_affine_sum(&s[full..], &w[full..], (a, c), max)
    }

    /// [`split_exp_sums`]' running state: the two affine maps and shifts
    /// as vectors, the sums of the positives' and negatives' terms in
    /// `f64` lanes (the low and high four entries of each vector apart),
    /// and whether a column is in both masks.
    struct SplitSums {
        p: (__m256, __m256, __m256),
        n: (__m256, __m256, __m256),
        both: i32,
        plo: __m256d,
        phi: __m256d,
        nlo: __m256d,
        nhi: __m256d,
    }

    impl SplitSums {
        #[target_feature(enable = "avx2,fma")]
        fn new((ap, cp, mp): (f32, f32, f32), (an, cn, mn): (f32, f32, f32)) -> Self {
            let v = _mm256_set1_ps;
            SplitSums {
                p: (v(ap), v(cp), v(mp)),
                n: (v(an), v(cn), v(mn)),
                both: 0,
                plo: _mm256_setzero_pd(),
                phi: _mm256_setzero_pd(),
                nlo: _mm256_setzero_pd(),
                nhi: _mm256_setzero_pd(),
            }
        }

        /// The `K` vectors of eight entries from `i` on: their terms
        /// stored in `out` and added to the sums in entry order (so the
        /// same sums whatever `K`), their exponentials side by side
        /// ([`exp8xk`]).
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA; `i + 8·K ≤ s.len()`, and `wp`, `wn`
        /// and `out` are at least as long as `s`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn add<const SAME: bool, const K: usize>(
            &mut self,
            s: &[f32],
            (wp, wn): (&[f32], &[f32]),
            out: &mut [f32],
            i: usize,
        ) {
            let zero = _mm256_setzero_ps();
            let ((ap, cp, mp), (an, cn, mn)) = (self.p, self.n);
            // SAFETY (every load and store below): `i + 8·K ≤ s.len() ≤
            // wp.len(), wn.len(), out.len()` (the caller's contract).
            let load = |v: &[f32], k: usize| unsafe { _mm256_loadu_ps(v.as_ptr().add(i + 8 * k)) };
            let kp: [__m256; K] =
                std::array::from_fn(|k| _mm256_cmp_ps::<_CMP_GT_OQ>(load(wp, k), zero));
            let kn: [__m256; K] =
                std::array::from_fn(|k| _mm256_cmp_ps::<_CMP_GT_OQ>(load(wn, k), zero));
            // the same shifted arguments as `affine_exp_sum`'s, per mask
            let x: [__m256; K] = std::array::from_fn(|k| {
                let sv = load(s, k);
                let xp = _mm256_sub_ps(_mm256_fmadd_ps(ap, sv, cp), mp);
                if SAME {
                    xp
                } else {
                    let xn = _mm256_sub_ps(_mm256_fmadd_ps(an, sv, cn), mn);
                    _mm256_blendv_ps(xn, xp, kp[k])
                }
            });
            // SAFETY: AVX2 + FMA (the caller's contract).
            let e = unsafe { exp8xk(x) };
            for k in 0..K {
                self.both |= _mm256_movemask_ps(_mm256_and_ps(kp[k], kn[k]));
                let tp = _mm256_and_ps(_mm256_mul_ps(load(wp, k), e[k]), kp[k]);
                let tn = _mm256_and_ps(_mm256_mul_ps(load(wn, k), e[k]), kn[k]);
                let lo = |t| _mm256_cvtps_pd(_mm256_castps256_ps128(t));
                let hi = |t| _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t));
                self.plo = _mm256_add_pd(self.plo, lo(tp));
                self.phi = _mm256_add_pd(self.phi, hi(tp));
                self.nlo = _mm256_add_pd(self.nlo, lo(tn));
                self.nhi = _mm256_add_pd(self.nhi, hi(tn));
                // SAFETY: as the loads.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i + 8 * k), _mm256_or_ps(tp, tn)) };
            }
        }
    }

    /// [`split_exp_sums`](super::split_exp_sums), eight entries at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `wp`, `wn` and `out` are at least as long as `s`.
    ///
    /// With `SAME` (the caller's promise that `p` and `n` are the same bits)
    /// each entry's argument is computed once: the same value either mask's
    /// would give.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn split_exp_sums<const SAME: bool>(
        s: &[f32],
        (wp, wn): (&[f32], &[f32]),
        (ap, cp, mp): (f32, f32, f32),
        (an, cn, mn): (f32, f32, f32),
        out: &mut [f32],
    ) -> Option<(f64, f64)> {
        let mut sums = SplitSums::new((ap, cp, mp), (an, cn, mn));
        let full = s.len() / 8 * 8;
        let fours = s.len() / 32 * 32;
        for i in (0..fours).step_by(32) {
            // SAFETY: `i + 32 ≤ s.len() ≤ wp.len(), wn.len(), out.len()`;
            // AVX2 + FMA (the caller's contract).
            unsafe { sums.add::<SAME, 4>(s, (wp, wn), out, i) };
        }
        for i in (fours..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ wp.len(), wn.len(), out.len()`;
            // AVX2 + FMA (the caller's contract).
            unsafe { sums.add::<SAME, 1>(s, (wp, wn), out, i) };
        }
        let SplitSums {
            both,
            plo,
            phi,
            nlo,
            nhi,
            ..
        } = sums;
        if both != 0 {
            return None;
        }
        let (mut p, mut q) = ([0.0f64; 4], [0.0f64; 4]);
        // SAFETY: `p` and `q` hold four f64 each.
        unsafe {
            _mm256_storeu_pd(p.as_mut_ptr(), _mm256_add_pd(plo, phi));
            _mm256_storeu_pd(q.as_mut_ptr(), _mm256_add_pd(nlo, nhi));
        }
        let (sp, sn) = super::scalar_split(
            &s[full..],
            (&wp[full..], &wn[full..]),
            (ap, cp, mp),
            (an, cn, mn),
            &mut out[full..],
        )?;
        // `affine_exp_sum`'s order: the lanes, then the tail
        Some((p.iter().sum::<f64>() + sp, q.iter().sum::<f64>() + sn))
    }

    /// [`add_weighted_exp`](super::add_weighted_exp), eight entries at a
    /// time, the tail in scalar code.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `w` and `out` are at least as long as `s`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_weighted_exp(
        s: &[f32],
        w: &[f32],
        (a, c): (f32, f32),
        scale: f32,
        out: &mut [f32],
    ) {
        let (va, vc, vk) = (_mm256_set1_ps(a), _mm256_set1_ps(c), _mm256_set1_ps(scale));
        let zero = _mm256_setzero_ps();
        let full = s.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ s.len() ≤ w.len(), out.len()`; AVX2 + FMA (the caller's contract).
            unsafe {
                let x = _mm256_fmadd_ps(va, _mm256_loadu_ps(s.as_ptr().add(i)), vc);
                let wv = _mm256_loadu_ps(w.as_ptr().add(i));
                let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(wv, zero);
                let t = _mm256_mul_ps(_mm256_mul_ps(vk, wv), exp8(x));
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), _mm256_and_ps(t, keep)));
            }
        }
        super::scalar_add(&s[full..], &w[full..], (a, c), scale, &mut out[full..]);
    }

    /// [`weighted_exp_sum`](super::weighted_exp_sum), eight terms at a
    /// time, summed in `f64`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `ws` is at least as long as `xs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_exp_sum(xs: &[f32], ws: &[f32], max: f32) -> f64 {
        let m = _mm256_set1_ps(max);
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (xc, wc) = (xs.chunks_exact(8), ws.chunks_exact(8));
        let (xr, wr) = (xc.remainder(), wc.remainder());
        for (x, w) in xc.zip(wc) {
            // SAFETY: both chunks hold eight values; AVX2 + FMA (the caller's contract).
            unsafe {
                let x = _mm256_loadu_ps(x.as_ptr());
                let w = _mm256_loadu_ps(w.as_ptr());
                let t = _mm256_mul_ps(w, exp8(_mm256_sub_ps(x, m)));
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
            }
        }
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds four f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi)) };
        lanes.iter().sum::<f64>() + super::scalar_sum(xr, wr, max)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Set by a test to run the scalar sum on this thread.
        pub(crate) static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Distance in units in the last place between two finite `f32` of the
    /// same sign (or zero).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Every implementation of `eˣ` here over the whole `f32` range.
    fn exps() -> Vec<(&'static str, Box<dyn Fn(f32) -> f32>)> {
        let mut v: Vec<(&'static str, Box<dyn Fn(f32) -> f32>)> =
            vec![("portable", Box::new(exp_f32))];
        #[cfg(target_arch = "x86_64")]
        if simd() {
            use std::arch::x86_64::*;
            v.push((
                "avx2",
                Box::new(|x| {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { _mm256_cvtss_f32(avx2::exp8(_mm256_set1_ps(x))) }
                }),
            ));
        }
        v
    }

    #[test]
    fn exp_matches_std_over_the_whole_range() {
        for (name, e) in exps() {
            let mut worst = 0;
            // every 97th f32 in [−110, 90]: ~40 million values around the range's ends too
            let (from, to) = ((-110.0f32).to_bits(), 90.0f32.to_bits());
            let negatives = (0x8000_0000..=from).step_by(97).map(f32::from_bits);
            let positives = (0..=to).step_by(97).map(f32::from_bits);
            for x in negatives.chain(positives) {
                let want = (f64::from(x)).exp() as f32;
                let got = e(x);
                if want >= f32::MIN_POSITIVE && want.is_finite() {
                    let u = ulps(got, want);
                    worst = worst.max(u);
                    assert!(u <= 2, "{name}: exp({x}) = {got}, want {want} ({u} ulp)");
                } else if want.is_infinite() {
                    assert_eq!(got, f32::INFINITY, "{name}: exp({x})");
                } else {
                    // subnormal or 0: within one subnormal step
                    assert!(
                        (got - want).abs() <= 2.0 * f32::from_bits(1),
                        "{name}: exp({x}) = {got:e}, want {want:e}"
                    );
                }
            }
            assert!(worst <= 2, "{name}: {worst} ulp");
            // the edges
            assert_eq!(e(0.0), 1.0, "{name}");
            assert_eq!(e(-0.0), 1.0, "{name}");
            assert_eq!(e(f32::NEG_INFINITY), 0.0, "{name}");
            assert_eq!(e(-1000.0), 0.0, "{name}");
            assert_eq!(e(f32::INFINITY), f32::INFINITY, "{name}");
            assert_eq!(e(88.8), f32::INFINITY, "{name}");
            assert!(e(88.7).is_finite(), "{name}");
            assert!(e(f32::NAN).is_nan(), "{name}");
            // a NaN comes back as it went in (sign and payload)
            for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7fc0_1234)] {
                assert_eq!(e(nan).to_bits(), nan.to_bits(), "{name}");
            }
            assert_eq!(e(-87.0), (-87.0f64).exp() as f32, "{name}");
        }
    }

    #[test]
    fn affine_sums_agree_with_f64_and_skip_zero_weights() {
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len).map(|j| (j as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..len).map(|j| (j % 3) as f32 * 0.5).collect();
            for (a, c) in [(2.0f32, -1.0f32), (-50.0, 25.0), (100.0, 0.0)] {
                let xs = || {
                    s.iter()
                        .zip(&w)
                        .filter(|&(_, &w)| w > 0.0)
                        .map(|(&s, &w)| (f64::from(a) * f64::from(s) + f64::from(c), f64::from(w)))
                };
                let want_max = xs().map(|(x, _)| x).reduce(f64::max);
                for portable in [false, true] {
                    PORTABLE.set(portable);
                    let max = affine_max(&s, &w, (a, c));
                    assert_eq!(max.is_some(), want_max.is_some(), "{len} entries");
                    if let (Some(got), Some(want)) = (max, want_max) {
                        assert!((f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1.0));
                        let sum = affine_exp_sum(&s, &w, (a, c), got);
                        let want: f64 = xs().map(|(x, w)| w * (x - f64::from(got)).exp()).sum();
                        assert!(
                            (sum - want).abs() <= 1e-5 * want,
                            "portable {portable}, {len} entries, ({a}, {c}): {sum} vs {want}"
                        );
                    }
                    PORTABLE.set(false);
                }
            }
        }
    }

    #[test]
    fn added_exponentials_agree_with_f64_and_skip_zero_weights() {
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len).map(|j| (j as f32 * 0.37).sin()).collect();
            // every third weight 0; those entries' exponentials overflow
            let w: Vec<f32> = (0..len).map(|j| (j % 3) as f32 * 0.5).collect();
            for (a, c) in [(2.0f32, -1.0f32), (-50.0, 25.0), (100.0, -100.0)] {
                let want: Vec<f64> = s
                    .iter()
                    .zip(&w)
                    .map(|(&s, &w)| {
                        let c = if w > 0.0 { c } else { 200.0 };
                        0.25 + if w > 0.0 {
                            -1.5 * f64::from(w) * (f64::from(a) * f64::from(s) + f64::from(c)).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for portable in [false, true] {
                    PORTABLE.set(portable);
                    let mut out = vec![0.25f32; len];
                    // a zero weight's entry overflows: it must still add nothing
                    let c_of = |w: f32| if w > 0.0 { c } else { 200.0 };
                    for j in 0..len {
                        add_weighted_exp(
                            &s[j..=j],
                            &w[j..=j],
                            (a, c_of(w[j])),
                            -1.5,
                            &mut out[j..=j],
                        );
                    }
                    let mut whole = vec![0.25f32; len];
                    let masked: Vec<f32> = (0..len)
                        .map(|j| if w[j] > 0.0 { s[j] } else { 3.0 })
                        .collect();
                    add_weighted_exp(&masked, &w, (a, c), -1.5, &mut whole);
                    PORTABLE.set(false);
                    for j in 0..len {
                        for (name, v) in [("one by one", out[j]), ("whole row", whole[j])] {
                            let want = want[j];
                            assert!(
                                (f64::from(v) - want).abs() <= 1e-5 * want.abs().max(1.0)
                                    || (v.is_infinite() && want.is_infinite()),
                                "{name}, portable {portable}, {len} entries, (a, c) = ({a}, {c}), entry {j}: {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn split_max_is_two_affine_maxima() {
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len).map(|j| (j as f32 * 0.37).sin()).collect();
            let wp: Vec<f32> = (0..len).map(|j| f32::from(u8::from(j % 5 == 2))).collect();
            let wn: Vec<f32> = (0..len).map(|j| f32::from(u8::from(j % 5 > 2))).collect();
            for (p, n) in [
                ((-2.0f32, 1.0f32), (50.0f32, -25.0f32)),
                ((1.0, 0.0), (-1.0, 1.0)),
            ] {
                for portable in [false, true] {
                    PORTABLE.set(portable);
                    let got = split_max(&s, (&wp, &wn), p, n);
                    let want = (affine_max(&s, &wp, p), affine_max(&s, &wn, n));
                    PORTABLE.set(false);
                    assert_eq!(got, want, "{len} {portable}");
                    assert_eq!(got.0.is_some(), len > 2, "{len}");
                }
            }
        }
    }

    /// `split_exp_sums` gives each mask's `affine_exp_sum` bit for bit and
    /// each entry's term, eight lanes and portably; with one affine map for
    /// both masks (the `SAME` loop) exactly what the general loop gives.
    /// Scores include ±0, ±inf and NaN; weights 2, -0 and NaN count or not
    /// as `> 0` says.
    #[test]
    fn split_exp_sums_are_the_affine_sums_bit_for_bit() {
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len)
                .map(|j| match j % 41 {
                    5 => -0.0,
                    6 => 0.0,
                    17 => f32::NEG_INFINITY,
                    29 => f32::INFINITY,
                    33 => f32::NAN,
                    _ => (j as f32 * 0.37).sin(),
                })
                .collect();
            let wp: Vec<f32> = (0..len)
                .map(|j| match j % 5 {
                    2 => 1.0,
                    3 if j % 3 == 0 => 2.0,
                    _ => 0.0,
                })
                .collect();
            let wn: Vec<f32> = (0..len)
                .map(|j| match j % 7 {
                    _ if wp[j] > 0.0 => 0.0,
                    1 => -0.0,
                    2 => f32::NAN,
                    _ => 1.0,
                })
                .collect();
            for (p, n) in [
                ((-2.0f32, 1.0f32, 0.5f32), (50.0f32, -25.0f32, 3.0f32)),
                ((10.0, 0.0, 10.0), (10.0, 0.0, 10.0)),
            ] {
                for portable in [false, true] {
                    PORTABLE.set(portable);
                    let mut out = vec![7.0f32; len];
                    let got = split_exp_sums(&s, (&wp, &wn), p, n, &mut out);
                    let want = (
                        affine_exp_sum(&s, &wp, (p.0, p.1), p.2),
                        affine_exp_sum(&s, &wn, (n.0, n.1), n.2),
                    );
                    PORTABLE.set(false);
                    let (sp, sn) = got.expect("disjoint masks");
                    // bit for bit, but for the sign of an empty sum (the
                    // portable `affine_exp_sum`'s `Iterator::sum` starts at −0)
                    let same =
                        |a: f64, b: f64| a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0);
                    assert!(same(sp, want.0), "{len} {portable}: {sp} vs {}", want.0);
                    assert!(same(sn, want.1), "{len} {portable}: {sn} vs {}", want.1);
                    for j in 0..len {
                        let term = |w: f32, (a, c, m): (f32, f32, f32)| {
                            w * exp_f32(a.mul_add(s[j], c) - m)
                        };
                        let want = match (wp[j] > 0.0, wn[j] > 0.0) {
                            (true, _) => term(wp[j], p),
                            (_, true) => term(wn[j], n),
                            _ => 0.0,
                        };
                        // the lanes' exp and the portable one agree to 2 ulp
                        let close = (out[j] - want).abs() <= 4e-7 * want.abs()
                            || (out[j].is_nan() && want.is_nan())
                            || out[j] == want;
                        assert!(close, "{len} {portable} {j}: {} vs {want}", out[j]);
                    }
                    #[cfg(target_arch = "x86_64")]
                    if !portable && p == n && simd() {
                        let mut general = vec![7.0f32; len];
                        // SAFETY: AVX2 and FMA (checked just above); equal lengths.
                        let g = unsafe {
                            avx2::split_exp_sums::<false>(&s, (&wp, &wn), p, n, &mut general)
                        };
                        let (gp, gn) = g.expect("disjoint masks");
                        assert_eq!((gp.to_bits(), gn.to_bits()), (sp.to_bits(), sn.to_bits()));
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&general), bits(&out), "{len}");
                    }
                }
            }
        }
    }

    /// `scale_split` and `scale_minus` are their scalar loops bit for bit:
    /// NaN, -0 and negative weights (`scale_split`'s second factor);
    /// NaN/inf/-0 values and factors.
    #[test]
    fn scale_split_and_minus_are_the_scalar_loops_bit_for_bit() {
        let odd = [f32::NAN, -0.0, f32::INFINITY, -3.0, 0.0, 1e-40];
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let wp: Vec<f32> = (0..len)
                .map(|j| match j % 4 {
                    0 => 1.0,
                    1 => odd[(j / 4) % odd.len()],
                    _ => 0.0,
                })
                .collect();
            let out: Vec<f32> = (0..len)
                .map(|j| match j % 9 {
                    4 => odd[(j / 9) % odd.len()],
                    _ => (j as f32 * 0.37).sin(),
                })
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for f in [(0.5f32, -2.0f32), (f32::INFINITY, -0.0), (f32::NAN, 3.0)] {
                let mut want = out.clone();
                scalar_scale_split(&mut want, &wp, f);
                let mut want_minus = out.clone();
                scalar_scale_minus(&mut want_minus, &wp, f.0, f.1);
                for portable in [false, true] {
                    PORTABLE.set(portable);
                    let mut got = out.clone();
                    scale_split(&mut got, &wp, f);
                    let mut minus = out.clone();
                    scale_minus(&mut minus, &wp, f.0, f.1);
                    PORTABLE.set(false);
                    assert_eq!(bits(&got), bits(&want), "{len} {f:?} {portable}");
                    assert_eq!(bits(&minus), bits(&want_minus), "{len} {f:?} {portable}");
                }
            }
        }
    }

    #[test]
    fn positive_sums_are_the_plain_loops_bit_for_bit() {
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            // positive entries at -0 and at +inf (j = 16, 29: weights 1)
            let s: Vec<f32> = (0..len)
                .map(|j| match j {
                    16 => -0.0,
                    29 if len > 100 => f32::INFINITY,
                    _ => (j as f32 * 0.37).sin(),
                })
                .collect();
            // sparse positives (whole chunks of eight without one), a weight of 2
            // and weights that count as none: -0, negative, NaN
            let w: Vec<f32> = (0..len)
                .map(|j| match j % 13 {
                    3 => 1.0,
                    7 => 2.0,
                    9 => -0.0,
                    10 => -1.0,
                    11 => f32::NAN,
                    _ => 0.0,
                })
                .collect();
            let a = 1.0 / 0.07f32;
            let want = s
                .iter()
                .zip(&w)
                .filter(|&(_, &w)| w > 0.0)
                .fold((0.0f64, 0.0f64), |(sum, n), (&s, &w)| {
                    (sum + f64::from(w) * f64::from(a * s), n + f64::from(w))
                });
            for portable in [false, true] {
                PORTABLE.set(portable);
                let got = positive_sums(&s, &w, a);
                PORTABLE.set(false);
                assert_eq!(got.0.to_bits(), want.0.to_bits(), "{len} {portable}");
                assert_eq!(got.1.to_bits(), want.1.to_bits(), "{len} {portable}");
            }
        }
    }

    #[test]
    fn weighted_sums_agree_with_the_scalar_one() {
        // lengths with and without a tail, terms from 1 down to below f32's range
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            let xs: Vec<f32> = (0..len).map(|j| -(j as f32) * 0.173).collect();
            let ws: Vec<f32> = (0..len).map(|j| 1.0 + (j % 3) as f32).collect();
            for max in [0.0f32, 2.5] {
                let want: f64 = xs
                    .iter()
                    .zip(&ws)
                    .map(|(&x, &w)| f64::from(w) * (f64::from(x) - f64::from(max)).exp())
                    .sum();
                let got = weighted_exp_sum(&xs, &ws, max);
                PORTABLE.set(true);
                let portable = weighted_exp_sum(&xs, &ws, max);
                PORTABLE.set(false);
                for (name, v) in [("simd", got), ("portable", portable)] {
                    assert!(
                        (v - want).abs() <= 1e-6 * want.max(f64::MIN_POSITIVE),
                        "{name}, {len} terms, max {max}: {v} vs {want}"
                    );
                }
            }
        }
    }
}
