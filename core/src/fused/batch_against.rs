//! The ranking family fused on the CPU for a batch against a cross-batch
//! memory: rows of the batch, columns of the memory, the pairs of
//! [`AllPairs`](crate::miners::AllPairs) or of
//! [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner), less each
//! row's pair with its own copy (PML's `remove_self_comparisons`), and no
//! gradient into the memory.
//!
//! The rectangular case of the family's fused pass ([`super::batch_family`]),
//! on the same pieces: blocks of rows of `S = X·Mᵀ` — for distances from
//! the tiles of `X' = [X; 0; M]` packed once into [`Panels`] (as a view of
//! the matrix is), for similarities from the project's GEMM on each block's
//! thread — each row's weights from the labels (for every pair, computed
//! once per label; for the multi-similarity miner after a first sweep over
//! the row for its least similar positive and most similar negative), the
//! formula's row form and its `∂L/∂s` in one call
//! ([`BatchFormula::row_with_grad`]) while the block is in cache, and
//! `dX_b = dS_b·M` with the GEMM. The memory's side of
//! the product (`dMᵀ`) is never computed: the memory is a constant. Only
//! per-row values, counts and statistics are kept; no `B × M` matrix, no
//! pair list. Blocks own disjoint rows of `dX`, so the threads sharing them
//! need no reduction and the result does not depend on the scheduling.

use super::batch_family::host_units;
use super::gemm::{MR, NR, Operand, cut_in, gemm};
use super::gram::{BLOCK, Panels, distance};
use super::parallel::in_parallel;
use super::{Scratch, upstream};
use crate::MetricLossError;
use crate::device::FusedFormula;
use crate::formulas::{BatchFormula, ListSizes, Row, Score, Weighting};
use crate::miners::{Fusable, MinerStats, RowStats, keeps_negative, keeps_positive, label_ids};
use crate::xbm::MemoryColumns;
use dfdx::prelude::*;
use std::sync::Mutex;

/// From this many (row, entry) pairs on, the blocks are shared among
/// rayon's threads: the work of the family's square pass at its threshold
/// (128 rows, `128²` pairs; each pair costs an exponential or two).
const PARALLEL_MIN_PAIRS: usize = 128 * 128;

/// Which pairs of a row the loss reads.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Every (row, entry) pair.
    All,
    /// PML's `MultiSimilarityMiner(epsilon)`.
    MultiSimilarity { epsilon: f32 },
}

/// The cosine similarity of a pair from the miner's units (what
/// [`DistanceMatrix::cosine_similarity`](crate::miners::DistanceMatrix::cosine_similarity)
/// gives the generic miner).
fn similarity<F: BatchFormula>(u: f32) -> f32 {
    match F::SCORE {
        Score::Cosine => 1.0 - u,
        Score::UnitEuclidean => 1.0 - 0.5 * u * u,
    }
}

/// What one row's pairs are: their masks in `pos` and `neg` (1 or 0, the
/// own column never positive), how many of each, and how many are active
/// under `margins` (positives beyond `pos_margin`, negatives within
/// `margin`, in the miner's units `u`).
#[derive(Debug, Clone, Copy, Default)]
struct RowPairs {
    pos: usize,
    neg: usize,
    active: usize,
}

#[allow(clippy::too_many_arguments)]
fn row_pairs<F: BatchFormula>(
    rule: Rule,
    u: &[f32],
    label: usize,
    columns: &[usize],
    own: usize,
    (pos_margin, margin): (f32, f32),
    pos: &mut [f32],
    neg: &mut [f32],
) -> RowPairs {
    // the multi-similarity miner's thresholds: its least similar positive
    // (the own copy included, as PML's miner sees it) and most similar negative
    let window = match rule {
        Rule::All => Some((f32::NEG_INFINITY, f32::INFINITY, 0.0)),
        Rule::MultiSimilarity { epsilon } => {
            let mut min_pos = f32::INFINITY;
            let mut max_neg = f32::NEG_INFINITY;
            let mut any_neg = false;
            for (&v, &l) in u.iter().zip(columns) {
                let s = similarity::<F>(v);
                if l == label {
                    min_pos = min_pos.min(s);
                } else {
                    max_neg = max_neg.max(s);
                    any_neg = true;
                }
            }
            any_neg.then_some((min_pos, max_neg, epsilon))
        }
    };
    let mut out = RowPairs::default();
    let Some((min_pos, max_neg, eps)) = window else {
        pos.fill(0.0);
        neg.fill(0.0);
        return out;
    };
    let filtered = matches!(rule, Rule::MultiSimilarity { .. });
    for (j, ((&v, &l), (p, q))) in u
        .iter()
        .zip(columns)
        .zip(pos.iter_mut().zip(neg.iter_mut()))
        .enumerate()
    {
        let same = l == label;
        let take = if !filtered {
            true
        } else {
            let s = similarity::<F>(v);
            if same {
                keeps_positive(s, max_neg, eps)
            } else {
                keeps_negative(s, min_pos, eps)
            }
        };
        let is_pos = same && take && j != own;
        let is_neg = !same && take;
        *p = f32::from(u8::from(is_pos));
        *q = f32::from(u8::from(is_neg));
        out.pos += usize::from(is_pos);
        out.neg += usize::from(is_neg);
        if (is_pos && v > pos_margin) || (is_neg && v < margin) {
            out.active += 1;
        }
    }
    out
}

