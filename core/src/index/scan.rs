//! The exact search itself: queries against every reference row, blocked
//! on the project's GEMM, with the top-`k` selection fused into the pass.
//!
//! The queries are cut into blocks of [`QUERY_BLOCK`] rows, shared among
//! rayon's threads; each block meets the references one tile of
//! [`REF_TILE`] rows at a time: one GEMM, on the block's thread alone and
//! from operands packed once ([`gemm_packed`]), writes the block's inner
//! products with the tile (`QUERY_BLOCK × REF_TILE` values, a buffer reused
//! from tile to tile), they are turned into keys, and each query's
//! [`TopK`] takes what it needs from its row. No `queries × references`
//! matrix is ever held, and no row is sorted.

use rayon::prelude::*;

use super::Metric;
use super::topk::{Hit, TopK, may_enter};
use crate::fused::gemm::{PackedA, PackedB, gemm_packed};
use crate::fused::{Operand, Scratch, distance};

/// Queries per block, at most: the unit of work shared among threads. The
/// references are packed for the GEMM once per search and each block's
/// queries once per block (packing per product, as a plain GEMM call does,
/// cost 8 % of a search at 256 queries a block, a fifth at 64); a block of
/// 256 queries keeps its packed rows (128 KiB at width 128) in L2.
/// [`query_block`] lowers it when there are too few blocks to keep every
/// thread busy.
pub(crate) const QUERY_BLOCK: usize = 256;
/// Queries per block, at least.
const MIN_QUERY_BLOCK: usize = 64;
/// References per tile: one GEMM of `QUERY_BLOCK × REF_TILE × width`
/// (256, 512, 1024 and 2048 measured the same, within the noise of a busy
/// machine).
pub(crate) const REF_TILE: usize = 1024;

/// The reference side of a search, borrowed from an index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct References<'a> {
    /// How keys are made from inner products.
    pub metric: Metric,
    /// Row width.
    pub dim: usize,
    /// `n × dim` values, row-major (unit rows for [`Metric::Cosine`]).
    pub rows: &'a [f32],
    /// `‖r‖²` of every row (read for the Euclidean metrics).
    pub sq: &'a [f32],
    /// The caller's id of every row.
    pub ids: &'a [u64],
    /// Every row's tie rank (its place in the order of id, position).
    pub ranks: &'a [u32],
    /// The position of every tie rank.
    pub order: &'a [u32],
}

impl References<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What a scan is asked for.
pub(crate) struct Request<'a> {
    /// `nq × dim` query values, prepared as the metric needs (unit rows for
    /// cosine).
    pub queries: &'a [f32],
    /// Whether query `i` is reference row `i`, to be left out of its own
    /// neighbours (retrieval with the queries as references).
    pub exclude_self: bool,
}

/// Squared norms of `rows` (`dim` values each).
pub(crate) fn squared_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.chunks_exact(dim)
        .map(crate::fused::sum_of_squares)
        .collect()
}

/// Runs the search: for every query `i`, its `k_of(i)` nearest rows
/// (nearest first, ties by id) go to `emit(i, hits, out_i)`, where `out_i`
/// is query `i`'s `per_query` values of `out` (`nq · per_query` in all).
/// Blocks of queries run on rayon's threads.
pub(crate) fn scan<T, K, E>(
    refs: References<'_>,
    req: Request<'_>,
    out: &mut [T],
    per_query: usize,
    k_of: K,
    emit: E,
) where
    T: Send,
    K: Fn(usize) -> usize + Sync,
    E: Fn(usize, &[Hit], &mut [T]) + Sync,
{
    let dim = refs.dim;
    let nq = req.queries.len() / dim;
    assert_eq!(out.len(), nq * per_query, "scan: output size");
    assert!(per_query > 0 && refs.len() > 0 && dim > 0);
    let rows = query_block(nq);
    // the references packed once for the GEMM, every block reads them
    let packed = PackedB::new(Operand::transposed(refs.rows, dim), dim, refs.len());
    out.par_chunks_mut(rows * per_query)
        .enumerate()
        .for_each(|(b, out)| {
            let q0 = b * rows;
            let bq = out.len() / per_query;
            let queries = &req.queries[q0 * dim..(q0 + bq) * dim];
            let tops = block(refs, &packed, queries, q0, req.exclude_self, &k_of);
            let mut hits = Vec::new();
            for (i, (mut top, out)) in tops
                .into_iter()
                .zip(out.chunks_exact_mut(per_query))
                .enumerate()
            {
                top.drain_sorted(refs.order, refs.ids, &mut hits);
                emit(q0 + i, &hits, out);
            }
        });
}

