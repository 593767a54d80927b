//! The ranking family fused on the CPU for every pair of the batch
//! ([`AllPairs`](crate::miners::AllPairs), PML's no-miner call): the
//! formula's matrix is never held. Blocks of [`BLOCK`] rows of the Gram
//! matrix come from the tiles of [`Panels`] (the normalized rows packed
//! once), become the formula's scores (cosine similarities, or Euclidean
//! distances), and each row goes through the formula's row form with its
//! weights filled from the labels; only per-row values, counts and
//! statistics are kept. The backward recomputes each block, asks the row
//! form for `∂L/∂s` of its rows, turns it into `∂L/∂G` and pushes it
//! through `G = X·Xᵀ` with the project's GEMM (`dX += dG_b·X` for the
//! block's rows, `dX += dG_bᵀ·X_b` for every row). Memory: `O(N·D)` plus a
//! few `BLOCK × N` buffers per thread.
//!
//! A view of the matrix (N-pairs' anchors × positives) is the same pass on
//! `X' = [A; B]` packed once, rows of `A` against columns of `B`, its
//! gradient sent back to the rows it was gathered from; the statistics are
//! then one more pass over the batch's own tiles (they cover every pair).

use super::gemm::NR;
use super::gemm::{Operand, cut_in, gemm};
use super::gram::{BLOCK, Panels, distance};
use super::parallel::in_parallel;
use super::{Scratch, upstream};
use crate::MetricLossError;
use crate::device::FusedFormula;
use crate::formulas::{BatchFormula, ListSizes, PairWeights, Row, Score};
use crate::miners::{MinerStats, RowStats, multi_similarity_keep_row};
use dfdx::prelude::*;
use std::sync::Mutex;

/// From this many rows on, the blocks are shared among rayon's threads:
/// each row costs `N` exponentials or so, far more than the Gram tile, so
/// this is lower than the mining passes' threshold.
const PARALLEL_MIN_ROWS: usize = 128;

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

/// One thread's buffers: a block of scores, one row of each weight and,
/// for a fused miner, one row of the miner's similarities.
struct Buffers {
    s: Scratch,
    pos: Vec<f32>,
    neg: Vec<f32>,
    sim: Vec<f32>,
}

