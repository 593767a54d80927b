//! pytorch-metric-learning's `MultiSimilarityMiner` (Wang et al., CVPR 2019).

use super::{DistanceMatrix, IndexPair, PairMiner, Tuples, check_batch};
use crate::error::MetricLossError;

/// Multi-similarity mining (Wang et al., "Multi-Similarity Loss with
/// General Pair Weighting", CVPR 2019), as PML 2.9's
/// `MultiSimilarityMiner(epsilon)`: for each anchor, the positive pairs
/// less similar than its most similar negative plus `ε`, and the negative
/// pairs more similar than its least similar positive minus `ε`:
///
/// `s_ap − ε < max_n s_an`, `s_an + ε > min_p s_ap`.
///
/// Pairs are directed (`(anchor, other)`, each anchor's row decides), in
/// PML's order: all positive pairs, then all negative pairs, by anchor, and
/// within an anchor by increasing similarity. An anchor without positives
/// gives no negatives and vice versa; a batch without any positive or
/// negative pair gives nothing (a single-class batch, say).
///
/// On a cosine or unit-length Euclidean matrix ([`Units`](super::Units):
/// what the ranking family and any loss declared with `normalize` hand
/// their miner) it compares cosine similarities, as PML's default
/// `CosineSimilarity()`. On a plain distance matrix it compares distances
/// (`d_ap + ε > min_n d_an`, ...), with `ε` in the loss's units: PML's
/// rule for a non-inverted distance.
///
/// ```
/// use metric_loss_core::miners::{DistanceMatrix, MultiSimilarityMiner, PairMiner, Tuples, Units};
/// // cosine distances 1 − s of three rows: s(0,1) = 0.2, s(0,2) = 0.5, s(1,2) = 0.9
/// let d = DistanceMatrix::new(3, vec![0.0, 0.8, 0.5, 0.8, 0.0, 0.1, 0.5, 0.1, 0.0]).unwrap()
///     .with_units(Units::Cosine { dim: 2 });
/// let t = MultiSimilarityMiner::default().try_mine_tuples(&d, &[0, 0, 1], 0.0, 1.0).unwrap();
/// // anchor 0: its positive (s 0.2) is less similar than its negative (0.5): both hard
/// assert_eq!(
///     t,
///     Tuples::Pairs { positive: vec![(0, 1), (1, 0)], negative: vec![(0, 2), (1, 2)] }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiSimilarityMiner {
    /// `ε` (PML's `epsilon`, default 0.1): finite and `≥ 0`.
    pub epsilon: f32,
}

impl Default for MultiSimilarityMiner {
    fn default() -> Self {
        Self { epsilon: 0.1 }
    }
}

impl MultiSimilarityMiner {
    /// The miner with this `ε`.
    pub fn new(epsilon: f32) -> Self {
        Self { epsilon }
    }

    fn mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margins: [f32; 2],
    ) -> Result<(Vec<(usize, usize)>, Vec<(usize, usize)>), MetricLossError> {
        let eps = self.epsilon;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(MetricLossError::InvalidConfig(format!(
                "multi-similarity miner epsilon must be a finite number >= 0, got {eps}"
            )));
        }
        if !check_batch(dist, labels, &margins)? {
            return Ok((Vec::new(), Vec::new()));
        }
        let n = dist.n();
        // similarity where the units give it (larger is closer), else −distance
        let similar = dist.cosine_similarity(0, 0).is_some();
        let score = |i: usize, j: usize| {
            dist.cosine_similarity(i, j)
                .unwrap_or_else(|| -dist.get(i, j))
        };
        let cols = dist.column_labels(labels);
        let has_pairs =
            (0..n).any(|i| (0..cols.len()).any(|j| !dist.is_self(i, j) && labels[i] == cols[j]));
        if !has_pairs {
            return Ok((Vec::new(), Vec::new()));
        }
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for (a, &la) in labels.iter().enumerate().take(n) {
            let mut ps: Vec<(f32, usize)> = Vec::new();
            let mut ns: Vec<(f32, usize)> = Vec::new();
            for j in (0..cols.len()).filter(|&j| !dist.is_self(a, j)) {
                let side = if cols[j] == la { &mut ps } else { &mut ns };
                side.push((score(a, j), j));
            }
            let (Some(min_pos), Some(max_neg)) = (
                ps.iter().map(|p| p.0).reduce(f32::min),
                ns.iter().map(|q| q.0).reduce(f32::max),
            ) else {
                continue;
            };
            // PML's order: by the matrix's value, increasing (similarity, or
            // distance); the column breaks ties, so the order is total and an
            // unstable sort gives the stable one's
            let key = |v: f32| if similar { v } else { -v };
            ps.sort_unstable_by(|x, y| key(x.0).total_cmp(&key(y.0)).then(x.1.cmp(&y.1)));
            ns.sort_unstable_by(|x, y| key(x.0).total_cmp(&key(y.0)).then(x.1.cmp(&y.1)));
            pos.extend(
                ps.iter()
                    .filter(|p| keeps_positive(p.0, max_neg, eps))
                    .map(|p| (a, p.1)),
            );
            neg.extend(
                ns.iter()
                    .filter(|q| keeps_negative(q.0, min_pos, eps))
                    .map(|q| (a, q.1)),
            );
        }
        Ok((pos, neg))
    }
}