/// Queries per block for `nq` queries: [`QUERY_BLOCK`], or fewer (down to
/// [`MIN_QUERY_BLOCK`]) so that each of rayon's threads gets about four
/// blocks to balance.
fn query_block(nq: usize) -> usize {
    let per_thread = nq.div_ceil(4 * rayon::current_num_threads());
    per_thread.clamp(MIN_QUERY_BLOCK, QUERY_BLOCK)
}

/// One block of queries (`q0..q0 + bq`) against every reference.
fn block<K: Fn(usize) -> usize>(
    refs: References<'_>,
    packed: &PackedB,
    queries: &[f32],
    q0: usize,
    exclude_self: bool,
    k_of: &K,
) -> Vec<TopK> {
    let (dim, n) = (refs.dim, refs.len());
    let bq = queries.len() / dim;
    let qsq = match refs.metric {
        Metric::Euclidean | Metric::SquaredEuclidean => squared_norms(queries, dim),
        Metric::Cosine | Metric::Dot => Vec::new(),
    };
    let mut tops: Vec<TopK> = (0..bq).map(|i| TopK::new(k_of(q0 + i))).collect();
    let simd = simd();
    let mut c = Scratch::with_len(bq * REF_TILE.min(n), 0);
    let pa = PackedA::new(Operand::plain(queries, dim), bq, dim);
    for t0 in (0..n).step_by(REF_TILE) {
        let tn = REF_TILE.min(n - t0);
        gemm_packed(1.0, &pa, 0..bq, packed, t0..t0 + tn, 0.0, &mut c, tn);
        let (sq, ranks) = (&refs.sq[t0..t0 + tn], &refs.ranks[t0..t0 + tn]);
        for (i, (dots, top)) in c.chunks_exact(tn).zip(&mut tops).enumerate() {
            if top.wants_none() {
                continue;
            }
            let row = Row {
                metric: refs.metric,
                qsq: qsq.get(i).copied().unwrap_or(0.0),
                simd,
            };
            let own = q0 + i;
            if exclude_self && (t0..t0 + tn).contains(&own) {
                let s = own - t0;
                row.select(&dots[..s], &sq[..s], &ranks[..s], top);
                row.select(&dots[s + 1..], &sq[s + 1..], &ranks[s + 1..], top);
            } else {
                row.select(dots, sq, ranks, top);
            }
        }
    }
    tops
}

/// Keys per block test.
const LANES: usize = 16;

/// One query's row of a tile: inner products to ranking keys, then to its
/// [`TopK`]. Keys: the squared Euclidean distance `‖q‖² + ‖r‖² − 2⟨q, r⟩`
/// (clamped at 0) for both Euclidean metrics, `1 − ⟨q, r⟩` on unit rows
/// (clamped at 0) for cosine, `−⟨q, r⟩` for dot.
#[derive(Clone, Copy)]
struct Row {
    metric: Metric,
    /// `‖q‖²` (Euclidean metrics).
    qsq: f32,
    /// Whether to run the AVX2 instantiation.
    simd: bool,
}

