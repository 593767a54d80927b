//! The backward of a convolution followed by ReLU and a max pool whose
//! windows do not overlap (stride ≥ kernel: the usual 2 × 2 / 2), computed
//! from the pool's winners only.
//!
//! Such a pool passes each window's gradient to one position of the
//! convolution's output (its first maximum), none where the ReLU cut the
//! window: at most one position in four of each channel's plane has a
//! nonzero gradient. The dense backward spreads those onto zeros (`gg`,
//! `O × L` an image) and multiplies the whole of it (`∂W += gg·colsᵀ`,
//! `∂cols = Wᵀ·gg`), three quarters of its multiply-adds on zeros. Here:
//!
//! - `∂W[o] += g·patch(q)` over channel `o`'s winners `q` only, `patch(q)`
//!   being column `q` of the image's columns (the taps under output pixel
//!   `q`), built only for positions that won somewhere;
//! - `∂bias[o] +=` the sum of channel `o`'s winners' gradients;
//! - `∂x`: for each position `q` that won in some channel, `v = Σ_o g·W[o]`
//!   over those channels, added onto the pixels under `q` (col2im of one
//!   column).
//!
//! **The same bits as the dense backward.** With `α = 1` and `β ∈ {0, 1}`
//! the GEMM computes each entry of `C` as one chain of fused multiply-adds
//! (the portable kernel: multiplies then adds) over `k` in increasing order,
//! from `C` (`β = 1`) or `+0` (`β = 0`), across its blocks of `k`, when the
//! product is not cut along `k` for threads (the MNIST CNN's never are:
//! their `k` is at most twice `n`); `add_row_sums` adds each row in index
//! order. Here every chain runs over the same nonzero terms in the same
//! order (`∂W`: the group's images, then positions ascending — not the
//! pool's window order, in which a window's lower-row winner comes after
//! the next window's upper-row one; `∂cols`: channels ascending), and each
//! pixel of `∂x` receives its columns' values in col2im's order (taps
//! ascending, which is positions descending). A term skipped is `+0` times
//! a finite value, which leaves a sum unchanged except that it turns a `-0`
//! into `+0`; so the results can differ only in the sign of a zero, and
//! only where a chain of fused multiply-adds underflowed to `-0`:
//!
//! - `∂W` and `∂bias`: the groups' sums are added from `+0`, which makes
//!   either zero `+0` (nothing to do);
//! - `∂x`: a column value that is `-0` is computed again the dense way, and
//!   a pixel left at `-0` that the dense col2im would have given a `+0`
//!   from a position that won nowhere is made `+0`.
//!
//! Inputs or weights that are not finite (`0·∞` is NaN) take the dense path
//! instead (the caller checks).

use super::{Geometry, MASKED};
use crate::nets::Window;

/// Taps per pass of a chain: eight AVX2 registers of accumulators.
const BLOCK: usize = 64;

/// A `-0.0`'s bits.
const NEG_ZERO: u32 = 0x8000_0000;

/// One term of a chain: the row it multiplies (of the patches or of the
/// weight) and the gradient it multiplies it by.
#[derive(Clone, Copy, Debug)]
struct Term {
    row: u32,
    g: f32,
}

/// The winners of `images` consecutive images of a batch: by channel (for
/// `∂W` and `∂bias`) and by position (for `∂x`).
pub(super) struct Winners {
    images: usize,
    /// Output pixels per channel of the convolution.
    len: usize,
    /// Channel `o`'s winners over all the images, `terms[o]..terms[o + 1]`
    /// of `by_channel`, rows `i·L + q`, in image then position order.
    by_channel: Vec<Term>,
    channel_at: Vec<usize>,
    /// Position `q` of image `i`'s winners, `by_position[at[i·L + q]..at[i·L
    /// + q + 1]]`, rows the channels, in channel order.
    by_position: Vec<Term>,
    position_at: Vec<usize>,
}

