//! The exact search itself: queries against every reference row, blocked
//! on the project's GEMM, with the top-`k` selection fused into the pass.
//!
//! The queries are cut into blocks of [`QUERY_BLOCK`] rows, shared among
//! rayon's threads; each block meets the references one tile of
//! [`REF_TILE`] rows at a time: one GEMM writes the block's inner products
//! with the tile (`QUERY_BLOCK × REF_TILE` values, a buffer that stays in
//! the core's cache), they are turned into keys in place, and each query's
//! [`TopK`] takes what it needs from its row. No `queries × references`
//! matrix is ever held, and no row is sorted.

use rayon::prelude::*;

use super::topk::{Hit, TopK};
use super::Metric;
use crate::fused::{distance, gemm, Operand, Scratch};

/// Queries per block: the unit of work shared among threads.
pub(crate) const QUERY_BLOCK: usize = 64;
/// References per tile: one GEMM of `QUERY_BLOCK × REF_TILE × width`.
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
    out.par_chunks_mut(QUERY_BLOCK * per_query)
        .enumerate()
        .for_each(|(b, out)| {
            let q0 = b * QUERY_BLOCK;
            let bq = out.len() / per_query;
            let queries = &req.queries[q0 * dim..(q0 + bq) * dim];
            let tops = block(refs, queries, q0, req.exclude_self, &k_of);
            let mut hits = Vec::new();
            for (i, (mut top, out)) in tops
                .into_iter()
                .zip(out.chunks_exact_mut(per_query))
                .enumerate()
            {
                top.drain_sorted(&mut hits);
                emit(q0 + i, &hits, out);
            }
        });
}

/// One block of queries (`q0..q0 + bq`) against every reference.
fn block<K: Fn(usize) -> usize>(
    refs: References<'_>,
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
    let mut c = Scratch::with_len(bq * REF_TILE.min(n), 0);
    for t0 in (0..n).step_by(REF_TILE) {
        let tn = REF_TILE.min(n - t0);
        let tile = &refs.rows[t0 * dim..(t0 + tn) * dim];
        gemm(
            bq,
            tn,
            dim,
            1.0,
            Operand::plain(queries, dim),
            Operand::transposed(tile, dim),
            0.0,
            &mut c,
            tn,
        );
        let (sq, ids) = (&refs.sq[t0..t0 + tn], &refs.ids[t0..t0 + tn]);
        for (i, (row, top)) in c.chunks_exact_mut(tn).zip(&mut tops).enumerate() {
            to_keys(refs.metric, row, qsq.get(i).copied().unwrap_or(0.0), sq);
            let own = q0 + i;
            if exclude_self && (t0..t0 + tn).contains(&own) {
                let s = own - t0;
                top.offer_row(&row[..s], &ids[..s], t0);
                top.offer_row(&row[s + 1..], &ids[s + 1..], own + 1);
            } else {
                top.offer_row(row, ids, t0);
            }
        }
    }
    tops
}

/// Inner products of one query with a tile of references, in place, to
/// ranking keys: the squared Euclidean distance `‖q‖² + ‖r‖² − 2⟨q, r⟩`
/// (clamped at 0) for both Euclidean metrics, `1 − ⟨q, r⟩` on unit rows
/// (clamped at 0) for cosine, `−⟨q, r⟩` for dot.
#[inline]
fn to_keys(metric: Metric, row: &mut [f32], qsq: f32, rsq: &[f32]) {
    match metric {
        Metric::Euclidean | Metric::SquaredEuclidean => {
            for (v, &r) in row.iter_mut().zip(rsq) {
                *v = distance(qsq, r, *v, true);
            }
        }
        Metric::Cosine => {
            for v in row.iter_mut() {
                let d = 1.0 - *v;
                *v = if d < 0.0 { 0.0 } else { d };
            }
        }
        Metric::Dot => {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
    }
}
