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

use super::gemm::{Operand, cut_in, gemm};
use super::gram::{BLOCK, Panels, distance};
use super::parallel::in_parallel;
use super::{Scratch, upstream};
use crate::MetricLossError;
use crate::device::FusedFormula;
use crate::formulas::{BatchFormula, PairWeights, Row, Score};
use crate::miners::{MinerStats, RowStats};
use dfdx::prelude::*;
use std::sync::Mutex;

/// From this many rows on, the blocks are shared among rayon's threads:
/// each row costs `N` exponentials or so, far more than the Gram tile, so
/// this is lower than the mining passes' threshold.
const PARALLEL_MIN_ROWS: usize = 128;

/// What every block reads.
struct Pass<'a, F> {
    f: &'a F,
    w: &'a PairWeights,
    panels: &'a Panels,
    n: usize,
}

/// One thread's buffers: a block of scores and one row of each weight.
struct Buffers {
    s: Scratch,
    pos: Vec<f32>,
    neg: Vec<f32>,
}

impl<F: BatchFormula> Pass<'_, F> {
    fn ld(&self) -> usize {
        self.panels.padded_cols()
    }

    fn buffers(&self) -> Buffers {
        Buffers {
            s: Scratch::with_len(BLOCK * self.ld(), 0),
            pos: vec![0.0; self.n],
            neg: vec![0.0; self.n],
        }
    }

    /// The blocks' first rows.
    fn blocks(&self) -> Vec<usize> {
        (0..self.n).step_by(BLOCK).collect()
    }

    /// Rows `i0..i0 + rows` of the formula's matrix into `b.s` (row stride
    /// [`ld`](Self::ld), columns `0..n`).
    fn scores(&self, i0: usize, b: &mut Buffers) -> usize {
        let rows = BLOCK.min(self.n - i0);
        let ld = self.ld();
        self.panels.tile(i0, rows, 0, ld, &mut b.s, ld);
        if F::SCORE == Score::UnitEuclidean {
            let sq = self.panels.sq();
            for r in 0..rows {
                let sq_i = sq[i0 + r];
                for (v, &sq_j) in b.s[r * ld..r * ld + self.n].iter_mut().zip(sq) {
                    *v = distance(sq_i, sq_j, *v, false);
                }
            }
        }
        rows
    }

    /// Row `r` of the block at `i0` as the formula reads it.
    fn row<'b>(&self, i0: usize, r: usize, b: &'b mut Buffers) -> Row<'b> {
        let i = i0 + r;
        self.w.fill_row(i, &mut b.pos, &mut b.neg);
        let ld = self.ld();
        Row {
            index: i,
            s: &b.s[r * ld..r * ld + self.n],
            pos: &b.pos,
            neg: &b.neg,
        }
    }

    /// `f(block start)` for every block, shared among rayon's threads when
    /// `parallel`; the results in block order.
    fn each_block<R: Send>(&self, parallel: bool, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        let blocks = self.blocks();
        if !parallel {
            return blocks.into_iter().map(f).collect();
        }
        let out: Vec<Mutex<Option<R>>> = blocks.iter().map(|_| Mutex::new(None)).collect();
        in_parallel(blocks.len(), |k| {
            let r = cut_in(1, || f(blocks[k]));
            *out[k].lock().expect("a block's slot") = Some(r);
        });
        out.into_iter()
            .map(|m| {
                m.into_inner()
                    .expect("a block's slot")
                    .expect("every block ran")
            })
            .collect()
    }
}

/// One block's forward: per row, the value's count and the statistics.
struct BlockForward {
    sum: f64,
    counts: Vec<f32>,
    stats: Vec<RowStats>,
}