impl Winners {
    /// The winners of images `b0..b0 + images` from the pooled upstream
    /// gradient `g` and the winners `arg` of the whole batch (`O` planes of
    /// `pool.out_len()` an image), each gradient as the dense backward's
    /// `gg` holds it (`0.0 + g`: a `-0` upstream is `+0` there).
    pub(super) fn new(
        g: &[f32],
        arg: &[u32],
        pool: &Window,
        out_channels: usize,
        b0: usize,
        images: usize,
        by_position: bool,
    ) -> Self {
        debug_assert!(pool.stride() >= pool.kernel(), "overlapping windows");
        let pw = pool.output_size().1;
        let (len, plen) = (pool.in_len(), pool.out_len());
        let cap = out_channels * images * plen;
        let mut by_channel: Vec<Term> = Vec::with_capacity(cap + 1);
        let spare = &mut by_channel.spare_capacity_mut()[..cap + 1];
        let mut n = 0;
        let mut channel_at = Vec::with_capacity(out_channels + 1);
        let mut lower = vec![Term { row: 0, g: 0.0 }; pw + 1];
        for o in 0..out_channels {
            channel_at.push(n);
            for i in 0..images {
                let at = ((b0 + i) * out_channels + o) * plen;
                let (gp, ap) = (&g[at..][..plen], &arg[at..][..plen]);
                let out = &mut spare[n..n + plen + 1];
                n += plane_winners(gp, ap, pool, (i * len) as u32, out, &mut lower);
            }
        }
        channel_at.push(n);
        // SAFETY: `n` only ever moved past a value just written at `n`, so
        // the first `n` are written (and `n ≤ cap`: one a window at most).
        unsafe { by_channel.set_len(n) };
        if !by_position {
            return Winners {
                images,
                len,
                by_channel,
                channel_at,
                by_position: Vec::new(),
                position_at: Vec::new(),
            };
        }
        // by position: a counting sort of the same terms, channels in order
        let mut position_at = vec![0usize; images * len + 1];
        for t in &by_channel {
            position_at[t.row as usize + 1] += 1;
        }
        for at in 1..position_at.len() {
            position_at[at] += position_at[at - 1];
        }
        let mut next = position_at.clone();
        let mut by_position = vec![Term { row: 0, g: 0.0 }; by_channel.len()];
        for o in 0..out_channels {
            for t in &by_channel[channel_at[o]..channel_at[o + 1]] {
                let at = &mut next[t.row as usize];
                by_position[*at] = Term {
                    row: o as u32,
                    g: t.g,
                };
                *at += 1;
            }
        }
        Winners {
            images,
            len,
            by_channel,
            channel_at,
            by_position,
            position_at,
        }
    }

    /// Channel `o`'s terms.
    fn channel(&self, o: usize) -> &[Term] {
        &self.by_channel[self.channel_at[o]..self.channel_at[o + 1]]
    }

    /// The terms of position `q` of image `i`.
    fn position(&self, i: usize, q: usize) -> &[Term] {
        let at = i * self.len + q;
        &self.by_position[self.position_at[at]..self.position_at[at + 1]]
    }

    /// `gb[o] +=` the sum of channel `o`'s winners' gradients: the dense
    /// row sum of `gg` over these images (its other terms are `+0`).
    pub(super) fn add_bias_grads(&self, gb: &mut [f32]) {
        for (o, b) in gb.iter_mut().enumerate() {
            // the dense sum starts from -0 and its first term (+0 or a
            // gradient, never -0) makes it +0 or that gradient
            let mut s = 0.0f32;
            for t in self.channel(o) {
                s += t.g;
            }
            *b += s;
        }
    }

    /// The columns of the positions that won somewhere, pixel-major: the
    /// `taps` values of column `q` of image `i` at `patches[(i·L + q)·taps..]`
    /// (the others are not written).
    pub(super) fn patches(&self, xs: &[f32], geo: &Geometry, b0: usize, patches: &mut [f32]) {
        let win = geo.window;
        let taps = geo.taps();
        let ow = win.output_size().1;
        let mut used = vec![false; self.images * self.len];
        for t in &self.by_channel {
            used[t.row as usize] = true;
        }
        for (i, used) in used.chunks_exact(self.len).enumerate() {
            let x = &xs[(b0 + i) * geo.image_len()..][..geo.image_len()];
            for q in (0..self.len).filter(|&q| used[q]) {
                let patch = &mut patches[(i * self.len + q) * taps..][..taps];
                patch_of(x, geo, q / ow, q % ow, patch);
            }
        }
    }

