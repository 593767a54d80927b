//! The ranking family fused on the CPU for every pair of the batch
//! ([`AllPairs`](crate::miners::AllPairs), PML's no-miner call). The
//! formula's matrix is computed once from the Gram tiles of [`Panels`]
//! (the normalized rows packed once): for the batch's own matrix only the
//! tiles on and above the diagonal, in blocks of [`BLOCK`] rows, mirrored
//! below it. Each row goes through the formula's row form with its weights
//! filled from the labels; only per-row values, counts and statistics are
//! kept, and, with a tape, `∂L/∂s` of each row overwrites that row of the
//! matrix. `∂L/∂G` is then pushed through `G = X·Xᵀ` with one product of
//! the project's GEMM, `∂L/∂X = (∂L/∂G + ∂L/∂Gᵀ)·X`. Memory: `O(N·D)` plus
//! the one `N × N` matrix (64 MiB at N = 4096).
//!
//! A view of the matrix (N-pairs' anchors × positives) is the same pass on
//! `X' = [A; B]` packed once, rows of `A` against columns of `B` (every
//! tile, no symmetry; two products for the gradient), its gradient sent
//! back to the rows it was gathered from; the statistics then read the
//! batch's own matrix (they cover every pair).

use super::gemm::NR;
use super::gemm::{Operand, cut_in, gemm};
use super::gram::{BLOCK, MR, Panels, distances};
use super::parallel::{in_parallel, in_row_parts, row_parts};
use super::touch_for_write;
use super::{Scratch, l2_normalize_backward, l2_normalize_in_place, upstream};
use crate::MetricLossError;
use crate::device::{FusedFormula, Prepare};
use crate::formulas::{BatchFormula, ListSizes, PairWeights, Row, Score};
use crate::miners::{MinerStats, RowStats, label_ids, multi_similarity_keep_row};
use dfdx::prelude::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// From this many rows on, the blocks are shared among rayon's threads:
/// each row costs `N` exponentials or so, far more than the Gram tile, so
/// this is lower than the mining passes' threshold.
const PARALLEL_MIN_ROWS: usize = 128;

/// Rows of a block of [`Pass::sweep`]: a third of [`BLOCK`] (so its blocks regroup into [`BLOCK`]'s, see
/// [`by_block`]), small enough that two threads end within a few rows of
/// each other.
const SWEEP_ROWS: usize = 16;
const _: () = assert!(BLOCK.is_multiple_of(SWEEP_ROWS));

/// A row-major matrix shared among threads that each read and write their
/// own elements (see [`Shared::chunk`] and [`fold_lower`]).
#[derive(Clone, Copy)]
struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a `Shared` is only dereferenced on elements that one thread alone
// touches during the parallel section (the callers' contracts).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The buffer's first value (for [`fold_rect`]'s callers).
    fn ptr(&self) -> *mut f32 {
        self.ptr
    }

    fn of(m: &mut [f32]) -> Self {
        Shared {
            ptr: m.as_mut_ptr(),
            len: m.len(),
        }
    }

    /// Values `from..from + len` (clamped to the end) as a slice.
    ///
    /// # Safety
    /// No other thread touches those values while the slice lives, and the
    /// buffer outlives it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn chunk(&self, from: usize, len: usize) -> &mut [f32] {
        assert!(from <= self.len);
        let len = len.min(self.len - from);
        // SAFETY: inside the buffer (asserted); exclusive (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(from), len) }
    }
}

/// The blocks' first rows over `n` rows.
fn block_starts(n: usize) -> Vec<usize> {
    (0..n).step_by(BLOCK).collect()
}

/// `f(block index)` for every block of `blocks`, claimed one by one by
/// `parts` workers (the calling thread among them), the largest blocks
/// first — the last ones when the work grows with the block's index
/// (`growing`), else the first ones — so that no large block is left for
/// the end; for work whose result does not depend on the worker.
fn claim_blocks(blocks: usize, parts: usize, growing: bool, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    let work = |_: usize| {
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= blocks {
                return;
            }
            f(if growing { blocks - 1 - k } else { k });
        }
    };
    if parts > 1 {
        in_parallel(parts, work);
    } else {
        work(0);
    }
}

/// The lower triangle of the `n × n` matrix `m` (row stride `ld`) from its
/// upper one. With `sum`, `m` becomes `m + mᵀ` (the diagonal doubled):
/// `∂L/∂G` of a symmetric product. Without, the entries below the diagonal
/// blocks of [`BLOCK`] rows are copied from above them (the tiles computed
/// only from each block's diagonal on).
fn fold_lower(m: &mut [f32], ld: usize, n: usize, parts: usize, sum: bool) {
    assert!(n == 0 || (n - 1) * ld + n <= m.len());
    assert!(ld >= n);
    let blocks = block_starts(n);
    let shared = Shared::of(m);
    // Block `b` (rows i0..i1) touches entries (i, j) and (j, i) for i in
    // i0..i1, j < i1: every entry belongs to the block of the larger of its
    // two indices, so the blocks touch disjoint entries.
    claim_blocks(blocks.len(), parts, true, |b| {
        let (i0, i1) = (blocks[b], (blocks[b] + BLOCK).min(n));
        let h = i1 - i0;
        // the tiles left of the diagonal one, with their mirrors above it
        for j0 in (0..i0).step_by(BLOCK) {
            // SAFETY: rows i0..i1 × columns j0..j0 + BLOCK ≤ i0 and their
            // mirror, inside the n × n matrix (asserted): this block's alone.
            unsafe { fold_rect(shared.ptr(), ld, (i0, j0), (h, BLOCK), sum) };
        }
        if sum {
            // the diagonal tile: its 8-row chunks below each other, then
            // each chunk's own square
            for a in (0..h).step_by(8) {
                let ha = 8.min(h - a);
                for c in (0..a).step_by(8) {
                    // SAFETY: as above, inside the diagonal tile, below its diagonal.
                    unsafe { fold_rect(shared.ptr(), ld, (i0 + a, i0 + c), (ha, 8), true) };
                }
                for x in 0..ha {
                    for y in 0..=x {
                        let (r, c) = (i0 + a + x, i0 + a + y);
                        // SAFETY: inside the diagonal tile (this block's).
                        unsafe {
                            let (lo, up) =
                                (shared.ptr().add(r * ld + c), shared.ptr().add(c * ld + r));
                            let s = *lo + *up;
                            (*lo, *up) = (s, s);
                        }
                    }
                }
            }
        }
    });
}