impl Row {
    /// Offers the references of one tile row (`dots[j] = ⟨q, r_j⟩`, `rsq`
    /// their squared norms, `ranks` their tie ranks).
    fn select(self, dots: &[f32], rsq: &[f32], ranks: &[u32], top: &mut TopK) {
        let qsq = self.qsq;
        match self.metric {
            Metric::Euclidean | Metric::SquaredEuclidean => {
                self.run(dots, rsq, ranks, top, |d, r| distance(qsq, r, d, true))
            }
            Metric::Cosine => self.run(dots, rsq, ranks, top, |d, _| {
                let k = 1.0 - d;
                if k < 0.0 { 0.0 } else { k }
            }),
            Metric::Dot => self.run(dots, rsq, ranks, top, |d, _| -d),
        }
    }

    #[inline(always)]
    fn run<F: Fn(f32, f32) -> f32>(
        self,
        dots: &[f32],
        rsq: &[f32],
        ranks: &[u32],
        top: &mut TopK,
        key: F,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: AVX2 and FMA were detected at run time (`simd`).
            unsafe { select_avx2(dots, rsq, ranks, top, key) };
            return;
        }
        select(dots, rsq, ranks, top, key, mask_portable)
    }
}

/// [`select`] compiled for AVX2: its key loop becomes 8-wide, and the
/// block test two compares and two `movemask`s.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn select_avx2<F: Fn(f32, f32) -> f32>(
    dots: &[f32],
    rsq: &[f32],
    ranks: &[u32],
    top: &mut TopK,
    key: F,
) {
    select(dots, rsq, ranks, top, key, |keys, worst| {
        // SAFETY: this runs inside `select_avx2`, whose caller checked AVX2.
        unsafe { avx2::mask(keys, worst) }
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Bit `l` set where `!(keys[l] > worst)` (NaN included).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn mask(keys: &[f32; LANES], worst: f32) -> u32 {
        let w = _mm256_set1_ps(worst);
        // SAFETY: `keys` holds 16 values: two unaligned loads of 8.
        let (a, b) = unsafe {
            (
                _mm256_loadu_ps(keys.as_ptr()),
                _mm256_loadu_ps(keys.as_ptr().add(8)),
            )
        };
        let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NGT_UQ>(a, w)) as u32;
        let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NGT_UQ>(b, w)) as u32;
        lo | hi << 8
    }
}

/// Bit `l` set where `!(keys[l] > worst)`, one lane at a time.
#[inline(always)]
fn mask_portable(keys: &[f32; LANES], worst: f32) -> u32 {
    let mut mask = 0u32;
    for (l, &k) in keys.iter().enumerate() {
        mask |= u32::from(may_enter(k, worst)) << l;
    }
    mask
}

/// Keys of a tile row, `LANES` at a time: one compare of the block with
/// the threshold gives a bit mask (the test is `!(key > worst)`, so a NaN
/// is looked at), and only the keys whose bit is set are offered; a block
/// none of whose keys can enter costs a few instructions.
#[inline(always)]
fn select<F, M>(dots: &[f32], rsq: &[f32], ranks: &[u32], top: &mut TopK, key: F, mask: M)
where
    F: Fn(f32, f32) -> f32,
    M: Fn(&[f32; LANES], f32) -> u32,
{
    let n = dots.len();
    let full = n - n % LANES;
    for j in (0..full).step_by(LANES) {
        let mut keys = [0.0f32; LANES];
        for ((k, &d), &r) in keys
            .iter_mut()
            .zip(&dots[j..j + LANES])
            .zip(&rsq[j..j + LANES])
        {
            *k = key(d, r);
        }
        let mut bits = mask(&keys, top.worst());
        // Only the lanes that passed; `offer` tests them again against the
        // threshold, which tightens as they go in.
        while bits != 0 {
            let l = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            top.offer(keys[l], ranks[j + l]);
        }
    }
    for j in full..n {
        top.offer(key(dots[j], rsq[j]), ranks[j]);
    }
}

/// Whether the AVX2 instantiation of the selection runs.
fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