impl<F: BatchFormula> Pass<'_, F> {
    /// Row stride of a block of scores.
    fn ld(&self) -> usize {
        self.panels.padded_cols() - self.c0
    }

    fn buffers(&self) -> Buffers {
        Buffers {
            s: Scratch::with_len(BLOCK * self.ld(), 0),
            pos: vec![0.0; self.cols],
            neg: vec![0.0; self.cols],
            sim: match self.w.multi_similarity_miner() {
                Some(_) => vec![0.0; self.cols],
                None => Vec::new(),
            },
        }
    }

    /// The blocks' first rows.
    fn blocks(&self) -> Vec<usize> {
        (0..self.rows).step_by(BLOCK).collect()
    }

    /// Rows `i0..i0 + BLOCK` (at most) of the formula's matrix into `b.s`
    /// (row stride [`ld`](Self::ld), columns `0..cols`); the number of rows.
    fn scores(&self, i0: usize, b: &mut Buffers) -> usize {
        let rows = BLOCK.min(self.rows - i0);
        let ld = self.ld();
        let end = self.panels.padded_cols();
        self.panels.tile(i0, rows, self.c0, end, &mut b.s, ld);
        if F::SCORE == Score::UnitEuclidean {
            let sq = &self.panels.sq()[self.c0..self.c0 + self.cols];
            for r in 0..rows {
                let sq_i = self.panels.sq()[i0 + r];
                for (v, &sq_j) in b.s[r * ld..r * ld + self.cols].iter_mut().zip(sq) {
                    *v = distance(sq_i, sq_j, *v, false);
                }
            }
        }
        rows
    }

    /// Row `r` of the block at `i0` as the formula reads it: with a fused
    /// [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner), only
    /// the pairs its rule keeps weigh.
    fn row<'b>(&self, i0: usize, r: usize, b: &'b mut Buffers) -> Row<'b> {
        let i = i0 + r;
        self.w.fill_row(i, &mut b.pos, &mut b.neg);
        let ld = self.ld();
        let s = &b.s[r * ld..r * ld + self.cols];
        if let Some(eps) = self.w.multi_similarity_miner() {
            for (m, &v) in b.sim.iter_mut().zip(s) {
                *m = miner_similarity::<F>(v);
            }
            multi_similarity_keep_row(&b.sim, &mut b.pos, &mut b.neg, eps);
        }
        Row {
            index: i,
            s,
            pos: &b.pos,
            neg: &b.neg,
        }
    }

    /// Length of a part's gradient accumulator: `∂L/∂X` (`n × D`), then,
    /// for distances, `∂L/∂‖x_i‖²` (`n`).
    fn grad_len(&self) -> usize {
        let packed = self.c0 + self.cols;
        let sq = if F::SCORE == Score::UnitEuclidean {
            packed
        } else {
            0
        };
        packed * self.d + sq
    }

    /// For the block at `i0` (its scores in `b.s`): `row_grad(row, ds)`
    /// writes `∂L/∂s` of each of its rows into `ds` (zeroed), which is
    /// turned into `∂L/∂G` and pushed through `G = X·Xᵀ` into `acc`
    /// ([`grad_len`](Self::grad_len) values): `dX_b += dG_b·X`,
    /// `dX += dG_bᵀ·X_b`.
    fn push_block(
        &self,
        i0: usize,
        b: &mut Buffers,
        acc: &mut [f32],
        mut row_grad: impl FnMut(&Row, &mut [f32]),
    ) {
        let (c, c0, d) = (self.cols, self.c0, self.d);
        let rows = BLOCK.min(self.rows - i0);
        let mut dg = Scratch::with_len(rows * c, 0);
        let (dx, dsq) = acc.split_at_mut((c0 + c) * d);
        for r in 0..rows {
            let i = i0 + r;
            let ds = &mut dg[r * c..(r + 1) * c];
            ds.fill(0.0);
            let row = self.row(i0, r, b);
            row_grad(&row, ds);
            if F::SCORE == Score::UnitEuclidean {
                // d = √(‖x_i‖² + ‖x_j‖² − 2G_ij): ∂d/∂G = −1/d, ∂d/∂‖x‖² = 1/(2d)
                let mut row_sum = 0.0f32;
                for (j, (v, &dist)) in ds.iter_mut().zip(row.s).enumerate() {
                    let e = if dist > 0.0 { *v / dist } else { 0.0 };
                    *v = -e;
                    row_sum += e;
                    dsq[c0 + j] += 0.5 * e;
                }
                dsq[i] += 0.5 * row_sum;
            }
        }
        let xs = self.panels.rows();
        let (a_b, cols) = (&xs[i0 * d..(i0 + rows) * d], &xs[c0 * d..(c0 + c) * d]);
        gemm(
            rows,
            d,
            c,
            1.0,
            Operand::plain(&dg, c),
            Operand::plain(cols, d),
            1.0,
            &mut dx[i0 * d..],
            d,
        );
        gemm(
            c,
            d,
            rows,
            1.0,
            Operand::transposed(&dg, c),
            Operand::plain(a_b, d),
            1.0,
            &mut dx[c0 * d..],
            d,
        );
    }

    /// `f(block start, buffers, accumulator)` for every block, in parts
    /// shared among rayon's threads when `parallel` (part `p` takes blocks
    /// `p, p + parts, …`, whichever thread runs it, so the sums do not
    /// depend on the scheduling), each part with its own zeroed accumulator
    /// of `len` values. The results in block order, the accumulators in
    /// part order.
    fn sweep<R: Send>(
        &self,
        parallel: bool,
        len: usize,
        f: impl Fn(usize, &mut Buffers, &mut [f32]) -> R + Sync,
    ) -> (Vec<R>, Vec<Vec<f32>>) {
        let blocks = self.blocks();
        let parts = if parallel {
            rayon::current_num_threads().min(blocks.len()).max(1)
        } else {
            1
        };
        let slots: Vec<Mutex<Option<R>>> = blocks.iter().map(|_| Mutex::new(None)).collect();
        let accs: Vec<Mutex<Vec<f32>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
        let run = |p: usize| {
            let mut acc = vec![0.0f32; len];
            let mut b = self.buffers();
            for k in (p..blocks.len()).step_by(parts) {
                let r = f(blocks[k], &mut b, &mut acc);
                *slots[k].lock().expect("a block's slot") = Some(r);
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

    /// `scale ·` the sum of the parts' gradient accumulators, as `∂L/∂X'`
    /// of the packed rows (adding `∂L/∂‖x_i‖² · 2x_i` for distances).
    fn finish(&self, parts: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let (packed, d) = (self.c0 + self.cols, self.d);
        let xs = self.panels.rows();
        let mut dx = vec![0.0f32; packed * d];
        for part in parts {
            for (a, b) in dx.iter_mut().zip(&part[..packed * d]) {
                *a += b;
            }
            for (i, &s) in part[packed * d..].iter().enumerate() {
                if s != 0.0 {
                    let (out, x) = (&mut dx[i * d..(i + 1) * d], &xs[i * d..(i + 1) * d]);
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o += 2.0 * s * v;
                    }
                }
            }
        }
        for v in dx.iter_mut() {
            *v *= scale;
        }
        dx
    }
}

/// One block's forward: the sum of its rows' values, each row's count and,
/// for the whole batch, each row's statistics; with a fused miner, what it
/// kept.
struct BlockForward {
    sum: f64,
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

/// The miner's units of a row of scores: the cosine distance `1 − s`, or
/// the distance itself.
pub(super) fn host_units<'a, F: BatchFormula>(s: &'a [f32], host: &'a mut [f32]) -> &'a [f32] {
    match F::SCORE {
        Score::Cosine => {
            for (h, &v) in host.iter_mut().zip(s) {
                *h = (1.0 - v).clamp(0.0, 2.0);
            }
            &host[..s.len()]
        }
        Score::UnitEuclidean => s,
    }
}

/// The loss of formula `f` over every pair of a batch of normalized rows
/// `x` (`w`: the weights of [`Tuples::All`](crate::miners::Tuples::All)
/// for `labels`), and the statistics of every pair, in blocks of rows of
/// Gram tiles. `Unavailable` for a batch PML scores as exactly 0 (the
/// generic path gives that zero its gradient).
///
/// The gradient is linear in the upstream gradient `u`: `∂L/∂X = u/Σcount
/// · Σ_i [count_i > 0] ∂value_i/∂X`. So with a tape the forward computes
/// that sum (`u = 1`) while each block is in cache, and the backward only
/// scales it: one pass over the Gram tiles in all (three for lifted
/// structure, whose rows need every row's shared number first, and whose
/// gradient needs every row's derivative with respect to them).
pub(crate) fn batch_formula_fused_cpu<F, N, const D: usize, T>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    w: &PairWeights,
    f: &F,
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
    let panels = Panels::new(Scratch::copy_of(&x), n, D);
    panels.check_finite(n, D)?;
    let parallel = n >= PARALLEL_MIN_ROWS && rayon::current_num_threads() > 1;
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

    // Lifted structure: every row's shared number first.
    let shared: Vec<f32> = if F::SHARED {
        pass.sweep(parallel, 0, |i0, b, _| {
            let rows = pass.scores(i0, b);
            (0..rows)
                .map(|r| f.shared(&pass.row(i0, r, b)))
                .collect::<Vec<f32>>()
        })
        .0
        .concat()
    } else {
        Vec::new()
    };

    let grad_now = T::OWNS_TAPE && !F::SHARED;
    let len = if grad_now { pass.grad_len() } else { 0 };
    let (blocks, mut parts) = pass.sweep(parallel, len, |i0, b, acc| {
        let rows = pass.scores(i0, b);
        let mut out = BlockForward {
            sum: 0.0,
            counts: Vec::with_capacity(rows),
            stats: Vec::with_capacity(rows),
            mined: Mined::default(),
        };
        let mut host = vec![0.0f32; pass.cols];
        for r in 0..rows {
            let row = pass.row(i0, r, b);
            let v = f.row(&row, &shared);
            out.sum += f64::from(v.value);
            out.counts.push(v.count);
            if square {
                let d = host_units::<F>(row.s, &mut host);
                let every_pair = if mining { None } else { margins };
                out.stats.push(RowStats::of(
                    labels[i0 + r],
                    d,
                    labels,
                    Some(i0 + r),
                    every_pair,
                ));
                if let (true, Some((pm, nm))) = (mining, margins) {
                    // the miner's pairs: counted, and active as the listed path counts them
                    let (mut kp, mut kn) = (0, 0);
                    for ((&dist, &p), &q) in d.iter().zip(row.pos).zip(row.neg) {
                        if p > 0.0 {
                            kp += 1;
                            out.mined.active += usize::from(dist > pm);
                        }
                        if q > 0.0 {
                            kn += 1;
                            out.mined.active += usize::from(dist < nm);
                        }
                    }
                    let m = &mut out.mined.sizes;
                    (m.pos, m.neg, m.triplets) = (m.pos + kp, m.neg + kn, m.triplets + kp * kn);
                }
            }
        }
        if grad_now {
            let counts = &out.counts;
            pass.push_block(i0, b, acc, |row, ds| {
                if counts[row.index - i0] > 0.0 {
                    f.row_backward(row, &[], 1.0, ds, &mut []);
                }
            });
        }
        out
    });
    let mut sum = 0.0f64;
    let mut total = 0.0f64;
    let mut counts = Vec::with_capacity(pass.rows);
    let mut stats = Vec::with_capacity(n);
    let mut mined = Mined::default();
    for b in blocks {
        sum += b.sum;
        total += b.counts.iter().map(|&c| f64::from(c)).sum::<f64>();
        counts.extend(b.counts);
        stats.extend(b.stats);
        let (m, k) = (&mut mined.sizes, b.mined.sizes);
        (m.pos, m.neg, m.triplets) = (m.pos + k.pos, m.neg + k.neg, m.triplets + k.triplets);
        mined.active += b.mined.active;
    }
    if mining && f.is_zero(mined.sizes) {
        // PML's zero for the lists the miner gives: the listed path's, with its gradient
        return Ok(FusedFormula::Unavailable(x.put_tape(tape)));
    }
    if !square {
        // the statistics cover every pair of the batch: one more pass
        let (per_block, _) = whole.sweep(parallel, 0, |i0, b, _| {
            let rows = whole.scores(i0, b);
            let mut host = vec![0.0f32; n];
            let ld = whole.ld();
            (0..rows)
                .map(|r| {
                    let d = host_units::<F>(&b.s[r * ld..r * ld + n], &mut host);
                    RowStats::of(labels[i0 + r], d, labels, Some(i0 + r), margins)
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
    let (rows_of_pass, cols_of_pass, c0) = (pass.rows, pass.cols, pass.c0);
    if T::OWNS_TAPE {
        let (out_ghost, w, f) = (out.clone(), w.clone(), *f);
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?[0];
            let gx = grads.get_or_alloc_mut(&x)?;
            if total <= 0.0 || g == 0.0 {
                return Ok(());
            }
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
            if F::SHARED {
                parts = shared_gradient(&pass, parallel, &shared, &counts);
            }
            let dx = pass.finish(&parts, (f64::from(g) / total) as f32);
            match (rows, cols) {
                (Some(rows), Some(cols)) => {
                    let back = rows
                        .iter()
                        .enumerate()
                        .chain(cols.iter().enumerate().map(|(k, c)| (c0 + k, c)));
                    for (k, &r) in back {
                        for (a, b) in gx[r * D..(r + 1) * D]
                            .iter_mut()
                            .zip(&dx[k * D..(k + 1) * D])
                        {
                            *a += b;
                        }
                    }
                }
                _ => {
                    for (a, b) in gx.iter_mut().zip(dx.iter()) {
                        *a += b;
                    }
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

/// The gradient accumulators of a formula with shared numbers (lifted
/// structure), for `u = 1`: a pass for what every row's value sends to the
/// shared numbers, then one for `∂L/∂s`.
fn shared_gradient<F: BatchFormula>(
    pass: &Pass<F>,
    parallel: bool,
    shared: &[f32],
    counts: &[f32],
) -> Vec<Vec<f32>> {
    let (n, f) = (pass.rows, pass.f);
    let g = |i: usize| if counts[i] > 0.0 { 1.0 } else { 0.0 };
    let (_, per_part) = pass.sweep(parallel, n, |i0, b, acc| {
        let rows = pass.scores(i0, b);
        let mut ds = vec![0.0f32; n];
        for r in 0..rows {
            let row = pass.row(i0, r, b);
            f.row_backward(&row, shared, g(i0 + r), &mut ds, acc);
        }
    });
    let mut dshared = vec![0.0f32; n];
    for p in per_part {
        for (o, v) in dshared.iter_mut().zip(p) {
            *o += v;
        }
    }
    pass.sweep(parallel, pass.grad_len(), |i0, b, acc| {
        pass.scores(i0, b);
        // what the rows send to the shared numbers again: not needed here
        let mut sink = vec![0.0f32; n];
        pass.push_block(i0, b, acc, |row, ds| {
            f.row_backward(row, shared, g(row.index), ds, &mut sink);
            f.shared_backward(row, dshared[row.index], ds);
        });
    })
    .1
}
