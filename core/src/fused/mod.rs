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
mod transpose;

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

/// Makes the first access to each 4 KiB page of `buf` a write, leaving
/// every value as it is: for a gradient about to be added to (`+=`) that
/// dfdx may just have allocated. A fresh allocation of a few hundred KiB is
/// untouched pages; read first, each one maps the shared zero page, and
/// the write after the read then copies it and flushes the TLB of every core
/// running the process (on the machine measured, 2 % of the ranking
/// family's time at N = 1024). Written first, the page is simply
/// allocated. An atomic add of 0 to one value per page (a locked
/// read-modify-write is a write access); a no-op elsewhere than x86-64.
pub(crate) fn touch_for_write(buf: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        const PAGE: usize = 4096;
        let p = buf.as_mut_ptr();
        let len = std::mem::size_of_val(buf);
        // the first value, then the first one of each following page
        // the next page's first byte (PAGE on from an aligned start)
        let next = PAGE - p as usize % PAGE;
        let touch = std::iter::once(0).chain((next..len).step_by(PAGE));
        for byte in touch.filter(|&b| b < len) {
            // SAFETY: `byte` is inside `buf` (filtered) and a multiple of 4
            // from its start (f32-aligned, as `next` and PAGE are), which
            // `&mut` holds alone; adding 0 to the value's bits as an integer
            // changes no bit.
            unsafe {
                std::arch::asm!(
                    "lock add dword ptr [{0}], 0",
                    in(reg) p.cast::<u8>().add(byte),
                    options(nostack)
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = buf;
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

/// `Σ_k y_k·g_k` of every row (`width` entries each), each row's terms
/// added one by one in column order from `-0.0` (what
/// `iter().sum::<f32>()` gives, bit for bit), eight rows at a time so that
/// their eight chains of additions run side by side rather than one after
/// the other.
fn row_dots(y: &[f32], g: &[f32], width: usize) -> Vec<f32> {
    let rows = y.len() / width;
    let mut dots = vec![-0.0f32; rows];
    let full = rows / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    let simd = std::is_x86_feature_detected!("avx2");
    for (block, acc) in dots[..full].chunks_exact_mut(8).enumerate() {
        let at = block * 8 * width;
        let (y, g) = (&y[at..][..8 * width], &g[at..][..8 * width]);
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 (checked above); `y` and `g` hold eight rows of
            // `width`.
            acc.copy_from_slice(&unsafe { avx2::dots8(y, g, width) });
            continue;
        }
        acc.copy_from_slice(&dots8(y, g, width));
    }
    for (r, d) in dots.iter_mut().enumerate().skip(full) {
        let (y, g) = (&y[r * width..][..width], &g[r * width..][..width]);
        *d = y.iter().zip(g).map(|(y, g)| y * g).sum();
    }
    dots
}

/// [`row_dots`] of eight rows of `width`, in portable code: the eight
/// sums side by side, column after column.
fn dots8(y: &[f32], g: &[f32], width: usize) -> [f32; 8] {
    let mut a = [-0.0f32; 8];
    for k in 0..width {
        for (r, a) in a.iter_mut().enumerate() {
            *a += y[r * width + k] * g[r * width + k];
        }
    }
    a
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`row_dots`](super::row_dots) of eight rows of `width`: eight columns
    /// at a time, their products turned into eight vectors of one column
    /// each and added in column order, lane `r` being row `r`'s sum; the
    /// last `width % 8` columns one by one.
    ///
    /// # Safety
    /// The CPU has AVX2; `y` and `g` hold at least `8 · width` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots8(y: &[f32], g: &[f32], width: usize) -> [f32; 8] {
        debug_assert!(y.len() >= 8 * width && g.len() >= 8 * width);
        let mut acc = _mm256_set1_ps(-0.0);
        let full = width / 8 * 8;
        for k in (0..full).step_by(8) {
            // SAFETY: row `r`'s columns `k..k + 8` are inside `y` and `g`
            // (`k + 8 ≤ width`, the caller's contract).
            let p: [__m256; 8] = std::array::from_fn(|r| unsafe {
                let at = r * width + k;
                _mm256_mul_ps(
                    _mm256_loadu_ps(y.as_ptr().add(at)),
                    _mm256_loadu_ps(g.as_ptr().add(at)),
                )
            });
            for c in super::transpose::transpose8(p) {
                acc = _mm256_add_ps(acc, c);
            }
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds eight f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
        for (r, d) in out.iter_mut().enumerate() {
            let (y, g) = (
                &y[r * width + full..r * width + width],
                &g[r * width + full..r * width + width],
            );
            for (y, g) in y.iter().zip(g) {
                *d += y * g;
            }
        }
        out
    }
}

/// A row's `n = max(‖x‖, NORM_EPS)` for [`l2_normalize_cpu`] and the
/// fused passes that normalize their rows themselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowNorm {
    /// What the row is divided by.
    pub(crate) n: f32,
    /// Whether `n` is the norm itself (its gradient flows), not the floor
    /// (a zero or tiny row) nor NaN.
    pub(crate) through: bool,
}

impl RowNorm {
    /// The row's norm: `Σ v²` in [`sum_of_squares`]'s order, rescaled
    /// ([`scaled_norm`]) where the squares overflow, clamped at `NORM_EPS`
    /// as dfdx's `clamp` does (NaN stays NaN).
    pub(crate) fn of(row: &[f32]) -> Self {
        use crate::distance::NORM_EPS;
        let s = sum_of_squares(row);
        let norm = if s == f32::INFINITY {
            scaled_norm(row)
        } else if s > 0.0 || s.is_nan() {
            s.sqrt()
        } else {
            0.0
        };
        // num_traits::clamp, as dfdx's: NaN stays NaN
        if norm < NORM_EPS {
            RowNorm {
                n: NORM_EPS,
                through: false,
            }
        } else {
            RowNorm {
                n: norm,
                through: !norm.is_nan(),
            }
        }
    }
}

/// `rows` (of `width` values) divided by their norms in place, in
/// [`in_row_parts`](parallel::in_row_parts) of `parts`: exactly
/// [`l2_normalize_cpu`]'s values; the norms, for the backward
/// ([`l2_normalize_backward`]).
pub(crate) fn l2_normalize_in_place(rows: &mut [f32], width: usize, parts: usize) -> Vec<RowNorm> {
    let found = std::sync::Mutex::new(Vec::new());
    parallel::in_row_parts(rows, width, parts, |r0, rows| {
        let norms: Vec<RowNorm> = rows
            .chunks_exact_mut(width)
            .map(|row| {
                let norm = RowNorm::of(row);
                for v in row.iter_mut() {
                    *v /= norm.n;
                }
                norm
            })
            .collect();
        found.lock().expect("the parts' norms").push((r0, norms));
    });
    let mut found = found.into_inner().expect("the parts' norms");
    found.sort_by_key(|&(r0, _)| r0);
    found.into_iter().flat_map(|(_, norms)| norms).collect()
}

/// The normalisation's backward over whole rows: `gx += (g − y·(y·g))/n`
/// where the norm is used, `gx += g/n` where the floor is (`y` the
/// normalized rows, `g` the gradient flowing into them), the dot products
/// in [`row_dots`]'s order.
pub(crate) fn l2_normalize_backward(
    gx: &mut [f32],
    g: &[f32],
    y: &[f32],
    norms: &[RowNorm],
    width: usize,
) {
    let dots = row_dots(y, g, width);
    let rows = gx
        .chunks_exact_mut(width)
        .zip(g.chunks_exact(width))
        .zip(y.chunks_exact(width));
    for ((((gx, g), y), norm), &dot) in rows.zip(norms).zip(&dots) {
        let dot = if norm.through { dot } else { 0.0 };
        for ((gx, &g), &y) in gx.iter_mut().zip(g).zip(y) {
            *gx += (g - y * dot) / norm.n;
        }
    }
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
    let dev = x.device().clone();
    let shape = *x.shape();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    // the rows normalized in place (kept for the backward), their norms
    let width = D.max(1);
    let mut y = Scratch::copy_of(&x);
    let parts = parallel::row_parts(y.len());
    let norms = l2_normalize_in_place(&mut y, width, parts);
    // the output: a fresh buffer (not zeroed first), copied rows apart: its
    // page faults on both cores
    let mut out: Vec<f32> = Vec::with_capacity(y.len());
    parallel::in_row_parts(
        &mut out.spare_capacity_mut()[..y.len()],
        width,
        parts,
        |r0, out| {
            for (o, &v) in out.iter_mut().zip(&y[r0 * width..]) {
                o.write(v);
            }
        },
    );
    // SAFETY: the parts wrote every one of the `y.len()` values: each row
    // of `width` values, `y.len()` a whole number of rows (`y` is B × D,
    // `width = D` or, for D = 0, no value at all).
    unsafe { out.set_len(y.len()) };
    let out = dev.try_tensor_from_vec(out, shape)?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            // the upstream gradient lent, not copied (N × D values)
            with_upstream(grads, &out_ghost, |grads, g| {
                let gx = grads.get_or_alloc_mut(&x)?;
                // rows apart: the fresh gradient's page faults on both cores
                let parts = parallel::row_parts(gx.len());
                parallel::in_row_parts(gx, width, parts, |r0, gx| {
                    touch_for_write(gx);
                    let (g, y) = (&g[r0 * width..][..gx.len()], &y[r0 * width..][..gx.len()]);
                    l2_normalize_backward(gx, g, y, &norms[r0..], width);
                });
                Ok(())
            })
        });
    }
    Ok(out.put_tape(tape))
}

