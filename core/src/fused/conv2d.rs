//! 2-D convolution on the CPU: im2col, then the project's GEMM, forward and
//! backward, one image or a few side by side at a time.
//!
//! An image's columns are a `taps × L` matrix (`taps = C·K·K`, one row per
//! `(c, ky, kx)` — the order of a PyTorch weight's trailing dimensions —
//! and one column per output pixel, `L = OH·OW`), so that with the weight
//! seen as `W: O × taps`:
//!
//! - forward: `y_b = W·cols_b + bias`, written straight into the output
//!   image (`O × L` is the `(O, OH, OW)` layout);
//! - backward, with `g_b` the upstream gradient of image `b` (`O × L`):
//!   `∂W += g_b·cols_bᵀ`, `∂bias += g_b·1`, `∂cols_b = Wᵀ·g_b`, and col2im
//!   adds each column back onto the pixels it was read from.
//!
//! One image at a time (rather than one GEMM over the whole batch) needs no
//! transposition of the output or of its gradient, and an image's columns
//! stay in cache between im2col and the GEMM: measured 63 → 48 ms of CPU a
//! step for the reference MNIST CNN. When an image has more taps than
//! output pixels (that CNN's second convolution: 288 against 121), the
//! weight is the larger operand and each product would pack it again; then
//! the weight is packed once for the batch ([`PackedA`], and `Wᵀ` once for
//! the backward), each image's `W·cols` is written straight into its output
//! and each image's `∂cols = Wᵀ·g` straight from its upstream gradient
//! (col2im then reads it from cache), and only `∂W` puts [`GROUP`] images
//! side by side (`taps × 4L` columns against their upstream gradients
//! copied to `O × 4L`), a longer `k` for one product.
//!
//! Groups of [`GROUP`] images are shared among rayon's threads; the
//! backward sums `∂W` within a group, then the groups in order, so the
//! result does not depend on the scheduling and a training run is
//! reproducible. (One exception in the dense backward: a large `∂W` product
//! whose `k`, the group's pixels, is more than about twice its `taps` — 13
//! × 13 images with padding 1 — can be cut along `k` for the threads by the
//! GEMM, which sums the parts apart; the MNIST CNN's products are not.)
//!
//! Fused with ReLU and a max pool whose windows do not overlap
//! ([`conv2d_relu_max_pool2d_cpu`] with stride ≥ kernel), the backward
//! works from the pool's winners alone ([`pooled_backward`]): at most a
//! quarter of the gradient `g_b` is nonzero, and the dense products spent
//! three quarters of their multiply-adds on zeros (one thread, the CNN's
//! step 22.8–23.4 → 16.9–17.3 ms, measured back to back on a loaded
//! machine). Its sums are the dense products' chains
//! over the same nonzero terms in the same order, so the gradients are the
//! same bits (the tests compare them); it runs on any number of threads in
//! one order.
//!
//! The columns are kept from the forward for `∂W` when the whole batch's fit
//! in [`COLUMN_BUDGET`] (and a tape records them, and the backward is not
//! the winners', which reads only the columns of winning positions, built
//! from the images); otherwise each image's are built again in the
//! backward, so memory stays bounded whatever the batch and image size.

mod pooled_backward;

use pooled_backward::Winners;

use super::gemm::{Kernel, Operand, PackedA, PackedB, gemm, gemm_packed};
use super::{Scratch, with_upstream};
use crate::nets::Window;
use dfdx::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// At most this many column values (4 MiB) are kept from the forward for
/// the backward; beyond, each group's columns are built again, in cache.
/// For the MNIST CNN that keeps the first convolution's (80 × 9 × 676
/// values) and rebuilds the second's (80 × 288 × 121, 11 MiB): writing
/// those out and reading them back cost more than building them twice
/// (5 % of the step's CPU time, measured back to back).
const COLUMN_BUDGET: usize = 1 << 20;

/// Images whose columns sit side by side when the weight is the larger
/// operand (one `∂W` product with a longer `k`), and the unit whose `∂W` is
/// summed on one thread (a fixed size, so that the sums do not depend on
/// scheduling).
const GROUP: usize = 4;

/// The shape of one convolution, per image.
#[derive(Clone, Copy)]
struct Geometry {
    window: Window,
    channels: usize,
    out_channels: usize,
}

impl Geometry {
    /// Rows of an image's columns: `C·K·K`.
    fn taps(&self) -> usize {
        self.channels * self.window.kernel() * self.window.kernel()
    }

    /// Values of one input image.
    fn image_len(&self) -> usize {
        self.channels * self.window.in_len()
    }

    /// Values of one output image.
    fn out_image_len(&self) -> usize {
        self.out_channels * self.window.out_len()
    }
}

/// The output columns `ox` whose kernel tap `kx` reads a pixel inside the
/// image, as a range, and the input column of the first of them.
fn valid_columns(win: &Window, kx: usize) -> (usize, usize, usize) {
    let (s, p) = (win.stride(), win.padding());
    let (_, w) = win.input_size();
    let (_, ow) = win.output_size();
    // ox·s + kx − p ∈ [0, w)
    let lo = p.saturating_sub(kx).div_ceil(s).min(ow);
    let hi = if w + p > kx {
        ((w + p - kx - 1) / s + 1).min(ow)
    } else {
        0
    };
    let hi = hi.max(lo);
    (lo, hi, (lo * s + kx).saturating_sub(p))
}

/// The columns of `images` consecutive images of the batch `xs` from `b0`,
/// side by side: `taps × (images·L)`, image `i`'s row `r` at
/// `cols[r·ld + i·L..][..L]` with `ld = images·L`, where one image's are
/// `cols[(c, ky, kx), (oy, ox)] = x[c, oy·s + ky − p, ox·s + kx − p]`, 0 in
/// the padding.
fn im2col(xs: &[f32], geo: &Geometry, b0: usize, images: usize, cols: &mut [f32]) {
    let (len, image) = (geo.window.out_len(), geo.image_len());
    let ld = images * len;
    for i in 0..images {
        let x = &xs[(b0 + i) * image..][..image];
        for r in 0..geo.taps() {
            im2col_row(x, geo, r, &mut cols[r * ld + i * len..][..len]);
        }
    }
}

