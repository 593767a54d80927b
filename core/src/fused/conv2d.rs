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
//! result does not depend on the scheduling (or the number of threads) and
//! a training run is reproducible.
//!
//! The columns are kept from the forward for `∂W` when the whole batch's fit
//! in [`COLUMN_BUDGET`] (and a tape records them); otherwise each image's
//! are built again in the backward, so memory stays bounded whatever the
//! batch and image size.

use super::gemm::{Operand, PackedA, PackedB, gemm, gemm_packed};
use super::{Scratch, with_upstream};
use crate::nets::Window;
use dfdx::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// At most this many column values (16 MiB) are kept from the forward for
/// the backward; beyond, each image's columns are built again.
const COLUMN_BUDGET: usize = 1 << 22;

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

/// One image's columns, `taps × L`, row `r` at `cols[r·ld..r·ld + L]`:
/// `cols[(c, ky, kx), (oy, ox)] = x[c, oy·s + ky − p, ox·s + kx − p]`,
/// 0 in the padding. (`ld > L` puts several images' columns side by side.)
fn im2col(x: &[f32], geo: &Geometry, cols: &mut [f32], ld: usize) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (oh, ow) = win.output_size();
    let len = win.out_len();
    for r in 0..geo.taps() {
        let row = &mut cols[r * ld..][..len];
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let (lo, hi, x0) = valid_columns(&win, kx);
        let plane = &x[c * win.in_len()..][..win.in_len()];
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
                for (o, &v) in out[lo..hi].iter_mut().zip(&src[x0..]) {
                    *o = v;
                }
            } else {
                for (o, &v) in out[lo..hi].iter_mut().zip(src[x0..].iter().step_by(s)) {
                    *o = v;
                }
            }
        }
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

/// `values` as the `f32`s they hold.
///
/// # Safety
/// Every value of `values` is initialised.
unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller
    // initialised every value.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
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
    let (oh, ow) = window.output_size();
    let n = batch.size();
    let xs = Scratch::copy_of(&x);
    let ws = Scratch::copy_of(weight);
    let bs = Scratch::copy_of(bias);
    // every group's columns, kept for the backward when they fit; group `t`
    // at `t·GROUP·taps·L`, `taps × (images·L)`
    let mut kept = (T::OWNS_TAPE && taps * len > 0 && n * taps * len <= COLUMN_BUDGET)
        .then(|| Scratch::with_len(n * taps * len, 0));
    // every value is written once below (no zeros first): the bias, or a
    // product plus the bias
    let mut out: Vec<f32> = Vec::with_capacity(n * out_image);
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
    let forward_images = |b0: usize, out: &mut [MaybeUninit<f32>], cols: &mut [f32]| {
        let images = out.len() / out_image;
        let ld = images * len;
        for i in 0..images {
            let x = &xs[(b0 + i) * image..][..image];
            im2col(x, &geo, &mut cols[i * len..], ld);
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
            out.fill(MaybeUninit::new(0.0));
            // SAFETY: every value of `out` was just written.
            let out = unsafe { assume_init(out) };
            let cols = PackedB::new(Operand::plain(&cols[i * len..], ld), taps, len);
            // out = W·cols_i, O × L
            gemm_packed(1.0, wp, 0..O, &cols, 0..len, 0.0, out, len);
            for (row, &bo) in out.chunks_exact_mut(len).zip(bs.iter()) {
                for v in row {
                    *v += bo;
                }
            }
        }
    };
    let forward = |(t, (out, kept)): (usize, (&mut [MaybeUninit<f32>], Option<&mut [f32]>))| {
        let mut own = None;
        let cols = kept.unwrap_or_else(|| own.insert(Scratch::with_len(taps * len * GROUP, 0)));
        for (p, (out, cols)) in out
            .chunks_mut(out_image * per)
            .zip(cols.chunks_mut(taps * len * per))
            .enumerate()
        {
            forward_images(t * GROUP + p * per, out, cols);
        }
    };
    if out_image > 0 {
        let out = &mut out.spare_capacity_mut()[..n * out_image];
        match kept.as_mut() {
            Some(k) => out
                .par_chunks_mut(out_image * GROUP)
                .zip(k.par_chunks_mut(taps * len * GROUP).map(Some))
                .enumerate()
                .for_each(forward),
            None => out
                .par_chunks_mut(out_image * GROUP)
                .map(|o| (o, None))
                .enumerate()
                .for_each(forward),
        }
    }
    // SAFETY: the tasks above wrote all `n` images' `O·L` values (with
    // `out_image = 0` there are none).
    unsafe { out.set_len(n * out_image) };
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
                let packed_weight_t = (per > 1 && input_grad)
                    .then(|| PackedA::new(Operand::transposed(&ws, taps), taps, O));
                // `images` consecutive images from `b0`, their upstream
                // gradients side by side (`gg`, O × (images·L); the image's
                // own for one): ∂W += gg·colsᵀ, ∂bias += gg·1, and with
                // `gx` (their `∂x`) ∂cols = Wᵀ·gg and col2im into it
                let backward_images = |b0: usize,
                                       images: usize,
                                       gx: Option<&mut [f32]>,
                                       gw: &mut [f32],
                                       gb: &mut [f32]| {
                    let ld = images * len;
                    let mut copied = None;
                    let gg: &[f32] = if images == 1 {
                        &g[b0 * out_image..][..out_image]
                    } else {
                        let gg = copied.insert(Scratch::with_len(O * ld, 0));
                        for i in 0..images {
                            let gi = &g[(b0 + i) * out_image..][..out_image];
                            for (o, row) in gi.chunks_exact(len).enumerate() {
                                gg[o * ld + i * len..][..len].copy_from_slice(row);
                            }
                        }
                        gg
                    };
                    let mut own = None;
                    let cols: &[f32] = match kept.as_ref() {
                        Some(k) => &k[b0 * taps * len..][..taps * ld],
                        None => {
                            let cols = own.insert(Scratch::with_len(taps * ld, 0));
                            for i in 0..images {
                                let x = &xs[(b0 + i) * image..][..image];
                                im2col(x, &geo, &mut cols[i * len..], ld);
                            }
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
                    for (gb, row) in gb.iter_mut().zip(gg.chunks_exact(ld)) {
                        *gb += row.iter().sum::<f32>();
                    }
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
                    // upstream gradient and the weight packed once, col2im
                    // while they are in cache
                    let wt = packed_weight_t.as_ref().expect("packed when side by side");
                    for (i, gx) in gx.chunks_exact_mut(image).enumerate() {
                        let gi = &g[(b0 + i) * out_image..][..out_image];
                        let gi = PackedB::new(Operand::plain(gi, len), O, len);
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
}
