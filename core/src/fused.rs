//! CPU kernels with a hand-written backward registered on the dfdx tape.
//!
//! Each function here has a generic twin built from ordinary dfdx operations
//! (in `device.rs` or the module that uses it); the tests check that both give
//! the same values and gradients. Inputs are made contiguous first (a no-op
//! for the output of an op, a copy recorded on the tape for a strided view),
//! so that storage order is row-major order, forward and backward.

use dfdx::prelude::*;

/// The elements of a contiguous CPU tensor, copied out with one `memcpy`.
pub(crate) fn read<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut buf = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut buf);
    buf
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
    let y = out.clone();
    let out = dev.try_tensor_from_vec(out, *x.shape())?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let g = read(&grads.get(&out_ghost));
            let gx = grads.get_or_alloc_mut(&x)?;
            for ((gx, &g), &y) in gx.iter_mut().zip(&g).zip(&y) {
                if y > 0.0 {
                    *gx += g * 0.5 / y;
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// Fused batch-hard on the CPU: one GEMM for the Gram matrix, mining on the
/// host matrix, then the hardest distances with a backward that touches only
/// the `O(N·D)` rows involved: for `d = ‖x_a − x_b‖`,
/// `∂d/∂x_a = (x_a − x_b)/d = −∂d/∂x_b` (0 where `d = 0`); squared,
/// `∂d²/∂x_a = 2(x_a − x_b)`. Differences are taken from the rows
/// themselves, not from the Gram matrix, so gradients are exact.
pub(crate) fn batch_hard_euclidean_cpu<N: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    squared: bool,
) -> Result<crate::device::FusedBatchHard<N, D, Cpu, T>, crate::MetricLossError> {
    use crate::miners::{BatchHard, DistanceMatrix, TripletMiner};
    let dev_err = crate::MetricLossError::device;
    let dev = x.device().clone();
    let n = x.shape().0.size();
    let (x, mut tape) = x.try_contiguous().map_err(dev_err)?.split_tape();
    let xs = read(&x);
    // The rows are on the host anyway: reject NaN/inf here, where the Gram
    // expansion (the clamp at 0 and the zero diagonal) would hide them.
    if let Some(pos) = xs.iter().position(|v| !v.is_finite()) {
        return Err(crate::MetricLossError::NonFinite {
            what: "embeddings",
            row: pos / D,
            column: pos % D,
            value: xs[pos],
        });
    }
    let m = euclidean_matrix_host(&xs, n, D, squared);
    let host = DistanceMatrix::new(n, m)?;
    let triplets = BatchHard.try_mine(&host, labels, 0.0)?;
    let k = triplets.len();
    let d_ap: Vec<f32> = triplets
        .iter()
        .map(|t| host.get(t.anchor, t.positive))
        .collect();
    let d_an: Vec<f32> = triplets
        .iter()
        .map(|t| host.get(t.anchor, t.negative))
        .collect();
    let d_ap_t = dev
        .try_tensor_from_vec(d_ap.clone(), (k,))
        .map_err(dev_err)?;
    let d_an_t = dev
        .try_tensor_from_vec(d_an.clone(), (k,))
        .map_err(dev_err)?;
    if T::OWNS_TAPE {
        let (g_ap, g_an) = (d_ap_t.clone(), d_an_t.clone());
        let pairs = triplets.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&g_ap)?;
            grads.try_alloc_for(&g_an)?;
            let up_ap = read(&grads.get(&g_ap));
            let up_an = read(&grads.get(&g_an));
            let gx = grads.get_or_alloc_mut(&x)?;
            let mut add = |a: usize, b: usize, d: f32, up: f32| {
                if up == 0.0 {
                    return;
                }
                let scale = if squared {
                    2.0 * up
                } else if d > 0.0 {
                    up / d
                } else {
                    return;
                };
                for c in 0..D {
                    let diff = scale * (xs[a * D + c] - xs[b * D + c]);
                    gx[a * D + c] += diff;
                    gx[b * D + c] -= diff;
                }
            };
            for (t, trip) in pairs.iter().enumerate() {
                add(trip.anchor, trip.positive, d_ap[t], up_ap[t]);
                add(trip.anchor, trip.negative, d_an[t], up_an[t]);
            }
            Ok(())
        });
    }
    Ok(crate::device::FusedBatchHard::Done {
        d_ap: d_ap_t.put_tape(tape),
        d_an: d_an_t.retaped::<T>(),
        triplets,
        host,
    })
}

/// The full `N x N` Gram matrix `X Xᵀ` of row-major `xs` (`n x d`), computing
/// only the blocks on and above the diagonal (about half the flops of a plain
/// GEMM) and mirroring them.
pub(crate) fn gram_symmetric(xs: &[f32], n: usize, d: usize) -> Vec<f32> {
    assert_eq!(
        xs.len(),
        n * d,
        "gram_symmetric: {} values for {n} x {d}",
        xs.len()
    );
    let mut g = vec![0.0f32; n * n];
    if n == 0 || d == 0 {
        return g;
    }
    const BLOCK: usize = 64;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let parallelism = if n * n * d >= 1 << 20 && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    for r in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - r);
        let cols = n - r;
        // SAFETY: dst is the `rows x cols` block of `g` at (r, r), row stride n,
        // inside `g` (r + rows <= n, r + cols = n). lhs is rows r..r+rows of
        // xs (row stride d), rhs is the transpose of rows r..n (column j at
        // xs[(r + j) * d], stride d between columns, 1 between rows): all in
        // bounds of `xs`, which has n * d values.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                d,
                g.as_mut_ptr().add(r * n + r),
                1,
                n as isize,
                false,
                xs.as_ptr().add(r * d),
                1,
                d as isize,
                xs.as_ptr().add(r * d),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    for i in 0..n {
        for j in 0..i {
            g[i * n + j] = g[j * n + i];
        }
    }
    g
}

/// The `N x N` (squared) Euclidean distances of row-major `xs` on the host:
/// `‖x_i‖² + ‖x_j‖² − 2⟨x_i, x_j⟩` from [`gram_symmetric`], clamped at 0,
/// exact 0 on the diagonal, then the square root unless `squared`.
pub(crate) fn euclidean_matrix_host(xs: &[f32], n: usize, d: usize, squared: bool) -> Vec<f32> {
    let mut m = gram_symmetric(xs, n, d);
    let sq: Vec<f32> = (0..n).map(|i| m[i * n + i]).collect();
    for i in 0..n {
        let row = &mut m[i * n..(i + 1) * n];
        for (j, v) in row.iter_mut().enumerate() {
            // not `f32::max`, which maps NaN (from overflow) to 0
            let d2 = sq[i] + sq[j] - 2.0 * *v;
            let d2 = if d2 < 0.0 { 0.0 } else { d2 };
            *v = if squared { d2 } else { d2.sqrt() };
        }
        row[i] = 0.0;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_gram_equals_naive_products() {
        for (n, d) in [(1, 3), (5, 2), (70, 9), (130, 4)] {
            let xs: Vec<f32> = (0..n * d)
                .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let g = gram_symmetric(&xs, n, d);
            for i in 0..n {
                for j in 0..n {
                    let want: f32 = (0..d).map(|c| xs[i * d + c] * xs[j * d + c]).sum();
                    assert!(
                        (g[i * n + j] - want).abs() < 1e-4,
                        "({i},{j}) {} vs {want}",
                        g[i * n + j]
                    );
                }
            }
            let m = euclidean_matrix_host(&xs, n, d, false);
            for i in 0..n {
                assert_eq!(m[i * n + i], 0.0);
            }
        }
    }
}
