//! CPU kernels with a hand-written backward registered on the dfdx tape.
//!
//! Each function here has a generic twin built from ordinary dfdx operations
//! (in `device.rs` or the module that uses it); the tests check that both give
//! the same values and gradients. Inputs are made contiguous first (a no-op
//! for the output of an op, a copy recorded on the tape for a strided view),
//! so that storage order is row-major order, forward and backward.

use dfdx::prelude::*;

mod batch_against;
mod batch_family;
mod batch_hard;
mod batch_rows;
mod conv2d;
mod cross_gram;
mod euclidean_matrix;
pub(crate) mod gemm;
mod gram;
mod linear;
mod parallel;
mod pool;
mod scratch;

pub(crate) use scratch::Scratch;

pub(crate) use batch_against::batch_formula_against_cpu;
pub(crate) use batch_family::batch_formula_fused_cpu;
pub(crate) use batch_hard::batch_hard_euclidean_cpu;
pub(crate) use batch_rows::batch_formula_cpu;
pub(crate) use conv2d::{conv2d_cpu, conv2d_relu_max_pool2d_cpu};
pub(crate) use cross_gram::cross_gram_cpu;
pub(crate) use euclidean_matrix::euclidean_matrix_cpu;
pub(crate) use gemm::Operand;
pub(crate) use gram::distance;
pub(crate) use linear::linear_cpu;
pub(crate) use pool::{avg_pool2d_cpu, max_pool2d_cpu};

/// The elements of a contiguous CPU tensor, copied out with one `memcpy`.
pub(crate) fn read<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut buf = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut buf);
    buf
}

/// The gradient flowing into an op's output `out` (zeros if none reached
/// it), copied to the host: the first line of every backward here.
fn upstream<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    out: &Tensor<S, f32, Cpu>,
) -> Result<Scratch, CpuError> {
    // one copy into a reused buffer (`grads.get` would clone the buffer
    // into a fresh allocation first)
    let g = grads.get_or_alloc_mut(out)?;
    Ok(Scratch::copy_of_slice(g))
}

/// Runs `f` with the gradient flowing into an op's output `out` (zeros if
/// none reached it) **lent without a copy**: the buffer is taken out of
/// `grads` while `f` writes the gradients of the op's inputs, and put back
/// afterwards (a `leaky_trace` caller may still read it). For large outputs
/// (a convolution's, a pool's input) this saves a copy of the whole
/// gradient per backward.
fn with_upstream<S: Shape, R>(
    grads: &mut Gradients<f32, Cpu>,
    out: &Tensor<S, f32, Cpu>,
    f: impl FnOnce(&mut Gradients<f32, Cpu>, &[f32]) -> Result<R, CpuError>,
) -> Result<R, CpuError> {
    let g: Vec<f32> = std::mem::take(grads.get_or_alloc_mut(out)?);
    let result = f(grads, &g);
    **grads.get_or_alloc_mut(out)? = g;
    result
}

/// `Σ v²` in eight partial sums: a loop the compiler vectorises.
pub(crate) fn sum_of_squares(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>()
}

