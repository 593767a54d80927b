//! Batch-all mining (Hermans et al. 2017, eq. 6).

use super::{DistanceMatrix, Triplet, TripletMiner, check_batch};
use crate::error::MetricLossError;

/// Batch-all mining (Hermans, Beyer & Leibe 2017, eq. 6): every valid triplet
/// `(a, p, n)` of the batch, i.e. `a != p`, `labels[a] == labels[p]` and
/// `labels[n] != labels[a]`, in lexicographic `(a, p, n)` order.
///
/// With `positive_loss_only`, only the triplets whose hinge is active are
/// kept: `d(a, p) - d(a, n) + margin > 0` (strictly; a triplet exactly on the
/// margin has zero loss). Averaging over those only is the paper's "BA≠0"
/// variant: it keeps the loss from shrinking just because most triplets are
/// already satisfied (they have zero gradient anyway).
///
/// The output has up to `N^3` entries (`P K (K-1) (P-1) K` for a P x K batch);
/// it is built one anchor row at a time.
///
/// ```
/// use metric_loss_core::miners::{BatchAll, DistanceMatrix, TripletMiner};
///
/// // Class 0 at 0 and 1, class 1 at 1.5 and 10.
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 10.0], 1, false).unwrap();
/// let labels = [0, 0, 1, 1];
/// assert_eq!(BatchAll::default().try_mine(&dist, &labels, 0.1).unwrap().len(), 8);
/// let active = BatchAll { positive_loss_only: true }.try_mine(&dist, &labels, 0.1).unwrap();
/// assert_eq!(active.len(), 3);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchAll {
    /// Keep only triplets with a nonzero hinge loss (default `false`: all).
    pub positive_loss_only: bool,
}

impl TripletMiner for BatchAll {
    fn try_mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margin: f32,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        if !check_batch(dist, labels, &[margin])? {
            return Ok(Vec::new());
        }
        let (n, cols) = (dist.n(), dist.column_labels(labels));
        let mut out = Vec::new();
        let mut negatives = Vec::with_capacity(cols.len());
        for (anchor, &la) in labels.iter().enumerate().take(n) {
            let row = dist.row(anchor);
            negatives.clear();
            negatives.extend((0..cols.len()).filter(|&j| cols[j] != la));
            for positive in (0..cols.len()).filter(|&j| !dist.is_self(anchor, j) && cols[j] == la) {
                let d_ap = row[positive];
                for &negative in &negatives {
                    if !self.positive_loss_only || d_ap - row[negative] + margin > 0.0 {
                        out.push(Triplet {
                            anchor,
                            positive,
                            negative,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn name(&self) -> &'static str {
        if self.positive_loss_only {
            "batch-all-nonzero"
        } else {
            "batch-all"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miners::test_util::random_batches;

    fn reference(dist: &DistanceMatrix, labels: &[usize], margin: f32, only: bool) -> Vec<Triplet> {
        let n = labels.len();
        let mut out = Vec::new();
        for a in 0..n {
            for p in 0..n {
                for q in 0..n {
                    let valid = a != p && labels[a] == labels[p] && labels[q] != labels[a];
                    let loss = (dist.get(a, p) - dist.get(a, q) + margin).max(0.0);
                    if valid && (!only || loss > 0.0) {
                        out.push(Triplet {
                            anchor: a,
                            positive: p,
                            negative: q,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_on_random_batches() {
        for (i, (dist, labels)) in random_batches(22, 200).into_iter().enumerate() {
            let margin = [0.0, 0.3, 1.0][i % 3];
            for only in [false, true] {
                let got = BatchAll {
                    positive_loss_only: only,
                }
                .try_mine(&dist, &labels, margin)
                .unwrap();
                assert_eq!(got, reference(&dist, &labels, margin, only));
            }
        }
    }

    #[test]
    fn hand_made_1d() {
        // Class 0 at 0 (r0) and 1 (r1); class 1 at 1.5 (r2) and 10 (r3); margin 0.1.
        // All valid triplets: anchors each have 1 positive and 2 negatives -> 8.
        // Active ones (d_ap - d_an + 0.1 > 0):
        //  (0,1,2): 1 - 1.5 + .1 = -0.4 no;   (0,1,3): 1 - 10 no
        //  (1,0,2): 1 - 0.5 + .1 = 0.6 yes;   (1,0,3): 1 - 9 no
        //  (2,3,0): 8.5 - 1.5 > 0 yes;        (2,3,1): 8.5 - 0.5 > 0 yes
        //  (3,2,0): 8.5 - 10 + .1 < 0 no;     (3,2,1): 8.5 - 9 + .1 = -0.4 no
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 10.0], 1, false).unwrap();
        let labels = [0, 0, 1, 1];
        let tr = |a, p, n| Triplet {
            anchor: a,
            positive: p,
            negative: n,
        };
        let all = BatchAll::default().try_mine(&dist, &labels, 0.1).unwrap();
        assert_eq!(
            all,
            vec![
                tr(0, 1, 2),
                tr(0, 1, 3),
                tr(1, 0, 2),
                tr(1, 0, 3),
                tr(2, 3, 0),
                tr(2, 3, 1),
                tr(3, 2, 0),
                tr(3, 2, 1)
            ]
        );
        let active = BatchAll {
            positive_loss_only: true,
        }
        .try_mine(&dist, &labels, 0.1)
        .unwrap();
        assert_eq!(active, vec![tr(1, 0, 2), tr(2, 3, 0), tr(2, 3, 1)]);
    }

    #[test]
    fn exactly_on_the_margin_is_inactive() {
        // d_ap = 1, d_an = 1.5, margin 0.5: loss exactly 0 -> not kept.
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
        let only = BatchAll {
            positive_loss_only: true,
        };
        let t = only.try_mine(&dist, &[0, 0, 1], 0.5).unwrap();
        assert!(!t.contains(&Triplet {
            anchor: 0,
            positive: 1,
            negative: 2
        }));
    }

    #[test]
    fn edge_cases() {
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 2.0], 1, false).unwrap();
        let m = BatchAll::default();
        assert!(m.try_mine(&dist, &[1, 1, 1], 0.1).unwrap().is_empty());
        // Every class has a single row: no positives anywhere.
        assert!(m.try_mine(&dist, &[0, 1, 2], 0.1).unwrap().is_empty());
        assert_eq!(
            m.try_mine(&dist, &[0, 0, 1, 1], 0.1),
            Err(MetricLossError::LabelCount {
                labels: 4,
                batch: 3
            })
        );
        assert!(matches!(
            m.try_mine(&dist, &[0, 0, 1], -1.0),
            Err(MetricLossError::InvalidMargin { value }) if value == -1.0
        ));
        let empty = DistanceMatrix::new(0, vec![]).unwrap();
        assert!(matches!(
            m.try_mine(&empty, &[], 0.1),
            Err(MetricLossError::EmptyBatch { .. })
        ));
    }
}
