//! Fused batch-hard on the CPU: Gram tiles, distances, mining and the
//! statistics in one pass over half of the distance matrix, never holding
//! all of it, and an `O(N·D)` backward.

use super::gram::{BLOCK, MR, Panels, distance, parallel};
use super::{Scratch, upstream};
use crate::MetricLossError;
use crate::miners::{MinerStats, Triplet};
use dfdx::prelude::*;
use std::collections::HashMap;

/// No candidate yet. Indices stay below 2³¹ so that SIMD lanes can compare
/// them as `i32`.
const NONE: u32 = i32::MAX as u32;

/// `v` at index `i` is a harder (farther) positive than `best` at `at`.
/// Ties go to the lower index, so the result does not depend on the order
/// in which blocks are visited.
#[inline(always)]
fn farther(v: f32, i: u32, best: f32, at: u32) -> bool {
    (v > best) | ((v == best) & (i < at))
}

/// `v` at index `i` is a harder (closer) negative than `best` at `at`.
#[inline(always)]
fn closer(v: f32, i: u32, best: f32, at: u32) -> bool {
    (v < best) | ((v == best) & (i < at))
}

/// The running hardest positive and negative of every row (arrays padded
/// like the panels), and the sum of all distances (for
/// [`MinerStats::spread`]).
struct Hardest {
    pos: Vec<f32>,
    pos_at: Vec<u32>,
    neg: Vec<f32>,
    neg_at: Vec<u32>,
    sum: f64,
    /// The first row whose distances are not finite, and their sum.
    bad: Option<(usize, f32)>,
}

impl Hardest {
    fn new(len: usize) -> Self {
        Hardest {
            pos: vec![f32::NEG_INFINITY; len],
            pos_at: vec![NONE; len],
            neg: vec![f32::INFINITY; len],
            neg_at: vec![NONE; len],
            sum: 0.0,
            bad: None,
        }
    }

    #[inline(always)]
    fn offer(&mut self, row: usize, pos: (f32, u32), neg: (f32, u32)) {
        if pos.1 != NONE && farther(pos.0, pos.1, self.pos[row], self.pos_at[row]) {
            (self.pos[row], self.pos_at[row]) = pos;
        }
        if neg.1 != NONE && closer(neg.0, neg.1, self.neg[row], self.neg_at[row]) {
            (self.neg[row], self.neg_at[row]) = neg;
        }
    }

    fn note_bad(&mut self, row: usize, sum: f32) {
        if self.bad.is_none_or(|(r, _)| row < r) {
            self.bad = Some((row, sum));
        }
    }

    fn merge(mut self, other: Hardest) -> Hardest {
        for r in 0..self.pos.len() {
            self.offer(
                r,
                (other.pos[r], other.pos_at[r]),
                (other.neg[r], other.neg_at[r]),
            );
        }
        self.sum += other.sum;
        if let Some((r, s)) = other.bad {
            self.note_bad(r, s);
        }
        self
    }
}

/// One row mined along its band: the hardest positive and negative
/// (distance, column within the band), the sum of the distances, and the
/// part of it inside the diagonal block.
struct RowBest {
    pos: (f32, u32),
    neg: (f32, u32),
    total: f32,
    in_diag: f32,
}

/// What every block reads.
struct Batch<'a> {
    panels: &'a Panels,
    /// Labels as `u32` lanes, padded like the panels.
    labels: &'a [u32],
    n: usize,
    squared: bool,
}

