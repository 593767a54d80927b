//! Gram tiles `G[i][j] = ⟨x_i, x_j⟩` of one row-major matrix `X` (`n × d`),
//! the whole cost of a fused mining pass.
//!
//! A register-blocked kernel in the style of BLIS: `X` is packed once,
//! `O(n·d)`, into [`Panels`] (the rows padded to a multiple of [`MR`], and `Xᵀ`
//! cut into [`NR`]-wide column panels), then each `MR × NR` output tile is a
//! sum of `d` outer products held in registers — 12 AVX2 accumulators, two
//! panel loads and six broadcasts per step of `k`, no horizontal sums. The
//! AVX2 + FMA kernel is picked at run time; elsewhere a portable kernel of
//! the same shape runs (the tests check both against plain dot products).
//!
//! Why not a GEMM crate: for the Gram matrix of a mining pass (`n` in the
//! hundreds, `d ≈ 128`) a general GEMM spends much of its time packing and
//! dispatching; here the packing is shared by every tile, the caller asks
//! only for the blocks it needs (half of a symmetric matrix), and it consumes
//! each block while it is still in cache.

use super::Scratch;

/// Rows per micro-tile.
pub(crate) const MR: usize = 6;
/// Columns per micro-tile (the width of one packed panel).
pub(crate) const NR: usize = 16;
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

/// `X` packed for Gram tiles.
pub(crate) struct Panels {
    n: usize,
    d: usize,
    /// `X`, row-major, with zero rows up to a multiple of `MR`.
    rows: Scratch,
    /// `Xᵀ` in panels: value `(p, k, l)` at `(p·d + k)·NR + l` is
    /// `X[p·NR + l][k]`, zero past the last row.
    panels: Scratch,
    /// `n` rounded up to a multiple of `NR`.
    cols: usize,
    /// `⟨x_i, x_i⟩` for every row (zero past `n`, `cols` values), summed in
    /// exactly the order and precision the tile kernel sums a dot product:
    /// so `G_ii + G_jj − 2G_ij` is exactly 0 when rows `i` and `j` are equal.
    sq: Vec<f32>,
    /// Whether the AVX2 + FMA kernels run: decided once, so that the norms,
    /// every tile and the callers' SIMD passes agree.
    simd: bool,
}

impl Panels {
    /// Packs `X` from its `n × d` row-major values, padding `rows` in place
    /// (so a buffer read with spare capacity is not copied again). Both
    /// buffers are [`Scratch`]: a pass at a size seen before allocates
    /// nothing here.
    pub(crate) fn new(mut rows: Scratch, n: usize, d: usize) -> Self {
        assert_eq!(
            rows.len(),
            n * d,
            "Panels: {} values for {n} x {d}",
            rows.len()
        );
        let cols = n.div_ceil(NR) * NR;
        let mut panels = Scratch::with_len(cols * d, 0);
        panels.fill(0.0);
        for (p, panel) in panels.chunks_exact_mut((NR * d).max(1)).enumerate() {
            for l in 0..NR.min(n.saturating_sub(p * NR)) {
                let row = &rows[(p * NR + l) * d..][..d];
                for (k, &v) in row.iter().enumerate() {
                    panel[k * NR + l] = v;
                }
            }
        }
        rows.resize(n.div_ceil(MR) * MR * d);
        let simd = simd();
        let mut sq = vec![0.0f32; cols];
        for (panel, sq) in panels
            .chunks_exact((NR * d).max(1))
            .zip(sq.chunks_exact_mut(NR))
        {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX2 and FMA are present; `panel` holds d steps of
                // NR values and `sq` NR values.
                unsafe { avx2::norms(panel.as_ptr(), d, sq.as_mut_ptr()) };
                continue;
            }
            for b in panel.chunks_exact(NR).take(d) {
                for (s, &v) in sq.iter_mut().zip(b) {
                    *s += v * v;
                }
            }
        }
        Panels {
            n,
            d,
            rows,
            panels,
            cols,
            sq,
            simd,
        }
    }

    /// Whether the AVX2 + FMA kernels run (for this packing and its users).
    pub(crate) fn simd(&self) -> bool {
        self.simd
    }

    /// The rows of `X` again (`n × d`), the panel buffer back to this
    /// thread's scratch.
    pub(crate) fn into_rows(self) -> Scratch {
        let Panels { n, d, mut rows, .. } = self;
        rows.truncate(n * d);
        rows
    }

    /// The squared norm of every row, consistent with the tiles (see the
    /// field); [`padded_cols`](Self::padded_cols) values, zero past `n`.
    pub(crate) fn sq(&self) -> &[f32] {
        &self.sq
    }

    /// The rows, padded with zero rows.
    pub(crate) fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// `n` rounded up to a multiple of [`NR`]: the end of the last panel.
    pub(crate) fn padded_cols(&self) -> usize {
        self.cols
    }

    /// Writes `⟨x_{i0 + r}, x_{j0 + c}⟩` to `out[r * ld + c]` for
    /// `r < rows.div_ceil(MR) * MR` (rows past `n` are zero rows) and
    /// `c < j1 - j0`. `j0` and `j1` are multiples of [`NR`], `j1` at most
    /// [`padded_cols`](Self::padded_cols).
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
        assert!(j0 % NR == 0 && j1 % NR == 0 && j0 <= j1 && j1 <= self.cols);
        assert!(
            (i0 + row_tiles * MR) * d <= self.rows.len(),
            "tile rows out of range"
        );
        assert!(ld >= j1 - j0 && out.len() >= (row_tiles * MR - 1) * ld + (j1 - j0));
        for p in (j0..j1).step_by(NR) {
            let panel = &self.panels[p * d..(p + NR) * d];
            for t in 0..row_tiles {
                let a = &self.rows[(i0 + t * MR) * d..(i0 + t * MR + MR) * d];
                let c = &mut out[t * MR * ld + (p - j0)..];
                #[cfg(target_arch = "x86_64")]
                if self.simd {
                    // SAFETY: AVX2 and FMA were detected (`simd`); `a` holds
                    // MR rows of d values, `panel` d steps of NR values, and
                    // `c` reaches (MR - 1) * ld + NR values (asserted above).
                    unsafe { avx2::micro(a.as_ptr(), panel.as_ptr(), d, c.as_mut_ptr(), ld) };
                    continue;
                }
                micro_portable(a, panel, d, c, ld);
            }
        }
    }
}

