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
    let (av, bv) = (read(&a), read(&b));
    let n = rows.size();
    let mut diff = vec![0.0f32; n * D];
    let mut out = vec![0.0f32; n];
    for i in 0..n {
        let mut acc = 0.0f32;
        for c in 0..D {
            let d = av[i * D + c] - bv[i * D + c];
            diff[i * D + c] = d;
            acc += d * d;
        }
        out[i] = if squared || acc <= 0.0 {
            acc.max(0.0)
        } else {
            acc.sqrt()
        };
        if acc.is_nan() {
            out[i] = f32::NAN;
        }
    }
    let y = out.clone();
    let out = dev.try_tensor_from_vec(out, (rows,))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let g = read(&grads.get(&out_ghost));
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
                for i in 0..n {
                    let s = sign * scales[i];
                    if s != 0.0 {
                        for c in 0..D {
                            gx[i * D + c] += s * diff[i * D + c];
                        }
                    }
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// Fused batch-hard on the CPU, in one pass over the distance matrix and
/// never holding all of it: rows of the Gram matrix come from the `gemm`
/// crate a block at a time, become distances, and are mined (farthest
/// positive, closest negative, lowest index on ties — exactly
/// [`BatchHard`](crate::miners::BatchHard)'s rule) and summarised for
/// [`MinerStats`](crate::miners::MinerStats) on the spot. The backward
/// touches only the `O(N·D)` rows involved: for `d = ‖x_a − x_b‖`,
/// `∂d/∂x_a = (x_a − x_b)/d = −∂d/∂x_b` (0 where `d = 0`); squared,
/// `∂d²/∂x_a = 2(x_a − x_b)`. Differences are taken from the rows themselves,
/// not from the Gram matrix, so gradients are exact.
pub(crate) fn batch_hard_euclidean_cpu<N: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    squared: bool,
    margin: f32,
) -> Result<crate::device::FusedBatchHard<N, D, Cpu, T>, crate::MetricLossError> {
    use crate::miners::{MinerStats, Triplet};
    let dev_err = crate::MetricLossError::device;
    let dev = x.device().clone();
    let n = x.shape().0.size();
    if labels.len() != n {
        return Err(crate::MetricLossError::LabelCount {
            labels: labels.len(),
            batch: n,
        });
    }
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
    let sq: Vec<f32> = xs
        .chunks(D.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let mut triplets = Vec::with_capacity(n);
    let (mut d_ap, mut d_an) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut sum_all = 0.0f64;
    // The whole matrix (N² floats: 64 MiB at N = 4096), half of it computed.
    let mut matrix = gram_symmetric(&xs, n, D);
    for (i, row) in matrix.chunks_mut(n.max(1)).enumerate().take(n) {
        // distances first (a branch-free loop the compiler vectorises) ...
        let sq_i = sq[i];
        if squared {
            for (v, &sq_j) in row.iter_mut().zip(&sq) {
                let d2 = sq_i + sq_j - 2.0 * *v;
                *v = if d2 < 0.0 { 0.0 } else { d2 };
            }
        } else {
            for (v, &sq_j) in row.iter_mut().zip(&sq) {
                let d2 = sq_i + sq_j - 2.0 * *v;
                *v = if d2 < 0.0 { 0.0 } else { d2 }.sqrt();
            }
        }
        row[i] = 0.0;
        let mut lanes = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        let row_sum: f32 = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
        if !row_sum.is_finite() {
            return Err(crate::MetricLossError::NonFinite {
                what: "distances",
                row: i,
                column: 0,
                value: row_sum,
            });
        }
        sum_all += f64::from(row_sum);
        // ... then the hardest positive and negative.
        let li = labels[i];
        let (mut p, mut dp) = (usize::MAX, f32::NEG_INFINITY);
        let (mut q, mut dq) = (usize::MAX, f32::INFINITY);
        for (j, (&d, &lj)) in row.iter().zip(labels).enumerate() {
            if lj == li {
                if d > dp && j != i {
                    p = j;
                    dp = d;
                }
            } else if d < dq {
                q = j;
                dq = d;
            }
        }
        if p != usize::MAX && q != usize::MAX {
            triplets.push(Triplet {
                anchor: i,
                positive: p,
                negative: q,
            });
            d_ap.push(dp);
            d_an.push(dq);
        }
    }
    drop(matrix);
    let k = triplets.len();
    let active = d_ap
        .iter()
        .zip(&d_an)
        .filter(|(p, q)| *p - *q + margin > 0.0)
        .count();
    let mean = |v: &[f32]| {
        (k > 0).then(|| (v.iter().map(|&x| f64::from(x)).sum::<f64>() / k as f64) as f32)
    };
    let spread = if n > 1 {
        (sum_all / (n * (n - 1)) as f64) as f32
    } else {
        0.0
    };
    let stats = MinerStats {
        triplets: k,
        pairs: 0,
        active_fraction: if k > 0 { active as f32 / k as f32 } else { 0.0 },
        mean_hardest_positive: mean(&d_ap),
        mean_hardest_negative: mean(&d_an),
        spread,
        collapsed: n > 1 && spread < MinerStats::collapse_threshold(margin),
    };
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
    // With nothing mined the distances are empty but still carry the tape,
    // so the zero loss has a (zero) gradient.
    Ok(crate::device::FusedBatchHard::Done {
        d_ap: d_ap_t.put_tape(tape),
        d_an: d_an_t.retaped::<T>(),
        triplets,
        stats,
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
    // Single-threaded: on the 2-core machine this was measured on, gemm's
    // rayon split was slower at every N tried (64 to 1024, D = 128).
    let parallelism = gemm::Parallelism::None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_gram_equals_naive_products() {
        for (n, d) in [(1, 3), (5, 2), (70, 9), (300, 4)] {
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
        }
    }
}