/// The `h × w` rectangle of `m` (row stride `ld`) at rows `r0..`, columns
/// `c0..`, strictly below the diagonal (`c0 + w ≤ r0`), and its mirror
/// above it: with `sum`, both become `m + mᵀ` there; without, the
/// rectangle is copied from its mirror. Eight by eight through registers
/// where the CPU has AVX2, the edges one by one.
///
/// # Safety
/// The rectangle and its mirror are inside the buffer behind `p`, and no
/// other thread touches them.
unsafe fn fold_rect(
    p: *mut f32,
    ld: usize,
    (r0, c0): (usize, usize),
    (h, w): (usize, usize),
    sum: bool,
) {
    debug_assert!(c0 + w <= r0);
    #[allow(unused_mut)]
    let (mut h8, mut w8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        (h8, w8) = (h / 8 * 8, w / 8 * 8);
        for a in (0..h8).step_by(8) {
            for b in (0..w8).step_by(8) {
                // SAFETY: an 8 × 8 square of the rectangle and its mirror
                // (the caller's contract); AVX2 (checked just above).
                unsafe { avx2::fold8(p, ld, (r0 + a, c0 + b), sum) };
            }
        }
    }
    for a in 0..h {
        let from = if a < h8 { w8 } else { 0 };
        for b in from..w {
            let (r, c) = (r0 + a, c0 + b);
            // SAFETY: inside the rectangle or its mirror (the caller's contract).
            unsafe {
                let (lo, up) = (p.add(r * ld + c), p.add(c * ld + r));
                if sum {
                    let s = *lo + *up;
                    (*lo, *up) = (s, s);
                } else {
                    *lo = *up;
                }
            }
        }
    }
}

/// What a fused miner kept in a row, in the miner's units `d`: the
/// positive pairs (`pos_j > 0`), the negative ones (`neg_j > 0`), and those
/// on the wrong side of the margins (`d > pos_margin`, `d < neg_margin`).
/// Eight columns at a time where the CPU has AVX2.
fn count_mined(d: &[f32], (pos, neg): (&[f32], &[f32]), m: (f32, f32)) -> (usize, usize, usize) {
    assert!(pos.len() >= d.len() && neg.len() >= d.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); `pos` and `neg` are at least
        // as long as `d` (asserted).
        return unsafe { avx2::count_mined(d, (pos, neg), m) };
    }
    count_mined_portable(d, (pos, neg), m)
}

fn count_mined_portable(
    d: &[f32],
    (pos, neg): (&[f32], &[f32]),
    (pm, nm): (f32, f32),
) -> (usize, usize, usize) {
    let (mut kp, mut kn, mut active) = (0, 0, 0);
    for ((&dist, &p), &q) in d.iter().zip(pos).zip(neg) {
        if p > 0.0 {
            kp += 1;
            active += usize::from(dist > pm);
        }
        if q > 0.0 {
            kn += 1;
            active += usize::from(dist < nm);
        }
    }
    (kp, kn, active)
}

/// One row of `∂L/∂d` turned into `∂L/∂G` in place, for the distances
/// `d = √(‖x_i‖² + ‖x_j‖² − 2G_ij)` of the row (`dist`): `∂d/∂G = −1/d`,
/// `∂d/∂‖x_j‖² = 1/(2d)` (0 where `d ≤ 0` or NaN). Adds each column's
/// `½·e_j` to `dsq` (`e_j = ds_j/d_j`) and returns `Σ_j e_j` (the row's
/// own `∂L/∂‖x_i‖²`, doubled), summed in eight lanes (lane `j mod 8` over
/// the whole blocks of eight, the lanes added in order, then the tail one
/// by one): the same bits with AVX2 and without.
fn distance_grad_row(ds: &mut [f32], dist: &[f32], dsq: &mut [f32]) -> f32 {
    assert!(ds.len() == dist.len() && dsq.len() == dist.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); the three slices are as long
        // as each other (asserted).
        return unsafe { avx2::distance_grad_row(ds, dist, dsq) };
    }
    distance_grad_row_portable(ds, dist, dsq)
}

fn distance_grad_row_portable(ds: &mut [f32], dist: &[f32], dsq: &mut [f32]) -> f32 {
    let full = dist.len() / 8 * 8;
    let mut lanes = [0.0f32; 8];
    for (j, ((v, &d), q)) in ds.iter_mut().zip(dist).zip(dsq.iter_mut()).enumerate() {
        let e = if d > 0.0 { *v / d } else { 0.0 };
        *v = -e;
        *q += 0.5 * e;
        if j < full {
            lanes[j % 8] += e;
        }
    }
    distance_grad_tail(lanes, &ds[full..])
}