/// The miner's rule for a positive pair of score `s` (larger is closer):
/// less similar than the anchor's most similar negative plus `ε`.
pub(crate) fn keeps_positive(s: f32, max_neg: f32, eps: f32) -> bool {
    s - eps < max_neg
}

/// The miner's rule for a negative pair of score `s`: more similar than the
/// anchor's least similar positive minus `ε`.
pub(crate) fn keeps_negative(s: f32, min_pos: f32, eps: f32) -> bool {
    s + eps > min_pos
}

/// [`MultiSimilarityMiner`]'s rule on one anchor row, in place, for a fused
/// pass that never lists the pairs: `sim[j]` is the pair's similarity (the
/// miner's units), `pos[j] > 0` / `neg[j] > 0` mark the row's positive and
/// negative pairs (every pair of the batch, the anchor itself excluded), and
/// the weights of the pairs the miner drops become 0 (all of them when the
/// row lacks a positive or a negative pair). Returns the numbers of
/// positive and negative pairs kept. The same comparisons as
/// [`try_mine_tuples`](PairMiner::try_mine_tuples), without its order.
///
/// Eight columns at a time where the CPU has AVX2 (the same decisions: the
/// extremes ignore NaN similarities as `f32::min`/`max` do, and are NaN
/// only when every similarity of that side is, which no comparison passes).
pub(crate) fn keep_row(sim: &[f32], pos: &mut [f32], neg: &mut [f32], eps: f32) -> (usize, usize) {
    assert!(pos.len() >= sim.len() && neg.len() >= sim.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); `pos` and `neg` are at least
        // as long as `sim` (asserted).
        return unsafe { avx2::keep_row(sim, pos, neg, eps) };
    }
    keep_row_portable(sim, pos, neg, eps)
}

fn keep_row_portable(sim: &[f32], pos: &mut [f32], neg: &mut [f32], eps: f32) -> (usize, usize) {
    let mut min_pos: Option<f32> = None;
    let mut max_neg: Option<f32> = None;
    for ((&s, &p), &q) in sim.iter().zip(pos.iter()).zip(neg.iter()) {
        if p > 0.0 {
            min_pos = Some(min_pos.map_or(s, |m| m.min(s)));
        }
        if q > 0.0 {
            max_neg = Some(max_neg.map_or(s, |m| m.max(s)));
        }
    }
    let (Some(min_pos), Some(max_neg)) = (min_pos, max_neg) else {
        pos.fill(0.0);
        neg.fill(0.0);
        return (0, 0);
    };
    keep_by(sim, pos, neg, (min_pos, max_neg), eps)
}