    /// `gw[o] += g·patch(q)` over channel `o`'s winners, each entry one
    /// chain over them in order, continuing from `gw`.
    pub(super) fn add_weight_grads(
        &self,
        patches: &[f32],
        taps: usize,
        gw: &mut [f32],
        simd: bool,
    ) {
        for kb in (0..taps).step_by(BLOCK) {
            let width = BLOCK.min(taps - kb);
            for (o, gw) in gw.chunks_exact_mut(taps).enumerate() {
                chain(
                    &mut gw[kb..kb + width],
                    &patches[kb..],
                    taps,
                    self.channel(o),
                    simd,
                );
            }
        }
    }

    /// `∂x` of image `i` (`gx`, one image): every position that won
    /// somewhere, from the last to the first, its column `v = Σ_o g·W[o]`
    /// (channels in order) added onto the pixels under it. `v` is scratch of
    /// `taps` values.
    pub(super) fn add_input_grads(
        &self,
        ws: &[f32],
        geo: &Geometry,
        i: usize,
        gx: &mut [f32],
        v: &mut [f32],
        simd: bool,
    ) {
        let win = geo.window;
        let taps = geo.taps();
        let ow = win.output_size().1;
        let v = &mut v[..taps];
        for q in (0..self.len).rev() {
            let terms = self.position(i, q);
            if terms.is_empty() {
                continue;
            }
            v.fill(0.0);
            chain(v, ws, taps, terms, simd);
            if simd && has_negative_zero(v) {
                // an underflow to -0: the dense chain's own sign
                for (r, v) in v.iter_mut().enumerate() {
                    if v.to_bits() == NEG_ZERO {
                        *v = dense_column_entry(ws, taps, r, terms);
                    }
                }
            }
            add_column(v, geo, q / ow, q % ow, gx);
        }
        if has_negative_zero(gx) {
            self.fix_input_zeros(geo, i, gx);
        }
    }

    /// The dense col2im also adds `+0` from every position that won
    /// nowhere, which turns a `-0` pixel into `+0`: the same here for the
    /// `-0` pixels under such a position.
    fn fix_input_zeros(&self, geo: &Geometry, i: usize, gx: &mut [f32]) {
        let win = geo.window;
        let (k, s, p) = (win.kernel(), win.stride(), win.padding());
        let (h, w) = win.input_size();
        let (oh, ow) = win.output_size();
        for (at, v) in gx.iter_mut().enumerate() {
            if v.to_bits() != NEG_ZERO {
                continue;
            }
            let (iy, ix) = ((at % (h * w)) / w, at % w);
            let lost = (0..k).any(|ky| {
                (0..k).any(|kx| {
                    let (y, x) = (iy + p, ix + p);
                    if y < ky || x < kx || (y - ky) % s != 0 || (x - kx) % s != 0 {
                        return false;
                    }
                    let (oy, ox) = ((y - ky) / s, (x - kx) / s);
                    oy < oh && ox < ow && self.position(i, oy * ow + ox).is_empty()
                })
            });
            if lost {
                *v = 0.0;
            }
        }
    }
}

