//! Pair miners for contrastive losses.

use super::{DistanceMatrix, IndexPair, PairMiner, Tuples, check_batch};
use crate::error::MetricLossError;

/// Every unordered pair `i < j` of the batch, in lexicographic order, with
/// `similar = labels[i] == labels[j]`. The margins are validated, not used.
///
/// A single-class batch yields no pairs (see the [module docs](super)): with
/// no negative pair, a contrastive loss can only pull rows together, which is
/// exactly the direction of collapse, so such a batch is treated as a no-op.
/// For the ranking family (multi-similarity, NT-Xent, ...) `AllPairs` is
/// pytorch-metric-learning's no-miner default and gives [`Tuples::All`]
/// (see [`PairMiner::try_mine_tuples`]).
///
/// ```
/// use metric_loss_core::miners::{AllPairs, DistanceMatrix, IndexPair, PairMiner};
///
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 5.0], 1, false).unwrap();
/// let pairs = AllPairs.try_mine_pairs(&dist, &[0, 0, 1], 0.0, 1.0).unwrap();
/// assert_eq!(pairs[0], IndexPair { a: 0, b: 1, similar: true });
/// assert_eq!(pairs.len(), 3);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllPairs;

/// The pairs with a nonzero contrastive loss (pytorch-metric-learning's
/// `PairMarginMiner`): positive pairs farther apart than `pos_margin`
/// (`d > pos_margin`) and negative pairs closer than `neg_margin`
/// (`d < neg_margin`), each unordered pair `i < j` once, in lexicographic
/// order. Pairs exactly on a margin have zero loss and are not returned.
///
/// ```
/// use metric_loss_core::miners::{DistanceMatrix, HardPairs, IndexPair, PairMiner};
///
/// // Class 0 at 0 and 1, class 1 at 1.5.
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
/// let pairs = HardPairs.try_mine_pairs(&dist, &[0, 0, 1], 0.5, 1.0).unwrap();
/// assert_eq!(
///     pairs,
///     vec![IndexPair { a: 0, b: 1, similar: true }, IndexPair { a: 1, b: 2, similar: false }]
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardPairs;

fn mine_pairs_with(
    dist: &DistanceMatrix,
    labels: &[usize],
    pos_margin: f32,
    neg_margin: f32,
    keep: impl Fn(bool, f32) -> bool,
) -> Result<Vec<IndexPair>, MetricLossError> {
    if !check_batch(dist, labels, &[pos_margin, neg_margin])? {
        return Ok(Vec::new());
    }
    let (n, cols) = (dist.n(), dist.column_labels(labels));
    // A batch's own matrix: each unordered pair once (a < b); against a
    // reference set: every (row, column).
    let first = |a: usize| if dist.is_reference() { 0 } else { a + 1 };
    let mut out = Vec::new();
    for (a, &la) in labels.iter().enumerate().take(n) {
        let row = dist.row(a);
        for b in first(a)..cols.len() {
            let similar = la == cols[b];
            if keep(similar, row[b]) {
                out.push(IndexPair { a, b, similar });
            }
        }
    }
    Ok(out)
}

impl PairMiner for AllPairs {
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        mine_pairs_with(dist, labels, pos_margin, neg_margin, |_, _| true)
    }

    fn name(&self) -> &'static str {
        "all-pairs"
    }

    /// [`Tuples::All`], without a list, even for a batch of a single class:
    /// for the ranking family, `AllPairs` is pytorch-metric-learning's
    /// no-miner default (`indices_tuple = None`), and what such a batch gives
    /// is each loss's own rule (see its docs).
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Tuples, MetricLossError> {
        check_batch(dist, labels, &[pos_margin, neg_margin])?;
        if dist.is_reference() {
            // PML's get_all_pairs_indices(labels, ref_labels): every
            // (row, column) pair, listed.
            let pairs = mine_pairs_with(dist, labels, pos_margin, neg_margin, |_, _| true)?;
            return Ok(Tuples::from_directed(&pairs));
        }
        Ok(Tuples::All)
    }

    fn is_all_pairs(&self) -> bool {
        true
    }
}