/// Whether the AVX2 + FMA kernels can run on this CPU (`std` caches the
/// answer); [`Panels::new`] asks once per packing.
fn simd() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The portable micro-kernel: `out[r·ld + l] = Σ_k a[r·d + k] · panel[k·NR + l]`.
fn micro_portable(a: &[f32], panel: &[f32], d: usize, out: &mut [f32], ld: usize) {
    let mut acc = [[0.0f32; NR]; MR];
    for (k, b) in panel.chunks_exact(NR).enumerate().take(d) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = a[r * d + k];
            for (c, &bv) in acc.iter_mut().zip(b) {
                *c += av * bv;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out[r * ld..r * ld + NR].copy_from_slice(acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// The AVX2 + FMA micro-kernel, same contract as `micro_portable`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` points at `MR · d` values, `panel` at
    /// `d · NR`, and `out` at `(MR − 1) · ld + NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn micro(
        a: *const f32,
        panel: *const f32,
        d: usize,
        out: *mut f32,
        ld: usize,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for k in 0..d {
                let b0 = _mm256_loadu_ps(panel.add(k * NR));
                let b1 = _mm256_loadu_ps(panel.add(k * NR + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * d + k));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * ld), acc[0]);
                _mm256_storeu_ps(out.add(r * ld + 8), acc[1]);
            }
        }
    }

    /// The squared norms of one panel's `NR` rows, each lane the same chain
    /// of fused multiply-adds as `micro` runs for a diagonal entry.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `panel` points at `d · NR` values and `sq`
    /// at `NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn norms(panel: *const f32, d: usize, sq: *mut f32) {
        unsafe {
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for k in 0..d {
                let b0 = _mm256_loadu_ps(panel.add(k * NR));
                let b1 = _mm256_loadu_ps(panel.add(k * NR + 8));
                s0 = _mm256_fmadd_ps(b0, b0, s0);
                s1 = _mm256_fmadd_ps(b1, b1, s1);
            }
            _mm256_storeu_ps(sq, s0);
            _mm256_storeu_ps(sq.add(8), s1);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Set by a test to run the portable kernels on this thread.
        pub(crate) static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` on the portable kernels (on this thread).
    pub(crate) fn portable<R>(f: impl FnOnce() -> R) -> R {
        PORTABLE.set(true);
        let r = f();
        PORTABLE.set(false);
        r
    }

    fn values(n: usize, d: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect()
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
        for (n, d) in [(1, 3), (5, 2), (17, 1), (70, 9), (100, 128), (33, 0)] {
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
        let (n, d) = (40, 129);
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

    #[test]
    fn portable_kernel_equals_dot_products() {
        let (n, d) = (12, 37);
        let xs = values(n, d);
        let p = Panels::new(xs.clone().into(), n, d);
        let mut out = vec![0.0; MR * NR];
        micro_portable(&p.rows[6 * d..12 * d], &p.panels[..NR * d], d, &mut out, NR);
        for r in 0..MR {
            for c in 0..n {
                let want: f32 = (0..d).map(|k| xs[(6 + r) * d + k] * xs[c * d + k]).sum();
                assert!((out[r * NR + c] - want).abs() < 1e-4);
            }
        }
    }
}