/// The loss of formula `f` over every pair of a batch of normalized rows
/// `x` (`w`: the weights of [`Tuples::All`](crate::miners::Tuples::All)
/// for `labels`), and the statistics of every pair, in blocks of rows of
/// Gram tiles. `Unavailable` where the kernel does not apply: a view of the
/// matrix (N-pairs) or a batch PML scores as exactly 0 (the generic path
/// gives that zero its gradient).
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
    if w.view().is_some() || w.rows() != n || labels.len() != n || f.is_zero(w.sizes()) {
        return Ok(FusedFormula::Unavailable(x));
    }
    let dev_err = MetricLossError::device;
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous().map_err(dev_err)?.split_tape();
    let panels = Panels::new(Scratch::copy_of(&x), n, D);
    if let Some(row) = panels.sq()[..n].iter().position(|s| !s.is_finite()) {
        let values = &panels.rows()[row * D..(row + 1) * D];
        let column = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(MetricLossError::NonFinite {
            what: "embeddings",
            row,
            column,
            value: values[column],
        });
    }
    let pass = Pass {
        f,
        w,
        panels: &panels,
        n,
    };
    let parallel = n >= PARALLEL_MIN_ROWS && rayon::current_num_threads() > 1;

    // Lifted structure: every row's shared number first.
    let shared: Vec<f32> = if F::SHARED {
        pass.each_block(parallel, |i0| {
            let mut b = pass.buffers();
            let rows = pass.scores(i0, &mut b);
            (0..rows)
                .map(|r| f.shared(&pass.row(i0, r, &mut b)))
                .collect::<Vec<f32>>()
        })
        .concat()
    } else {
        Vec::new()
    };

    let margins = f.margins();
    let margins = Some((margins.pos_margin, margins.margin));
    let blocks = pass.each_block(parallel, |i0| {
        let mut b = pass.buffers();
        let rows = pass.scores(i0, &mut b);
        let mut out = BlockForward {
            sum: 0.0,
            counts: Vec::with_capacity(rows),
            stats: Vec::with_capacity(rows),
        };
        let mut host = vec![0.0f32; n];
        for r in 0..rows {
            let row = pass.row(i0, r, &mut b);
            let v = f.row(&row, &shared);
            out.sum += f64::from(v.value);
            out.counts.push(v.count);
            // the miner's units: cosine distance 1 − s, or the distance
            let d = match F::SCORE {
                Score::Cosine => {
                    for (h, &s) in host.iter_mut().zip(row.s) {
                        *h = (1.0 - s).clamp(0.0, 2.0);
                    }
                    &host[..]
                }
                Score::UnitEuclidean => row.s,
            };
            out.stats.push(RowStats::of(i0 + r, d, labels, margins));
        }
        out
    });
    let mut sum = 0.0f64;
    let mut total = 0.0f64;
    let mut counts = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    for b in blocks {
        sum += b.sum;
        total += b.counts.iter().map(|&c| f64::from(c)).sum::<f64>();
        counts.extend(b.counts);
        stats.extend(b.stats);
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
    let active = stats.iter().map(|s| s.active).sum();
    let pairs = n * (n - 1);
    let stats = MinerStats::from_rows(n, stats.into_iter(), 0, pairs, active, f.margins().margin);

    let out = dev.try_tensor_from_vec(vec![loss], ()).map_err(dev_err)?;
    if T::OWNS_TAPE {
        let (out_ghost, w, f) = (out.clone(), w.clone(), *f);
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?[0];
            if total <= 0.0 || g == 0.0 {
                grads.get_or_alloc_mut(&x)?;
                return Ok(());
            }
            let pass = Pass {
                f: &f,
                w: &w,
                panels: &panels,
                n,
            };
            let dx = backward(
                &pass,
                parallel,
                &shared,
                &counts,
                (f64::from(g) / total) as f32,
            );
            let gx = grads.get_or_alloc_mut(&x)?;
            for (a, b) in gx.iter_mut().zip(dx.iter()) {
                *a += b;
            }
            Ok(())
        });
    }
    Ok(FusedFormula::Done {
        loss: out.put_tape(tape),
        stats,
    })
}