/// Rows `i0..i0 + BLOCK` against columns `i0..n`: the diagonal block in full,
/// the rest of the row band once, standing for its mirror image too. Each
/// row is mined along the band (the row side); each column past the
/// diagonal block is mined down the band (the column side, which covers the
/// lower triangle never computed).
fn block(b: &Batch, i0: usize, h: &mut Hardest) {
    let n = b.n;
    let rows = BLOCK.min(n - i0);
    let w = b.panels.padded_cols() - i0;
    // (a scratch buffer: the tile kernel writes every value read below)
    let mut buf = Scratch::with_len(rows.div_ceil(MR) * MR * w, 0);
    b.panels
        .tile(i0, rows, i0, b.panels.padded_cols(), &mut buf, w);
    let valid = n - i0;
    let diag = rows; // columns i0..i0 + rows form the diagonal block
    let sq = &b.panels.sq()[i0..];
    let labels = &b.labels[i0..];
    let global = |(v, at): (f32, u32)| (v, if at == NONE { NONE } else { at + i0 as u32 });
    for r in 0..rows {
        let row = &mut buf[r * w..(r + 1) * w];
        let best = row_side(b.panels.simd(), row, sq, labels, r, valid, diag, b.squared);
        h.offer(i0 + r, global(best.pos), global(best.neg));
        if !best.total.is_finite() {
            h.note_bad(i0 + r, best.total);
        }
        // Past the diagonal block each distance also stands for its mirror.
        h.sum += 2.0 * f64::from(best.total) - f64::from(best.in_diag);
    }
    if diag < valid {
        column_side(b.panels.simd(), &buf, w, rows, valid, labels, i0, h);
    }
}

/// Turns one row of Gram values (band columns `0..valid`, row `me` of the
/// block) into distances in place — `‖a‖² + ‖b‖² − 2⟨a, b⟩` clamped at 0,
/// an exact 0 to itself, NaN kept — and mines it.
#[allow(clippy::too_many_arguments)]
fn row_side(
    simd: bool,
    row: &mut [f32],
    sq: &[f32],
    labels: &[u32],
    me: usize,
    valid: usize,
    diag: usize,
    squared: bool,
) -> RowBest {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd; // the portable loop below is all there is
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA are present (`simd`, from the panels); the
        // slices are padded like the panels, past `valid` rounded up to 8
        // (checked inside).
        return unsafe { avx2::row_side(row, sq, labels, me, valid, diag, squared) };
    }
    let mut best = RowBest {
        pos: (f32::NEG_INFINITY, NONE),
        neg: (f32::INFINITY, NONE),
        total: 0.0,
        in_diag: 0.0,
    };
    let (sq_me, label) = (sq[me], labels[me]);
    for c in 0..valid {
        let d = if c == me {
            0.0
        } else {
            distance(sq_me, sq[c], row[c], squared)
        };
        row[c] = d;
        best.total += d;
        if c < diag {
            best.in_diag += d;
        }
        // Columns come in increasing order: strict comparisons keep the
        // lowest index on ties.
        if labels[c] == label {
            if c != me && d > best.pos.0 {
                best.pos = (d, c as u32);
            }
        } else if d < best.neg.0 {
            best.neg = (d, c as u32);
        }
    }
    best
}