/// The lanes' sum, then the tail's `e_j` (already stored as `−e_j`).
fn distance_grad_tail(lanes: [f32; 8], tail: &[f32]) -> f32 {
    let mut sum = lanes.iter().fold(0.0f32, |a, &l| a + l);
    for &v in tail {
        sum += -v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::transpose::transpose8;
    use std::arch::x86_64::*;

    /// [`cosine_units`](super::cosine_units) over the whole blocks of
    /// eight; returns how many columns it wrote.
    ///
    /// # Safety
    /// The CPU has AVX2; `out` is as long as `s`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn cosine_units(s: &[f32], out: &mut [f32], similarity: bool) -> usize {
        let full = s.len() / 8 * 8;
        let (one, two, zero) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(2.0),
            _mm256_setzero_ps(),
        );
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ s.len() = out.len()` (the caller's contract).
            unsafe {
                let x = _mm256_sub_ps(one, _mm256_loadu_ps(s.as_ptr().add(j)));
                // `max`/`min` return their second operand for a NaN or equal
                // zeros: NaN and −0 pass, as through `f32::clamp`
                let d = _mm256_min_ps(two, _mm256_max_ps(zero, x));
                let v = if similarity { _mm256_sub_ps(one, d) } else { d };
                _mm256_storeu_ps(out.as_mut_ptr().add(j), v);
            }
        }
        full
    }

    /// [`count_mined`](super::count_mined), eight columns at a time, the
    /// tail one by one.
    ///
    /// # Safety
    /// The CPU has AVX2; `pos` and `neg` are at least as long as `d`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn count_mined(
        d: &[f32],
        (pos, neg): (&[f32], &[f32]),
        (pm, nm): (f32, f32),
    ) -> (usize, usize, usize) {
        let n = d.len();
        let full = n / 8 * 8;
        let (zero, vpm, vnm) = (_mm256_setzero_ps(), _mm256_set1_ps(pm), _mm256_set1_ps(nm));
        let (mut kp, mut kn, mut active) = (0, 0, 0);
        let count = |m: __m256| _mm256_movemask_ps(m).count_ones() as usize;
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ n ≤ pos.len(), neg.len()` (the caller's contract).
            unsafe {
                let v = _mm256_loadu_ps(d.as_ptr().add(j));
                let p = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(pos.as_ptr().add(j)), zero);
                let q = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(neg.as_ptr().add(j)), zero);
                kp += count(p);
                kn += count(q);
                active += count(_mm256_and_ps(p, _mm256_cmp_ps::<_CMP_GT_OQ>(v, vpm)));
                active += count(_mm256_and_ps(q, _mm256_cmp_ps::<_CMP_LT_OQ>(v, vnm)));
            }
        }
        let (tp, tn, ta) =
            super::count_mined_portable(&d[full..], (&pos[full..n], &neg[full..n]), (pm, nm));
        (kp + tp, kn + tn, active + ta)
    }

    /// [`distance_grad_row`](super::distance_grad_row), eight columns at a
    /// time, the tail in scalar code.
    ///
    /// # Safety
    /// The CPU has AVX2; `ds`, `dist` and `dsq` are as long as each other.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn distance_grad_row(ds: &mut [f32], dist: &[f32], dsq: &mut [f32]) -> f32 {
        let n = dist.len();
        let full = n / 8 * 8;
        let (zero, half) = (_mm256_setzero_ps(), _mm256_set1_ps(0.5));
        let sign = _mm256_set1_ps(-0.0);
        let mut acc = zero;
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ n`, the slices' common length (the caller's contract).
            unsafe {
                let d = _mm256_loadu_ps(dist.as_ptr().add(j));
                let v = ds.as_mut_ptr().add(j);
                let q = dsq.as_mut_ptr().add(j);
                // d > 0 (false for NaN): v/d, else +0 (as the scalar branch)
                let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
                let e = _mm256_and_ps(_mm256_div_ps(_mm256_loadu_ps(v), d), keep);
                _mm256_storeu_ps(v, _mm256_xor_ps(e, sign));
                // a product then a sum (no fused multiply-add: the scalar's rounding)
                _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), _mm256_mul_ps(half, e)));
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for j in full..n {
            let d = dist[j];
            let e = if d > 0.0 { ds[j] / d } else { 0.0 };
            ds[j] = -e;
            dsq[j] += 0.5 * e;
        }
        super::distance_grad_tail(lanes, &ds[full..])
    }

    /// [`fold_rect`](super::fold_rect) of one 8 × 8 square at rows `r0..`,
    /// columns `c0..` (`c0 + 8 ≤ r0`).
    ///
    /// # Safety
    /// As `fold_rect`'s; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fold8(p: *mut f32, ld: usize, (r0, c0): (usize, usize), sum: bool) {
        // SAFETY: rows r0..r0 + 8 × columns c0..c0 + 8 and the mirror square
        // are inside the buffer (the caller's contract).
        unsafe {
            let lo = |k: usize| p.add((r0 + k) * ld + c0);
            let up = |k: usize| p.add((c0 + k) * ld + r0);
            let mut u = [_mm256_setzero_ps(); 8];
            for (k, v) in u.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(up(k));
            }
            let u = transpose8(u);
            if sum {
                let mut s = u;
                for (k, v) in s.iter_mut().enumerate() {
                    *v = _mm256_add_ps(_mm256_loadu_ps(lo(k)), *v);
                    _mm256_storeu_ps(lo(k), *v);
                }
                for (k, v) in transpose8(s).iter().enumerate() {
                    _mm256_storeu_ps(up(k), *v);
                }
            } else {
                for (k, v) in u.iter().enumerate() {
                    _mm256_storeu_ps(lo(k), *v);
                }
            }
        }
    }
}

/// What every block reads: rows `0..rows` of the packed matrix against
/// its rows `c0..c0 + cols` (the same rows, `c0 = 0`, for the whole batch).
struct Pass<'a, F> {
    f: &'a F,
    w: &'a PairWeights,
    panels: &'a Panels,
    rows: usize,
    cols: usize,
    c0: usize,
    d: usize,
}

/// One thread's buffers: one row of each weight, one row of `∂L/∂s` and,
/// for a fused miner, one row of the miner's similarities.
struct Buffers {
    pos: Vec<f32>,
    neg: Vec<f32>,
    ds: Vec<f32>,
    sim: Vec<f32>,
    /// The row whose weights `pos` and `neg` hold as
    /// [`PairWeights::fill_row`] wrote them (`None` after a miner's rule).
    filled: Option<usize>,
}

impl<F: BatchFormula> Pass<'_, F> {
    /// Row stride of the matrix of scores.
    ///
    /// An odd number of cache lines ([`NR`] values): at a power-of-two
    /// stride (N = 1024: 4 KiB) the rows of a column would all fall in one
    /// set of the L1 cache, and the transposes of [`fold_lower`] and the
    /// GEMM's packing of `∂L/∂G` would thrash it.
    fn ld(&self) -> usize {
        let ld = self.panels.padded_cols() - self.c0;
        if (ld / NR).is_multiple_of(2) {
            ld + NR
        } else {
            ld
        }
    }

    /// Whether this is the batch's own (symmetric) matrix.
    fn symmetric(&self) -> bool {
        self.c0 == 0 && self.rows == self.cols
    }

    fn buffers(&self) -> Buffers {
        Buffers {
            pos: vec![0.0; self.cols],
            neg: vec![0.0; self.cols],
            ds: vec![0.0; self.cols],
            sim: match self.w.multi_similarity_miner() {
                Some(_) => vec![0.0; self.cols],
                None => Vec::new(),
            },
            filled: None,
        }
    }

    /// The formula's matrix, whole: row `i` at `i·ld` ([`ld`](Self::ld)),
    /// columns `0..cols` (rows padded to a multiple of [`MR`]). The batch's
    /// own matrix from the tiles on and above the diagonal, mirrored.
    fn matrix(&self, parts: usize) -> Scratch {
        let ld = self.ld();
        let rows_pad = self.rows.div_ceil(MR) * MR;
        let mut s = Scratch::with_len(rows_pad * ld, 0);
        let blocks = block_starts(self.rows);
        let symmetric = self.symmetric();
        let shared = Shared::of(&mut s);
        let end = self.panels.padded_cols();
        // the first blocks are the largest (the batch's own tiles from the
        // diagonal on; a view's last block may be partial)
        claim_blocks(blocks.len(), parts, false, |b| {
            let i0 = blocks[b];
            let rows = BLOCK.min(self.rows - i0);
            // SAFETY: the block's own rows (padded): no other block's.
            let chunk = unsafe { shared.chunk(i0 * ld, BLOCK * ld) };
            // the batch's matrix: from the diagonal block on (i0 is a multiple of NR)
            let j0 = if symmetric { i0 } else { 0 };
            self.panels
                .tile(i0, rows, self.c0 + j0, end, &mut chunk[j0..], ld);
            if F::SCORE == Score::UnitEuclidean {
                let sq = self.panels.sq();
                for r in 0..rows {
                    let sq_i = sq[i0 + r];
                    let cols = &sq[self.c0 + j0..self.c0 + self.cols];
                    distances(sq_i, cols, &mut chunk[r * ld + j0..r * ld + self.cols]);
                }
            }
        });
        if symmetric {
            fold_lower(&mut s, ld, self.rows, parts, false);
        }
        s
    }

    /// Row `r` of `s` (the matrix's rows from `i0` on) as the formula reads
    /// it, its weights filled into `b`: with a fused
    /// [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner), only
    /// the pairs its rule keeps weigh.
    fn row<'b>(&self, i: usize, s: &'b [f32], b: &'b mut Buffers) -> Row<'b> {
        self.w.fill_row_after(i, b.filled, &mut b.pos, &mut b.neg);
        b.filled = Some(i);
        let s = &s[..self.cols];
        if let Some(eps) = self.w.multi_similarity_miner() {
            b.filled = None;
            match F::SCORE {
                Score::Cosine => cosine_units(s, &mut b.sim, true),
                Score::UnitEuclidean => {
                    for (m, &v) in b.sim.iter_mut().zip(s) {
                        *m = miner_similarity::<F>(v);
                    }
                }
            }
            multi_similarity_keep_row(&b.sim[..s.len()], &mut b.pos, &mut b.neg, eps);
        }
        Row {
            index: i,
            s,
            pos: &b.pos,
            neg: &b.neg,
        }
    }

    /// Length of a part's accumulator of `∂L/∂‖x_i‖²` (distances only).
    fn dsq_len(&self) -> usize {
        if F::SCORE == Score::UnitEuclidean {
            self.c0 + self.cols
        } else {
            0
        }
    }

    /// `∂L/∂s` of row `i` in `ds` (as `row_grad` wrote it) turned into
    /// `∂L/∂G` in place (for distances; `dist` the row's distances), its
    /// `∂L/∂‖x‖²` added to `dsq`.
    fn to_gram_grad(&self, i: usize, dist: &[f32], ds: &mut [f32], dsq: &mut [f32]) {
        if F::SCORE != Score::UnitEuclidean {
            return;
        }
        let c0 = self.c0;
        let n = dist.len();
        let row_sum = distance_grad_row(&mut ds[..n], dist, &mut dsq[c0..c0 + n]);
        dsq[i] += 0.5 * row_sum;
    }

    /// `f(first row, row count, its rows of the matrix, buffers,
    /// accumulator)` for every block of rows of `s` (the matrix of
    /// [`matrix`](Self::matrix)), shared among `parts` workers on rayon's
    /// threads; the results in block order, the accumulators in part order.
    ///
    /// Blocks of [`SWEEP_ROWS`] rows, so that the parts' rows are even (in
    /// blocks of 48 rows, N = 256 split 144 / 112 between two threads).
    /// With accumulators (`len > 0`), part `p` takes blocks `p, p + parts,
    /// …`, whichever thread runs it, each part with its own zeroed
    /// accumulator of `len` values: the sums do not depend on the
    /// scheduling. Without (`len = 0`: nothing a part adds up), the blocks
    /// are claimed one by one by whichever worker is free: no part waits
    /// for a thread the machine has not scheduled.
    fn sweep<R: Send>(
        &self,
        s: &mut [f32],
        parts: usize,
        len: usize,
        f: impl Fn(usize, usize, &mut [f32], &mut Buffers, &mut [f32]) -> R + Sync,
    ) -> (Vec<R>, Vec<Vec<f32>>) {
        let step = SWEEP_ROWS;
        let blocks: Vec<usize> = (0..self.rows).step_by(step).collect();
        let ld = self.ld();
        let parts = parts.min(blocks.len()).max(1);
        let slots: Vec<Mutex<Option<R>>> = blocks.iter().map(|_| Mutex::new(None)).collect();
        let accs: Vec<Mutex<Vec<f32>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
        let shared = Shared::of(s);
        let next = AtomicUsize::new(0);
        let block = |k: usize, b: &mut Buffers, acc: &mut [f32]| {
            let (i0, rows) = (blocks[k], step.min(self.rows - blocks[k]));
            // SAFETY: the block's own rows: each block is run once.
            let chunk = unsafe { shared.chunk(i0 * ld, step * ld) };
            let r = f(i0, rows, chunk, b, acc);
            *slots[k].lock().expect("a block's slot") = Some(r);
        };
        let run = |p: usize| {
            let mut acc = vec![0.0f32; len];
            let mut b = self.buffers();
            if len == 0 {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= blocks.len() {
                        break;
                    }
                    block(k, &mut b, &mut acc);
                }
            } else {
                for k in (p..blocks.len()).step_by(parts) {
                    block(k, &mut b, &mut acc);
                }
            }
            *accs[p].lock().expect("a part's accumulator") = acc;
        };
        if parts > 1 {
            in_parallel(parts, |p| cut_in(1, || run(p)));
        } else {
            run(0);
        }
        let results = slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .expect("a block's slot")
                    .expect("every block ran")
            })
            .collect();
        let accs = accs
            .into_iter()
            .map(|m| m.into_inner().expect("a part's accumulator"))
            .collect();
        (results, accs)
    }

    /// `∂L/∂X'` of the packed rows for `∂L/∂G` in `dg` (the matrix's
    /// rows, overwritten: symmetrized for the batch's own matrix) and the
    /// parts' `∂L/∂‖x_i‖²` (adding `2·∂L/∂‖x_i‖² · x_i`), times `scale`.
    fn finish(&self, dg: &mut [f32], dsq: &[Vec<f32>], parts: usize, scale: f32) -> Scratch {
        let (packed, d, ld) = (self.c0 + self.cols, self.d, self.ld());
        let (rows, cols, c0) = (self.rows, self.cols, self.c0);
        let xs = self.panels.rows();
        // from the free list (no fresh pages each call); the products below
        // overwrite it (β = 0) but for the rows between a view's two parts
        let mut dx = Scratch::with_len(packed * d, 0);
        if !self.symmetric() {
            dx.fill(0.0);
        }
        if self.symmetric() {
            fold_lower(dg, ld, rows, parts, true);
            gemm(
                rows,
                d,
                rows,
                scale,
                Operand::plain(dg, ld),
                Operand::plain(&xs[..rows * d], d),
                0.0,
                &mut dx,
                d,
            );
        } else {
            // dX_A = dG·X_B, dX_B = dGᵀ·X_A
            let (a, b) = (&xs[..rows * d], &xs[c0 * d..(c0 + cols) * d]);
            gemm(
                rows,
                d,
                cols,
                scale,
                Operand::plain(dg, ld),
                Operand::plain(b, d),
                0.0,
                &mut dx,
                d,
            );
            gemm(
                cols,
                d,
                rows,
                scale,
                Operand::transposed(dg, ld),
                Operand::plain(a, d),
                0.0,
                &mut dx[c0 * d..],
                d,
            );
        }
        // each row's parts in part order (the same additions however the
        // rows are cut), the rows cut among rayon's threads
        let width = d.max(1);
        let dsq_rows = dsq.iter().map(Vec::len).max().unwrap_or(0).min(packed);
        in_row_parts(
            &mut dx[..dsq_rows * d],
            width,
            row_parts(dsq_rows * d),
            |r0, out| {
                for (r, out) in out.chunks_exact_mut(width).enumerate() {
                    let i = r0 + r;
                    let x = &xs[i * d..(i + 1) * d];
                    for part in dsq {
                        let s = part.get(i).copied().unwrap_or(0.0);
                        if s != 0.0 {
                            for (o, &v) in out.iter_mut().zip(x) {
                                *o += 2.0 * scale * s * v;
                            }
                        }
                    }
                }
            },
        );
        dx
    }
}

