//! The project's one GEMM: `C = α·op(A)·op(B) + β·C` on row-major `f32`
//! buffers, with `op` the identity or the transpose on either side, so that
//! `A·B`, `A·Bᵀ` and `Aᵀ·B` are one call each.
//!
//! This first version forwards to the `gemm` crate (the GEMM dfdx itself
//! runs); its contract is what the callers build on.

/// One operand of [`gemm`]: `data` holds a row-major matrix with row stride
/// `ld`; with `trans` the operand is its transpose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// The stored matrix, row-major.
    pub data: &'a [f32],
    /// Its row stride (at least its number of stored columns).
    pub ld: usize,
    /// Whether the operand is the transpose of the stored matrix.
    pub trans: bool,
}

impl<'a> Operand<'a> {
    /// The stored matrix itself.
    pub(crate) fn plain(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: false,
        }
    }

    /// The transpose of the stored matrix.
    pub(crate) fn transposed(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: true,
        }
    }

    /// (row stride, column stride) of the logical operand.
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }

    /// Whether the operand, `rows × cols` logically, fits in `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let (stored_rows, stored_cols) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        self.ld >= stored_cols && (stored_rows - 1) * self.ld + stored_cols <= self.data.len()
    }
}

/// `C = α·op(A)·op(B) + β·C`, with `op(A)` `m × k`, `op(B)` `k × n` and `C`
/// `m × n` row-major with row stride `ldc`. With `β = 0`, `C` is only
/// written (its old values, even NaN, are ignored), as in BLAS.
///
/// Panics if an operand does not fit its buffer (a caller's bug, never a
/// user's input).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(a.fits(m, k), "gemm: A does not hold {m} x {k}");
    assert!(b.fits(k, n), "gemm: B does not hold {k} x {n}");
    assert!(
        m == 0 || n == 0 || (ldc >= n && (m - 1) * ldc + n <= c.len()),
        "gemm: C does not hold {m} x {n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: every operand fits its buffer (asserted above, with the
    // strides `strides` gives); `c` is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn every_transpose_equals_the_naive_product() {
        for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (33, 17, 65), (6, 16, 128), (50, 3, 0)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53) % 13) as f32 / 3.0).collect();
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let want = naive(m, n, k, &a, ta, &b, tb);
                let opa = if ta {
                    Operand::transposed(&a, m)
                } else {
                    Operand::plain(&a, k)
                };
                let opb = if tb {
                    Operand::transposed(&b, k)
                } else {
                    Operand::plain(&b, n)
                };
                // β = 0 ignores NaN garbage; β = 1 accumulates.
                let mut c = vec![f32::NAN; m * n];
                gemm(m, n, k, 1.0, opa, opb, 0.0, &mut c, n);
                for (g, w) in c.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                        "{m}x{n}x{k} {ta} {tb}"
                    );
                }
                gemm(m, n, k, 2.0, opa, opb, 1.0, &mut c, n);
                for (g, w) in c.iter().zip(&want) {
                    assert!((g - 3.0 * w).abs() <= 1e-3 * (1.0 + w.abs()));
                }
            }
        }
    }
}
