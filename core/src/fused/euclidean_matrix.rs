//! The `N × N` Euclidean distance matrix of one batch, in one op each way.

use super::gemm::{Operand, gemm};
use super::gram::{BLOCK, MR, Panels, distance, parallel};
use super::{Scratch, upstream};
use dfdx::prelude::*;

/// The distance matrix (or its square) from Gram tiles: `‖x_i‖² + ‖x_j‖² −
/// 2⟨x_i, x_j⟩`, clamped at 0, times 0 on the diagonal (so a NaN stays NaN
/// there too, as in the generic twin), square-rooted unless `squared`. The
/// norms are summed as the tiles are, so equal rows are exactly 0 apart.
///
/// Backward, from the upstream `G`: with `w_ij = 2 G_ij` (squared) or
/// `G_ij / d_ij` (not), and 0 wherever `d_ij = 0` (the diagonal, equal rows:
/// the zero subgradient of the generic twin's `safe_sqrt`), and `S = W + Wᵀ`,
/// `∂L/∂x_i = Σ_j S_ij (x_i − x_j)`, i.e. `diag(S·1) X − S X`: one `N × N × D`
/// GEMM (the project's [`gemm`]) instead of the
/// generic path's broadcasts, masks and two matmuls over `N × N` tensors.
pub(crate) fn euclidean_matrix_cpu<N: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    squared: bool,
) -> Result<Tensor<(N, N), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let rows = x.shape().0;
    let n = rows.size();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let xs = Scratch::copy_of(&x);
    let panels = Panels::new(xs, n, D);
    let mut out = vec![0.0f32; n * n];
    if n > 0 {
        let fill = |(b, dst): (usize, &mut [f32])| block(&panels, b * BLOCK, dst, n, squared);
        if parallel(n) {
            use rayon::prelude::*;
            out.par_chunks_mut(BLOCK * n).enumerate().for_each(fill);
        } else {
            out.chunks_mut(BLOCK * n).enumerate().for_each(fill);
        }
    }
    let xs = panels.into_rows();
    let y = Scratch::copy_of_slice(&out);
    let out = dev.try_tensor_from_vec(out, (rows, rows))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?;
            // W, then S = W + Wᵀ in place, and its row sums
            let mut s = Scratch::with_len(n * n, 0);
            for ((s, &g), &y) in s.iter_mut().zip(g.iter()).zip(y.iter()) {
                *s = if y == 0.0 {
                    0.0
                } else if squared {
                    2.0 * g
                } else {
                    g / y
                };
            }
            for i in 0..n {
                for j in 0..i {
                    let v = s[i * n + j] + s[j * n + i];
                    s[i * n + j] = v;
                    s[j * n + i] = v;
                }
            }
            let sums: Vec<f32> = s.chunks_exact(n.max(1)).map(|r| r.iter().sum()).collect();
            // S X
            let mut sx = Scratch::with_len(n * D, 0);
            if n > 0 && D > 0 {
                assert!(s.len() == n * n && sx.len() == n * D && xs.len() == n * D);
                gemm(
                    n,
                    D,
                    n,
                    1.0,
                    Operand::plain(&s, n),
                    Operand::plain(&xs, D),
                    0.0,
                    &mut sx,
                    D,
                );
            }
            let gx = grads.get_or_alloc_mut(&x)?;
            let width = D.max(1);
            let rows = gx
                .chunks_exact_mut(width)
                .zip(xs.chunks_exact(width))
                .zip(sx.chunks_exact(width));
            for (((gx, x), sx), &r) in rows.zip(&sums) {
                for ((g, &x), &sx) in gx.iter_mut().zip(x).zip(sx) {
                    *g += r * x - sx;
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// Rows `i0..` (as many as `dst` holds) of the matrix into `dst`.
fn block(panels: &Panels, i0: usize, dst: &mut [f32], n: usize, squared: bool) {
    let rows = dst.len() / n;
    let w = panels.padded_cols();
    let mut buf = Scratch::with_len(rows.div_ceil(MR) * MR * w, 0);
    panels.tile(i0, rows, 0, w, &mut buf, w);
    let sq = panels.sq();
    for (r, out) in dst.chunks_exact_mut(n).enumerate() {
        let i = i0 + r;
        let sq_i = sq[i];
        for ((o, &g), &sq_j) in out.iter_mut().zip(&buf[r * w..r * w + n]).zip(sq) {
            *o = distance(sq_i, sq_j, g, squared);
        }
        out[i] *= 0.0;
    }
}
