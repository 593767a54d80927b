//! Max and average pooling on the CPU, one pass each way, image planes
//! shared among rayon's threads once there is enough work.

use super::{Scratch, with_upstream};
use crate::nets::Window;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Below this many input values a pass stays on one thread.
const PARALLEL_MIN: usize = 1 << 15;

fn parallel(values: usize) -> bool {
    values >= PARALLEL_MIN && rayon::current_num_threads() > 1
}

/// `max_pool2d` on the CPU: forward keeps the offset of each window's
/// winner (the rule of [`Window::max_of_plane`]); backward adds each
/// gradient to its winner.
pub(crate) fn max_pool2d_cpu<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Cpu>>(
    x: Tensor<(B, C, H, W), f32, Cpu, T>,
    window: &Window,
) -> Result<Tensor<(B, C, usize, usize), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let (batch, channels, _, _) = *x.shape();
    let (oh, ow) = window.output_size();
    let (len, in_len) = (window.out_len(), window.in_len());
    let planes = batch.size() * channels.size();
    let xs = Scratch::copy_of(&x);
    let mut out = vec![0.0f32; planes * len];
    let mut arg = vec![0u32; planes * len];
    if len > 0 && in_len > 0 {
        let one =
            |((o, a), plane): ((&mut [f32], &mut [u32]), &[f32])| window.max_of_plane(plane, o, a);
        if parallel(xs.len()) {
            out.par_chunks_mut(len)
                .zip(arg.par_chunks_mut(len))
                .zip(xs.par_chunks(in_len))
                .for_each(one);
        } else {
            out.chunks_mut(len)
                .zip(arg.chunks_mut(len))
                .zip(xs.chunks(in_len))
                .for_each(one);
        }
    }
    drop(xs);
    let out = dev.try_tensor_from_vec(out, (batch, channels, oh, ow))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            with_upstream(grads, &out_ghost, |grads, g| {
                let gx = grads.get_or_alloc_mut(&x)?;
                if len == 0 || in_len == 0 {
                    return Ok(());
                }
                let one = |((gx, a), g): ((&mut [f32], &[u32]), &[f32])| {
                    for (&a, &g) in a.iter().zip(g) {
                        gx[a as usize] += g;
                    }
                };
                if parallel(gx.len()) {
                    gx.par_chunks_mut(in_len)
                        .zip(arg.par_chunks(len))
                        .zip(g.par_chunks(len))
                        .for_each(one);
                } else {
                    gx.chunks_mut(in_len)
                        .zip(arg.chunks(len))
                        .zip(g.chunks(len))
                        .for_each(one);
                }
                Ok(())
            })
        });
    }
    Ok(out.put_tape(tape))
}

/// `avg_pool2d` on the CPU: forward sums each window and divides by
/// `kernel²`; backward adds `g / kernel²` to every pixel of the window.
pub(crate) fn avg_pool2d_cpu<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Cpu>>(
    x: Tensor<(B, C, H, W), f32, Cpu, T>,
    window: &Window,
) -> Result<Tensor<(B, C, usize, usize), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let (batch, channels, _, _) = *x.shape();
    let win = *window;
    let (oh, ow) = win.output_size();
    let (len, in_len) = (win.out_len(), win.in_len());
    let scale = 1.0 / (win.kernel() * win.kernel()) as f32;
    let planes = batch.size() * channels.size();
    let xs = Scratch::copy_of(&x);
    let mut out = vec![0.0f32; planes * len];
    if len > 0 && in_len > 0 {
        let one = |(o, plane): (&mut [f32], &[f32])| sum_of_plane(&win, plane, o, scale);
        if parallel(xs.len()) {
            out.par_chunks_mut(len)
                .zip(xs.par_chunks(in_len))
                .for_each(one);
        } else {
            out.chunks_mut(len).zip(xs.chunks(in_len)).for_each(one);
        }
    }
    drop(xs);
    let out = dev.try_tensor_from_vec(out, (batch, channels, oh, ow))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            with_upstream(grads, &out_ghost, |grads, g| {
                let gx = grads.get_or_alloc_mut(&x)?;
                if len == 0 || in_len == 0 {
                    return Ok(());
                }
                let one = |(gx, g): (&mut [f32], &[f32])| spread_over_plane(&win, g, gx, scale);
                if parallel(gx.len()) {
                    gx.par_chunks_mut(in_len)
                        .zip(g.par_chunks(len))
                        .for_each(one);
                } else {
                    gx.chunks_mut(in_len).zip(g.chunks(len)).for_each(one);
                }
                Ok(())
            })
        });
    }
    Ok(out.put_tape(tape))
}

/// `out[oy, ox] = scale · Σ` of window `(oy, ox)` of `plane`, one output
/// row at a time, each tap for the whole row (side by side windows read
/// rows as chunks of `kernel` pixels, which vectorises).
fn sum_of_plane(win: &Window, plane: &[f32], out: &mut [f32], scale: f32) {
    let (k, s) = (win.kernel(), win.stride());
    let ((_, w), (_, ow)) = (win.input_size(), win.output_size());
    for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
        out.fill(0.0);
        for ky in 0..k {
            let start = (oy * s + ky) * w;
            if k == s {
                let row = &plane[start..start + ow * k];
                for (o, taps) in out.iter_mut().zip(row.chunks_exact(k)) {
                    *o += taps.iter().sum::<f32>();
                }
            } else {
                for kx in 0..k {
                    let taps = plane[start + kx..].iter().step_by(s);
                    for (o, &v) in out.iter_mut().zip(taps) {
                        *o += v;
                    }
                }
            }
        }
        for o in out.iter_mut() {
            *o *= scale;
        }
    }
}

/// The adjoint of [`sum_of_plane`]: adds `scale · g[oy, ox]` to every pixel
/// of window `(oy, ox)`.
fn spread_over_plane(win: &Window, g: &[f32], gx: &mut [f32], scale: f32) {
    let (k, s) = (win.kernel(), win.stride());
    let ((_, w), (_, ow)) = (win.input_size(), win.output_size());
    for (oy, g) in g.chunks_exact(ow).enumerate() {
        for ky in 0..k {
            let start = (oy * s + ky) * w;
            if k == s {
                let row = &mut gx[start..start + ow * k];
                for (&g, taps) in g.iter().zip(row.chunks_exact_mut(k)) {
                    for t in taps {
                        *t += g * scale;
                    }
                }
            } else {
                for kx in 0..k {
                    let taps = gx[start + kx..].iter_mut().step_by(s);
                    for (&g, t) in g.iter().zip(taps) {
                        *t += g * scale;
                    }
                }
            }
        }
    }
}
