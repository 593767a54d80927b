//! Batch-hard mining (Hermans et al. 2017, eq. 5).

use super::{DistanceMatrix, Triplet, TripletMiner, check_batch};
use crate::error::MetricLossError;

/// Batch-hard mining (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet
/// Loss", eq. 5): for every anchor, one triplet made of its **farthest
/// positive** and its **closest negative** in the batch.
///
/// This gives `N` triplets for a batch of `N` (fewer if some anchors cannot
/// form one), each the hardest the batch can offer for its anchor, in
/// `O(N^2)` time (one pass over each row). With P x K batches (see
/// [`crate::sampler::PkSampler`]) it is the paper's recommended setting.
///
/// * An anchor is never its own positive; anchors with no other row of their
///   class, or with no row of another class, are dropped.
/// * Ties: among equally far positives (equally close negatives) the lowest
///   index wins.
/// * The output is sorted by anchor. The margin is validated but not used.
///
/// # Collapse
///
/// Hardest negatives are often mislabelled or genuinely ambiguous samples,
/// and early in training pushing them away is hard; the cheapest way for the
/// network to lower `d(a, p) - d(a, n) + margin` is then to shrink *every*
/// distance, so all embeddings collapse to one point and every triplet sits
/// at loss `margin`. Watch [`MinerStats::collapsed`](super::MinerStats) and
/// consider [`SemiHard`](super::SemiHard) or a lower learning rate if it fires.
///
/// ```
/// use metric_loss_core::miners::{BatchHard, DistanceMatrix, Triplet, TripletMiner};
///
/// // 1-D points: class 0 at 0, 1, 4; class 1 at 2, 6.
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 4.0, 2.0, 6.0], 1, false).unwrap();
/// let t = BatchHard.try_mine(&dist, &[0, 0, 0, 1, 1], 0.1).unwrap();
/// // Anchor 0: farthest positive is 4 (row 2), closest negative is 2 (row 3).
/// assert_eq!(t[0], Triplet { anchor: 0, positive: 2, negative: 3 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchHard;