/// The pairs of every row labelled `label` under [`Rule::All`], its own
/// column aside: the positive and negative weights of each column (the
/// triplet weighting's factors included) and the row's pair counts. Rows of one label share them, so a block computes them when
/// the label changes from one row to the next (once per class for a batch
/// sorted by class), not per row.
struct LabelPairs {
    label: Option<usize>,
    pos: Vec<f32>,
    neg: Vec<f32>,
    /// Positive and negative pairs of a row (its own column not a pair).
    counts: (usize, usize),
}

impl LabelPairs {
    fn new(m: usize) -> Self {
        Self {
            label: None,
            pos: vec![0.0; m],
            neg: vec![0.0; m],
            counts: (0, 0),
        }
    }

    /// The pairs of a row labelled `label` (`columns` holds it at least once:
    /// the row's own copy).
    fn set<F: BatchFormula>(&mut self, label: usize, columns: &[usize]) {
        if self.label == Some(label) {
            return;
        }
        let same = columns.iter().filter(|&&l| l == label).count();
        let (np, nn) = (same - 1, columns.len() - same);
        // each pair weighs the triplets it is in (PML's convert_to_triplets)
        let (wp, wn) = match F::WEIGHTING {
            Weighting::Triplet => (nn as f32, np as f32),
            _ => (1.0, 1.0),
        };
        for ((&l, p), q) in columns.iter().zip(&mut self.pos).zip(&mut self.neg) {
            (*p, *q) = if l == label { (wp, 0.0) } else { (0.0, wn) };
        }
        self.counts = (np, nn);
        self.label = Some(label);
    }
}

/// A row of every pair ([`Rule::All`]) in the miner's units `u`, labelled
/// `label` against `columns` (`ids`: the same as `u32`, see
/// [`label_ids`]): its [`RowStats`] over every column, the own one
/// included, as the mined path's statistics read the row, and its active
/// pairs under `margins`, the own column `own` not a pair.
fn every_pair_stats(
    label: usize,
    u: &[f32],
    columns: &[usize],
    ids: Option<&[u32]>,
    own: usize,
    margins: (f32, f32),
) -> (RowStats, usize) {
    let mut stats = RowStats::of(label, u, columns, ids, None, Some(margins));
    // the own column is a positive of the statistics, not a pair
    let active = stats.active - usize::from(u[own] > margins.0);
    stats.active = 0;
    (stats, active)
}

/// One block's forward: its rows' values, counts, statistics and pairs,
/// and (with a tape) `∂(Σ value)/∂X` of its rows.
struct BlockForward {
    sum: f64,
    counts: Vec<f32>,
    stats: Vec<RowStats>,
    sizes: ListSizes,
    pairs: usize,
    active: usize,
    dx: Vec<f32>,
}