/// Columns past the diagonal block (`rows..valid` of the band), each mined
/// down the block's rows.
#[allow(clippy::too_many_arguments)]
fn column_side(
    simd: bool,
    buf: &[f32],
    w: usize,
    rows: usize,
    valid: usize,
    labels: &[u32],
    i0: usize,
    h: &mut Hardest,
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd; // the portable loop below is all there is
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA are present (`simd`, from the panels); the
        // buffer and the slices are padded like the panels (checked inside).
        unsafe {
            avx2::column_side(
                buf,
                w,
                rows,
                valid,
                labels,
                i0,
                [&mut h.pos[i0..], &mut h.neg[i0..]],
                [&mut h.pos_at[i0..], &mut h.neg_at[i0..]],
            )
        };
        return;
    }
    for r in 0..rows {
        let (label, i) = (labels[r], (i0 + r) as u32);
        for c in rows..valid {
            let (d, g) = (buf[r * w + c], i0 + c);
            if labels[c] == label {
                if farther(d, i, h.pos[g], h.pos_at[g]) {
                    (h.pos[g], h.pos_at[g]) = (d, i);
                }
            } else if closer(d, i, h.neg[g], h.neg_at[g]) {
                (h.neg[g], h.neg_at[g]) = (d, i);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{NONE, RowBest, farther};
    use std::arch::x86_64::*;

    /// The eight lanes of a vector.
    #[inline(always)]
    fn lanes<T: Copy>(v: __m256) -> [T; 8] {
        assert_eq!(std::mem::size_of::<[T; 8]>(), 32);
        // SAFETY: __m256 and [T; 8] are both 32 bytes (checked), and every
        // bit pattern is a valid f32 or u32, the two types used here.
        unsafe { std::mem::transmute_copy(&v) }
    }

    /// [`super::row_side`], eight columns at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_side(
        row: &mut [f32],
        sq: &[f32],
        labels: &[u32],
        me: usize,
        valid: usize,
        diag: usize,
        squared: bool,
    ) -> RowBest {
        unsafe {
            let end = valid.div_ceil(8) * 8;
            assert!(row.len() >= end && sq.len() >= end && labels.len() >= end && me < valid);
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let (zero, two) = (_mm256_setzero_ps(), _mm256_set1_ps(2.0));
            let sq_me = _mm256_set1_ps(sq[me]);
            let label = _mm256_set1_epi32(labels[me] as i32);
            let me_at = _mm256_set1_epi32(me as i32);
            let valid_at = _mm256_set1_epi32(valid as i32);
            let diag_at = _mm256_set1_epi32(diag as i32);
            let mut pos = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut pos_at = _mm256_set1_ps(f32::from_bits(NONE));
            let mut neg = _mm256_set1_ps(f32::INFINITY);
            let mut neg_at = _mm256_set1_ps(f32::from_bits(NONE));
            let (mut total, mut in_diag) = (zero, zero);
            for c in (0..end).step_by(8) {
                let at = _mm256_add_epi32(_mm256_set1_epi32(c as i32), iota);
                let g = _mm256_loadu_ps(row.as_ptr().add(c));
                let s = _mm256_loadu_ps(sq.as_ptr().add(c));
                // max returns its second operand when either is NaN: NaN stays.
                let d2 = _mm256_max_ps(zero, _mm256_fnmadd_ps(two, g, _mm256_add_ps(sq_me, s)));
                let d = if squared { d2 } else { _mm256_sqrt_ps(d2) };
                let itself = _mm256_castsi256_ps(_mm256_cmpeq_epi32(at, me_at));
                let d = _mm256_andnot_ps(itself, d);
                _mm256_storeu_ps(row.as_mut_ptr().add(c), d);
                let inside = _mm256_castsi256_ps(_mm256_cmpgt_epi32(valid_at, at));
                let lab = _mm256_loadu_si256(labels.as_ptr().add(c) as *const __m256i);
                let same = _mm256_castsi256_ps(_mm256_cmpeq_epi32(lab, label));
                let at = _mm256_castsi256_ps(at);
                // Within a lane columns only grow: strict comparisons keep the
                // lowest index on ties.
                let p = _mm256_and_ps(
                    _mm256_and_ps(same, inside),
                    _mm256_andnot_ps(itself, _mm256_cmp_ps::<_CMP_GT_OQ>(d, pos)),
                );
                pos = _mm256_blendv_ps(pos, d, p);
                pos_at = _mm256_blendv_ps(pos_at, at, p);
                let q = _mm256_and_ps(
                    _mm256_andnot_ps(same, inside),
                    _mm256_cmp_ps::<_CMP_LT_OQ>(d, neg),
                );
                neg = _mm256_blendv_ps(neg, d, q);
                neg_at = _mm256_blendv_ps(neg_at, at, q);
                let d = _mm256_and_ps(d, inside);
                total = _mm256_add_ps(total, d);
                let in_block =
                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(diag_at, _mm256_castps_si256(at)));
                in_diag = _mm256_add_ps(in_diag, _mm256_and_ps(d, in_block));
            }
            let (pv, pa, nv, na) = (
                lanes::<f32>(pos),
                lanes::<u32>(pos_at),
                lanes::<f32>(neg),
                lanes::<u32>(neg_at),
            );
            let mut best = RowBest {
                pos: (f32::NEG_INFINITY, NONE),
                neg: (f32::INFINITY, NONE),
                total: lanes::<f32>(total).iter().sum(),
                in_diag: lanes::<f32>(in_diag).iter().sum(),
            };
            for l in 0..8 {
                if pa[l] != NONE && farther(pv[l], pa[l], best.pos.0, best.pos.1) {
                    best.pos = (pv[l], pa[l]);
                }
                if na[l] != NONE && super::closer(nv[l], na[l], best.neg.0, best.neg.1) {
                    best.neg = (nv[l], na[l]);
                }
            }
            best
        }
    }

    /// Takes `(d, i)` into the running `(best, at)` in the `allowed` lanes
    /// where it is `harder` (the caller's strict comparison) or as hard at a
    /// lower index: the full tie rule, since a column meets candidates from
    /// several blocks and threads.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn keep_harder(
        d: __m256,
        i: __m256i,
        harder: __m256,
        allowed: __m256,
        best: &mut __m256,
        at: &mut __m256i,
    ) {
        let lower = _mm256_castsi256_ps(_mm256_cmpgt_epi32(*at, i));
        let tie = _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(d, *best), lower);
        let take = _mm256_and_ps(allowed, _mm256_or_ps(harder, tie));
        *best = _mm256_blendv_ps(*best, d, take);
        *at = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(*at),
            _mm256_castsi256_ps(i),
            take,
        ));
    }

    /// [`super::column_side`], eight columns at a time, each column's
    /// running results held in registers down the block's rows. `val` and
    /// `at` are the positive and negative results from column `i0` on.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn column_side(
        buf: &[f32],
        w: usize,
        rows: usize,
        valid: usize,
        labels: &[u32],
        i0: usize,
        val: [&mut [f32]; 2],
        at: [&mut [u32]; 2],
    ) {
        unsafe {
            let end = valid.div_ceil(8) * 8;
            assert!(rows.is_multiple_of(8) && w >= end && buf.len() >= (rows - 1) * w + end);
            assert!(labels.len() >= end && val.iter().all(|v| v.len() >= end));
            assert!(at.iter().all(|v| v.len() >= end));
            let [pos_v, neg_v] = val;
            let [pos_i, neg_i] = at;
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let valid_at = _mm256_set1_epi32(valid as i32);
            for c in (rows..end).step_by(8) {
                let col = _mm256_add_epi32(_mm256_set1_epi32(c as i32), iota);
                let inside = _mm256_castsi256_ps(_mm256_cmpgt_epi32(valid_at, col));
                let lab = _mm256_loadu_si256(labels.as_ptr().add(c) as *const __m256i);
                let mut pos = _mm256_loadu_ps(pos_v.as_ptr().add(c));
                let mut pos_at = _mm256_loadu_si256(pos_i.as_ptr().add(c) as *const __m256i);
                let mut neg = _mm256_loadu_ps(neg_v.as_ptr().add(c));
                let mut neg_at = _mm256_loadu_si256(neg_i.as_ptr().add(c) as *const __m256i);
                for (r, &label) in labels[..rows].iter().enumerate() {
                    let d = _mm256_loadu_ps(buf.as_ptr().add(r * w + c));
                    let same = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                        lab,
                        _mm256_set1_epi32(label as i32),
                    ));
                    let i = _mm256_set1_epi32((i0 + r) as i32);
                    let farther = _mm256_cmp_ps::<_CMP_GT_OQ>(d, pos);
                    keep_harder(
                        d,
                        i,
                        farther,
                        _mm256_and_ps(same, inside),
                        &mut pos,
                        &mut pos_at,
                    );
                    let closer = _mm256_cmp_ps::<_CMP_LT_OQ>(d, neg);
                    keep_harder(
                        d,
                        i,
                        closer,
                        _mm256_andnot_ps(same, inside),
                        &mut neg,
                        &mut neg_at,
                    );
                }
                _mm256_storeu_ps(pos_v.as_mut_ptr().add(c), pos);
                _mm256_storeu_si256(pos_i.as_mut_ptr().add(c) as *mut __m256i, pos_at);
                _mm256_storeu_ps(neg_v.as_mut_ptr().add(c), neg);
                _mm256_storeu_si256(neg_i.as_mut_ptr().add(c) as *mut __m256i, neg_at);
            }
        }
    }
}