/// The sum of the rows' values and of their counts, in `f64`: each block
/// of [`BLOCK`] rows summed in row order, then the blocks in order (the
/// same additions whatever blocks [`Pass::sweep`] ran).
fn by_block(values: &[f32], counts: &[f32]) -> (f64, f64) {
    let (mut sum, mut total) = (0.0f64, 0.0f64);
    for (v, c) in values.chunks(BLOCK).zip(counts.chunks(BLOCK)) {
        let mut block = 0.0f64;
        for &v in v {
            block += f64::from(v);
        }
        sum += block;
        total += c.iter().map(|&c| f64::from(c)).sum::<f64>();
    }
    (sum, total)
}

/// One block's forward: its rows' values and counts and,
/// for the whole batch, each row's statistics; with a fused miner, what it
/// kept.
struct BlockForward {
    values: Vec<f32>,
    counts: Vec<f32>,
    stats: Vec<RowStats>,
    mined: Mined,
}

/// What a fused miner kept over some rows: PML's list sizes and the kept
/// pairs on the wrong side of the margins.
#[derive(Default)]
struct Mined {
    sizes: ListSizes,
    active: usize,
}

/// The similarity [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)
/// reads for a score, exactly as on the listed path's host matrix: the
/// cosine similarity through the clamped distance `1 − s`, or `1 − d²/2`
/// for a distance between unit rows.
fn miner_similarity<F: BatchFormula>(s: f32) -> f32 {
    match F::SCORE {
        Score::Cosine => 1.0 - (1.0 - s).clamp(0.0, 2.0),
        Score::UnitEuclidean => 1.0 - 0.5 * s * s,
    }
}

