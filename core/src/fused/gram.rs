//! Gram tiles `G[i][j] = ⟨x_i, x_j⟩` of one row-major matrix `X` (`n × d`),
//! the whole cost of a fused mining pass.
//!
//! The project's GEMM ([`super::gemm`]) with its packing done once for the
//! whole pass: `X` is packed, `O(n·d)`, into [`Panels`] — as the slivers of
//! `A = X` and the panels of `B = Xᵀ` the GEMM's micro-kernel reads, with
//! the GEMM's own [`pack`] and blocks of `k` — and each `MR × NR` output
//! tile is one call of that micro-kernel.
//!
//! Why not call [`gemm`](super::gemm::gemm): for the Gram matrix of a mining
//! pass (`n` in the hundreds, `d ≈ 128`) the packing is shared by every
//! tile, the caller asks only for the blocks it needs (half of a symmetric
//! matrix), and it consumes each block while it is still in cache.

use super::Scratch;
use super::gemm::{KC, Kernel, NR, Operand, Store, pack};

pub(crate) use super::gemm::MR;

/// Rows per block of a pass over the matrix: a multiple of [`MR`] and
/// [`NR`], so that every block starts on a panel boundary.
pub(crate) const BLOCK: usize = 48;
/// From this many rows on, a pass shares its blocks among rayon's threads
/// (below it, waking a second thread costs more than it saves: measured
/// slower at N = 256, faster at N = 1024).
const PARALLEL_MIN_ROWS: usize = 320;

/// Whether a pass over `n` rows runs its blocks on rayon's threads.
pub(crate) fn parallel(n: usize) -> bool {
    n >= PARALLEL_MIN_ROWS && rayon::current_num_threads() > 1
}

/// `‖a‖² + ‖b‖² − 2⟨a, b⟩` clamped at 0 (rounding can take it below; a NaN
/// stays NaN), square-rooted unless `squared`.
#[inline(always)]
pub(crate) fn distance(sq_a: f32, sq_b: f32, dot: f32, squared: bool) -> f32 {
    let d2 = sq_a + sq_b - 2.0 * dot;
    let d2 = if d2 < 0.0 { 0.0 } else { d2 };
    if squared { d2 } else { d2.sqrt() }
}