/// The winners of one channel's plane (pooled gradients `gp`, winners
/// `ap`) in ascending position order, each term's row `base` + its
/// position, written from `out[0]` (which holds one value more than `gp`):
/// how many. `lower` is scratch of one value more than a pooled row.
///
/// Every window's term is written where the next winner goes, and the
/// count moves past it only for a winner: no branch on data (which windows
/// won, and in which row, is a coin toss a branch predictor loses).
fn plane_winners(
    gp: &[f32],
    ap: &[u32],
    pool: &Window,
    base: u32,
    out: &mut [std::mem::MaybeUninit<Term>],
    lower: &mut [Term],
) -> usize {
    let (k, s) = (pool.kernel(), pool.stride());
    let w = pool.input_size().1;
    let (ph, pw) = pool.output_size();
    assert!(gp.len() == ph * pw && ap.len() == gp.len());
    assert!(out.len() > gp.len() && lower.len() > pw);
    let mut n = 0;
    for (py, (gr, ar)) in gp.chunks_exact(pw).zip(ap.chunks_exact(pw)).enumerate() {
        // ascending positions: the windows' first row, then the winners
        // below it (each row in window order)
        let next_row = ((py * s + 1) * w) as u32;
        let mut nl = 0;
        for (&v, &a) in gr.iter().zip(ar) {
            let t = Term {
                row: base.wrapping_add(a),
                g: 0.0 + v,
            };
            let (won, upper) = (a != MASKED, a < next_row);
            // SAFETY: `n` counts winners of the windows before this one, so
            // it is below `gp.len() < out.len()`; `nl` those of this row,
            // below `pw < lower.len()` (asserted).
            unsafe {
                out.get_unchecked_mut(n).write(t);
                *lower.get_unchecked_mut(nl) = t;
            }
            n += usize::from(won & upper);
            nl += usize::from(won & !upper);
        }
        let lower = &mut lower[..nl];
        if k > 2 {
            // by row (one row per window: the second for 2 × 2)
            lower.sort_by_key(|t| (t.row - base) as usize / w);
        }
        for &t in lower.iter() {
            out[n].write(t);
            n += 1;
        }
    }
    n
}

/// Whether `values` hold a `-0`.
fn has_negative_zero(values: &[f32]) -> bool {
    values
        .iter()
        .fold(false, |any, v| any | (v.to_bits() == NEG_ZERO))
}

/// With a 3 × 3 kernel, where column `(oy, ox)`'s window lies wholly
/// inside the image (no padding under it): the plane offset of its top-left
/// pixel. `None` for any other kernel or a window over the padding. The
/// fast path of [`patch_of`] and of its adjoint [`add_column`].
fn interior_3x3(geo: &Geometry, oy: usize, ox: usize) -> Option<usize> {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (y0, x0) = (oy * s, ox * s);
    (k == 3 && y0 >= p && x0 >= p && y0 - p + k <= h && x0 - p + k <= w)
        .then(|| (y0 - p) * w + x0 - p)
}

/// Column `(oy, ox)` of one image's columns: `patch[(c, ky, kx)] = x[c, oy·s
/// + ky − p, ox·s + kx − p]`, 0 in the padding.
fn patch_of(x: &[f32], geo: &Geometry, oy: usize, ox: usize, patch: &mut [f32]) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    if let Some(at) = interior_3x3(geo, oy, ox) {
        // inside the image (every column but the border's with padding):
        // three pixels a row, fixed-size copies
        let planes = x.chunks_exact(h * w).take(geo.channels);
        for (plane, out) in planes.zip(patch.chunks_exact_mut(9)) {
            for (ky, out) in out.chunks_exact_mut(3).enumerate() {
                let v: [f32; 3] = plane[at + ky * w..][..3].try_into().expect("3 pixels");
                out.copy_from_slice(&v);
            }
        }
        return;
    }
    let mut taps = patch.chunks_exact_mut(k);
    for plane in x.chunks_exact(h * w).take(geo.channels) {
        for ky in 0..k {
            let out = taps.next().expect("C·K rows of K taps");
            let iy = (oy * s + ky).wrapping_sub(p);
            if iy >= h {
                out.fill(0.0);
                continue;
            }
            let row = &plane[iy * w..][..w];
            for (kx, o) in out.iter_mut().enumerate() {
                let ix = (ox * s + kx).wrapping_sub(p);
                *o = if ix < w { row[ix] } else { 0.0 };
            }
        }
    }
}

