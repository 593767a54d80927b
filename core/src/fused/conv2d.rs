//! 2-D convolution on the CPU: im2col, then the project's GEMM, forward and
//! backward.
//!
//! Layout: for a batch of `B` images with `L = OH·OW` output pixels each,
//! the columns are one `taps × B·L` matrix (`taps = C·K·K`, one row per
//! `(c, ky, kx)`, the order of a PyTorch weight's trailing dimensions), so
//! that each pass is **one** large GEMM instead of `B` small ones:
//!
//! - forward `Y = W·cols` (`O × B·L`), then `+ bias`, written out as
//!   `(B, O, OH, OW)`;
//! - backward, with `G` the upstream gradient as `O × B·L`:
//!   `∂W += G·colsᵀ`, `∂bias += G·1`, `∂cols = Wᵀ·G`, and col2im adds each
//!   column back onto the pixels it was read from.
//!
//! The columns are kept from the forward for `∂W`. im2col and col2im run on
//! rayon's threads (rows of the columns, resp. images) once there is enough
//! work; the GEMM shares its own work.

use super::gemm::{gemm, Operand};
use super::{upstream, Scratch};
use crate::nets::Window;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Below this many values a pass over the columns stays on one thread.
const PARALLEL_MIN: usize = 1 << 15;

/// The GEMM-friendly shape of one convolution.
#[derive(Clone, Copy)]
struct Geometry {
    window: Window,
    batch: usize,
    channels: usize,
    out_channels: usize,
}

impl Geometry {
    fn taps(&self) -> usize {
        self.channels * self.window.kernel() * self.window.kernel()
    }

    /// Columns of the `taps × B·L` matrices.
    fn cols(&self) -> usize {
        self.batch * self.window.out_len()
    }

    fn image_len(&self) -> usize {
        self.channels * self.window.in_len()
    }
}

/// Runs `f` on each chunk of `data` (of `chunk` values) with its index, on
/// rayon's threads when there are `PARALLEL_MIN` values or more.
fn for_chunks(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if chunk == 0 {
        return;
    }
    if data.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
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

/// `cols[(c, ky, kx), (b, oy, ox)] = x[b, c, oy·s + ky − p, ox·s + kx − p]`,
/// 0 in the padding.
fn im2col(xs: &[f32], geo: &Geometry, cols: &mut [f32]) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (oh, ow) = win.output_size();
    let (len, image) = (win.out_len(), geo.image_len());
    for_chunks(cols, geo.cols(), |r, row| {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let (lo, hi, x0) = valid_columns(&win, kx);
        for b in 0..geo.batch {
            let plane = &xs[b * image + c * win.in_len()..][..win.in_len()];
            for oy in 0..oh {
                let out = &mut row[b * len + oy * ow..][..ow];
                let iy = (oy * s + ky).wrapping_sub(p);
                if iy >= h {
                    out.fill(0.0);
                    continue;
                }
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                let src = &plane[iy * w..][..w];
                if hi == lo {
                    continue;
                }
                if s == 1 {
                    out[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
                } else {
                    for (o, &v) in out[lo..hi].iter_mut().zip(src[x0..].iter().step_by(s)) {
                        *o = v;
                    }
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds each column entry onto the pixel it was
/// read from (padding entries are dropped). One image per task.
fn col2im(dcols: &[f32], geo: &Geometry, gx: &mut [f32]) {
    let win = geo.window;
    let (k, s, p) = (win.kernel(), win.stride(), win.padding());
    let (h, w) = win.input_size();
    let (oh, ow) = win.output_size();
    let (len, total) = (win.out_len(), geo.cols());
    let work = dcols.len();
    let one = |b: usize, gimg: &mut [f32]| {
        for r in 0..geo.taps() {
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let (lo, hi, x0) = valid_columns(&win, kx);
            let plane = &mut gimg[c * win.in_len()..][..win.in_len()];
            let row = &dcols[r * total + b * len..][..len];
            for oy in 0..oh {
                let iy = (oy * s + ky).wrapping_sub(p);
                if iy >= h {
                    continue;
                }
                if hi == lo {
                    continue;
                }
                let src = &row[oy * ow + lo..oy * ow + hi];
                let dst = &mut plane[iy * w..][..w];
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
    };
    let image = geo.image_len();
    if image == 0 {
        return;
    }
    if work >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        gx.par_chunks_mut(image)
            .enumerate()
            .for_each(|(b, g)| one(b, g));
    } else {
        gx.chunks_mut(image).enumerate().for_each(|(b, g)| one(b, g));
    }
}

/// `conv2d(x, weight) + bias` on the CPU, on `x`'s tape, with a backward for
/// `x`, `weight` and `bias` (see the [module docs](self)).
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
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let batch = x.shape().0;
    let geo = Geometry {
        window: *window,
        batch: batch.size(),
        channels: C,
        out_channels: O,
    };
    let (taps, total, len) = (geo.taps(), geo.cols(), window.out_len());
    let (oh, ow) = window.output_size();

    let xs = Scratch::copy_of(&x);
    let mut cols = Scratch::with_len(taps * total, 0);
    im2col(&xs, &geo, &mut cols);
    drop(xs);
    let ws = Scratch::copy_of(weight);
    let bs = Scratch::copy_of(bias);
    // Y = W·cols, O × B·L
    let mut y = Scratch::with_len(O * total, 0);
    gemm(
        O,
        total,
        taps,
        1.0,
        Operand::plain(&ws, taps),
        Operand::plain(&cols, total),
        0.0,
        &mut y,
        total,
    );
    // out[b, o, l] = Y[o, b·L + l] + bias[o]
    let mut out = vec![0.0f32; geo.batch * O * len];
    for_chunks(&mut out, O * len, |b, img| {
        for (o, dst) in img.chunks_exact_mut(len).enumerate() {
            let src = &y[o * total + b * len..][..len];
            let bo = bs[o];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v + bo;
            }
        }
    });
    drop(y);
    let out = dev.try_tensor_from_vec(out, (batch, Const::<O>, oh, ow))?;
    if T::OWNS_TAPE {
        let (w, b, out_ghost) = (weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?;
            debug_assert_eq!(geo.out_channels, O);
            // G as O × B·L
            let mut gt = Scratch::with_len(O * total, 0);
            for_chunks(&mut gt, total, |o, row| {
                for b in 0..geo.batch {
                    row[b * len..][..len].copy_from_slice(&g[(b * O + o) * len..][..len]);
                }
            });
            drop(g);
            let gb = grads.get_or_alloc_mut(&b)?;
            for (gb, row) in gb.iter_mut().zip(gt.chunks_exact(total.max(1))) {
                *gb += row.iter().sum::<f32>();
            }
            let gw = grads.get_or_alloc_mut(&w)?;
            // ∂W += G·colsᵀ
            gemm(
                O,
                taps,
                total,
                1.0,
                Operand::plain(&gt, total),
                Operand::transposed(&cols, total),
                1.0,
                gw,
                taps,
            );
            // ∂cols = Wᵀ·G, reusing the columns' buffer
            let mut dcols = cols;
            gemm(
                taps,
                total,
                O,
                1.0,
                Operand::transposed(&ws, taps),
                Operand::plain(&gt, total),
                0.0,
                &mut dcols,
                total,
            );
            drop(gt);
            let gx = grads.get_or_alloc_mut(&x)?;
            col2im(&dcols, &geo, gx);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