/// Row `r` of one image's columns (see [`im2col`]), `L` values.
#[inline]
fn im2col_row(x: &[f32], geo: &Geometry, r: usize, row: &mut [f32]) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (oh, ow) = win.output_size();
    let len = win.out_len();
    let row = &mut row[..len];
    let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
    let (lo, hi, x0) = valid_columns(&win, kx);
    let plane = &x[c * win.in_len()..][..win.in_len()];
    if s == 1 && (lo, hi) == (0, ow) && ow <= 16 {
        // Whole output rows of at most 16 pixels (the MNIST CNN's
        // second convolution: 11), each one copy of 16 values running
        // over into the next row, which is written after it; the last
        // rows (and any whose 16 values would leave the plane or this
        // tap's row) the exact way.
        for oy in 0..oh {
            let iy = (oy + ky).wrapping_sub(p);
            let at = oy * ow;
            if iy >= h {
                row[at..at + ow].fill(0.0);
                continue;
            }
            let from = iy * w + x0;
            if at + 16 <= len && from + 16 <= plane.len() {
                let v: &[f32; 16] = plane[from..from + 16].try_into().expect("16 values");
                row[at..at + 16].copy_from_slice(v);
            } else {
                copy_short(&mut row[at..at + ow], &plane[from..]);
            }
        }
        return;
    }
    for (oy, out) in row.chunks_exact_mut(ow).enumerate().take(oh) {
        let iy = (oy * s + ky).wrapping_sub(p);
        if iy >= h || hi == lo {
            out.fill(0.0);
            continue;
        }
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        let src = &plane[iy * w..][..w];
        if s == 1 {
            copy_short(&mut out[lo..hi], &src[x0..]);
        } else {
            for (o, &v) in out[lo..hi].iter_mut().zip(src[x0..].iter().step_by(s)) {
                *o = v;
            }
        }
    }
}

/// `dst` from the start of `src`, for the short rows of [`im2col`] (an
/// output row: 11 pixels for the MNIST CNN's second convolution): eight
/// values at a time, then four, two, one, each a fixed-size move. A plain
/// loop (or `copy_from_slice`) becomes a call to `memcpy` per row, whose
/// overhead on 44 bytes was most of im2col's time (10 % of the CNN's step).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 8] = s.try_into().expect("8 values");
        d.copy_from_slice(s);
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    let mut i = 0;
    if d.len() - i >= 4 {
        let v: [f32; 4] = s[i..i + 4].try_into().expect("4 values");
        d[i..i + 4].copy_from_slice(&v);
        i += 4;
    }
    if d.len() - i >= 2 {
        let v: [f32; 2] = s[i..i + 2].try_into().expect("2 values");
        d[i..i + 2].copy_from_slice(&v);
        i += 2;
    }
    if d.len() > i {
        d[i] = s[i];
    }
}

/// The adjoint of [`im2col`]: adds each column entry (row `r` at
/// `dcols[r·ld..]`) onto the pixel it was read from (padding entries are
/// dropped).
fn col2im(dcols: &[f32], geo: &Geometry, gx: &mut [f32], ld: usize) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (oh, ow) = win.output_size();
    let len = win.out_len();
    for r in 0..geo.taps() {
        let row = &dcols[r * ld..][..len];
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let (lo, hi, x0) = valid_columns(&win, kx);
        if hi == lo {
            continue;
        }
        let plane = &mut gx[c * win.in_len()..][..win.in_len()];
        for (oy, src) in row.chunks_exact(ow).enumerate().take(oh) {
            let iy = (oy * s + ky).wrapping_sub(p);
            if iy >= h {
                continue;
            }
            let (src, dst) = (&src[lo..hi], &mut plane[iy * w..][..w]);
            if s == 1 {
                for (d, &v) in dst[x0..x0 + src.len()].iter_mut().zip(src) {
                    *d += v;
                }
            } else {
                for (d, &v) in dst[x0..].iter_mut().step_by(s).zip(src) {
                    *d += v;
                }
            }
        }
    }
}

/// `values` as the values they hold.
///
/// # Safety
/// Every value of `values` is initialised.
unsafe fn assume_init<V>(values: &mut [MaybeUninit<V>]) -> &mut [V] {
    // SAFETY: `MaybeUninit<V>` has the layout of `V`, and the caller
    // initialised every value.
    unsafe { &mut *(values as *mut [MaybeUninit<V>] as *mut [V]) }
}

/// `values` seen as possibly uninitialised, for a function that writes
/// them.
///
/// # Safety
/// Nothing writes an uninitialised value through the result (the
/// functions here only write `MaybeUninit::new(v)`).
unsafe fn as_uninit<V>(values: &mut [V]) -> &mut [MaybeUninit<V>] {
    // SAFETY: same layout; the caller writes only initialised values, so
    // `values` stays initialised.
    unsafe { &mut *(values as *mut [V] as *mut [MaybeUninit<V>]) }
}