/// `safe_sqrt` on the CPU: one pass forward, one pass backward.
pub(crate) fn safe_sqrt_cpu<S: Shape, T: Tape<f32, Cpu>>(
    x: Tensor<S, f32, Cpu, T>,
) -> Result<Tensor<S, f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let mut out = read(&x);
    for v in out.iter_mut() {
        // NaN stays NaN (as in the generic twin): a non-finite embedding must
        // not become a silent distance of 0.
        *v = if *v > 0.0 || v.is_nan() {
            v.sqrt()
        } else {
            0.0
        };
    }
    let y = Scratch::copy_of_slice(&out);
    let out = dev.try_tensor_from_vec(out, *x.shape())?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?;
            let gx = grads.get_or_alloc_mut(&x)?;
            for ((gx, &g), &y) in gx.iter_mut().zip(g.iter()).zip(y.iter()) {
                if y > 0.0 {
                    *gx += g * 0.5 / y;
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// Row-wise Euclidean distance (or its square) on the CPU in one pass each
/// way: `∂d/∂a_i = (a_i − b_i)/d_i = −∂d/∂b_i` (0 where `d_i = 0`), squared
/// `2(a_i − b_i)`. `a` and `b` may be one tensor (same id): the two gradient
/// contributions are added one after the other.
pub(crate) fn euclidean_rows_cpu<B: Dim, const D: usize, T: Tape<f32, Cpu>>(
    a: Tensor<(B, Const<D>), f32, Cpu, T>,
    b: Tensor<(B, Const<D>), f32, Cpu, T>,
    squared: bool,
) -> Result<Tensor<(B,), f32, Cpu, T>, CpuError> {
    let dev = a.device().clone();
    let rows = a.shape().0;
    let (a, ta) = a.try_contiguous()?.split_tape();
    let (b, tb) = b.try_contiguous()?.split_tape();
    let mut tape = ta.merge(tb);
    let n = rows.size();
    // a − b in place of the copy of a (kept for the backward)
    let mut diff = Scratch::copy_of(&a);
    {
        let bv = Scratch::copy_of(&b);
        for (d, &v) in diff.iter_mut().zip(bv.iter()) {
            *d -= v;
        }
    }
    let mut out = vec![0.0f32; n];
    for (o, row) in out.iter_mut().zip(diff.chunks_exact(D.max(1))) {
        let acc = sum_of_squares(row);
        *o = if acc.is_nan() {
            f32::NAN
        } else if squared || acc <= 0.0 {
            acc.max(0.0)
        } else {
            acc.sqrt()
        };
    }
    let y = out.clone();
    let out = dev.try_tensor_from_vec(out, (rows,))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?;
            let scales: Vec<f32> = g
                .iter()
                .zip(&y)
                .map(|(&g, &y)| {
                    if squared {
                        2.0 * g
                    } else if y > 0.0 {
                        g / y
                    } else {
                        0.0
                    }
                })
                .collect();
            for (t, sign) in [(&a, 1.0f32), (&b, -1.0f32)] {
                let gx = grads.get_or_alloc_mut(t)?;
                let rows = gx
                    .chunks_exact_mut(D.max(1))
                    .zip(diff.chunks_exact(D.max(1)));
                for ((gx, d), &s) in rows.zip(&scales) {
                    let s = sign * s;
                    if s != 0.0 {
                        for (g, &d) in gx.iter_mut().zip(d) {
                            *g += s * d;
                        }
                    }
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// `‖row‖` of a finite row whose squares overflow `f32` (entries past about
/// `1.8e19`), computed from the row divided by its largest magnitude, as
/// BLAS's `nrm2` does: the normalised row is then right instead of all
/// zeros. Infinite for a row holding an infinity (or a norm past
/// `f32::MAX`).
fn scaled_norm(row: &[f32]) -> f32 {
    let big = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !big.is_finite() {
        return f32::INFINITY;
    }
    big * row
        .iter()
        .map(|v| (v / big) * (v / big))
        .sum::<f32>()
        .sqrt()
}

/// Row-wise L2 normalisation on the CPU, `y = x / n` with
/// `n = max(‖x‖, NORM_EPS)`, in one pass each way. Backward, as the generic
/// twin's chain rule gives it: where the norm is used (`‖x‖ ≥ NORM_EPS`,
/// the clamp's closed range), `∂/∂x = (g − y·(y·g)) / n`; where the floor
/// is (a zero or tiny row), `n` is a constant and `∂/∂x = g / n`. A row
/// holding a NaN stays NaN, forward and backward. A finite row whose squares
/// overflow gets its norm from the rescaled row ([`scaled_norm`]), so it is
/// normalised right rather than to zeros.
pub(crate) fn l2_normalize_cpu<B: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(B, Const<D>), f32, Cpu, T>,
) -> Result<Tensor<(B, Const<D>), f32, Cpu, T>, CpuError> {
    use crate::distance::NORM_EPS;
    let dev = x.device().clone();
    let shape = *x.shape();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let xs = Scratch::copy_of(&x);
    let width = D.max(1);
    let mut out = vec![0.0f32; xs.len()];
    // (n, whether the norm itself, not the floor, is n) per row
    let mut norms = Vec::with_capacity(shape.0.size());
    for (o, row) in out.chunks_exact_mut(width).zip(xs.chunks_exact(width)) {
        let s = sum_of_squares(row);
        let norm = if s == f32::INFINITY {
            scaled_norm(row)
        } else if s > 0.0 || s.is_nan() {
            s.sqrt()
        } else {
            0.0
        };
        // num_traits::clamp, as dfdx's: NaN stays NaN
        let (n, through) = if norm < NORM_EPS {
            (NORM_EPS, false)
        } else {
            (norm, !norm.is_nan())
        };
        norms.push((n, through));
        for (o, &v) in o.iter_mut().zip(row) {
            *o = v / n;
        }
    }
    let y = Scratch::copy_of_slice(&out);
    let out = dev.try_tensor_from_vec(out, shape)?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?;
            let gx = grads.get_or_alloc_mut(&x)?;
            let rows = gx
                .chunks_exact_mut(width)
                .zip(g.chunks_exact(width))
                .zip(y.chunks_exact(width));
            for (((gx, g), y), &(n, through)) in rows.zip(&norms) {
                let dot: f32 = if through {
                    y.iter().zip(g).map(|(y, g)| y * g).sum()
                } else {
                    0.0
                };
                for ((gx, &g), &y) in gx.iter_mut().zip(g).zip(y) {
                    *gx += (g - y * dot) / n;
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