/// [`keep_row`]'s second sweep, given the row's extremes: the pairs the
/// rule drops get weight 0; the numbers of pairs kept.
fn keep_by(
    sim: &[f32],
    pos: &mut [f32],
    neg: &mut [f32],
    (min_pos, max_neg): (f32, f32),
    eps: f32,
) -> (usize, usize) {
    let (mut kept_pos, mut kept_neg) = (0, 0);
    for ((&s, p), q) in sim.iter().zip(pos.iter_mut()).zip(neg.iter_mut()) {
        if *p > 0.0 {
            if keeps_positive(s, max_neg, eps) {
                kept_pos += 1;
            } else {
                *p = 0.0;
            }
        }
        if *q > 0.0 {
            if keeps_negative(s, min_pos, eps) {
                kept_neg += 1;
            } else {
                *q = 0.0;
            }
        }
    }
    (kept_pos, kept_neg)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`keep_row`](super::keep_row), eight columns at a time, the tail
    /// one by one.
    ///
    /// # Safety
    /// The CPU has AVX2; `pos` and `neg` are at least as long as `sim`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn keep_row(
        sim: &[f32],
        pos: &mut [f32],
        neg: &mut [f32],
        eps: f32,
    ) -> (usize, usize) {
        let n = sim.len();
        let full = n / 8 * 8;
        let zero = _mm256_setzero_ps();
        let (inf, ninf) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        // the extremes over the non-NaN similarities of each side, and
        // whether the side has a pair at all / a non-NaN one
        let (mut lo, mut hi) = (inf, ninf);
        let (mut any_p, mut any_n, mut num_p, mut num_n) = (0, 0, 0, 0);
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ n ≤ pos.len(), neg.len()` (the caller's contract).
            unsafe {
                let s = _mm256_loadu_ps(sim.as_ptr().add(j));
                let kp = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(pos.as_ptr().add(j)), zero);
                let kn = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(neg.as_ptr().add(j)), zero);
                let num = _mm256_cmp_ps::<_CMP_ORD_Q>(s, s);
                let (vp, vn) = (_mm256_and_ps(kp, num), _mm256_and_ps(kn, num));
                any_p |= _mm256_movemask_ps(kp);
                any_n |= _mm256_movemask_ps(kn);
                num_p |= _mm256_movemask_ps(vp);
                num_n |= _mm256_movemask_ps(vn);
                lo = _mm256_min_ps(lo, _mm256_blendv_ps(inf, s, vp));
                hi = _mm256_max_ps(hi, _mm256_blendv_ps(ninf, s, vn));
            }
        }
        let (mut l, mut h) = ([0.0f32; 8], [0.0f32; 8]);
        // SAFETY: `l` and `h` hold eight f32 each.
        unsafe {
            _mm256_storeu_ps(l.as_mut_ptr(), lo);
            _mm256_storeu_ps(h.as_mut_ptr(), hi);
        }
        // the lanes' extremes, or NaN for a side whose pairs are all NaN
        // (as `f32::min` / `f32::max` folded from the first one give)
        let side = |any: i32, num: i32, v: f32| match (any != 0, num != 0) {
            (false, _) => None,
            (true, false) => Some(f32::NAN),
            (true, true) => Some(v),
        };
        let mut min_pos = side(
            any_p,
            num_p,
            l.iter().copied().fold(f32::INFINITY, f32::min),
        );
        let mut max_neg = side(
            any_n,
            num_n,
            h.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        );
        for j in full..n {
            if pos[j] > 0.0 {
                min_pos = Some(min_pos.map_or(sim[j], |m| m.min(sim[j])));
            }
            if neg[j] > 0.0 {
                max_neg = Some(max_neg.map_or(sim[j], |m| m.max(sim[j])));
            }
        }
        let (Some(min_pos), Some(max_neg)) = (min_pos, max_neg) else {
            pos.fill(0.0);
            neg.fill(0.0);
            return (0, 0);
        };
        let (eps_v, vmin, vmax) = (
            _mm256_set1_ps(eps),
            _mm256_set1_ps(min_pos),
            _mm256_set1_ps(max_neg),
        );
        let (mut kept_pos, mut kept_neg) = (0, 0);
        for j in (0..full).step_by(8) {
            // SAFETY: as above.
            unsafe {
                let s = _mm256_loadu_ps(sim.as_ptr().add(j));
                let (pp, qp) = (pos.as_mut_ptr().add(j), neg.as_mut_ptr().add(j));
                let (p, q) = (_mm256_loadu_ps(pp), _mm256_loadu_ps(qp));
                let kp = _mm256_cmp_ps::<_CMP_GT_OQ>(p, zero);
                let kn = _mm256_cmp_ps::<_CMP_GT_OQ>(q, zero);
                // keeps_positive: s − ε < max_neg; keeps_negative: s + ε > min_pos
                let keep_p = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(s, eps_v), vmax);
                let keep_n = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_add_ps(s, eps_v), vmin);
                let (kept_p, kept_n) = (_mm256_and_ps(kp, keep_p), _mm256_and_ps(kn, keep_n));
                kept_pos += _mm256_movemask_ps(kept_p).count_ones() as usize;
                kept_neg += _mm256_movemask_ps(kept_n).count_ones() as usize;
                // a dropped pair's weight becomes +0, the others stay
                _mm256_storeu_ps(pp, _mm256_andnot_ps(_mm256_andnot_ps(keep_p, kp), p));
                _mm256_storeu_ps(qp, _mm256_andnot_ps(_mm256_andnot_ps(keep_n, kn), q));
            }
        }
        let (tp, tn) = super::keep_by(
            &sim[full..],
            &mut pos[full..n],
            &mut neg[full..n],
            (min_pos, max_neg),
            eps,
        );
        (kept_pos + tp, kept_neg + tn)
    }
}

impl PairMiner for MultiSimilarityMiner {
    /// The directed pairs of [`try_mine_tuples`](PairMiner::try_mine_tuples),
    /// positive then negative (`a` is the anchor; a pair may come in both
    /// directions).
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        Ok(self
            .try_mine_tuples(dist, labels, pos_margin, neg_margin)?
            .to_index_pairs(labels))
    }

    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Tuples, MetricLossError> {
        let (positive, negative) = self.mine(dist, labels, [pos_margin, neg_margin])?;
        Ok(Tuples::Pairs { positive, negative })
    }

    fn name(&self) -> &'static str {
        "multi-similarity"
    }

    fn multi_similarity_epsilon(&self) -> Option<f32> {
        // a bad ε takes the listed path, which reports it
        (self.epsilon.is_finite() && self.epsilon >= 0.0).then_some(self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miners::Units;

    /// `keep_row`'s eight lanes decide as the portable loop, bit for bit:
    /// NaN and infinite similarities (a side all NaN too), weights that
    /// count as none (-0, negative, NaN), rows without a positive or a
    /// negative pair, lengths across the lanes.
    #[test]
    fn keep_row_lanes_equal_the_portable_loop() {
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for len in [0usize, 1, 7, 8, 9, 16, 64, 1021] {
            for case in 0..6 {
                let sim: Vec<f32> = (0..len)
                    .map(|j| match (case, j % 7) {
                        (4, _) => f32::NAN,
                        (_, 3) if case >= 2 => odd[(j / 7) % odd.len()],
                        _ => ((j * 37 + case) % 23) as f32 / 11.0 - 1.0,
                    })
                    .collect();
                let pos: Vec<f32> = (0..len)
                    .map(|j| match (case, j % 4) {
                        (1, _) => 0.0,
                        (_, 0) => 1.0,
                        (_, 1) if case == 3 => odd[(j / 4) % odd.len()],
                        _ => 0.0,
                    })
                    .collect();
                let neg: Vec<f32> = (0..len)
                    .map(|j| match (case, j % 4) {
                        (5, _) => -0.0,
                        (_, 0) => 0.0,
                        (_, 2) if case == 3 => -1.0,
                        _ => 1.0,
                    })
                    .collect();
                for eps in [0.0f32, 0.1, 0.7] {
                    let (mut wp, mut wn) = (pos.clone(), neg.clone());
                    let want = keep_row_portable(&sim, &mut wp, &mut wn, eps);
                    let (mut gp, mut gn) = (pos.clone(), neg.clone());
                    let got = keep_row(&sim, &mut gp, &mut gn, eps);
                    assert_eq!(got, want, "len={len} case={case} eps={eps}");
                    assert_eq!(bits(&gp), bits(&wp), "len={len} case={case} eps={eps}");
                    assert_eq!(bits(&gn), bits(&wn), "len={len} case={case} eps={eps}");
                }
            }
        }
    }

    #[test]
    fn distances_and_similarities_give_the_same_pairs() {
        // 1-D points on a line: as distances; the same order as cosine distances
        let x = [0.0f32, 0.3, 1.0, 1.2, 2.5];
        let labels = [0, 1, 0, 1, 0];
        let d = DistanceMatrix::euclidean(&x, 1, false).unwrap();
        let m = MultiSimilarityMiner::new(0.0);
        let plain = m.try_mine_tuples(&d, &labels, 0.0, 1.0).unwrap();
        // as "cosine distances" the entries are 1 − s, so s = 1 − d: same comparisons
        let c = d.clone().with_units(Units::Cosine { dim: 1 });
        assert_eq!(
            m.try_mine_tuples(&c, &labels, 0.0, 1.0)
                .unwrap()
                .to_pairs(&labels)
                .0
                .len(),
            plain.to_pairs(&labels).0.len()
        );
        // by hand, ε = 0: anchor 0 (class 0 at 0.0): positives 1.0, 2.5; negatives 0.3, 1.2.
        // hard positives: d > min neg (0.3): both; hard negatives: d < max pos (2.5): both.
        let (pos, neg) = plain.to_pairs(&labels);
        assert!(pos.contains(&(0, 2)) && pos.contains(&(0, 4)));
        assert!(neg.contains(&(0, 1)) && neg.contains(&(0, 3)));
        // anchor 2 (at 1.0): positives 0.0 (d 1), 2.5 (d 1.5); negatives 0.3 (0.7), 1.2 (0.2):
        // hard positives d > 0.2: both; hard negatives d < 1.5: both
        assert_eq!(pos.iter().filter(|p| p.0 == 2).count(), 2);
        // in the order of the matrix's values (PML sorts it): increasing distance,
        // 0 (d 1) before 4 (d 1.5)
        assert_eq!(
            pos.iter()
                .filter(|p| p.0 == 2)
                .map(|p| p.1)
                .collect::<Vec<_>>(),
            [0, 4]
        );
    }

    #[test]
    fn epsilon_widens_and_edge_cases() {
        let d = DistanceMatrix::euclidean(&[0.0, 0.1, 5.0, 5.2], 1, false).unwrap();
        let labels = [0, 0, 1, 1];
        // well separated: nothing is hard at ε = 0, everything at ε = 10
        let none = MultiSimilarityMiner::new(0.0)
            .try_mine_tuples(&d, &labels, 0.0, 1.0)
            .unwrap();
        assert_eq!(
            none,
            Tuples::Pairs {
                positive: vec![],
                negative: vec![]
            }
        );
        let all = MultiSimilarityMiner::new(10.0)
            .try_mine_tuples(&d, &labels, 0.0, 1.0)
            .unwrap();
        assert_eq!(all.to_pairs(&labels).0.len(), 4);
        assert_eq!(all.to_pairs(&labels).1.len(), 8);
        let single = MultiSimilarityMiner::default()
            .try_mine_tuples(&d, &[3; 4], 0.0, 1.0)
            .unwrap();
        assert_eq!(
            single,
            Tuples::Pairs {
                positive: vec![],
                negative: vec![]
            }
        );
        assert!(
            MultiSimilarityMiner::new(-1.0)
                .try_mine_tuples(&d, &labels, 0.0, 1.0)
                .is_err()
        );
        assert!(
            MultiSimilarityMiner::new(f32::NAN)
                .try_mine_pairs(&d, &labels, 0.0, 1.0)
                .is_err()
        );
        assert_eq!(
            MultiSimilarityMiner::default().try_mine_pairs(&d, &[0], 0.0, 1.0),
            Err(MetricLossError::LabelCount {
                labels: 1,
                batch: 4
            })
        );
    }
}