/// [`RowStats::of`] of the miner's units of a row of scores `s`
/// ([`host_units`]), for a cosine read from the scores in the statistics'
/// own sweep ([`RowStats::of_cosines`]).
fn row_stats<F: BatchFormula>(
    label: usize,
    s: &[f32],
    labels: &[usize],
    ids: Option<&[u32]>,
    own: Option<usize>,
    margins: Option<(f32, f32)>,
) -> RowStats {
    match F::SCORE {
        Score::Cosine => RowStats::of_cosines(label, s, labels, ids, own, margins),
        Score::UnitEuclidean => RowStats::of(label, s, labels, ids, own, margins),
    }
}

/// The miner's units of a row of scores: the cosine distance `1 − s`, or
/// the distance itself.
pub(super) fn host_units<'a, F: BatchFormula>(s: &'a [f32], host: &'a mut [f32]) -> &'a [f32] {
    match F::SCORE {
        Score::Cosine => {
            cosine_units(s, host, false);
            &host[..s.len()]
        }
        Score::UnitEuclidean => s,
    }
}

/// `out_j = clamp(1 − s_j, 0, 2)` (the cosine distance of a score), or with
/// `similarity` `1 − clamp(1 − s_j, 0, 2)` (what the miner reads: see
/// [`miner_similarity`]), for the columns of `s`; eight at a time where
/// the CPU has AVX2 (the same operations, `f32::clamp`'s NaN and −0 kept).
fn cosine_units(s: &[f32], out: &mut [f32], similarity: bool) {
    let out = &mut out[..s.len()];
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); `out` is as long as `s`.
        done = unsafe { avx2::cosine_units(s, out, similarity) };
    }
    for (o, &v) in out[done..].iter_mut().zip(&s[done..]) {
        let d = (1.0 - v).clamp(0.0, 2.0);
        *o = if similarity { 1.0 - d } else { d };
    }
}

