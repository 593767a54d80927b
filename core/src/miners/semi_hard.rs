//! Semi-hard mining (Schroff et al. 2015, FaceNet, eq. 4).

use super::{DistanceMatrix, Triplet, TripletMiner, check_batch};
use crate::error::MetricLossError;

/// What [`SemiHard`] does with an (anchor, positive) pair that has no
/// semi-hard negative, i.e. every negative is at most as far from the anchor
/// as the positive is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SemiHardFallback {
    /// The pair yields no triplet (the default; pytorch-metric-learning's
    /// behaviour). The safest choice: only semi-hard triplets ever reach the
    /// loss.
    #[default]
    Drop,
    /// Use the closest negative overall (the hardest one, with
    /// `d(a, n) <= d(a, p)`). Brings back batch-hard's pressure, and its
    /// risk of collapse, for the pairs that have no semi-hard negative.
    Hardest,
    /// Use the farthest negative (the easiest one). This is TensorFlow
    /// Addons' `TripletSemiHardLoss`: every pair contributes a triplet, and
    /// the easiest negative is the gentlest way to still push.
    Easiest,
}

/// Semi-hard mining (Schroff, Kalenichenko & Philbin 2015, FaceNet, eq. 4):
/// for every (anchor, positive) pair, the **closest negative that is farther
/// from the anchor than the positive**, `d(a, n) > d(a, p)` (strictly).
///
/// FaceNet's compromise between hard and easy: the hardest negatives
/// (`d(a, n) < d(a, p)`) are often label noise and make training collapse
/// early, while random negatives are mostly already beyond the margin and
/// give zero gradient. A semi-hard negative is on the right side of the
/// positive but, when it lies within the margin, still violates it.
///
/// The margin does not restrict the choice (as in TensorFlow Addons): when the
/// closest semi-hard negative is beyond `d(a, p) + margin`, the triplet is
/// returned anyway and has zero loss. [`MinerStats`](super::MinerStats)
/// reports how many mined triplets are active. The margin is still validated.
///
/// Pairs without a semi-hard negative follow `fallback` (see
/// [`SemiHardFallback`]). Ties: lowest index wins. One triplet at most per
/// ordered (anchor, positive) pair, sorted by `(anchor, positive)`.
///
/// ```
/// use metric_loss_core::miners::{DistanceMatrix, SemiHard, SemiHardFallback, Triplet, TripletMiner};
///
/// // Class 0 at 0 and 1; class 1 at 0.5 (harder than the positive) and 2.
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 0.5, 2.0], 1, false).unwrap();
/// let t = SemiHard::default().try_mine(&dist, &[0, 0, 1, 1], 0.5).unwrap();
/// // Anchor 0, positive 1 (d = 1): negatives at 0.5 and 2 -> the one at 2.
/// assert_eq!(t[0], Triplet { anchor: 0, positive: 1, negative: 3 });
/// let miner = SemiHard { fallback: SemiHardFallback::Easiest };
/// assert_eq!(miner.try_mine(&dist, &[0, 0, 1, 1], 0.5).unwrap().len(), 4);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SemiHard {
    /// What to do when a pair has no semi-hard negative.
    pub fallback: SemiHardFallback,
}