/// Mines every row: blocks of [`BLOCK`] rows, shared among rayon's threads
/// for large batches, each thread with its own running results, merged at
/// the end (the tie rule makes the merge order irrelevant).
fn mine(b: &Batch, parallel: bool) -> Hardest {
    let starts: Vec<usize> = (0..b.n).step_by(BLOCK).collect();
    let len = b.panels.padded_cols();
    if parallel {
        use rayon::prelude::*;
        starts
            .par_iter()
            .with_max_len(1)
            .fold(
                || Hardest::new(len),
                |mut h, &i0| {
                    block(b, i0, &mut h);
                    h
                },
            )
            .reduce_with(Hardest::merge)
            .unwrap_or_else(|| Hardest::new(len))
    } else {
        let mut h = Hardest::new(len);
        for &i0 in &starts {
            block(b, i0, &mut h);
        }
        h
    }
}

/// Adds `s · (x_a − x_b)` to row `a` of `gx` and subtracts it from row `b`.
#[inline(always)]
fn pull<const D: usize>(gx: &mut [f32], xs: &[f32], a: usize, b: usize, s: f32) {
    if s == 0.0 || a == b {
        return;
    }
    let (xa, xb) = (&xs[a * D..][..D], &xs[b * D..][..D]);
    let mut step = [0.0f32; D];
    for ((t, &u), &v) in step.iter_mut().zip(xa).zip(xb) {
        *t = s * (u - v);
    }
    for (g, t) in gx[a * D..][..D].iter_mut().zip(&step) {
        *g += t;
    }
    for (g, t) in gx[b * D..][..D].iter_mut().zip(&step) {
        *g -= t;
    }
}