/// `row_j ← distance(sq_a, sq_b_j, row_j, false)` for a row of dot
/// products: eight at a time where the CPU has AVX2 (the same operations,
/// so the same bits: a sum, a product, a difference, the clamp, the square
/// root).
pub(crate) fn distances(sq_a: f32, sq_b: &[f32], row: &mut [f32]) {
    assert!(sq_b.len() >= row.len());
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); `sq_b` is at least as long as
        // `row` (asserted).
        done = unsafe { avx2::distances(sq_a, sq_b, row) };
    }
    for (v, &sq) in row[done..].iter_mut().zip(&sq_b[done..]) {
        *v = distance(sq_a, sq, *v, false);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`distances`](super::distances) over the whole blocks of eight;
    /// returns how many entries it did.
    ///
    /// # Safety
    /// The CPU has AVX2; `sq_b` is at least as long as `row`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn distances(sq_a: f32, sq_b: &[f32], row: &mut [f32]) -> usize {
        let full = row.len() / 8 * 8;
        let (a, two, zero) = (
            _mm256_set1_ps(sq_a),
            _mm256_set1_ps(2.0),
            _mm256_setzero_ps(),
        );
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ row.len() ≤ sq_b.len()` (the caller's contract).
            unsafe {
                let o = row.as_mut_ptr().add(j);
                let b = _mm256_loadu_ps(sq_b.as_ptr().add(j));
                // (a + b) − 2·dot, no fused multiply-add (the scalar's rounding)
                let d2 = _mm256_sub_ps(_mm256_add_ps(a, b), _mm256_mul_ps(two, _mm256_loadu_ps(o)));
                // below 0 → +0; −0 and NaN kept (as the scalar test `d2 < 0`)
                let d2 = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(d2, zero), d2);
                _mm256_storeu_ps(o, _mm256_sqrt_ps(d2));
            }
        }
        full
    }
}

/// `X` packed for Gram tiles.
pub(crate) struct Panels {
    n: usize,
    d: usize,
    /// `X` as given, row-major.
    rows: Scratch,
    /// `X` as the GEMM's `A`: for each block of `k` (`p0..p0 + kc`), at
    /// `row_pad·p0`, the slivers of [`MR`] rows (`kc·MR` values each), zero
    /// rows past `n`.
    slivers: Scratch,
    /// `Xᵀ` as the GEMM's `B`: for each block of `k`, at `cols·p0`, the
    /// panels of [`NR`] columns (`kc·NR` values each), zero past `n`.
    panels: Scratch,
    /// `n` rounded up to a multiple of `MR`.
    row_pad: usize,
    /// `n` rounded up to a multiple of `NR`.
    cols: usize,
    /// The blocks of `k`: `kc` steps each (the last one shorter).
    kc: usize,
    /// `⟨x_i, x_i⟩` for every row (zero past `n`, `cols` values), summed in
    /// exactly the order and precision the tile kernel sums a dot product:
    /// so `G_ii + G_jj − 2G_ij` is exactly 0 when rows `i` and `j` are equal.
    sq: Vec<f32>,
    /// The micro-kernel: chosen once, so that the norms, every tile and the
    /// callers' SIMD passes agree.
    kernel: Kernel,
}

impl Panels {
    /// Packs `X` from its `n × d` row-major values (kept, and given back by
    /// [`into_rows`](Self::into_rows)). The packed buffers are [`Scratch`]:
    /// a pass at a size seen before allocates nothing here.
    pub(crate) fn new(rows: Scratch, n: usize, d: usize) -> Self {
        assert_eq!(
            rows.len(),
            n * d,
            "Panels: {} values for {n} x {d}",
            rows.len()
        );
        let kernel = Kernel::detect();
        let (row_pad, cols) = (n.div_ceil(MR) * MR, n.div_ceil(NR) * NR);
        let kc = KC.min(d.max(1));
        let mut slivers = Scratch::with_len(row_pad * d, 0);
        let mut panels = Scratch::with_len(cols * d, 0);
        let mut sq = vec![0.0f32; cols];
        let x = Operand::plain(&rows, d.max(1));
        // the rows in two halves of whole blocks (their slivers and panels
        // apart) on two threads for a large pass: the same values either way
        let cut = if parallel(n) {
            (n / 2).div_ceil(BLOCK) * BLOCK
        } else {
            n
        };
        for p0 in (0..d).step_by(kc) {
            let kc = kc.min(d - p0);
            // where the second half's slivers, panels and norms start (the
            // first half's padded ends when there is one half)
            let (at, at_sq) = if cut < n {
                ((cut * kc, cut * kc), cut)
            } else {
                ((row_pad * kc, cols * kc), cols)
            };
            let (sl0, sl1) = slivers[row_pad * p0..].split_at_mut(at.0);
            let (pa0, pa1) = panels[cols * p0..cols * (p0 + kc)].split_at_mut(at.1);
            let (sq0, sq1) = sq.split_at_mut(at_sq);
            let pack_rows =
                |r0: usize, rows: usize, sl: &mut [f32], pa: &mut [f32], sq: &mut [f32]| {
                    if rows == 0 {
                        return;
                    }
                    pack::<MR>(kernel, x.t(), p0, kc, r0, rows, sl);
                    pack::<NR>(kernel, x.t(), p0, kc, r0, rows, pa);
                    for (panel, sq) in pa.chunks_exact(kc * NR).zip(sq.chunks_exact_mut(NR)) {
                        kernel.norms(panel, kc, sq);
                    }
                };
            if cut < n {
                let halves = [
                    std::sync::Mutex::new(Some((0, cut, sl0, pa0, sq0))),
                    std::sync::Mutex::new(Some((cut, n - cut, sl1, pa1, sq1))),
                ];
                super::parallel::in_parallel(2, |h| {
                    let half = halves[h].lock().expect("a half").take();
                    let (r0, rows, sl, pa, sq) = half.expect("each half runs once");
                    pack_rows(r0, rows, sl, pa, sq);
                });
            } else {
                pack_rows(0, n, sl0, pa0, sq0);
            }
        }
        Panels {
            n,
            d,
            rows,
            slivers,
            panels,
            row_pad,
            cols,
            kc,
            sq,
            kernel,
        }
    }

    /// Whether the AVX2 + FMA kernels run (for this packing and its users).
    pub(crate) fn simd(&self) -> bool {
        self.kernel.simd()
    }

    /// The rows of `X` again (`n × d`), the packed buffers back to this
    /// thread's scratch.
    pub(crate) fn into_rows(self) -> Scratch {
        self.rows
    }

    /// The squared norm of every row, consistent with the tiles (see the
    /// field); [`padded_cols`](Self::padded_cols) values, zero past `n`.
    pub(crate) fn sq(&self) -> &[f32] {
        &self.sq
    }

    /// [`MetricLossError::NonFinite`](crate::MetricLossError::NonFinite) for
    /// the first of rows `0..n` whose squared norm is not finite (an `O(N)`
    /// look, before the Gram expansion's clamp at 0 and zero diagonal can
    /// hide it): its non-finite value (`what: "embeddings"`), or, for
    /// finite values whose squares overflow, the norm (`"distances"`).
    pub(crate) fn check_finite(&self, n: usize, d: usize) -> Result<(), crate::MetricLossError> {
        use crate::MetricLossError::NonFinite;
        let Some(row) = self.sq[..n].iter().position(|s| !s.is_finite()) else {
            return Ok(());
        };
        let values = &self.rows()[row * d..(row + 1) * d];
        Err(match values.iter().position(|v| !v.is_finite()) {
            Some(column) => NonFinite {
                what: "embeddings",
                row,
                column,
                value: values[column],
            },
            None => NonFinite {
                what: "distances",
                row,
                column: 0,
                value: self.sq[row],
            },
        })
    }

    /// The rows of `X` (`n × d`).
    pub(crate) fn rows(&self) -> &[f32] {
        &self.rows[..self.n * self.d]
    }

    /// `n` rounded up to a multiple of [`NR`]: the end of the last panel.
    pub(crate) fn padded_cols(&self) -> usize {
        self.cols
    }

    /// Writes `⟨x_{i0 + r}, x_{j0 + c}⟩` to `out[r * ld + c]` for
    /// `r < rows.div_ceil(MR) * MR` (rows past `n` are zero rows) and
    /// `c < j1 - j0`. `i0` is a multiple of [`MR`]; `j0` and `j1` are
    /// multiples of [`NR`], `j1` at most [`padded_cols`](Self::padded_cols).
    pub(crate) fn tile(
        &self,
        i0: usize,
        rows: usize,
        j0: usize,
        j1: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let d = self.d;
        let row_tiles = rows.div_ceil(MR);
        assert!(j0.is_multiple_of(NR) && j1.is_multiple_of(NR) && j0 <= j1 && j1 <= self.cols);
        assert!(
            i0.is_multiple_of(MR) && i0 + row_tiles * MR <= self.row_pad,
            "tile rows out of range"
        );
        if row_tiles == 0 || j0 == j1 {
            return;
        }
        assert!(ld >= j1 - j0 && out.len() >= (row_tiles * MR - 1) * ld + (j1 - j0));
        if d == 0 {
            for r in 0..row_tiles * MR {
                out[r * ld..r * ld + (j1 - j0)].fill(0.0);
            }
            return;
        }
        for (i, p0) in (0..d).step_by(self.kc).enumerate() {
            let kc = self.kc.min(d - p0);
            let store = if i == 0 { Store::Set } else { Store::Add };
            let slivers = &self.slivers[self.row_pad * p0..self.row_pad * (p0 + kc)];
            let panels = &self.panels[self.cols * p0..self.cols * (p0 + kc)];
            for p in (j0..j1).step_by(NR) {
                let panel = &panels[p * kc..(p + NR) * kc];
                for t in 0..row_tiles {
                    let a = &slivers[(i0 + t * MR) * kc..(i0 + t * MR + MR) * kc];
                    let c = &mut out[t * MR * ld + (p - j0)..];
                    // SAFETY: `a` holds kc·MR values and `panel` kc·NR;
                    // `c` reaches (MR − 1)·ld + NR values (asserted above).
                    unsafe {
                        self.kernel
                            .full(kc, a.as_ptr(), panel.as_ptr(), c.as_mut_ptr(), ld, store)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs `f` on the portable kernels (on this thread): the GEMM's switch.
    pub(crate) use crate::fused::gemm::portable;

    /// `distances` is `distance` entry by entry, bit for bit: sums below
    /// zero, exactly zero, ±0 and NaN/inf inputs, lengths across eight.
    #[test]
    fn distances_are_the_scalar_distance_bit_for_bit() {
        let odd = [f32::NAN, f32::INFINITY, -0.0, 0.0, 1.0, 0.5, -2.0, 1e-30];
        for len in [0usize, 1, 7, 8, 9, 64, 1021] {
            for &sq_a in &[1.0f32, 0.0, -0.0, f32::NAN, 2.5] {
                let sq_b: Vec<f32> = (0..len)
                    .map(|j| match j % 6 {
                        5 => odd[(j / 6) % odd.len()],
                        _ => 1.0 + (j % 3) as f32 * 0.25,
                    })
                    .collect();
                let dots: Vec<f32> = (0..len)
                    .map(|j| match j % 5 {
                        3 => odd[(j / 5 + 2) % odd.len()],
                        4 => 0.5 * (sq_a + sq_b[j]), // exactly 0 (or NaN)
                        _ => ((j * 37) % 19) as f32 / 9.0 - 1.0,
                    })
                    .collect();
                let mut got = dots.clone();
                distances(sq_a, &sq_b, &mut got);
                for j in 0..len {
                    let want = distance(sq_a, sq_b[j], dots[j], false);
                    assert_eq!(got[j].to_bits(), want.to_bits(), "{len} {sq_a} {j}");
                }
            }
        }
    }

    fn values(n: usize, d: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    #[test]
    fn check_finite_names_the_value_or_the_overflowing_norm() {
        use crate::MetricLossError::NonFinite;
        let (n, d) = (4, 3);
        let packed = |v: Vec<f32>| Panels::new(v.into(), n, d);
        assert!(packed(values(n, d)).check_finite(n, d).is_ok());
        let mut v = values(n, d);
        v[2 * d + 1] = f32::NAN;
        v[3 * d] = f32::INFINITY;
        match packed(v).check_finite(n, d) {
            Err(NonFinite {
                what,
                row,
                column,
                value,
            }) => {
                assert_eq!((what, row, column), ("embeddings", 2, 1));
                assert!(value.is_nan());
            }
            other => panic!("{other:?}"),
        }
        // finite values whose squares overflow f32: the norm is named
        let mut v = values(n, d);
        v[d] = 1e20;
        match packed(v).check_finite(n, d) {
            Err(NonFinite {
                what,
                row,
                column,
                value,
            }) => {
                assert_eq!((what, row, column), ("distances", 1, 0));
                assert_eq!(value, f32::INFINITY);
            }
            other => panic!("{other:?}"),
        }
        // rows past `n` are not looked at
        let mut v = values(n, d);
        v[3 * d] = f32::NAN;
        assert!(packed(v).check_finite(3, d).is_ok());
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        p: &Panels,
        xs: &[f32],
        n: usize,
        d: usize,
        i0: usize,
        rows: usize,
        j0: usize,
        j1: usize,
    ) {
        let ld = j1 - j0 + 3;
        let mut out = vec![f32::NAN; rows.div_ceil(MR) * MR * ld];
        p.tile(i0, rows, j0, j1, &mut out, ld);
        for r in 0..rows.min(n - i0) {
            for c in 0..(j1 - j0).min(n - j0) {
                let (i, j) = (i0 + r, j0 + c);
                let want: f32 = (0..d).map(|k| xs[i * d + k] * xs[j * d + k]).sum();
                let got = out[r * ld + c];
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "n={n} d={d} ({i},{j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn tiles_equal_dot_products() {
        tiles_equal_dot_products_here();
        portable(tiles_equal_dot_products_here);
    }

    fn tiles_equal_dot_products_here() {
        // (30, 600): three blocks of k
        for (n, d) in [
            (1, 3),
            (5, 2),
            (17, 1),
            (70, 9),
            (100, 128),
            (33, 0),
            (30, 600),
            // packed in two halves on two threads (from 320 rows on), a
            // partial last sliver and panel; two blocks of k
            (335, 20),
            (400, 330),
        ] {
            let xs = values(n, d);
            let p = Panels::new(xs.clone().into(), n, d);
            assert_eq!(p.padded_cols(), n.div_ceil(NR) * NR);
            check(&p, &xs, n, d, 0, n, 0, p.padded_cols());
            if n > 20 {
                check(&p, &xs, n, d, 18, n - 18, 16, p.padded_cols());
            }
            assert_eq!(&*p.into_rows(), &xs[..]);
        }
    }

    #[test]
    fn norms_equal_the_diagonal_bit_for_bit() {
        norms_equal_the_diagonal_here();
        portable(norms_equal_the_diagonal_here);
    }

    fn norms_equal_the_diagonal_here() {
        // one block of k, and three
        for d in [129, 531] {
            norms_equal_the_diagonal_at(40, d);
        }
        // packed in two halves (from 320 rows on)
        norms_equal_the_diagonal_at(341, 129);
    }

    fn norms_equal_the_diagonal_at(n: usize, d: usize) {
        let mut xs = values(n, d);
        xs[7 * d] = 1e-3; // not a pattern the sums could share by luck
        let p = Panels::new(xs.clone().into(), n, d);
        let ld = p.padded_cols();
        let mut out = vec![0.0; n.div_ceil(MR) * MR * ld];
        p.tile(0, n, 0, ld, &mut out, ld);
        for i in 0..n {
            assert_eq!(p.sq()[i].to_bits(), out[i * ld + i].to_bits(), "row {i}");
        }
        assert!(p.sq()[n..].iter().all(|&s| s == 0.0));
    }
}