/// The loss of formula `f` over every pair of a batch of normalized rows
/// `x` (`w`: the weights of [`Tuples::All`](crate::miners::Tuples::All)
/// for `labels`), and the statistics of every pair, from the formula's
/// matrix computed once. `Unavailable` for a batch PML scores as exactly 0
/// (the generic path gives that zero its gradient), `x` as given.
///
/// With [`Prepare::L2Normalize`], `x` is the raw rows: they are normalized
/// in place in the copy the pass packs ([`l2_normalize_in_place`], the
/// values of [`l2_normalize_cpu`](super::l2_normalize_cpu) bit for bit),
/// and the backward applies the normalization's backward
/// ([`l2_normalize_backward`]) to `∂L/∂y` as it writes `∂L/∂x`, one row
/// part at a time: the same bits as the normalize op's backward after
/// this one's.
///
/// The gradient is linear in the upstream gradient `u`: `∂L/∂X = u/Σcount
/// · Σ_i [count_i > 0] ∂value_i/∂X`. So with a tape the forward computes
/// that sum (`u = 1`) while each row is in cache, and the backward only
/// scales it (lifted structure, whose rows need every row's shared number
/// first, and whose gradient needs every row's derivative with respect to
/// them, keeps the matrix for its backward instead).
pub(crate) fn batch_formula_fused_cpu<F, N, const D: usize, T>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    w: &PairWeights,
    f: &F,
    prepare: Prepare,
) -> Result<FusedFormula<N, D, Cpu, T>, MetricLossError>
where
    F: BatchFormula,
    N: Dim,
    T: Tape<f32, Cpu>,
{
    let n = x.shape().0.size();
    let square = w.view().is_none() && w.rows() == n && w.cols() == n;
    if (!square && w.view().is_none()) || labels.len() != n || f.is_zero(w.sizes()) {
        return Ok(FusedFormula::Unavailable(x));
    }
    if F::SHARED && !square {
        return Ok(FusedFormula::Unavailable(x)); // rows would share across a view
    }
    let mining = w.multi_similarity_miner().is_some();
    if mining && (F::SHARED || !square) {
        return Ok(FusedFormula::Unavailable(x)); // the miner's rule is per row of the batch
    }
    let dev_err = MetricLossError::device;
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous().map_err(dev_err)?.split_tape();
    let mut rows = Scratch::copy_of(&x);
    // the norms, for the backward (none: the rows came normalized)
    let norms = match prepare {
        Prepare::L2Normalize => {
            let parts = row_parts(rows.len());
            Some(l2_normalize_in_place(&mut rows, D.max(1), parts))
        }
        Prepare::AsGiven => None,
    };
    let panels = Panels::new(rows, n, D);
    panels.check_finite(n, D)?;
    let parts = if n >= PARALLEL_MIN_ROWS {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let whole = Pass {
        f,
        w,
        panels: &panels,
        rows: n,
        cols: n,
        c0: 0,
        d: D,
    };
    let margins = f.margins();
    let margins = Some((margins.pos_margin, margins.margin));
    // the labels as u32 for the statistics' eight lanes, when they all fit
    let ids = label_ids(labels);
    // A view: its rows and columns packed as X' = [A; 0; B].
    let view = w.view().map(|(rows, cols)| {
        let c0 = rows.len().div_ceil(NR) * NR;
        let mut packed = Scratch::with_len((c0 + cols.len()) * D, 0);
        packed.fill(0.0);
        let xs = panels.rows();
        for (k, &r) in rows
            .iter()
            .chain(std::iter::repeat_n(&usize::MAX, c0 - rows.len()))
            .chain(cols)
            .enumerate()
        {
            if r != usize::MAX {
                packed[k * D..(k + 1) * D].copy_from_slice(&xs[r * D..(r + 1) * D]);
            }
        }
        let (rows, cols) = (rows.to_vec(), cols.to_vec());
        (Panels::new(packed, c0 + cols.len(), D), rows, cols, c0)
    });
    let pass = match &view {
        None => Pass { ..whole },
        Some((p, rows, cols, c0)) => Pass {
            f,
            w,
            panels: p,
            rows: rows.len(),
            cols: cols.len(),
            c0: *c0,
            d: D,
        },
    };
    let ld = pass.ld();
    let mut s = pass.matrix(parts);

    // Lifted structure: every row's shared number first.
    let shared: Vec<f32> = if F::SHARED {
        pass.sweep(&mut s, parts, 0, |i0, rows, m, b, _| {
            (0..rows)
                .map(|r| f.shared(&pass.row(i0 + r, &m[r * ld..], b)))
                .collect::<Vec<f32>>()
        })
        .0
        .concat()
    } else {
        Vec::new()
    };

    let grad_now = T::OWNS_TAPE && !F::SHARED;
    let dsq_len = if grad_now { pass.dsq_len() } else { 0 };
    let (blocks, dsq) = pass.sweep(&mut s, parts, dsq_len, |i0, rows, m, b, dsq| {
        let mut out = BlockForward {
            values: Vec::with_capacity(rows),
            counts: Vec::with_capacity(rows),
            stats: Vec::with_capacity(rows),
            mined: Mined::default(),
        };
        // the miner's units of a row (only with a fused miner)
        let mut host = if mining {
            vec![0.0f32; pass.cols]
        } else {
            Vec::new()
        };
        let mut ds = std::mem::take(&mut b.ds);
        for r in 0..rows {
            let i = i0 + r;
            let row = pass.row(i, &m[r * ld..], b);
            // with a tape, ∂value/∂s of the row in the same call (u = 1)
            let v = if grad_now {
                f.row_with_grad(&row, 1.0, &mut ds)
            } else {
                f.row(&row, &shared)
            };
            out.values.push(v.value);
            out.counts.push(v.count);
            if square {
                let every_pair = if mining { None } else { margins };
                out.stats.push(row_stats::<F>(
                    labels[i],
                    row.s,
                    labels,
                    ids.as_deref(),
                    Some(i),
                    every_pair,
                ));
                if let (true, Some((pm, nm))) = (mining, margins) {
                    let d = host_units::<F>(row.s, &mut host);
                    // the miner's pairs: counted, and active as the listed path counts them
                    let (kp, kn, active) = count_mined(d, (row.pos, row.neg), (pm, nm));
                    out.mined.active += active;
                    let m = &mut out.mined.sizes;
                    (m.pos, m.neg, m.triplets) = (m.pos + kp, m.neg + kn, m.triplets + kp * kn);
                }
            }
            if grad_now {
                // this row of the matrix becomes its row of ∂L/∂G
                if v.count > 0.0 {
                    pass.to_gram_grad(i, row.s, &mut ds, dsq);
                }
                m[r * ld..r * ld + pass.cols].copy_from_slice(&ds);
            }
        }
        b.ds = ds;
        out
    });
    let mut values = Vec::with_capacity(pass.rows);
    let mut counts = Vec::with_capacity(pass.rows);
    let mut stats = Vec::with_capacity(n);
    let mut mined = Mined::default();
    for b in blocks {
        values.extend(b.values);
        counts.extend(b.counts);
        stats.extend(b.stats);
        let (m, k) = (&mut mined.sizes, b.mined.sizes);
        (m.pos, m.neg, m.triplets) = (m.pos + k.pos, m.neg + k.neg, m.triplets + k.triplets);
        mined.active += b.mined.active;
    }
    let (sum, total) = by_block(&values, &counts);
    if mining && f.is_zero(mined.sizes) {
        // PML's zero for the lists the miner gives: the listed path's, with its gradient
        return Ok(FusedFormula::Unavailable(x.put_tape(tape)));
    }
    if !square {
        // the statistics cover every pair of the batch: its own matrix
        let mut whole_s = whole.matrix(parts);
        let (per_block, _) = whole.sweep(&mut whole_s, parts, 0, |i0, rows, m, _, _| {
            let ld = whole.ld();
            (0..rows)
                .map(|r| {
                    row_stats::<F>(
                        labels[i0 + r],
                        &m[r * ld..r * ld + n],
                        labels,
                        ids.as_deref(),
                        Some(i0 + r),
                        margins,
                    )
                })
                .collect::<Vec<_>>()
        });
        stats = per_block.concat();
    }
    let loss = if total > 0.0 {
        (sum / total) as f32
    } else {
        0.0
    };
    let bad = stats.iter().position(|s| !s.sum.is_finite());
    if let Some(row) = bad {
        return Err(MetricLossError::NonFinite {
            what: "distances",
            row,
            column: 0,
            value: stats[row].sum as f32,
        });
    }
    // every ordered off-diagonal pair: the distances the statistics sum, and
    // the pairs `AllPairs` mines
    let entries = n * (n - 1);
    let (pairs, active) = if mining {
        (mined.sizes.pos + mined.sizes.neg, mined.active)
    } else {
        (entries, stats.iter().map(|s| s.active).sum())
    };
    let stats = MinerStats::from_rows(
        entries,
        stats.into_iter(),
        0,
        pairs,
        active,
        f.margins().margin,
    );

    let out = dev.try_tensor_from_vec(vec![loss], ()).map_err(dev_err)?;
    if T::OWNS_TAPE {
        // the gradient for u = 1 now (the matrix is dropped), or, with shared
        // numbers, the matrix kept for the backward
        let (dx_now, keep) = if grad_now {
            (Some(pass.finish(&mut s, &dsq, parts, 1.0)), None)
        } else {
            (None, Some(s))
        };
        let (rows_of_pass, cols_of_pass, c0) = (pass.rows, pass.cols, pass.c0);
        let (out_ghost, w, f) = (out.clone(), w.clone(), *f);
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?[0];
            let gx = grads.get_or_alloc_mut(&x)?;
            if total <= 0.0 || g == 0.0 {
                if norms.is_some() {
                    // `∂L/∂y` is zeros: the normalization's backward adds +0
                    gx.iter_mut().for_each(|v| *v += 0.0);
                }
                return Ok(());
            }
            let scale = (f64::from(g) / total) as f32;
            let (packed, rows, cols) = match &view {
                None => (&panels, None, None),
                Some((p, rows, cols, _)) => (p, Some(rows), Some(cols)),
            };
            let pass = Pass {
                f: &f,
                w: &w,
                panels: packed,
                rows: rows_of_pass,
                cols: cols_of_pass,
                c0,
                d: D,
            };
            // `∂L/∂X'` and the factor it still needs (the gradient for
            // u = 1 is scaled as it is added)
            let (dx, factor) = match (dx_now, keep) {
                (Some(dx), _) => (dx, scale),
                (None, Some(mut s)) => {
                    let dsq = shared_gradient(&pass, &mut s, parts, &shared, &counts);
                    (pass.finish(&mut s, &dsq, parts, scale), 1.0)
                }
                (None, None) => unreachable!("the gradient or the matrix is kept"),
            };
            // `∂L/∂X'` scaled, added into `into` (`∂L/∂x`, or the zeros
            // of `∂L/∂y` when the pass normalized the rows)
            let scatter = |into: &mut [f32], rows: &[usize], cols: &[usize]| {
                let back = rows
                    .iter()
                    .enumerate()
                    .chain(cols.iter().enumerate().map(|(k, c)| (c0 + k, c)));
                for (k, &r) in back {
                    for (a, b) in into[r * D..(r + 1) * D]
                        .iter_mut()
                        .zip(&dx[k * D..(k + 1) * D])
                    {
                        *a += b * factor;
                    }
                }
            };
            // rows apart: the fresh gradient's page faults on both cores
            let parts = row_parts(gx.len());
            let width = D.max(1);
            match (rows, cols, &norms) {
                (Some(rows), Some(cols), None) => {
                    touch_for_write(gx);
                    scatter(gx, rows, cols);
                }
                (Some(rows), Some(cols), Some(norms)) => {
                    // `∂L/∂y` (rows gathered twice add up), then through the norms
                    let mut gy = Scratch::with_len(gx.len(), 0);
                    gy.fill(0.0);
                    scatter(&mut gy, rows, cols);
                    let y = panels.rows();
                    in_row_parts(gx, width, parts, |r0, gx| {
                        touch_for_write(gx);
                        let at = r0 * D..r0 * D + gx.len();
                        l2_normalize_backward(gx, &gy[at.clone()], &y[at], &norms[r0..], width);
                    });
                }
                (_, _, None) => {
                    in_row_parts(gx, width, parts, |r0, gx| {
                        touch_for_write(gx);
                        for (a, b) in gx.iter_mut().zip(&dx[r0 * D..]) {
                            *a += b * factor;
                        }
                    });
                }
                (_, _, Some(norms)) => {
                    let y = panels.rows();
                    in_row_parts(gx, width, parts, |r0, gx| {
                        touch_for_write(gx);
                        let at = r0 * D..r0 * D + gx.len();
                        // `∂L/∂y` of these rows: dfdx's fresh zeros plus the
                        // scaled `∂L/∂X` (`0 + v`: a −0 becomes +0, as there)
                        let mut gy = Scratch::with_len(gx.len(), 0);
                        for (a, b) in gy.iter_mut().zip(&dx[at.clone()]) {
                            *a = 0.0 + b * factor;
                        }
                        l2_normalize_backward(gx, &gy, &y[at], &norms[r0..], width);
                    });
                }
            }
            Ok(())
        });
    }
    Ok(FusedFormula::Done {
        loss: out.put_tape(tape),
        stats,
    })
}