/// `∂L/∂X` (`n × D`) for `L = scale · Σ_i value_i` (rows with a zero count
/// have no gradient).
fn backward<F: BatchFormula>(
    pass: &Pass<F>,
    parallel: bool,
    shared: &[f32],
    counts: &[f32],
    scale: f32,
) -> Scratch {
    let (n, f) = (pass.n, pass.f);
    let d = pass.panels.rows().len() / n.max(1);
    let g = |i: usize| if counts[i] > 0.0 { scale } else { 0.0 };
    let blocks = pass.blocks();
    let parts = if parallel {
        rayon::current_num_threads().min(blocks.len()).max(1)
    } else {
        1
    };
    // Lifted structure: what every row's value sends to the shared numbers.
    let dshared: Vec<f32> = if F::SHARED {
        let per_part = run_parts(parts, &blocks, n, |i0, acc: &mut Vec<f32>| {
            let mut b = pass.buffers();
            let rows = pass.scores(i0, &mut b);
            let mut ds = vec![0.0f32; n];
            for r in 0..rows {
                let row = pass.row(i0, r, &mut b);
                f.row_backward(&row, shared, g(i0 + r), &mut ds, acc);
            }
        });
        sum_parts(per_part, n)
    } else {
        Vec::new()
    };
    let xs = pass.panels.rows();
    let sq_width = if F::SCORE == Score::UnitEuclidean {
        n
    } else {
        0
    };
    let per_part = run_parts(
        parts,
        &blocks,
        n * d + sq_width,
        |i0, acc: &mut Vec<f32>| {
            let mut b = pass.buffers();
            let rows = pass.scores(i0, &mut b);
            let mut dg = Scratch::with_len(rows * n, 0);
            let mut sink = vec![0.0f32; if F::SHARED { n } else { 0 }];
            let (acc, dsq) = acc.split_at_mut(n * d);
            for r in 0..rows {
                let i = i0 + r;
                let ds = &mut dg[r * n..(r + 1) * n];
                ds.fill(0.0);
                let row = pass.row(i0, r, &mut b);
                f.row_backward(&row, shared, g(i), ds, &mut sink);
                if let Some(&dl) = dshared.get(i) {
                    f.shared_backward(&row, dl, ds);
                }
                if F::SCORE == Score::UnitEuclidean {
                    // d = √(‖x_i‖² + ‖x_j‖² − 2G_ij): ∂d/∂G = −1/d, ∂d/∂‖x‖² = 1/(2d)
                    let mut row_sum = 0.0f32;
                    for (j, (v, &dist)) in ds.iter_mut().zip(row.s).enumerate() {
                        let e = if dist > 0.0 { *v / dist } else { 0.0 };
                        *v = -e;
                        row_sum += e;
                        dsq[j] += 0.5 * e;
                    }
                    dsq[i] += 0.5 * row_sum;
                }
            }
            // dX_b += dG_b·X, dX += dG_bᵀ·X_b
            gemm(
                rows,
                d,
                n,
                1.0,
                Operand::plain(&dg, n),
                Operand::plain(xs, d),
                1.0,
                &mut acc[i0 * d..],
                d,
            );
            gemm(
                n,
                d,
                rows,
                1.0,
                Operand::transposed(&dg, n),
                Operand::plain(&xs[i0 * d..], d),
                1.0,
                acc,
                d,
            );
        },
    );
    let mut dx = Scratch::with_len(n * d, 0);
    dx.fill(0.0);
    for part in &per_part {
        for (a, b) in dx.iter_mut().zip(&part[..n * d]) {
            *a += b;
        }
        if sq_width > 0 {
            // ∂‖x_i‖²/∂x_i = 2x_i
            for (i, &s) in part[n * d..].iter().enumerate() {
                if s != 0.0 {
                    let (out, x) = (&mut dx[i * d..(i + 1) * d], &xs[i * d..(i + 1) * d]);
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o += 2.0 * s * v;
                    }
                }
            }
        }
    }
    dx
}

/// Runs `f(block start, accumulator)` over the blocks in `parts` parts
/// (part `p` takes blocks `p, p + parts, …`), each with its own zeroed
/// accumulator of `len` values; the accumulators in part order.
fn run_parts(
    parts: usize,
    blocks: &[usize],
    len: usize,
    f: impl Fn(usize, &mut Vec<f32>) + Sync,
) -> Vec<Vec<f32>> {
    let accs: Vec<Mutex<Vec<f32>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
    let run = |p: usize| {
        let mut acc = vec![0.0f32; len];
        for &i0 in blocks.iter().skip(p).step_by(parts) {
            f(i0, &mut acc);
        }
        *accs[p].lock().expect("a part's accumulator") = acc;
    };
    if parts > 1 {
        in_parallel(parts, |p| cut_in(1, || run(p)));
    } else {
        run(0);
    }
    accs.into_iter()
        .map(|m| m.into_inner().expect("a part's accumulator"))
        .collect()
}

/// The sum of the parts' accumulators (`len` values each), in part order.
fn sum_parts(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}