#[cfg(test)]
mod tests {
    use super::row_dots;

    /// `touch_for_write` changes no bit: empty, short, several pages, from
    /// an offset inside a page, NaN and -0 among the values.
    #[test]
    fn touch_for_write_changes_no_value() {
        let v: Vec<f32> = (0..5000)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => f32::NAN,
                2 => f32::NEG_INFINITY,
                _ => i as f32 * 0.3 - 7.0,
            })
            .collect();
        for (from, to) in [(0, 0), (0, 1), (3, 4), (0, 1024), (5, 5000), (1000, 3100)] {
            let mut w = v.clone();
            super::touch_for_write(&mut w[from..to]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(&v), "{from}..{to}");
        }
    }

    /// `l2_normalize_in_place` gives `l2_normalize_cpu`'s values bit for
    /// bit, in one part or several, and `l2_normalize_backward` its
    /// gradient: a zero row (the floor), a tiny one, one whose squares
    /// overflow, a NaN row, an infinite value, ordinary rows.
    #[test]
    fn normalizing_in_place_equals_the_normalize_op_bit_for_bit() {
        use dfdx::prelude::*;
        const D: usize = 5;
        let n = 9000; // N·D ≥ 2¹⁵: the op's and the backward's row parts
        let mut x: Vec<f32> = (0..n * D)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3)
            .collect();
        let specials: [(usize, fn(usize) -> f32); 5] = [
            (0, |_| 0.0),
            (1, |k| k as f32 * 1e-10),
            (2, |k| (k as f32 - 2.0) * 2e19),
            (3, |k| if k == 2 { f32::NAN } else { 1.0 }),
            (4500, |k| if k == 4 { f32::INFINITY } else { 0.5 }),
        ];
        for (r, v) in specials {
            for k in 0..D {
                x[r * D + k] = v(k);
            }
        }
        let dev = Cpu::default();
        let t: Tensor<(usize, Const<D>), f32, Cpu> = dev.tensor_from_vec(x.clone(), (n, Const));
        let y = super::l2_normalize_cpu(t.leaky_trace()).unwrap();
        let g: Vec<f32> = (0..n * D)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let want_y = y.as_vec();
        let gt = dev.tensor_from_vec(g.clone(), (n, Const));
        let want_gx = (y * gt).sum().backward().get(&t).as_vec();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for parts in [1, 2, 3] {
            let mut rows = x.clone();
            let norms = super::l2_normalize_in_place(&mut rows, D, parts);
            assert_eq!(bits(&rows), bits(&want_y), "{parts} parts");
            assert_eq!(norms.len(), n);
            let mut gx = vec![0.0f32; n * D];
            super::l2_normalize_backward(&mut gx, &g, &rows, &norms, D);
            assert_eq!(bits(&gx), bits(&want_gx), "{parts} parts: gradient");
        }
        assert!(!norms_of_floor_row_flow(&x[..D]));
    }

    /// The zero row's norm is the floor, whose gradient does not flow.
    fn norms_of_floor_row_flow(row: &[f32]) -> bool {
        let norm = super::RowNorm::of(row);
        assert_eq!(norm.n, crate::distance::NORM_EPS);
        norm.through
    }

    /// `row_dots` is each row's plain `iter().sum()`, bit for bit: whole
    /// blocks of eight rows, a remainder, and rows whose terms are all `-0.0`.
    #[test]
    fn row_dots_match_the_plain_sum_bit_for_bit() {
        let width = 37;
        let rows = 19;
        let mut y: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3)
            .collect();
        let g: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 3e-2)
            .collect();
        // rows 3 and 17 (one in a block, one in the remainder): -0.0 terms
        for r in [3, 17] {
            for (k, v) in y[r * width..][..width].iter_mut().enumerate() {
                *v = if k % 2 == 0 { -0.0 } else { 0.0 };
            }
        }
        let mut g = g;
        for r in [3, 17] {
            for (k, v) in g[r * width..][..width].iter_mut().enumerate() {
                *v = if k % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        let dots = row_dots(&y, &g, width);
        assert_eq!(dots.len(), rows);
        for (r, d) in dots.iter().enumerate() {
            let (y, g) = (&y[r * width..][..width], &g[r * width..][..width]);
            let plain: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            assert_eq!(d.to_bits(), plain.to_bits(), "row {r}");
        }
        assert!(dots[3].is_sign_negative() && dots[17].is_sign_negative());
        // the portable eight-row kernel too (row_dots takes AVX2's here)
        for block in 0..rows / 8 {
            let at = block * 8 * width;
            let eight = super::dots8(&y[at..][..8 * width], &g[at..][..8 * width], width);
            for (e, d) in eight.iter().zip(&dots[block * 8..]) {
                assert_eq!(e.to_bits(), d.to_bits(), "block {block}");
            }
        }
    }
}