/// `∂L/∂G` of a formula with shared numbers (lifted structure), for
/// `u = 1`, over the rows of its matrix `s` (overwritten, row by row), and
/// the parts' `∂L/∂‖x_i‖²`: a pass for what every row's value sends to the
/// shared numbers, then one for `∂L/∂s`.
fn shared_gradient<F: BatchFormula>(
    pass: &Pass<F>,
    s: &mut [f32],
    parts: usize,
    shared: &[f32],
    counts: &[f32],
) -> Vec<Vec<f32>> {
    let (n, f, ld) = (pass.rows, pass.f, pass.ld());
    let g = |i: usize| if counts[i] > 0.0 { 1.0 } else { 0.0 };
    let (_, per_part) = pass.sweep(s, parts, n, |i0, rows, m, b, acc| {
        let mut ds = vec![0.0f32; n];
        for r in 0..rows {
            let row = pass.row(i0 + r, &m[r * ld..], b);
            f.row_backward(&row, shared, g(i0 + r), &mut ds, acc);
        }
    });
    let mut dshared = vec![0.0f32; n];
    for p in per_part {
        for (o, v) in dshared.iter_mut().zip(p) {
            *o += v;
        }
    }
    pass.sweep(s, parts, pass.dsq_len(), |i0, rows, m, b, dsq| {
        // what the rows send to the shared numbers again: not needed here
        let mut sink = vec![0.0f32; n];
        let mut ds = std::mem::take(&mut b.ds);
        for r in 0..rows {
            let i = i0 + r;
            ds.fill(0.0);
            let row = pass.row(i, &m[r * ld..], b);
            f.row_backward(&row, shared, g(i), &mut ds, &mut sink);
            f.shared_backward(&row, dshared[i], &mut ds);
            pass.to_gram_grad(i, row.s, &mut ds, dsq);
            m[r * ld..r * ld + pass.cols].copy_from_slice(&ds);
        }
        b.ds = ds;
    })
    .1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, ld: usize) -> Vec<f32> {
        (0..n * ld)
            .map(|k| ((k * 7919) % 101) as f32 / 13.0 - 3.0)
            .collect()
    }

    #[test]
    fn distance_grad_row_is_the_portable_one_bit_for_bit() {
        let special = [
            0.0,
            -0.0,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1e-40,
        ];
        for n in [0usize, 1, 5, 8, 13, 64, 1027] {
            let dist: Vec<f32> = (0..n)
                .map(|j| {
                    if j % 5 == 3 {
                        special[(j / 5) % special.len()]
                    } else {
                        ((j * 37) % 19) as f32 * 0.11 + 0.01
                    }
                })
                .collect();
            let ds: Vec<f32> = (0..n)
                .map(|j| {
                    if j % 7 == 2 {
                        special[(j / 7 + 3) % special.len()]
                    } else {
                        ((j * 53) % 23) as f32 * 0.3 - 3.0
                    }
                })
                .collect();
            let dsq: Vec<f32> = (0..n).map(|j| (j % 3) as f32 * 0.25).collect();
            // the plain definition, for the values (the sum in its own order)
            let (mut want_ds, mut want_dsq) = (ds.clone(), dsq.clone());
            for j in 0..n {
                let e = if dist[j] > 0.0 { ds[j] / dist[j] } else { 0.0 };
                want_ds[j] = -e;
                want_dsq[j] += 0.5 * e;
            }
            let (mut p_ds, mut p_dsq) = (ds.clone(), dsq.clone());
            let p_sum = distance_grad_row_portable(&mut p_ds, &dist, &mut p_dsq);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p_ds), bits(&want_ds), "n={n}");
            assert_eq!(bits(&p_dsq), bits(&want_dsq), "n={n}");
            let finite: f32 = want_ds.iter().map(|v| -v).sum();
            if finite.is_finite() {
                assert!(
                    (p_sum - finite).abs() <= 1e-4 * finite.abs().max(1.0),
                    "n={n}"
                );
            } else {
                assert!(!p_sum.is_finite(), "n={n}");
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                let (mut a_ds, mut a_dsq) = (ds.clone(), dsq.clone());
                // SAFETY: AVX2 (checked just above); equal lengths.
                let a_sum = unsafe { avx2::distance_grad_row(&mut a_ds, &dist, &mut a_dsq) };
                assert_eq!(bits(&a_ds), bits(&p_ds), "n={n}");
                assert_eq!(bits(&a_dsq), bits(&p_dsq), "n={n}");
                assert_eq!(a_sum.to_bits(), p_sum.to_bits(), "n={n}");
            }
        }
    }

    #[test]
    fn cosine_units_are_the_clamp_bit_for_bit() {
        let odd = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            -1.0,
            3.0,
        ];
        for n in [0usize, 1, 7, 8, 9, 64, 1027] {
            let s: Vec<f32> = (0..n)
                .map(|j| match j % 4 {
                    3 => odd[(j / 4) % odd.len()],
                    _ => ((j * 37) % 29) as f32 / 7.0 - 2.0,
                })
                .collect();
            for similarity in [false, true] {
                let mut got = vec![5.0f32; n + 3];
                cosine_units(&s, &mut got, similarity);
                for (j, &v) in s.iter().enumerate() {
                    let want = match similarity {
                        true => miner_similarity::<crate::formulas::SupCon>(v),
                        false => (1.0 - v).clamp(0.0, 2.0),
                    };
                    assert_eq!(got[j].to_bits(), want.to_bits(), "n={n} {similarity} {j}");
                }
                assert_eq!(&got[n..], &[5.0; 3], "past the row: untouched");
            }
        }
    }

    #[test]
    fn count_mined_lanes_equal_the_portable_loop() {
        let odd = [f32::NAN, f32::INFINITY, -0.0, 0.0, 2.0, -1.0];
        for n in [0usize, 1, 7, 8, 9, 64, 1027] {
            let d: Vec<f32> = (0..n)
                .map(|j| match j % 6 {
                    5 => odd[(j / 6) % odd.len()],
                    _ => ((j * 37) % 23) as f32 / 11.0,
                })
                .collect();
            let pos: Vec<f32> = (0..n)
                .map(|j| match j % 5 {
                    0 => 1.0,
                    1 => odd[(j / 5) % odd.len()],
                    _ => 0.0,
                })
                .collect();
            let neg: Vec<f32> = (0..n).map(|j| f32::from(u8::from(j % 5 >= 3))).collect();
            for m in [(0.5f32, 0.5f32), (0.0, 2.0), (f32::NAN, f32::NAN)] {
                let want = count_mined_portable(&d, (&pos, &neg), m);
                assert_eq!(count_mined(&d, (&pos, &neg), m), want, "n={n} {m:?}");
            }
        }
    }

    /// `sweep` runs every block once and returns the results in block
    /// order, claimed (no accumulator) or by parts (their accumulators each
    /// holding its own blocks' rows); `by_block` adds as per-48-row blocks.
    #[test]
    fn sweep_runs_each_block_once_in_order() {
        use crate::formulas::{MultiSimilarity, PairWeights, Weighting};
        let f = MultiSimilarity {
            alpha: 2.0,
            beta: 50.0,
            base: 0.5,
        };
        for n in [1, 16, 47, 100, 150, 256] {
            let (d, labels) = (8, (0..n).map(|i| i / 4).collect::<Vec<_>>());
            let w = PairWeights::try_new(Weighting::Mask, &crate::miners::Tuples::All, &labels)
                .unwrap();
            let x: Vec<f32> = (0..n * d).map(|k| (k % 13) as f32 - 6.0).collect();
            let panels = Panels::new(Scratch::copy_of_slice(&x), n, d);
            let pass = Pass {
                f: &f,
                w: &w,
                panels: &panels,
                rows: n,
                cols: n,
                c0: 0,
                d,
            };
            for parts in [1, 2, 3] {
                let mut s = pass.matrix(parts);
                for len in [0, n] {
                    let (rows, accs) = pass.sweep(&mut s, parts, len, |i0, rows, m, _, acc| {
                        assert!(m.len() >= (rows - 1) * pass.ld() + n, "n={n}");
                        for i in i0..i0 + rows {
                            if let Some(a) = acc.get_mut(i) {
                                *a += 1.0;
                            }
                        }
                        (i0..i0 + rows).collect::<Vec<_>>()
                    });
                    let rows = rows.concat();
                    assert_eq!(rows, (0..n).collect::<Vec<_>>(), "n={n} len={len}");
                    let seen = (0..len)
                        .map(|i| accs.iter().map(|a| a[i]).sum::<f32>())
                        .collect::<Vec<_>>();
                    assert_eq!(seen, vec![1.0; len], "n={n} parts={parts}");
                }
            }
            let values: Vec<f32> = (0..n).map(|i| 0.1 * i as f32 + 1e-3).collect();
            let counts: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
            let (mut sum, mut total) = (0.0f64, 0.0f64);
            for b in (0..n).step_by(BLOCK) {
                let mut block = 0.0f64;
                for &v in &values[b..(b + BLOCK).min(n)] {
                    block += f64::from(v);
                }
                sum += block;
                total += counts[b..(b + BLOCK).min(n)]
                    .iter()
                    .map(|&c| f64::from(c))
                    .sum::<f64>();
            }
            let got = by_block(&values, &counts);
            assert_eq!(
                (got.0.to_bits(), got.1.to_bits()),
                (sum.to_bits(), total.to_bits())
            );
        }
    }

    #[test]
    fn fold_lower_mirrors_and_symmetrizes() {
        // one block, a partial last block, several blocks; one part and two
        for (n, ld) in [(1, 16), (5, 16), (48, 48), (100, 112), (150, 160)] {
            for parts in [1, 2] {
                let m = matrix(n, ld);
                let mut mirrored = m.clone();
                fold_lower(&mut mirrored, ld, n, parts, false);
                let mut summed = m.clone();
                fold_lower(&mut summed, ld, n, parts, true);
                for i in 0..n {
                    let block = i / BLOCK * BLOCK;
                    for j in 0..n {
                        let (got, want) = (
                            mirrored[i * ld + j],
                            if j < block {
                                m[j * ld + i]
                            } else {
                                m[i * ld + j]
                            },
                        );
                        assert_eq!(got, want, "mirror n={n} parts={parts} ({i}, {j})");
                        let want = m[i * ld + j] + m[j * ld + i];
                        assert_eq!(
                            summed[i * ld + j],
                            want,
                            "sum n={n} parts={parts} ({i}, {j})"
                        );
                    }
                    // the padding past n is not touched
                    for j in n..ld {
                        assert_eq!(summed[i * ld + j], m[i * ld + j]);
                        assert_eq!(mirrored[i * ld + j], m[i * ld + j]);
                    }
                }
            }
        }
    }
}