/// [`relu_max_pool`] of one plane for 2 × 2 windows side by side (the
/// usual pool), in one pass: the same winners and values as
/// [`Window::max_of_plane`] (taps in row-major order, the first maximum
/// wins, a NaN wins over any number) then the ReLU, four taps a window
/// read as two pairs of two rows.
fn relu_max_pool_2x2(
    pool: &Window,
    plane: &[f32],
    out: &mut [MaybeUninit<f32>],
    arg: &mut [MaybeUninit<u32>],
) {
    /// `(o, at)` takes `(v, vat)` when `v` wins: larger, or NaN.
    #[inline(always)]
    fn keep(o: &mut f32, at: &mut u32, v: f32, vat: u32) {
        if v > *o || v.is_nan() {
            (*o, *at) = (v, vat);
        }
    }
    let (w, ow) = (pool.input_size().1, pool.output_size().1);
    #[cfg(target_arch = "x86_64")]
    let simd = std::is_x86_feature_detected!("avx2");
    let rows = out.chunks_exact_mut(ow).zip(arg.chunks_exact_mut(ow));
    for (oy, (out, arg)) in rows.enumerate() {
        let top = &plane[2 * oy * w..][..2 * ow];
        let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
        let first = (2 * oy * w) as u32;
        // With AVX2, eight windows at a time (rows of at least eight), or
        // else four with the 128-bit half (at least four), the last ones
        // of a row the last eight (four) windows: some windows computed
        // twice, the same values written again, and no scalar tail (the
        // first block's rows of 13 windows: 0..8 and 5..13; the second's
        // of 5: 0..4 and 1..5). Narrower rows one window at a time.
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if simd {
            while ow >= 8 && done < ow {
                let at = done.min(ow - 8);
                // SAFETY: AVX2 is present; `top` and `bottom` hold the 16
                // values from `2·at`, `out` and `arg` the 8 from `at`
                // (`at + 8 ≤ ow`).
                unsafe {
                    avx2::relu_max_pool_8(
                        top[2 * at..][..16].as_ptr(),
                        bottom[2 * at..][..16].as_ptr(),
                        first + 2 * at as u32,
                        w as u32,
                        out[at..][..8].as_mut_ptr().cast(),
                        arg[at..][..8].as_mut_ptr().cast(),
                    );
                }
                done = at + 8;
            }
            while ow >= 4 && done < ow {
                let at = done.min(ow - 4);
                // SAFETY: AVX2 is present; `top` and `bottom` hold the 8
                // values from `2·at`, `out` and `arg` the 4 from `at`
                // (`at + 4 ≤ ow`).
                unsafe {
                    avx2::relu_max_pool_4(
                        top[2 * at..][..8].as_ptr(),
                        bottom[2 * at..][..8].as_ptr(),
                        first + 2 * at as u32,
                        w as u32,
                        out[at..][..4].as_mut_ptr().cast(),
                        arg[at..][..4].as_mut_ptr().cast(),
                    );
                }
                done = at + 4;
            }
        }
        let first = first + 2 * done as u32;
        let cells = out[done..]
            .iter_mut()
            .zip(arg[done..].iter_mut())
            .zip(top[2 * done..].chunks_exact(2))
            .zip(bottom[2 * done..].chunks_exact(2));
        for (ox, (((o, a), t), b)) in cells.enumerate() {
            let at = first + 2 * ox as u32;
            let (mut m, mut m_at) = (t[0], at);
            keep(&mut m, &mut m_at, t[1], at + 1);
            keep(&mut m, &mut m_at, b[0], at + w as u32);
            keep(&mut m, &mut m_at, b[1], at + w as u32 + 1);
            a.write(if m > 0.0 { m_at } else { MASKED });
            o.write(m.max(0.0));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::MASKED;
    use std::arch::x86_64::*;

    /// Eight 2 × 2 windows side by side of [`relu_max_pool_2x2`](super::relu_max_pool_2x2):
    /// their taps from `top` and `bottom` (16 values each, two a window),
    /// the first window's top-left tap at offset `at` of the plane, rows
    /// `w` apart. The same comparisons in the same order as the scalar
    /// loop, eight lanes at once.
    ///
    /// # Safety
    /// AVX2 is present; `top` and `bottom` point at 16 values, `out` and
    /// `arg` at 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn relu_max_pool_8(
        top: *const f32,
        bottom: *const f32,
        at: u32,
        w: u32,
        out: *mut f32,
        arg: *mut u32,
    ) {
        /// The even and the odd values of 16 (the left and the right taps
        /// of eight windows), each in order.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn split(p: *const f32) -> (__m256, __m256) {
            // SAFETY: `p` points at 16 values (the caller's contract).
            unsafe {
                let (lo, hi) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                // [l0 l2 h0 h2 | l4 l6 h4 h6] → [l0 l2 l4 l6 h0 h2 h4 h6]
                let order = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
                };
                (
                    order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)),
                    order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)),
                )
            }
        }
        /// `(m, m_at)` takes `(v, v_at)` in the lanes where `v` wins:
        /// larger, or NaN.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn keep(m: &mut __m256, m_at: &mut __m256i, v: __m256, v_at: __m256i) {
            let win = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, *m),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
            );
            *m = _mm256_blendv_ps(*m, v, win);
            *m_at = _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(*m_at),
                _mm256_castsi256_ps(v_at),
                win,
            ));
        }
        // SAFETY: the pointers as documented.
        unsafe {
            let (t0, t1) = split(top);
            let (b0, b1) = split(bottom);
            let lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
            let at0 = _mm256_add_epi32(_mm256_set1_epi32(at as i32), lanes);
            let (one, down) = (_mm256_set1_epi32(1), _mm256_set1_epi32(w as i32));
            let (mut m, mut m_at) = (t0, at0);
            keep(&mut m, &mut m_at, t1, _mm256_add_epi32(at0, one));
            let at_b = _mm256_add_epi32(at0, down);
            keep(&mut m, &mut m_at, b0, at_b);
            keep(&mut m, &mut m_at, b1, _mm256_add_epi32(at_b, one));
            let zero = _mm256_setzero_ps();
            let pass = _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero);
            let a = _mm256_blendv_ps(
                _mm256_castsi256_ps(_mm256_set1_epi32(MASKED as i32)),
                _mm256_castsi256_ps(m_at),
                pass,
            );
            _mm256_storeu_si256(arg as *mut __m256i, _mm256_castps_si256(a));
            // max(m, 0): 0 for NaN (the second operand), as f32::max
            _mm256_storeu_ps(out, _mm256_max_ps(m, zero));
        }
    }

    /// Four 2 × 2 windows side by side, as [`relu_max_pool_8`] with 128-bit
    /// lanes: the same comparisons in the same order as the scalar loop.
    ///
    /// # Safety
    /// AVX2 is present; `top` and `bottom` point at 8 values, `out` and
    /// `arg` at 4.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn relu_max_pool_4(
        top: *const f32,
        bottom: *const f32,
        at: u32,
        w: u32,
        out: *mut f32,
        arg: *mut u32,
    ) {
        /// The even and the odd values of 8 (the left and the right taps
        /// of four windows), each in order.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn split(p: *const f32) -> (__m128, __m128) {
            // SAFETY: `p` points at 8 values (the caller's contract).
            unsafe {
                let (lo, hi) = (_mm_loadu_ps(p), _mm_loadu_ps(p.add(4)));
                (
                    _mm_shuffle_ps::<0b10_00_10_00>(lo, hi),
                    _mm_shuffle_ps::<0b11_01_11_01>(lo, hi),
                )
            }
        }
        /// `(m, m_at)` takes `(v, v_at)` in the lanes where `v` wins:
        /// larger, or NaN.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn keep(m: &mut __m128, m_at: &mut __m128i, v: __m128, v_at: __m128i) {
            let win = _mm_or_ps(_mm_cmpgt_ps(v, *m), _mm_cmpunord_ps(v, v));
            *m = _mm_blendv_ps(*m, v, win);
            *m_at = _mm_castps_si128(_mm_blendv_ps(
                _mm_castsi128_ps(*m_at),
                _mm_castsi128_ps(v_at),
                win,
            ));
        }
        // SAFETY: the pointers as documented.
        unsafe {
            let (t0, t1) = split(top);
            let (b0, b1) = split(bottom);
            let lanes = _mm_setr_epi32(0, 2, 4, 6);
            let at0 = _mm_add_epi32(_mm_set1_epi32(at as i32), lanes);
            let (one, down) = (_mm_set1_epi32(1), _mm_set1_epi32(w as i32));
            let (mut m, mut m_at) = (t0, at0);
            keep(&mut m, &mut m_at, t1, _mm_add_epi32(at0, one));
            let at_b = _mm_add_epi32(at0, down);
            keep(&mut m, &mut m_at, b0, at_b);
            keep(&mut m, &mut m_at, b1, _mm_add_epi32(at_b, one));
            let zero = _mm_setzero_ps();
            let pass = _mm_cmpgt_ps(m, zero);
            let a = _mm_blendv_ps(
                _mm_castsi128_ps(_mm_set1_epi32(MASKED as i32)),
                _mm_castsi128_ps(m_at),
                pass,
            );
            _mm_storeu_si128(arg as *mut __m128i, _mm_castps_si128(a));
            // max(m, 0): 0 for NaN (the second operand), as f32::max
            _mm_storeu_ps(out, _mm_max_ps(m, zero));
        }
    }
}