impl TripletMiner for SemiHard {
    fn try_mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margin: f32,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        super::refuse_reference(dist, self.name())?;
        if !check_batch(dist, labels, &[margin])? {
            return Ok(Vec::new());
        }
        let n = dist.n();
        let mut out = Vec::new();
        let mut negatives: Vec<(f32, usize)> = Vec::with_capacity(n);
        let mut positives: Vec<usize> = Vec::with_capacity(n);
        for anchor in 0..n {
            let row = dist.row(anchor);
            let la = labels[anchor];
            negatives.clear();
            negatives.extend((0..n).filter(|&j| labels[j] != la).map(|j| (row[j], j)));
            if negatives.is_empty() {
                continue;
            }
            positives.clear();
            positives.extend((0..n).filter(|&j| j != anchor && labels[j] == la));
            // The closest semi-hard negative of a positive at distance d is
            // the least (distance, index) with distance > d. With few
            // positives per anchor (K − 1 in a P × K batch) a scan per
            // positive is cheapest, O(K·N); with many, sort the negatives
            // once and binary-search, O(N log N). Same answers (entries are
            // finite: checked by DistanceMatrix::new).
            let by_distance =
                |x: &(f32, usize), y: &(f32, usize)| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
            let sorted = positives.len() > 16;
            if sorted {
                negatives.sort_by(by_distance);
            }
            let hardest = negatives
                .iter()
                .min_by(|x, y| by_distance(x, y))
                .map(|x| x.1);
            // lowest index among the farthest
            let easiest = negatives
                .iter()
                .min_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)))
                .map(|x| x.1);
            for &positive in &positives {
                let d_ap = row[positive];
                let semi_hard = if sorted {
                    let k = negatives.partition_point(|x| x.0 <= d_ap);
                    negatives.get(k).map(|x| x.1)
                } else {
                    negatives
                        .iter()
                        .filter(|x| x.0 > d_ap)
                        .min_by(|x, y| by_distance(x, y))
                        .map(|x| x.1)
                };
                let negative = semi_hard.or(match self.fallback {
                    SemiHardFallback::Drop => None,
                    SemiHardFallback::Hardest => hardest,
                    SemiHardFallback::Easiest => easiest,
                });
                if let Some(negative) = negative {
                    out.push(Triplet {
                        anchor,
                        positive,
                        negative,
                    });
                }
            }
        }
        Ok(out)
    }

    fn name(&self) -> &'static str {
        match self.fallback {
            SemiHardFallback::Drop => "semi-hard",
            SemiHardFallback::Hardest => "semi-hard-or-hardest",
            SemiHardFallback::Easiest => "semi-hard-or-easiest",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miners::test_util::random_batches;

    /// Independent reference: plain nested loops, first-found wins ties.
    fn reference(
        dist: &DistanceMatrix,
        labels: &[usize],
        fallback: SemiHardFallback,
    ) -> Vec<Triplet> {
        let n = labels.len();
        let mut out = Vec::new();
        for a in 0..n {
            for p in 0..n {
                if p == a || labels[p] != labels[a] {
                    continue;
                }
                let d_ap = dist.get(a, p);
                let mut semi: Option<usize> = None;
                let mut hard: Option<usize> = None;
                let mut easy: Option<usize> = None;
                for q in 0..n {
                    if labels[q] == labels[a] {
                        continue;
                    }
                    let d = dist.get(a, q);
                    if d > d_ap && semi.is_none_or(|s| d < dist.get(a, s)) {
                        semi = Some(q);
                    }
                    if hard.is_none_or(|s| d < dist.get(a, s)) {
                        hard = Some(q);
                    }
                    if easy.is_none_or(|s| d > dist.get(a, s)) {
                        easy = Some(q);
                    }
                }
                let chosen = semi.or(match fallback {
                    SemiHardFallback::Drop => None,
                    SemiHardFallback::Hardest => hard,
                    SemiHardFallback::Easiest => easy,
                });
                if let Some(q) = chosen {
                    out.push(Triplet {
                        anchor: a,
                        positive: p,
                        negative: q,
                    });
                }
            }
        }
        out
    }

    const ALL: [SemiHardFallback; 3] = [
        SemiHardFallback::Drop,
        SemiHardFallback::Hardest,
        SemiHardFallback::Easiest,
    ];

    #[test]
    fn matches_reference_on_random_batches() {
        // Large classes too (more than 16 positives per anchor: the sorted
        // path), on a 1-D integer grid full of ties.
        let big: Vec<f32> = (0..70).map(|i| ((i * 37) % 11) as f32).collect();
        let big_labels: Vec<usize> = (0..70).map(|i| i % 3).collect();
        let big = (
            DistanceMatrix::euclidean(&big, 1, false).unwrap(),
            big_labels,
        );
        for (dist, labels) in random_batches(33, 300).into_iter().chain([big]) {
            for fallback in ALL {
                let got = SemiHard { fallback }.try_mine(&dist, &labels, 0.2).unwrap();
                assert_eq!(
                    got,
                    reference(&dist, &labels, fallback),
                    "{fallback:?} {labels:?}"
                );
            }
        }
    }

    fn tr(a: usize, p: usize, n: usize) -> Triplet {
        Triplet {
            anchor: a,
            positive: p,
            negative: n,
        }
    }

    #[test]
    fn hand_made_with_and_without_semi_hard_negatives() {
        // 1-D: class 0 at r0 = 0, r1 = 3; class 1 at r2 = 1, r3 = 2, r4 = 7.
        // Pair (0, 1), d_ap = 3. Negatives from r0: r2 1, r3 2, r4 7.
        //   semi-hard (> 3): only r4.  -> (0, 1, 4) whatever the fallback.
        // Pair (1, 0), d_ap = 3. Negatives from r1: r2 2, r3 1, r4 4.
        //   semi-hard: r4 (4 > 3).     -> (1, 0, 4).
        // Pair (2, 3), d_ap = 1. Negatives from r2: r0 1, r1 2.
        //   semi-hard: r1 (2 > 1; r0 at exactly 1 is not strictly farther).
        // Pair (2, 4), d_ap = 6. Negatives r0 1, r1 2: none > 6.
        //   Drop: none; Hardest: r0 (1); Easiest: r1 (2).
        // Pair (3, 2), d_ap = 1. Negatives from r3: r0 2, r1 1 -> semi-hard r0.
        // Pair (3, 4), d_ap = 5. Negatives r0 2, r1 1: none.
        //   Hardest: r1 (1); Easiest: r0 (2).
        // Pair (4, 2), d_ap = 6. Negatives from r4: r0 7, r1 4 -> semi-hard r0.
        // Pair (4, 3), d_ap = 5. Negatives r0 7, r1 4 -> semi-hard r0.
        let dist = DistanceMatrix::euclidean(&[0.0, 3.0, 1.0, 2.0, 7.0], 1, false).unwrap();
        let labels = [0, 0, 1, 1, 1];
        let common = [tr(0, 1, 4), tr(1, 0, 4), tr(2, 3, 1)];
        let tail = [tr(3, 2, 0)];
        let end = [tr(4, 2, 0), tr(4, 3, 0)];
        let build = |x: Option<Triplet>, y: Option<Triplet>| {
            let mut v = common.to_vec();
            v.extend(x);
            v.extend(tail);
            v.extend(y);
            v.extend(end);
            v
        };
        let mine = |f| {
            SemiHard { fallback: f }
                .try_mine(&dist, &labels, 0.1)
                .unwrap()
        };
        assert_eq!(mine(SemiHardFallback::Drop), build(None, None));
        assert_eq!(
            mine(SemiHardFallback::Hardest),
            build(Some(tr(2, 4, 0)), Some(tr(3, 4, 1)))
        );
        assert_eq!(
            mine(SemiHardFallback::Easiest),
            build(Some(tr(2, 4, 1)), Some(tr(3, 4, 0)))
        );
    }

    #[test]
    fn fallback_ties_pick_lowest_index() {
        // Anchor r0 = 0 and positive r1 = 5 (class 0); negatives r2 = 1,
        // r3 = -1 (both at distance 1), r4 = 2, r5 = -2 (both at distance 2).
        // No semi-hard negative for (0, 1). Hardest: tie at 1 -> r2.
        // Easiest: tie at 2 -> r4.
        let dist = DistanceMatrix::euclidean(&[0.0, 5.0, 1.0, -1.0, 2.0, -2.0], 1, false).unwrap();
        let labels = [0, 0, 1, 1, 1, 1];
        let first = |f| {
            SemiHard { fallback: f }
                .try_mine(&dist, &labels, 0.0)
                .unwrap()[0]
        };
        assert_eq!(first(SemiHardFallback::Hardest), tr(0, 1, 2));
        assert_eq!(first(SemiHardFallback::Easiest), tr(0, 1, 4));
    }

    #[test]
    fn edge_cases() {
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 2.0], 1, false).unwrap();
        for fallback in ALL {
            let m = SemiHard { fallback };
            assert!(m.try_mine(&dist, &[5, 5, 5], 0.1).unwrap().is_empty());
            // Only class 0 has a pair; anchor 2 has no positive and is dropped.
            let far = DistanceMatrix::euclidean(&[0.0, 1.0, 5.0], 1, false).unwrap();
            assert_eq!(
                m.try_mine(&far, &[0, 0, 1], 0.1).unwrap(),
                vec![tr(0, 1, 2), tr(1, 0, 2)]
            );
            assert!(matches!(
                m.try_mine(&dist, &[0, 0], 0.1),
                Err(MetricLossError::LabelCount {
                    labels: 2,
                    batch: 3
                })
            ));
            assert!(matches!(
                m.try_mine(&dist, &[0, 0, 1], f32::NAN),
                Err(MetricLossError::InvalidMargin { .. })
            ));
            let empty = DistanceMatrix::new(0, vec![]).unwrap();
            assert!(matches!(
                m.try_mine(&empty, &[], 0.1),
                Err(MetricLossError::EmptyBatch { .. })
            ));
        }
    }
}