/// The loss of formula `f` for the batch `x` (normalized rows, labelled
/// `labels`) against `memory` (prepared entries, the batch enqueued), with
/// the pairs of `miner` (`AllPairs` or the multi-similarity miner) but each
/// row's pair with its own copy, and their statistics, as the mined path
/// computes them on the `B × M` matrix. `Unavailable` for another miner, an
/// invalid `ε` (the generic miner reports it), a formula whose rows share
/// numbers or N-pairs (the generic path reports those), a single-class
/// batch and memory (PML's miners give nothing there: the generic path),
/// and a width of 0.
pub(crate) fn batch_formula_against_cpu<F, B, const D: usize, T>(
    x: Tensor<(B, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    memory: &MemoryColumns<'_>,
    miner: Fusable,
    f: &F,
) -> Result<FusedFormula<B, D, Cpu, T>, MetricLossError>
where
    F: BatchFormula,
    B: Dim,
    T: Tape<f32, Cpu>,
{
    let rule = match miner {
        Fusable::AllPairs => Rule::All,
        Fusable::MultiSimilarity { epsilon } if epsilon.is_finite() && epsilon >= 0.0 => {
            Rule::MultiSimilarity { epsilon }
        }
        _ => return Ok(FusedFormula::Unavailable(x)),
    };
    let (b, m) = (x.shape().0.size(), memory.len());
    let columns = memory.labels();
    let ids = label_ids(columns);
    let single_class = labels.iter().chain(columns).all(|&l| l == labels[0]);
    if F::SHARED
        || F::WEIGHTING == Weighting::NPairs
        || D == 0
        || b == 0
        || memory.dim() != D
        || labels.len() != b
        || memory.own_columns().len() != b
        || single_class
    {
        return Ok(FusedFormula::Unavailable(x));
    }
    debug_assert!(
        (0..b).all(|i| columns[memory.own_column(i)] == labels[i]),
        "a row's own copy carries its label"
    );
    let dev_err = MetricLossError::device;
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous().map_err(dev_err)?.split_tape();

    // Distances: Gram tiles of X' = [X; 0; M] packed once (the memory's
    // columns start on a panel boundary), whose norms agree with the tiles
    // bit for bit, so that a row and its own copy are at distance exactly 0.
    // Similarities need no norms: each block's `S = X_b·Mᵀ` comes from the
    // GEMM, which packs the memory on the block's own thread, in parallel,
    // instead of the whole memory copied and packed twice before the blocks
    // start; only the batch is packed (for its finiteness check).
    let gram = F::SCORE == Score::UnitEuclidean;
    let c0 = if gram { b.div_ceil(NR) * NR } else { b };
    let n = if gram { c0 + m } else { b };
    let mut packed = Scratch::with_len(n * D, 0);
    x.copy_into(&mut packed[..b * D]);
    if gram {
        packed[b * D..c0 * D].fill(0.0);
        packed[c0 * D..].copy_from_slice(memory.rows());
    }
    let panels = Panels::new(packed, n, D);
    panels.check_finite(b, D)?;
    let ld = if gram { panels.padded_cols() - c0 } else { m };
    let mem = if gram {
        &panels.rows()[c0 * D..(c0 + m) * D]
    } else {
        memory.rows()
    };
    let margins = f.margins();
    let margins = (margins.pos_margin, margins.margin);

    // blocks of whole slivers, as many as the threads when that balances them
    let parallel = b * m >= PARALLEL_MIN_PAIRS && b > MR && rayon::current_num_threads() > 1;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // (at least one sliver: b > 0)
    let per = (b.div_ceil(threads).div_ceil(MR) * MR).min(BLOCK);
    let blocks: Vec<usize> = (0..b).step_by(per).collect();
    let grad_now = T::OWNS_TAPE;

    let block = |i0: usize| -> BlockForward {
        let rows = per.min(b - i0);
        let mut s = Scratch::with_len(rows.div_ceil(MR) * MR * ld, 0);
        if gram {
            panels.tile(i0, rows, c0, c0 + ld, &mut s, ld);
        } else {
            let xs = &panels.rows()[i0 * D..(i0 + rows) * D];
            let (xs, ms) = (Operand::plain(xs, D), Operand::transposed(mem, D));
            gemm(rows, m, D, 1.0, xs, ms, 0.0, &mut s, ld);
        }
        let sq = panels.sq();
        if F::SCORE == Score::UnitEuclidean {
            for r in 0..rows {
                let sq_i = sq[i0 + r];
                for (v, &sq_j) in s[r * ld..r * ld + m].iter_mut().zip(&sq[c0..c0 + m]) {
                    *v = distance(sq_i, sq_j, *v, false);
                }
            }
        }
        let mut out = BlockForward {
            sum: 0.0,
            counts: Vec::with_capacity(rows),
            stats: Vec::with_capacity(rows),
            sizes: ListSizes::default(),
            pairs: 0,
            active: 0,
            dx: Vec::new(),
        };
        let (mut pos, mut neg, mut host) = match rule {
            Rule::All => (Vec::new(), Vec::new(), vec![0.0f32; m]),
            Rule::MultiSimilarity { .. } => (vec![0.0f32; m], vec![0.0f32; m], vec![0.0f32; m]),
        };
        let mut every = match rule {
            Rule::All => LabelPairs::new(m),
            Rule::MultiSimilarity { .. } => LabelPairs::new(0),
        };
        // ∂(Σ value)/∂G of the block's rows, and ∂/∂‖x_i‖² (distances)
        let mut dg = if grad_now {
            Scratch::with_len(rows * m, 0)
        } else {
            Scratch::with_len(0, 0)
        };
        let mut dsq = vec![0.0f32; rows];
        for r in 0..rows {
            let i = i0 + r;
            let srow = &s[r * ld..r * ld + m];
            let own = memory.own_column(i);
            let (p, own_weight) = match rule {
                Rule::All => {
                    every.set::<F>(labels[i], columns);
                    let u = host_units::<F>(srow, &mut host);
                    let (stats, active) =
                        every_pair_stats(labels[i], u, columns, ids.as_deref(), own, margins);
                    out.stats.push(stats);
                    let (pos, neg) = every.counts;
                    // the own column is no pair: out of the positives for this row
                    let w = std::mem::replace(&mut every.pos[own], 0.0);
                    (RowPairs { pos, neg, active }, Some(w))
                }
                Rule::MultiSimilarity { .. } => {
                    let u = host_units::<F>(srow, &mut host);
                    out.stats.push(RowStats::of(
                        labels[i],
                        u,
                        columns,
                        ids.as_deref(),
                        None,
                        None,
                    ));
                    let p = row_pairs::<F>(
                        rule, u, labels[i], columns, own, margins, &mut pos, &mut neg,
                    );
                    if F::WEIGHTING == Weighting::Triplet {
                        // each pair weighs the triplets it is in (PML's convert_to_triplets)
                        let (wp, wn) = (p.neg as f32, p.pos as f32);
                        pos.iter_mut().for_each(|w| *w *= wp);
                        neg.iter_mut().for_each(|w| *w *= wn);
                    }
                    (p, None)
                }
            };
            out.sizes.pos += p.pos;
            out.sizes.neg += p.neg;
            out.sizes.triplets += p.pos * p.neg;
            out.pairs += p.pos + p.neg;
            out.active += p.active;
            let (wp, wn) = match rule {
                Rule::All => (&every.pos, &every.neg),
                Rule::MultiSimilarity { .. } => (&pos, &neg),
            };
            let row = Row {
                index: i,
                s: srow,
                pos: wp,
                neg: wn,
            };
            let v = if grad_now {
                f.row_with_grad(&row, 1.0, &mut dg[r * m..(r + 1) * m])
            } else {
                f.row(&row, &[])
            };
            if let Some(w) = own_weight {
                every.pos[own] = w;
            }
            out.sum += f64::from(v.value);
            out.counts.push(v.count);
            if grad_now {
                let ds = &mut dg[r * m..(r + 1) * m];
                if F::SCORE == Score::UnitEuclidean {
                    // d = √(‖x_i‖² + ‖m_j‖² − 2G_ij): ∂d/∂G = −1/d, ∂d/∂‖x_i‖² = 1/(2d)
                    let mut row_sum = 0.0f32;
                    for (g, &dist) in ds.iter_mut().zip(srow) {
                        let e = if dist > 0.0 { *g / dist } else { 0.0 };
                        *g = -e;
                        row_sum += e;
                    }
                    dsq[r] = 0.5 * row_sum;
                }
            }
        }
        if grad_now {
            // dX_b = dG_b·M (the memory gets nothing), + 2·∂/∂‖x_i‖²·x_i
            let mut dx = vec![0.0f32; rows * D];
            gemm(
                rows,
                D,
                m,
                1.0,
                Operand::plain(&dg, m),
                Operand::plain(mem, D),
                0.0,
                &mut dx,
                D,
            );
            if F::SCORE == Score::UnitEuclidean {
                let xs = &panels.rows()[i0 * D..(i0 + rows) * D];
                for ((o, xi), &g) in dx.chunks_exact_mut(D).zip(xs.chunks_exact(D)).zip(&dsq) {
                    for (o, &v) in o.iter_mut().zip(xi) {
                        *o += 2.0 * g * v;
                    }
                }
            }
            out.dx = dx;
        }
        out
    };

    let slots: Vec<Mutex<Option<BlockForward>>> = blocks.iter().map(|_| Mutex::new(None)).collect();
    let run = |k: usize| {
        let r = cut_in(1, || block(blocks[k]));
        *slots[k].lock().expect("a block's slot") = Some(r);
    };
    if parallel {
        in_parallel(blocks.len(), run);
    } else {
        (0..blocks.len()).for_each(run);
    }

    let mut sum = 0.0f64;
    let mut total = 0.0f64;
    let mut counts = Vec::with_capacity(b);
    let mut stats = Vec::with_capacity(b);
    let mut sizes = ListSizes::default();
    let (mut pairs, mut active) = (0usize, 0usize);
    let mut dx = Vec::with_capacity(if grad_now { b * D } else { 0 });
    for slot in slots {
        let blk = slot
            .into_inner()
            .expect("a block's slot")
            .expect("every block ran");
        sum += blk.sum;
        total += blk.counts.iter().map(|&c| f64::from(c)).sum::<f64>();
        counts.extend(blk.counts);
        stats.extend(blk.stats);
        sizes.pos += blk.sizes.pos;
        sizes.neg += blk.sizes.neg;
        sizes.triplets += blk.sizes.triplets;
        pairs += blk.pairs;
        active += blk.active;
        dx.extend(blk.dx);
    }
    if let Some(row) = stats.iter().position(|s| !s.sum.is_finite()) {
        return Err(MetricLossError::NonFinite {
            what: "distances",
            row,
            column: 0,
            value: stats[row].sum as f32,
        });
    }
    // PML's rule for lists that score exactly 0 (a zero whose gradient is zeros)
    let zero = f.is_zero(sizes) || total <= 0.0;
    let loss = if zero { 0.0 } else { (sum / total) as f32 };
    // the statistics of the mined path against a reference set: every
    // (row, entry) distance summed, the own copy included
    let stats = MinerStats::from_rows(b * m, stats.into_iter(), 0, pairs, active, margins.1);

    let out = dev.try_tensor_from_vec(vec![loss], ()).map_err(dev_err)?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?[0];
            let gx = grads.get_or_alloc_mut(&x)?;
            if zero || g == 0.0 {
                return Ok(());
            }
            let scale = (f64::from(g) / total) as f32;
            for (a, &v) in gx.iter_mut().zip(&dx) {
                *a += scale * v;
            }
            Ok(())
        });
    }
    Ok(FusedFormula::Done {
        loss: out.put_tape(tape),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formulas::MultiSimilarity;

    /// A row of every pair: the label's pair counts and the active pairs
    /// agree with [`row_pairs`], and the statistics with the mined path's
    /// (every column, the own one included), eight lanes at a time and not.
    #[test]
    fn every_pair_stats_equal_the_row_pairs_and_the_row_stats() {
        let margins = (0.3f32, 0.9f32);
        for len in [1usize, 7, 8, 9, 64, 1021] {
            let s: Vec<f32> = (0..len).map(|j| (j as f32 * 0.61).sin() * 1.2).collect();
            let columns: Vec<usize> = (0..len).map(|j| (j * 7) % 3).collect();
            let own = len / 2;
            let label = columns[own];
            let mut every = LabelPairs::new(len);
            every.set::<MultiSimilarity>(label, &columns);
            let mut host = vec![0.0f32; len];
            let u = host_units::<MultiSimilarity>(&s, &mut host);
            let want = RowStats::of(label, u, &columns, None, None, None);
            let (mut pos, mut neg) = (vec![0.0f32; len], vec![0.0f32; len]);
            let pairs = row_pairs::<MultiSimilarity>(
                Rule::All,
                u,
                label,
                &columns,
                own,
                margins,
                &mut pos,
                &mut neg,
            );
            assert_eq!(every.counts, (pairs.pos, pairs.neg), "{len}");
            let ids = label_ids(&columns);
            for ids in [None, ids.as_deref()] {
                let (got, active) = every_pair_stats(label, u, &columns, ids, own, margins);
                assert_eq!(active, pairs.active, "{len} entries, ids {}", ids.is_some());
                assert_eq!(got.hardest, want.hardest, "{len} entries");
                assert_eq!(got.active, 0);
                assert!(
                    (got.sum - want.sum).abs() <= 1e-12 * want.sum.abs(),
                    "{len} entries: {} vs {}",
                    got.sum,
                    want.sum
                );
            }
        }
    }
}