/// `gb[o] += Σ_i g[o·ld + i]` for every row `o` of `g` (`ld` values each),
/// each row summed in index order from `-0.0` as `iter().sum()` does (the
/// same bits), eight rows at a time: eight independent chains of additions
/// instead of one, which a row at a time waits on (the latency of each
/// addition: 10 % of the CNN's step when it was `iter().sum()`).
fn add_row_sums(gb: &mut [f32], g: &[f32], ld: usize) {
    /// The sums of `R` rows from `g`, side by side.
    #[inline(always)]
    fn sums<const R: usize>(g: &[f32], ld: usize) -> [f32; R] {
        let rows: [&[f32]; R] = std::array::from_fn(|j| &g[j * ld..][..ld]);
        let mut acc = [-0.0f32; R];
        for i in 0..ld {
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a += row[i];
            }
        }
        acc
    }
    let mut gb = gb.chunks_exact_mut(8);
    let mut g = g.chunks_exact(8 * ld);
    for (gb, g) in (&mut gb).zip(&mut g) {
        for (b, s) in gb.iter_mut().zip(sums::<8>(g, ld)) {
            *b += s;
        }
    }
    for (o, b) in gb.into_remainder().iter_mut().enumerate() {
        *b += sums::<1>(&g.remainder()[o * ld..], ld)[0];
    }
}

/// In [`conv2d_relu_max_pool2d_cpu`]'s winners: a window whose maximum is
/// not positive, which the ReLU zeroes (no gradient flows through it).
const MASKED: u32 = u32::MAX;

/// Max pooling then ReLU of the `O` planes of one image's convolution `y`
/// (`O × L`): each window's maximum, `max(v, 0)`, and in `arg` the offset
/// in its plane of the window's first maximum ([`Window::max_of_plane`]),
/// or [`MASKED`] where the ReLU's derivative is 0 (the maximum is not
/// positive: dfdx's `relu` passes the gradient only for `v > 0`). Every
/// value of `out` and `arg` is written.
fn relu_max_pool(
    pool: &Window,
    y: &[f32],
    out: &mut [MaybeUninit<f32>],
    arg: &mut [MaybeUninit<u32>],
) {
    let (len, plen) = (pool.in_len(), pool.out_len());
    if (pool.kernel(), pool.stride()) == (2, 2) {
        let planes = y
            .chunks_exact(len)
            .zip(out.chunks_exact_mut(plen))
            .zip(arg.chunks_exact_mut(plen));
        for ((plane, out), arg) in planes {
            relu_max_pool_2x2(pool, plane, out, arg);
        }
        return;
    }
    out.fill(MaybeUninit::new(0.0));
    arg.fill(MaybeUninit::new(0));
    // SAFETY: every value of `out` and `arg` was just written.
    let (out, arg) = unsafe { (assume_init(out), assume_init(arg)) };
    let planes = y
        .chunks_exact(len)
        .zip(out.chunks_exact_mut(plen))
        .zip(arg.chunks_exact_mut(plen));
    for ((plane, out), arg) in planes {
        pool.max_of_plane(plane, out, arg);
        for (o, a) in out.iter_mut().zip(arg.iter_mut()) {
            // not positive, or NaN: no gradient
            if (*o).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                *a = MASKED;
            }
            *o = o.max(0.0);
        }
    }
}

/// `conv2d(x, weight) + bias` on the CPU, on `x`'s tape, with a backward for
/// `weight`, `bias` and — with `input_grad` — `x` (see the [module
/// docs](self)). Without `input_grad`, `x` gets no gradient at all: no
/// `∂cols = Wᵀ·g` product, no col2im, no buffer (what
/// [`InputConv2D`](crate::nets::InputConv2D) wants for a network's input
/// images, which nothing reads the gradient of).
pub(crate) fn conv2d_cpu<
    B: Dim,
    const C: usize,
    H: Dim,
    W: Dim,
    const O: usize,
    const K: usize,
    T: Tape<f32, Cpu>,