/// Fused batch-hard on the CPU, in one pass over half of the distance
/// matrix: Gram tiles from [`Panels`] a block of rows at a time become
/// distances and are mined on the spot (farthest positive, closest
/// negative, lowest index on ties — exactly
/// [`BatchHard`](crate::miners::BatchHard)'s rule) and summarised for
/// [`MinerStats`]. The backward touches only the `O(N·D)` rows involved:
/// for `d = ‖x_a − x_b‖`, `∂d/∂x_a = (x_a − x_b)/d = −∂d/∂x_b` (0 where
/// `d = 0`); squared, `∂d²/∂x_a = 2(x_a − x_b)`. Differences are taken from
/// the rows themselves, not from the Gram matrix, so gradients are exact.
pub(crate) fn batch_hard_euclidean_cpu<N: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(N, Const<D>), f32, Cpu, T>,
    labels: &[usize],
    squared: bool,
    margin: f32,
) -> Result<crate::device::FusedBatchHard<N, D, Cpu, T>, MetricLossError> {
    let dev_err = MetricLossError::device;
    let dev = x.device().clone();
    let n = x.shape().0.size();
    if labels.len() != n {
        return Err(MetricLossError::LabelCount {
            labels: labels.len(),
            batch: n,
        });
    }
    if n >= NONE as usize {
        // Indices must fit the kernel's i32 lanes; the generic path takes it.
        return Ok(crate::device::FusedBatchHard::Unavailable(x));
    }
    let (x, mut tape) = x.try_contiguous().map_err(dev_err)?.split_tape();
    // The rows on the host: packed for the kernel, kept for the backward.
    let xs = Scratch::copy_of(&x);
    // Labels as u32 lanes: as they are when they fit, renumbered otherwise.
    let mut dense: Vec<u32> = labels
        .iter()
        .map(|&l| u32::try_from(l).ok())
        .collect::<Option<_>>()
        .unwrap_or_else(|| {
            let mut ids = HashMap::new();
            labels
                .iter()
                .map(|l| {
                    let next = ids.len() as u32;
                    *ids.entry(*l).or_insert(next)
                })
                .collect()
        });
    let panels = Panels::new(xs, n, D);
    // The rows are on the host anyway: reject NaN/inf (and squares that
    // overflow) here, where the Gram expansion would hide them.
    panels.check_finite(n, D)?;
    dense.resize(panels.padded_cols(), NONE);
    let hardest = mine(
        &Batch {
            panels: &panels,
            labels: &dense,
            n,
            squared,
        },
        parallel(n),
    );
    let xs = panels.into_rows();
    if let Some((row, value)) = hardest.bad {
        return Err(MetricLossError::NonFinite {
            what: "distances",
            row,
            column: 0,
            value,
        });
    }
    let mut triplets = Vec::with_capacity(n);
    let (mut d_ap, mut d_an) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if hardest.pos_at[i] != NONE && hardest.neg_at[i] != NONE {
            triplets.push(Triplet {
                anchor: i,
                positive: hardest.pos_at[i] as usize,
                negative: hardest.neg_at[i] as usize,
            });
            d_ap.push(hardest.pos[i]);
            d_an.push(hardest.neg[i]);
        }
    }
    let k = triplets.len();
    let active = d_ap
        .iter()
        .zip(&d_an)
        .filter(|(p, q)| *p - *q + margin > 0.0)
        .count();
    let mean = |v: &[f32]| {
        (k > 0).then(|| (v.iter().map(|&x| f64::from(x)).sum::<f64>() / k as f64) as f32)
    };
    let spread = if n > 1 {
        (hardest.sum / (n * (n - 1)) as f64) as f32
    } else {
        0.0
    };
    let stats = MinerStats {
        triplets: k,
        pairs: 0,
        active_fraction: if k > 0 { active as f32 / k as f32 } else { 0.0 },
        mean_hardest_positive: mean(&d_ap),
        mean_hardest_negative: mean(&d_an),
        spread,
        collapsed: n > 1 && spread < MinerStats::collapse_threshold(margin),
    };
    let d_ap_t = dev
        .try_tensor_from_vec(d_ap.clone(), (k,))
        .map_err(dev_err)?;
    let d_an_t = dev
        .try_tensor_from_vec(d_an.clone(), (k,))
        .map_err(dev_err)?;
    if T::OWNS_TAPE {
        let (g_ap, g_an) = (d_ap_t.clone(), d_an_t.clone());
        let pairs = triplets.clone();
        tape.add_backward_op(move |grads| {
            let up_ap = upstream(grads, &g_ap)?;
            let up_an = upstream(grads, &g_an)?;
            let gx = grads.get_or_alloc_mut(&x)?;
            let scale = |d: f32, up: f32| {
                if squared {
                    2.0 * up
                } else if d > 0.0 {
                    up / d
                } else {
                    0.0
                }
            };
            for (t, trip) in pairs.iter().enumerate() {
                let s = scale(d_ap[t], up_ap[t]);
                pull::<D>(gx, &xs, trip.anchor, trip.positive, s);
                let s = scale(d_an[t], up_an[t]);
                pull::<D>(gx, &xs, trip.anchor, trip.negative, s);
            }
            Ok(())
        });
    }
    // With nothing mined the distances are empty but still carry the tape,
    // so the zero loss has a (zero) gradient.
    Ok(crate::device::FusedBatchHard::Done {
        d_ap: d_ap_t.put_tape(tape),
        d_an: d_an_t.retaped::<T>(),
        triplets,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The hardest positive and negative of every row from the definition:
    /// exact distances (f64), farthest positive and closest negative,
    /// lowest index on ties.
    fn naive(
        xs: &[f32],
        d: usize,
        labels: &[usize],
    ) -> Vec<(Option<(usize, f64)>, Option<(usize, f64)>)> {
        let n = labels.len();
        let dist = |i: usize, j: usize| {
            (0..d)
                .map(|k| f64::from(xs[i * d + k] - xs[j * d + k]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        (0..n)
            .map(|i| {
                let (mut p, mut q): (Option<(usize, f64)>, Option<(usize, f64)>) = (None, None);
                for j in 0..n {
                    let v = dist(i, j);
                    if labels[j] == labels[i] {
                        if j != i && p.is_none_or(|(_, b)| v > b) {
                            p = Some((j, v));
                        }
                    } else if q.is_none_or(|(_, b)| v < b) {
                        q = Some((j, v));
                    }
                }
                (p, q)
            })
            .collect()
    }

    fn run(xs: &[f32], d: usize, labels: &[usize], parallel: bool) -> Hardest {
        let n = labels.len();
        let mut dense: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let panels = Panels::new(xs.to_vec().into(), n, d);
        dense.resize(panels.padded_cols(), NONE);
        mine(
            &Batch {
                panels: &panels,
                labels: &dense,
                n,
                squared: false,
            },
            parallel,
        )
    }

    /// Two equal rows in different blocks are exactly 0 apart (the norms
    /// are summed as the tiles are), on both kernels.
    #[test]
    fn equal_rows_are_exactly_zero_apart() {
        let (n, d) = (100, 128);
        let mut rng = StdRng::seed_from_u64(3);
        let mut xs: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let copy: Vec<f32> = xs[3 * d..4 * d].to_vec();
        xs[70 * d..71 * d].copy_from_slice(&copy);
        let mut labels: Vec<usize> = (0..n).map(|i| 10 + i).collect();
        labels[70] = labels[3];
        for portable in [false, true] {
            let h = if portable {
                crate::fused::gram::tests::portable(|| run(&xs, d, &labels, false))
            } else {
                run(&xs, d, &labels, false)
            };
            assert_eq!((h.pos[3], h.pos_at[3]), (0.0, 70), "portable={portable}");
            assert_eq!((h.pos[70], h.pos_at[70]), (0.0, 3), "portable={portable}");
        }
    }

    #[test]
    fn blocks_mine_what_the_definition_says_sequential_and_parallel() {
        let mut rng = StdRng::seed_from_u64(7);
        for (n, d) in [
            (1, 3),
            (2, 1),
            (47, 5),
            (48, 128),
            (49, 4),
            (100, 17),
            (333, 128),
            (700, 8),
        ] {
            let mut xs: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            // P x K labels, plus a class of one (no positive) at the end
            let mut labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
            if n > 2 {
                labels[n - 1] = usize::MAX;
            }
            // An exact tie across blocks: rows 1 and n - 3 are the same far
            // point, both positives of row n - 2 (same class), and the
            // hardest for it: the lower index must win.
            if n >= 49 {
                let (a, b, anchor) = (1, n - 3, n - 2);
                labels[a] = 1_000_000;
                labels[b] = 1_000_000;
                labels[anchor] = 1_000_000;
                for k in 0..d {
                    xs[a * d + k] = 9.0;
                    xs[b * d + k] = 9.0;
                }
            }
            let want = naive(&xs, d, &labels);
            for (parallel, portable) in [(false, false), (true, false), (false, true)] {
                let h = if portable {
                    crate::fused::gram::tests::portable(|| run(&xs, d, &labels, false))
                } else {
                    run(&xs, d, &labels, parallel)
                };
                assert!(h.bad.is_none());
                let mut sum = 0.0f64;
                for (i, (p, q)) in want.iter().enumerate() {
                    let got_p = (h.pos_at[i] != NONE).then(|| (h.pos_at[i] as usize, h.pos[i]));
                    let got_q = (h.neg_at[i] != NONE).then(|| (h.neg_at[i] as usize, h.neg[i]));
                    for (what, got, want) in [("positive", got_p, p), ("negative", got_q, q)] {
                        match (got, want) {
                            (None, None) => {}
                            (Some((j, v)), Some((wj, wv))) => {
                                // the Gram expansion rounds: equal distances up to that,
                                assert!(
                                    (f64::from(v) - wv).abs() < 1e-3,
                                    "n={n} d={d} row {i} {what}: {v} vs {wv}"
                                );
                                // and a valid candidate, as hard as the best up to rounding
                                assert_eq!(labels[j] == labels[i], what == "positive");
                                assert_ne!(j, i);
                                let dj = (0..d)
                                    .map(|k| f64::from(xs[i * d + k] - xs[j * d + k]).powi(2))
                                    .sum::<f64>()
                                    .sqrt();
                                assert!(
                                    j == *wj || (dj - wv).abs() < 1e-4,
                                    "n={n} row {i} {what}: {j} vs {wj}"
                                );
                            }
                            (got, want) => panic!("n={n} row {i} {what}: {got:?} vs {want:?}"),
                        }
                    }
                    for j in 0..n {
                        if j != i {
                            sum += (0..d)
                                .map(|k| f64::from(xs[i * d + k] - xs[j * d + k]).powi(2))
                                .sum::<f64>()
                                .sqrt();
                        }
                    }
                }
                if n >= 49 {
                    assert_eq!(
                        h.pos_at[n - 2],
                        1,
                        "n={n} parallel={parallel}: tie goes to the lower index"
                    );
                }
                assert!(
                    (h.sum - sum).abs() <= 1e-4 * sum.max(1.0),
                    "n={n} sum {} vs {sum}",
                    h.sum
                );
            }
        }
    }
}