/// The adjoint of [`patch_of`]: adds column `(oy, ox)` onto the pixels it
/// was read from, taps in order (padding entries dropped).
fn add_column(v: &[f32], geo: &Geometry, oy: usize, ox: usize, gx: &mut [f32]) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    if let Some(at) = interior_3x3(geo, oy, ox) {
        // inside the image: three pixels a row
        let planes = gx.chunks_exact_mut(h * w).take(geo.channels);
        for (plane, v) in planes.zip(v.chunks_exact(9)) {
            for (ky, v) in v.chunks_exact(3).enumerate() {
                let row: &mut [f32; 3] = (&mut plane[at + ky * w..][..3])
                    .try_into()
                    .expect("3 pixels");
                for (d, &v) in row.iter_mut().zip(v) {
                    *d += v;
                }
            }
        }
        return;
    }
    let mut taps = v.chunks_exact(k);
    for plane in gx.chunks_exact_mut(h * w).take(geo.channels) {
        for ky in 0..k {
            let vals = taps.next().expect("C·K rows of K taps");
            let iy = (oy * s + ky).wrapping_sub(p);
            if iy >= h {
                continue;
            }
            let row = &mut plane[iy * w..][..w];
            for (kx, &val) in vals.iter().enumerate() {
                let ix = (ox * s + kx).wrapping_sub(p);
                if ix < w {
                    row[ix] += val;
                }
            }
        }
    }
}