>(
    x: Tensor<(B, Const<C>, H, W), f32, Cpu, T>,
    weight: &Tensor<Rank4<O, C, K, K>, f32, Cpu>,
    bias: &Tensor<Rank1<O>, f32, Cpu>,
    window: &Window,
    input_grad: bool,
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Cpu, T>, CpuError> {
    conv2d_pooled_cpu(x, weight, bias, window, None, input_grad, true)
}

/// `max_pool2d(relu(conv2d(x, weight) + bias))` on the CPU as one op (the
/// body of [`ConvReLUPool`](crate::nets::ConvReLUPool)): each image's
/// convolution is computed as by [`conv2d_cpu`] into a buffer that stays in
/// cache, and only its pooled, rectified values are written out, with each
/// window's winner (or [`MASKED`]). The backward spreads the upstream
/// gradient onto those winners image by image, again in cache, and runs
/// the convolution's backward on it. The full-size convolution output and
/// its gradient never exist, nor the ReLU's two tensors on the tape; the
/// values and gradients are those of `conv2d_cpu`, `max_pool2d_cpu` and
/// dfdx's `relu` in a row, bit for bit.
pub(crate) fn conv2d_relu_max_pool2d_cpu<
    B: Dim,
    const C: usize,
    H: Dim,
    W: Dim,
    const O: usize,
    const K: usize,
    T: Tape<f32, Cpu>,
>(
    x: Tensor<(B, Const<C>, H, W), f32, Cpu, T>,
    weight: &Tensor<Rank4<O, C, K, K>, f32, Cpu>,
    bias: &Tensor<Rank1<O>, f32, Cpu>,
    window: &Window,
    pool: &Window,
    input_grad: bool,
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Cpu, T>, CpuError> {
    conv2d_pooled_cpu(x, weight, bias, window, Some(pool), input_grad, true)
}

/// Backwards run from the pool's winners (the tests check that they ran).
#[cfg(test)]
static WINNERS_BACKWARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One group's forward work: its index, its output values, its pooling
/// winners (with a pool) and its kept columns (when kept).
type ForwardTask<'a> = (
    usize,
    &'a mut [MaybeUninit<f32>],
    Option<&'a mut [MaybeUninit<u32>]>,
    Option<&'a mut [f32]>,
);

/// [`conv2d_cpu`], followed with `pool` by ReLU and max pooling in the same
/// op ([`conv2d_relu_max_pool2d_cpu`]). With `from_winners` and a pool whose
/// windows do not overlap, the backward runs on the pool's winners only
/// ([`pooled_backward`]); without, the dense way (the tests compare both).
fn conv2d_pooled_cpu<
    B: Dim,
    const C: usize,
    H: Dim,
    W: Dim,
    const O: usize,
    const K: usize,
    T: Tape<f32, Cpu>,
>(
    x: Tensor<(B, Const<C>, H, W), f32, Cpu, T>,
    weight: &Tensor<Rank4<O, C, K, K>, f32, Cpu>,
    bias: &Tensor<Rank1<O>, f32, Cpu>,
    window: &Window,
    pool: Option<&Window>,
    input_grad: bool,
    from_winners: bool,
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let batch = x.shape().0;
    let geo = Geometry {
        window: *window,
        channels: C,
        out_channels: O,
    };
    let (taps, len, image, out_image) = (
        geo.taps(),
        window.out_len(),
        geo.image_len(),
        geo.out_image_len(),
    );
    let pool = pool.copied();
    // the backward from the winners (which needs no columns kept; its
    // terms name a group's pixels with a u32)
    let from_winners = from_winners
        && pool.is_some_and(|p| p.stride() >= p.kernel())
        && GROUP * window.out_len() < u32::MAX as usize;
    if let Some(p) = pool {
        assert_eq!(
            p.input_size(),
            window.output_size(),
            "pool for another size"
        );
        assert_eq!(p.padding(), 0, "pools have no padding");
    }
    // the op's output: the convolution's, or its pooled planes
    let ((oh, ow), plen) = match pool {
        Some(p) => (p.output_size(), p.out_len()),
        None => (window.output_size(), len),
    };
    let final_image = O * plen;
    let n = batch.size();
    let xs = Scratch::copy_of(&x);
    let ws = Scratch::copy_of(weight);
    let bs = Scratch::copy_of(bias);
    // every group's columns, kept for the backward when they fit; group `t`
    // at `t·GROUP·taps·L`, `taps × (images·L)`
    let mut kept =
        (T::OWNS_TAPE && !from_winners && taps * len > 0 && n * taps * len <= COLUMN_BUDGET)
            .then(|| Scratch::with_len(n * taps * len, 0));
    // every value is written once below (no zeros first): the bias, or a
    // product plus the bias, or a window's rectified maximum
    let mut out: Vec<f32> = Vec::with_capacity(n * final_image);
    // with a pool, each output value's winner in its plane (or MASKED)
    let mut arg: Vec<u32> = Vec::with_capacity(if pool.is_some() { n * final_image } else { 0 });
    // Images side by side (the weight packed once for the batch, see the
    // module docs) when the weight is the larger operand; one at a time
    // otherwise, each product packing it (conv 1→32 on 28 × 28: 9 taps
    // against 676 pixels an image).
    let per = if taps > len { GROUP } else { 1 };
    // `images` consecutive images from `b0`: their columns side by side
    // (`taps × (images·L)`), then each image's `W·cols` plus the bias into
    // its output
    let packed_weight =
        (per > 1 && out_image > 0).then(|| PackedA::new(Operand::plain(&ws, taps), O, taps));
    // (`keep`: the columns must be left in `cols` for the backward;
    // otherwise images side by side are packed straight from their rows,
    // never written out)
    // (`initialised`: `out` already holds values, which a product with
    // β = 0 may write over without zeros first)
    let forward_images = |b0: usize,
                          out: &mut [MaybeUninit<f32>],
                          initialised: bool,
                          cols: &mut [f32],
                          keep: bool| {
        let images = out.len() / out_image;
        let ld = images * len;
        let direct = images > 1 && !keep;
        if !direct {
            im2col(&xs, &geo, b0, images, cols);
        }
        if images == 1 {
            for (row, &bo) in out.chunks_exact_mut(len).zip(bs.iter()) {
                row.fill(MaybeUninit::new(bo));
            }
            // SAFETY: every value of `out` was just written.
            let out = unsafe { assume_init(out) };
            // out = W·cols + bias, O × L
            gemm(
                O,
                len,
                taps,
                1.0,
                Operand::plain(&ws, taps),
                Operand::plain(cols, len),
                1.0,
                out,
                len,
            );
            return;
        }
        // the weight packed once for the batch; each image's own product
        // straight into its output, then the bias added
        let wp = packed_weight.as_ref().expect("packed when side by side");
        for (i, out) in out.chunks_exact_mut(out_image).enumerate() {
            if !initialised {
                out.fill(MaybeUninit::new(0.0));
            }
            // SAFETY: every value of `out` was initialised by the caller
            // or just written.
            let out = unsafe { assume_init(out) };
            let cols = if direct {
                let x = &xs[(b0 + i) * image..][..image];
                PackedB::from_rows(taps, len, |r, row| im2col_row(x, &geo, r, row))
            } else {
                PackedB::new(Operand::plain(&cols[i * len..], ld), taps, len)
            };
            // out = W·cols_i, O × L
            gemm_packed(1.0, wp, 0..O, &cols, 0..len, 0.0, out, len);
            for (row, &bo) in out.chunks_exact_mut(len).zip(bs.iter()) {
                for v in row {
                    *v += bo;
                }
            }
        }
    };
    let forward = |(t, out, arg, kept): ForwardTask| {
        let mut own = None;
        let keep = kept.is_some();
        let cols = kept.unwrap_or_else(|| own.insert(Scratch::with_len(taps * len * GROUP, 0)));
        let (Some(pool), Some(arg)) = (pool, arg) else {
            for (p, (out, cols)) in out
                .chunks_mut(out_image * per)
                .zip(cols.chunks_mut(taps * len * per))
                .enumerate()
            {
                forward_images(t * GROUP + p * per, out, false, cols, keep);
            }
            return;
        };
        // the convolution of `per` images in cache, then only their
        // pooled, rectified values written out
        let mut y = Scratch::with_len(out_image * per, 0);
        let parts = out
            .chunks_mut(final_image * per)
            .zip(arg.chunks_mut(final_image * per))
            .zip(cols.chunks_mut(taps * len * per));
        for (p, ((out, arg), cols)) in parts.enumerate() {
            let y = &mut y[..out.len() / final_image * out_image];
            // (`y` is initialised: the side by side products need no
            // zeros first)
            forward_images(
                t * GROUP + p * per,
                // SAFETY: `forward_images` writes only initialised values.
                unsafe { as_uninit(y) },
                true,
                cols,
                keep,
            );
            relu_max_pool(&pool, y, out, arg);
        }
    };
    if final_image > 0 && n > 0 {
        let groups = n.div_ceil(GROUP);
        let outs = out.spare_capacity_mut()[..n * final_image].chunks_mut(final_image * GROUP);
        let args: Vec<Option<&mut [MaybeUninit<u32>]>> = if pool.is_some() {
            arg.spare_capacity_mut()[..n * final_image]
                .chunks_mut(final_image * GROUP)
                .map(Some)
                .collect()
        } else {
            (0..groups).map(|_| None).collect()
        };
        let kepts: Vec<Option<&mut [f32]>> = match kept.as_mut() {
            Some(k) => k.chunks_mut(taps * len * GROUP).map(Some).collect(),
            None => (0..groups).map(|_| None).collect(),
        };
        let tasks: Vec<ForwardTask> = outs
            .zip(args)
            .zip(kepts)
            .enumerate()
            .map(|(t, ((o, a), k))| (t, o, a, k))
            .collect();
        tasks.into_par_iter().for_each(forward);
    }
    // SAFETY: the tasks above wrote all `n` images' output values, and
    // with a pool their winners (with no values there are none).
    unsafe {
        out.set_len(n * final_image);
        if pool.is_some() {
            arg.set_len(n * final_image);
        }
    }
    let out = dev.try_tensor_from_vec(out, (batch, Const::<O>, oh, ow))?;
    if T::OWNS_TAPE {
        let (w, b, out_ghost) = (weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            with_upstream(grads, &out_ghost, |grads, g| {
                let mut gx = if input_grad {
                    Some(&mut grads.get_or_alloc_mut(&x)?[..])
                } else {
                    None
                };
                // the winners' backward needs finite inputs and weights
                // (the dense one's 0·∞ is NaN); it follows the GEMM's kernel
                let finite = |v: &[f32]| v.iter().fold(true, |ok, v| ok & v.is_finite());
                let sparse = from_winners && finite(&xs) && finite(&ws);
                let simd = Kernel::detect().simd();
                let packed_weight_t = (per > 1 && input_grad && !sparse)
                    .then(|| PackedA::new(Operand::transposed(&ws, taps), taps, O));
                // `images` consecutive images from `b0`, the gradients of
                // their convolutions side by side (`gg`, O × (images·L);
                // without a pool and for one image the upstream gradient
                // itself): ∂W += gg·colsᵀ, ∂bias += gg·1, and with `gx`
                // (their `∂x`) ∂cols = Wᵀ·gg and col2im into it
                let backward_images = |b0: usize,
                                       images: usize,
                                       gx: Option<&mut [f32]>,
                                       gw: &mut [f32],
                                       gb: &mut [f32]| {
                    if let (true, Some(pool)) = (sparse, pool.as_ref()) {
                        #[cfg(test)]
                        WINNERS_BACKWARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let wins = Winners::new(g, &arg, pool, O, b0, images, gx.is_some());
                        wins.add_bias_grads(gb);
                        let mut patches = Scratch::with_len(images * len * taps, 0);
                        wins.patches(&xs, &geo, b0, &mut patches);
                        wins.add_weight_grads(&patches, taps, gw, simd);
                        if let Some(gx) = gx {
                            let mut v = Scratch::with_len(taps, 0);
                            for (i, gx) in gx.chunks_exact_mut(image).enumerate() {
                                wins.add_input_grads(&ws, &geo, i, gx, &mut v, simd);
                            }
                        }
                        return;
                    }
                    let ld = images * len;
                    let mut copied = None;
                    let gg: &[f32] = match pool {
                        None if images == 1 => &g[b0 * out_image..][..out_image],
                        None => {
                            let gg = copied.insert(Scratch::with_len(O * ld, 0));
                            for i in 0..images {
                                let gi = &g[(b0 + i) * out_image..][..out_image];
                                for (o, row) in gi.chunks_exact(len).enumerate() {
                                    gg[o * ld + i * len..][..len].copy_from_slice(row);
                                }
                            }
                            gg
                        }
                        Some(_) => {
                            // each pooled value's gradient onto its winner
                            // (max_pool2d's backward, on zeros), none where
                            // the ReLU cut it
                            let gg = copied.insert(Scratch::with_len(O * ld, 0));
                            gg.fill(0.0);
                            for i in 0..images {
                                let at = (b0 + i) * final_image;
                                let (gi, ai) = (&g[at..][..final_image], &arg[at..][..final_image]);
                                let planes = gi.chunks_exact(plen).zip(ai.chunks_exact(plen));
                                for (o, (gp, ap)) in planes.enumerate() {
                                    let dst = &mut gg[o * ld + i * len..][..len];
                                    for (&v, &a) in gp.iter().zip(ap) {
                                        if a != MASKED {
                                            dst[a as usize] += v;
                                        }
                                    }
                                }
                            }
                            gg
                        }
                    };
                    let mut own = None;
                    let cols: &[f32] = match kept.as_ref() {
                        Some(k) => &k[b0 * taps * len..][..taps * ld],
                        None => {
                            let cols = own.insert(Scratch::with_len(taps * ld, 0));
                            im2col(&xs, &geo, b0, images, cols);
                            cols
                        }
                    };
                    gemm(
                        O,
                        taps,
                        ld,
                        1.0,
                        Operand::plain(gg, ld),
                        Operand::transposed(cols, ld),
                        1.0,
                        gw,
                        taps,
                    );
                    add_row_sums(gb, gg, ld);
                    let Some(gx) = gx else {
                        return;
                    };
                    let mut dcols = Scratch::with_len(taps * len, 0);
                    if images == 1 {
                        // ∂cols = Wᵀ·g, taps × L
                        gemm(
                            taps,
                            len,
                            O,
                            1.0,
                            Operand::transposed(&ws, taps),
                            Operand::plain(gg, len),
                            0.0,
                            &mut dcols,
                            len,
                        );
                        col2im(&dcols, &geo, gx, len);
                        return;
                    }
                    // side by side: each image's ∂cols from its own
                    // gradient and the weight packed once, col2im while
                    // they are in cache
                    let wt = packed_weight_t.as_ref().expect("packed when side by side");
                    for (i, gx) in gx.chunks_exact_mut(image).enumerate() {
                        let gi = PackedB::new(Operand::plain(&gg[i * len..], ld), O, len);
                        gemm_packed(1.0, wt, 0..taps, &gi, 0..len, 0.0, &mut dcols, len);
                        col2im(&dcols, &geo, gx, len);
                    }
                };
                // one task: group `t` (GROUP images, `per` at a time, and
                // their ∂x), its ∂W and ∂bias summed in order
                let backward = |(t, mut gx): (usize, Option<&mut [f32]>)| {
                    let (mut gw, mut gb) = (vec![0.0f32; O * taps], vec![0.0f32; O]);
                    let in_group = GROUP.min(n - t * GROUP);
                    for p in (0..in_group).step_by(per) {
                        let images = per.min(in_group - p);
                        let gx = gx
                            .as_deref_mut()
                            .map(|gx| &mut gx[p * image..][..images * image]);
                        backward_images(t * GROUP + p, images, gx, &mut gw, &mut gb);
                    }
                    (gw, gb)
                };
                // Fixed groups of images, then the groups' sums in order:
                // the same sums whatever the threads do (a training run is
                // reproducible for a seed).
                let parts: Vec<(Vec<f32>, Vec<f32>)> = if image == 0 || len == 0 {
                    Vec::new()
                } else if let Some(gx) = gx.as_mut() {
                    gx.par_chunks_mut(image * GROUP)
                        .map(Some)
                        .enumerate()
                        .map(backward)
                        .collect()
                } else {
                    (0..n.div_ceil(GROUP))
                        .into_par_iter()
                        .map(|t| backward((t, None)))
                        .collect()
                };
                let (mut gw, mut gb) = (vec![0.0f32; O * taps], vec![0.0f32; O]);
                for (pw, pb) in parts {
                    gw.iter_mut().zip(pw).for_each(|(x, y)| *x += y);
                    gb.iter_mut().zip(pb).for_each(|(x, y)| *x += y);
                }
                for (acc, v) in grads.get_or_alloc_mut(&w)?.iter_mut().zip(gw) {
                    *acc += v;
                }
                for (acc, v) in grads.get_or_alloc_mut(&b)?.iter_mut().zip(gb) {
                    *acc += v;
                }
                Ok(())
            })
        });
    }
    Ok(out.put_tape(tape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same gradients, bit for bit, on 1 thread and on 3: the sums do
    /// not depend on how rayon schedules the images.
    #[test]
    fn backward_is_the_same_on_any_number_of_threads() {
        fn same<const C: usize, const H: usize, const W: usize>(padding: usize) {
            let dev = Cpu::seed_from_u64(6);
            let x: Tensor<Rank4<37, C, H, W>, f32, _> = dev.sample_normal();
            let w: Tensor<Rank4<8, C, 3, 3>, f32, _> = dev.sample_normal();
            let b: Tensor<Rank1<8>, f32, _> = dev.sample_normal();
            let win = Window::try_new("Conv2D", 3, 1, padding, H, W).unwrap();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let y = conv2d_cpu(x.leaky_trace(), &w, &b, &win, true).unwrap();
                    let g = y.sin().sum().backward();
                    [g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec()]
                })
            };
            assert_eq!(run(1), run(3));
        }
        // one image a product (36 taps, 120 pixels), and images side by
        // side (144 taps, 16 pixels)
        same::<4, 12, 10>(1);
        same::<16, 6, 6>(0);
    }

    /// The backward from the pool's winners gives the dense backward's
    /// gradients bit for bit (`∂x`, `∂W`, `∂bias`): conv1-like (1 channel,
    /// 9 taps) and conv2-like (32 channels, 288 taps) shapes, odd planes
    /// (a row and a column no window reads), padding 0 and 1, 2 × 2, 3 × 3
    /// and 2 × 2 / 3 pools, batches around [`GROUP`], 1 and 2 threads and the
    /// portable kernel; values that are normal, quantised (ties in windows,
    /// windows all ≤ 0, zero gradients of both signs), tiny (products that
    /// underflow, where only the sign of a zero can differ and is
    /// corrected), or not finite (the dense path then).
    #[test]
    fn winners_backward_is_the_dense_one_bit_for_bit() {
        #[allow(clippy::too_many_arguments)]
        fn case<const C: usize, const O: usize>(
            n: usize,
            hw: usize,
            padding: usize,
            (pk, ps): (usize, usize),
            kind: usize,
            threads: usize,
            portable: bool,
        ) {
            let dev = Cpu::seed_from_u64((n * 131 + hw * 17 + padding * 7 + kind) as u64);
            let win = Window::try_new("Conv2D", 3, 1, padding, hw, hw).unwrap();
            let (ch, cw) = win.output_size();
            let pool = Window::try_new("MaxPool2D", pk, ps, 0, ch, cw).unwrap();
            let (ph, pw) = pool.output_size();
            let normal = |len: usize| -> Vec<f32> {
                let t: Tensor<(usize,), f32, _> = dev.sample_normal_like(&(len,));
                t.as_vec()
            };
            let (mut xv, mut wv, mut bv, mut rv) = (
                normal(n * C * hw * hw),
                normal(O * C * 9),
                normal(O),
                normal(n * O * ph * pw),
            );
            let scale =
                |v: &mut Vec<f32>, f: &dyn Fn(f32) -> f32| v.iter_mut().for_each(|x| *x = f(*x));
            match kind {
                0 => {}
                1 => {
                    scale(&mut xv, &|x| (2.0 * x).round() / 2.0);
                    scale(&mut wv, &|x| (2.0 * x).round() / 4.0);
                    scale(&mut bv, &|x| x.round() - 0.5);
                    scale(&mut rv, &|x| (x * 1.5).round() / 2.0);
                }
                2 => {
                    scale(&mut xv, &|x| x * 1e-10);
                    scale(&mut wv, &|x| x * 1e-10);
                    scale(&mut bv, &|x| x * 1e-21);
                    scale(&mut rv, &|x| x * 1e-36);
                }
                _ => xv[5] = f32::INFINITY,
            }
            let x = dev.tensor_from_vec(xv, (n, Const::<C>, hw, hw));
            let w: Tensor<Rank4<O, C, 3, 3>, f32, _> = dev.tensor_from_vec(wv, Rank4::default());
            let b: Tensor<Rank1<O>, f32, _> = dev.tensor_from_vec(bv, Rank1::default());
            let r = dev.tensor_from_vec(rv, (n, Const::<O>, ph, pw));
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
            };
            let run = |from_winners: bool, threads: &rayon::ThreadPool| {
                let go = || {
                    let y = conv2d_pooled_cpu(
                        x.leaky_trace(),
                        &w,
                        &b,
                        &win,
                        Some(&pool),
                        true,
                        from_winners,
                    )
                    .unwrap();
                    let g = (y * r.clone()).sum().backward();
                    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    [
                        bits(g.get(&x).as_vec()),
                        bits(g.get(&w).as_vec()),
                        bits(g.get(&b).as_vec()),
                    ]
                };
                threads.install(|| {
                    if portable {
                        crate::fused::gemm::portable(go)
                    } else {
                        go()
                    }
                })
            };
            let before = WINNERS_BACKWARDS.load(std::sync::atomic::Ordering::Relaxed);
            let sparse = run(true, &on(threads));
            let taken = WINNERS_BACKWARDS.load(std::sync::atomic::Ordering::Relaxed) > before;
            assert_eq!(taken, kind < 3, "winners' backward taken");
            // the dense products on one thread: on more, the GEMM may cut
            // a long ∂W product along k (images·L > 2·taps: 13 × 13 with
            // padding 1), which sums its halves apart; the CNN's shapes
            // (the last cases) are compared on 2 threads too
            // (not finite: both the dense way, compared on the same threads)
            let mut dense_threads = vec![if kind < 3 { 1 } else { threads }];
            if n == 80 && kind < 3 {
                dense_threads.push(threads);
            }
            for dt in dense_threads {
                let dense = run(false, &on(dt));
                let what = format!(
                    "C={C} O={O} n={n} {hw}x{hw} p={padding} pool {pk}/{ps} kind {kind} \
                     threads {threads} (dense {dt}) portable {portable}"
                );
                for (name, (s, d)) in ["x", "W", "bias"].iter().zip(sparse.iter().zip(&dense)) {
                    let diff = s.iter().zip(d).position(|(a, b)| a != b);
                    assert!(diff.is_none(), "∂{name} differs at {diff:?}: {what}");
                }
            }
        }
        for kind in 0..4 {
            for threads in [1, 2] {
                let batches: &[usize] = if threads == 1 {
                    &[1, GROUP - 1, GROUP + 1]
                } else {
                    &[GROUP + 1]
                };
                for &n in batches {
                    for padding in [0, 1] {
                        case::<1, 8>(n, 28, padding, (2, 2), kind, threads, false);
                        case::<1, 8>(n, 11, padding, (2, 2), kind, threads, false);
                        case::<32, 16>(n, 13, padding, (2, 2), kind, threads, false);
                    }
                }
                case::<3, 8>(GROUP + 1, 12, 1, (3, 3), kind, threads, false);
                case::<3, 8>(GROUP + 1, 13, 0, (2, 3), kind, threads, false);
            }
            case::<32, 64>(80, 13, 0, (2, 2), kind, 2, false);
            case::<1, 32>(80, 28, 0, (2, 2), kind, 2, false);
            case::<32, 16>(GROUP + 1, 13, 0, (2, 2), kind, 1, true);
            case::<1, 8>(GROUP + 1, 11, 1, (2, 2), kind, 1, true);
        }
    }

    /// The 2 × 2 pass (8 and 4 windows at a time with AVX2, then one by
    /// one) gives the general pass's values and winners, bit for bit, on
    /// every row width from 1 to 21 windows: ties (the first wins), NaNs,
    /// zeros of both signs and negative windows (masked).
    #[test]
    fn two_by_two_pass_is_the_general_one() {
        let values = [
            1.0,
            -1.0,
            0.0,
            -0.0,
            2.0,
            2.0,
            f32::NAN,
            -3.0,
            0.5,
            1.0,
            -0.5,
        ];
        for ow in 1..=21 {
            let (h, w) = (6, 2 * ow + ow % 2);
            let plane: Vec<f32> = (0..h * w)
                .map(|i| values[(i * 7 + i / 3) % values.len()])
                .collect();
            let pool = Window::try_new("MaxPool2D", 2, 2, 0, h, w).unwrap();
            let n = pool.out_len();
            let (mut out, mut arg) = (vec![0.0; n], vec![0u32; n]);
            // SAFETY: `relu_max_pool_2x2` writes only initialised values.
            let (out_u, arg_u) = unsafe { (as_uninit(&mut out), as_uninit(&mut arg)) };
            relu_max_pool_2x2(&pool, &plane, out_u, arg_u);
            let (mut out_ref, mut arg_ref) = (vec![0.0; n], vec![0; n]);
            pool.max_of_plane(&plane, &mut out_ref, &mut arg_ref);
            for (o, a) in out_ref.iter_mut().zip(arg_ref.iter_mut()) {
                if (*o).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                    *a = MASKED;
                }
                *o = o.max(0.0);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&out_ref), "values, {ow} windows a row");
            assert_eq!(arg, arg_ref, "winners, {ow} windows a row");
        }
    }
}