impl PairMiner for HardPairs {
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        mine_pairs_with(dist, labels, pos_margin, neg_margin, |similar, d| {
            if similar {
                d > pos_margin
            } else {
                d < neg_margin
            }
        })
    }

    fn name(&self) -> &'static str {
        "hard-pairs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::miners::test_util::random_batches;

    fn reference(
        dist: &DistanceMatrix,
        labels: &[usize],
        hard: Option<(f32, f32)>,
    ) -> Vec<IndexPair> {
        let n = labels.len();
        let mut out = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if b <= a {
                    continue;
                }
                let similar = labels[a] == labels[b];
                let d = dist.get(b, a);
                let loss = match hard {
                    None => 1.0,
                    Some((pm, _)) if similar => (d - pm).max(0.0),
                    Some((_, nm)) => (nm - d).max(0.0),
                };
                if loss > 0.0 {
                    out.push(IndexPair { a, b, similar });
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_on_random_batches() {
        for (i, (dist, labels)) in random_batches(44, 300).into_iter().enumerate() {
            let single = labels.iter().all(|&l| l == labels[0]);
            let (pm, nm) = [(0.0, 1.0), (0.5, 2.0), (1.0, 1.0)][i % 3];
            let expect = |h| {
                if single {
                    vec![]
                } else {
                    reference(&dist, &labels, h)
                }
            };
            assert_eq!(
                AllPairs.try_mine_pairs(&dist, &labels, pm, nm).unwrap(),
                expect(None)
            );
            assert_eq!(
                HardPairs.try_mine_pairs(&dist, &labels, pm, nm).unwrap(),
                expect(Some((pm, nm)))
            );
        }
    }

    #[test]
    fn hand_made_1d() {
        // Class 0 at r0 = 0, r1 = 1; class 1 at r2 = 1.5, r3 = 4.
        // pos_margin 0.5, neg_margin 1.0.
        // (0,1) similar, d 1 > 0.5 -> hard.     (0,2) neg, d 1.5 >= 1 -> easy.
        // (0,3) neg, d 4 -> easy.               (1,2) neg, d 0.5 < 1 -> hard.
        // (1,3) neg, d 3 -> easy.               (2,3) similar, d 2.5 > 0.5 -> hard.
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 4.0], 1, false).unwrap();
        let labels = [0, 0, 1, 1];
        let p = |a, b, similar| IndexPair { a, b, similar };
        assert_eq!(
            HardPairs.try_mine_pairs(&dist, &labels, 0.5, 1.0).unwrap(),
            vec![p(0, 1, true), p(1, 2, false), p(2, 3, true)]
        );
        assert_eq!(
            AllPairs.try_mine_pairs(&dist, &labels, 0.5, 1.0).unwrap(),
            vec![
                p(0, 1, true),
                p(0, 2, false),
                p(0, 3, false),
                p(1, 2, false),
                p(1, 3, false),
                p(2, 3, true)
            ]
        );
        // Exactly on the margins: (0,1) at d 1 with pos_margin 1 is not hard,
        // (0,2) at d 1.5 with neg_margin 1.5 is not hard.
        assert_eq!(
            HardPairs.try_mine_pairs(&dist, &labels, 1.0, 1.5).unwrap(),
            vec![p(1, 2, false), p(2, 3, true)]
        );
    }

    #[test]
    fn edge_cases() {
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 2.0], 1, false).unwrap();
        let miners: [&dyn PairMiner; 2] = [&AllPairs, &HardPairs];
        for m in miners {
            assert!(
                m.try_mine_pairs(&dist, &[2, 2, 2], 0.0, 5.0)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                m.try_mine_pairs(&dist, &[0], 0.0, 1.0),
                Err(MetricLossError::LabelCount {
                    labels: 1,
                    batch: 3
                })
            );
            assert!(matches!(
                m.try_mine_pairs(&dist, &[0, 1, 0], 0.0, f32::NAN),
                Err(MetricLossError::InvalidMargin { .. })
            ));
            assert!(matches!(
                m.try_mine_pairs(&dist, &[0, 1, 0], -0.5, 1.0),
                Err(MetricLossError::InvalidMargin { .. })
            ));
            let empty = DistanceMatrix::new(0, vec![]).unwrap();
            assert!(matches!(
                m.try_mine_pairs(&empty, &[], 0.0, 1.0),
                Err(MetricLossError::EmptyBatch { .. })
            ));
        }
    }
}