/// `acc[j]` continued by the chain `acc[j] = g·rows[row·stride + j] +
/// acc[j]` over `terms` in order: fused multiply-adds with `simd` (AVX2 +
/// FMA present, as the GEMM's kernel), multiplies then adds otherwise — the
/// operations of the GEMM's two micro-kernels, entry by entry. With AVX2,
/// [`BLOCK`] entries a pass over the terms (a whole column of `∂x`, 288
/// entries for the MNIST CNN, in one call: the terms' last row found once).
fn chain(acc: &mut [f32], rows: &[f32], stride: usize, terms: &[Term], simd: bool) {
    let width = acc.len();
    let last = terms.iter().map(|t| t.row as usize).max();
    let Some(last) = last else {
        return;
    };
    assert!(
        width <= stride && last * stride + width <= rows.len(),
        "chain: rows do not hold the terms"
    );
    #[cfg(target_arch = "x86_64")]
    if simd {
        for kb in (0..width).step_by(BLOCK) {
            let width = BLOCK.min(width - kb);
            // SAFETY: `simd` is the GEMM kernel's choice, made only when
            // AVX2 and FMA are present; every row read (`row·stride + kb +
            // width` at most) is inside `rows` (asserted), `acc` holds `kb
            // + width` values.
            unsafe {
                let (a, r) = (acc.as_mut_ptr().add(kb), rows.as_ptr().add(kb));
                match width / 8 {
                    0 => avx2::chain::<0>(a, width, r, stride, terms),
                    1 => avx2::chain::<1>(a, width, r, stride, terms),
                    2 => avx2::chain::<2>(a, width, r, stride, terms),
                    3 => avx2::chain::<3>(a, width, r, stride, terms),
                    4 => avx2::chain::<4>(a, width, r, stride, terms),
                    5 => avx2::chain::<5>(a, width, r, stride, terms),
                    6 => avx2::chain::<6>(a, width, r, stride, terms),
                    7 => avx2::chain::<7>(a, width, r, stride, terms),
                    _ => avx2::chain::<8>(a, width, r, stride, terms),
                }
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    for t in terms {
        let row = &rows[t.row as usize * stride..][..width];
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += t.g * x;
        }
    }
}

/// Entry `r` of position `q`'s column of `∂cols = Wᵀ·gg` the dense way:
/// the chain of fused multiply-adds over every channel from `+0`, `gg`
/// being `+0` where `q` did not win (`terms`: where it did, in order).
fn dense_column_entry(ws: &[f32], taps: usize, r: usize, terms: &[Term]) -> f32 {
    let mut terms = terms.iter().peekable();
    let mut acc = 0.0f32;
    for (o, w) in ws.chunks_exact(taps).enumerate() {
        let g = match terms.peek() {
            Some(t) if t.row as usize == o => terms.next().map_or(0.0, |t| t.g),
            _ => 0.0,
        };
        acc = w[r].mul_add(g, acc);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Term;
    use std::arch::x86_64::*;

    /// [`super::chain`] on `width` values (`8·NV` of them in registers, the
    /// rest, fewer than 8, one by one): per term, one broadcast, then a fused
    /// multiply-add per register.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `acc` points at `width` values
    /// (`8·NV ≤ width < 8·NV + 8`), and `rows` at `row·stride + width`
    /// values for every term's row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chain<const NV: usize>(
        acc: *mut f32,
        width: usize,
        rows: *const f32,
        stride: usize,
        terms: &[Term],
    ) {
        // SAFETY (whole body): every access is inside what the caller
        // vouches for.
        unsafe {
            let mut a = [_mm256_setzero_ps(); NV];
            for (j, a) in a.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(acc.add(8 * j));
            }
            for t in terms {
                let g = _mm256_set1_ps(t.g);
                let row = rows.add(t.row as usize * stride);
                for (j, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(g, _mm256_loadu_ps(row.add(8 * j)), *a);
                }
            }
            for (j, a) in a.iter().enumerate() {
                _mm256_storeu_ps(acc.add(8 * j), *a);
            }
            for j in 8 * NV..width {
                let mut s = *acc.add(j);
                for t in terms {
                    s = t.g.mul_add(*rows.add(t.row as usize * stride + j), s);
                }
                *acc.add(j) = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Geometry, MASKED, col2im};
    use super::*;
    use crate::fused::gemm::{Kernel, Operand, gemm, portable};

    /// `∂x` from the winners against the dense `Wᵀ·gg` and col2im, bit for
    /// bit, where only the signs of zeros can differ: products that
    /// underflow (chains of fused multiply-adds ending at `-0` where the
    /// dense chain's zero terms make `+0`) onto a gradient that already
    /// holds `-0` (which the dense col2im's `+0` columns make `+0`), on
    /// both kernels, padding 0 and 1.
    #[test]
    fn input_grads_keep_the_dense_signs_of_zeros() {
        let check = |padding: usize| {
            let (c, o, hw) = (2, 3, 6);
            let conv = Window::try_new("Conv2D", 3, 1, padding, hw, hw).unwrap();
            let (ch, cw) = conv.output_size();
            let pool = Window::try_new("MaxPool2D", 2, 2, 0, ch, cw).unwrap();
            let geo = Geometry {
                window: conv,
                channels: c,
                out_channels: o,
            };
            let (taps, len, plen) = (geo.taps(), conv.out_len(), pool.out_len());
            let (pw, tiny) = (pool.output_size().1, 1e-30f32);
            // weights tiny and not, of both signs; gradients tiny, zeros
            // of both signs; winners anywhere in their windows, or none
            let ws: Vec<f32> = (0..o * taps)
                .map(|i| [tiny, -tiny, 1.0, -tiny, tiny, -1.0, tiny][i % 7])
                .collect();
            let mut g = Vec::new();
            let mut arg = Vec::new();
            for oc in 0..o {
                for j in 0..plen {
                    g.push([-tiny, tiny, 0.0, -0.0, -tiny][(j + 2 * oc) % 5]);
                    let (py, px) = (j / pw, j % pw);
                    let (dy, dx) = (((j + oc) / 2) % 2, (j * 3 + oc) % 2);
                    let at = (2 * py + dy) * cw + 2 * px + dx;
                    arg.push(if (j + oc) % 4 == 3 { MASKED } else { at as u32 });
                }
            }
            let simd = Kernel::detect().simd();
            let wins = Winners::new(&g, &arg, &pool, o, 0, 1, true);
            let mut got = vec![-0.0f32; geo.image_len()];
            let mut v = vec![0.0f32; taps];
            wins.add_input_grads(&ws, &geo, 0, &mut got, &mut v, simd);
            let mut gg = vec![0.0f32; o * len];
            for (at, (&gv, &a)) in g.iter().zip(&arg).enumerate() {
                if a != MASKED {
                    gg[at / plen * len + a as usize] += gv;
                }
            }
            let mut dcols = vec![0.0f32; taps * len];
            let wt = Operand::transposed(&ws, taps);
            gemm(
                taps,
                len,
                o,
                1.0,
                wt,
                Operand::plain(&gg, len),
                0.0,
                &mut dcols,
                len,
            );
            let mut want = vec![-0.0f32; geo.image_len()];
            col2im(&dcols, &geo, &mut want, len);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "padding {padding}, simd {simd}");
        };
        for padding in [0, 1] {
            check(padding);
            portable(|| check(padding));
        }
    }
}