impl TripletMiner for BatchHard {
    fn try_mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margin: f32,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        if !check_batch(dist, labels, &[margin])? {
            return Ok(Vec::new());
        }
        let n = dist.n();
        let mut out = Vec::with_capacity(n);
        for anchor in 0..n {
            let row = dist.row(anchor);
            let la = labels[anchor];
            let mut pos: Option<(usize, f32)> = None;
            let mut neg: Option<(usize, f32)> = None;
            for (j, (&d, &lj)) in row.iter().zip(dist.column_labels(labels)).enumerate() {
                if lj == la {
                    // Strict comparisons: the first (lowest) index wins ties.
                    if !dist.is_self(anchor, j) && pos.is_none_or(|(_, best)| d > best) {
                        pos = Some((j, d));
                    }
                } else if neg.is_none_or(|(_, best)| d < best) {
                    neg = Some((j, d));
                }
            }
            if let (Some((positive, _)), Some((negative, _))) = (pos, neg) {
                out.push(Triplet {
                    anchor,
                    positive,
                    negative,
                });
            }
        }
        Ok(out)
    }

    fn is_batch_hard(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "batch-hard"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miners::test_util::random_batches;

    /// Independent reference: collect candidates, pick by (distance, index).
    fn reference(dist: &DistanceMatrix, labels: &[usize]) -> Vec<Triplet> {
        let n = labels.len();
        let mut out = Vec::new();
        for a in 0..n {
            let mut positives = Vec::new();
            let mut negatives = Vec::new();
            for j in 0..n {
                if j != a && labels[j] == labels[a] {
                    positives.push(j);
                }
                if labels[j] != labels[a] {
                    negatives.push(j);
                }
            }
            if positives.is_empty() || negatives.is_empty() {
                continue;
            }
            let mut p = positives[0];
            for &j in &positives {
                let (dj, dp) = (dist.get(a, j), dist.get(a, p));
                if dj > dp || (dj == dp && j < p) {
                    p = j;
                }
            }
            let mut q = negatives[0];
            for &j in &negatives {
                let (dj, dq) = (dist.get(a, j), dist.get(a, q));
                if dj < dq || (dj == dq && j < q) {
                    q = j;
                }
            }
            out.push(Triplet {
                anchor: a,
                positive: p,
                negative: q,
            });
        }
        out
    }

    #[test]
    fn matches_reference_on_random_batches() {
        for (dist, labels) in random_batches(11, 300) {
            assert_eq!(
                BatchHard.try_mine(&dist, &labels, 0.2).unwrap(),
                reference(&dist, &labels),
                "labels {labels:?}"
            );
        }
    }

    #[test]
    fn hand_made_1d() {
        // Points: row0=0 (c0), row1=1 (c0), row2=4 (c0), row3=2 (c1), row4=6 (c1).
        // Anchor 0: positives at d 1 (r1), 4 (r2) -> r2; negatives 2 (r3), 6 (r4) -> r3.
        // Anchor 1: positives 1 (r0), 3 (r2) -> r2; negatives 1 (r3), 5 (r4) -> r3.
        // Anchor 2: positives 4 (r0), 3 (r1) -> r0; negatives 2 (r3), 2 (r4) -> tie, r3.
        // Anchor 3: positive only r4 (d 4); negatives 2, 1, 2 -> r1.
        // Anchor 4: positive r3; negatives 6, 5, 2 -> r2.
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 4.0, 2.0, 6.0], 1, false).unwrap();
        let t = BatchHard.try_mine(&dist, &[0, 0, 0, 1, 1], 0.1).unwrap();
        let tr = |a, p, n| Triplet {
            anchor: a,
            positive: p,
            negative: n,
        };
        assert_eq!(
            t,
            vec![
                tr(0, 2, 3),
                tr(1, 2, 3),
                tr(2, 0, 3),
                tr(3, 4, 1),
                tr(4, 3, 2)
            ]
        );
    }

    #[test]
    fn anchor_is_never_its_own_positive_and_lonely_anchors_drop() {
        // Row 2 is the only member of class 7: no positive, dropped. Rows 0
        // and 1 are each other's only positive (even though d(a, a) = 0 is
        // the smallest, never the largest, an anchor must not pick itself:
        // use a matrix with a large diagonal to make sure).
        let dist =
            DistanceMatrix::new(3, vec![9.0, 1.0, 2.0, 1.0, 9.0, 3.0, 2.0, 3.0, 9.0]).unwrap();
        let t = BatchHard.try_mine(&dist, &[0, 0, 7], 0.0).unwrap();
        assert_eq!(
            t,
            vec![
                Triplet {
                    anchor: 0,
                    positive: 1,
                    negative: 2
                },
                Triplet {
                    anchor: 1,
                    positive: 0,
                    negative: 2
                },
            ]
        );
    }

    #[test]
    fn edge_cases() {
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 2.0], 1, false).unwrap();
        assert!(
            BatchHard
                .try_mine(&dist, &[4, 4, 4], 0.1)
                .unwrap()
                .is_empty()
        );
        assert!(
            BatchHard
                .try_mine(&dist, &[0, 1, 2], 0.1)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            BatchHard.try_mine(&dist, &[0, 1], 0.1),
            Err(MetricLossError::LabelCount {
                labels: 2,
                batch: 3
            })
        );
        assert!(matches!(
            BatchHard.try_mine(&dist, &[0, 0, 1], f32::NAN),
            Err(MetricLossError::InvalidMargin { .. })
        ));
        let empty = DistanceMatrix::new(0, vec![]).unwrap();
        assert_eq!(
            BatchHard.try_mine(&empty, &[], 0.1),
            Err(MetricLossError::EmptyBatch { what: "distances" })
        );
    }
}
