//! Miners: which pairs and triplets of a batch are worth a gradient.
//!
//! # Why mine at all
//!
//! A batch of `N` embeddings holds `O(N^3)` triplets `(anchor, positive,
//! negative)`, but once training has started most of them are already
//! satisfied: `d(a, p) + margin < d(a, n)`, so their hinge loss is exactly
//! zero and so is their gradient. Averaging over all of them dilutes the few
//! informative ones, and the loss looks small while the model has stopped
//! learning. A *miner* looks at the (detached) distance matrix of the batch
//! and returns only the index tuples worth a gradient; the loss is then
//! computed on the tape for those tuples only.
//!
//! This module is the index logic only: it reads a [`DistanceMatrix`] (plain
//! `f32`, no autodiff) and returns [`Triplet`]s or [`IndexPair`]s.
//!
//! | miner | paper | picks |
//! |---|---|---|
//! | [`BatchHard`] | Hermans et al. 2017, eq. 5 | per anchor, the farthest positive and the closest negative |
//! | [`BatchAll`] | Hermans et al. 2017, eq. 6 | every valid triplet (optionally only those with nonzero loss) |
//! | [`SemiHard`] | Schroff et al. 2015 (FaceNet), eq. 4 | per (anchor, positive), the closest negative farther than the positive |
//! | [`AllPairs`] | — | every pair `i < j` |
//! | [`HardPairs`] | pytorch-metric-learning's `PairMarginMiner` | pairs with a nonzero contrastive loss |
//!
//! # Conventions shared by every miner
//!
//! * `labels.len()` must be the matrix size, else
//!   [`MetricLossError::LabelCount`]; an empty batch is
//!   [`MetricLossError::EmptyBatch`]; a margin that is negative, NaN or
//!   infinite is [`MetricLossError::InvalidMargin`] (checked even by miners
//!   that do not use it, so a bad configuration fails on the first batch).
//! * A batch whose labels are all the same class is **not** an error: the
//!   miner returns an empty list, and a loss over an empty list is a zero loss
//!   with a zero gradient (the step is a no-op). The same holds whenever
//!   nothing can be mined. A P x K sampler (see [`crate::sampler`]) never
//!   produces such batches.
//! * An anchor is never its own positive.
//! * Ties between equal distances are broken by the lowest index, so results
//!   are deterministic.
//! * Miners never panic on bad input; the `mine`/`mine_pairs` convenience
//!   methods unwrap the `try_` versions and panic with the error's message,
//!   as dfdx does.
//!
//! ```
//! use metric_loss_core::miners::{BatchHard, DistanceMatrix, Triplet, TripletMiner};
//!
//! // Four 1-D points: class 0 at 0.0 and 1.0, class 1 at 1.5 and 3.0.
//! let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 3.0], 1, false).unwrap();
//! let triplets = BatchHard.try_mine(&dist, &[0, 0, 1, 1], 0.2).unwrap();
//! assert_eq!(triplets[0], Triplet { anchor: 0, positive: 1, negative: 2 });
//! assert_eq!(triplets.len(), 4);
//! ```

use crate::error::{MetricLossError, unwrap_or_panic};

mod batch_all;
mod batch_hard;
mod pairs;
mod semi_hard;
mod stats;

pub use batch_all::BatchAll;
pub use batch_hard::BatchHard;
pub use pairs::{AllPairs, HardPairs};
pub use semi_hard::{SemiHard, SemiHardFallback};
pub use stats::MinerStats;

/// A detached, row-major `N x N` matrix of distances between the rows of one
/// batch, in the loss's own units (squared distances if the loss uses squared
/// distances, so that margins compare like with like).
///
/// It is meant to be symmetric with a zero diagonal; this is **not** enforced
/// (checking it would cost as much as mining). Miners read only row `a` when
/// they look at anchor `a`, so an asymmetric matrix is mined as "distance from
/// the anchor". Every entry must be finite. Small negative entries, as
/// produced by the `|a|^2 + |b|^2 - 2 a.b` expansion of squared distances,
/// are accepted and compared as they are.
///
/// ```
/// use metric_loss_core::miners::DistanceMatrix;
///
/// let d = DistanceMatrix::new(2, vec![0.0, 3.0, 3.0, 0.0]).unwrap();
/// assert_eq!(d.n(), 2);
/// assert_eq!(d.get(0, 1), 3.0);
/// assert_eq!(d.row(1), &[3.0, 0.0]);
/// assert!(DistanceMatrix::new(2, vec![0.0; 3]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceMatrix {
    n: usize,
    data: Vec<f32>,
}

impl DistanceMatrix {
    /// Wraps `n * n` row-major distances.
    ///
    /// Errors: [`MetricLossError::InvalidConfig`] if `data.len() != n * n`,
    /// [`MetricLossError::NonFinite`] (with `what = "distances"`) for the
    /// first NaN or infinite entry. `n == 0` with empty data is accepted (the
    /// miners then report [`MetricLossError::EmptyBatch`]).
    pub fn new(n: usize, data: Vec<f32>) -> Result<Self, MetricLossError> {
        let expected = n.checked_mul(n).ok_or_else(|| {
            MetricLossError::InvalidConfig(format!("distance matrix size {n} x {n} overflows"))
        })?;
        if data.len() != expected {
            return Err(MetricLossError::InvalidConfig(format!(
                "distance matrix of size {n} x {n} needs {expected} entries, got {}",
                data.len()
            )));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(MetricLossError::NonFinite {
                what: "distances",
                row: pos / n,
                column: pos % n,
                value: data[pos],
            });
        }
        Ok(Self { n, data })
    }

    /// Brute-force Euclidean distance matrix of row-major `embeddings` with
    /// `dim` columns (`squared = true` gives squared distances). `O(N^2 D)`:
    /// meant for tests, references and small batches. The result is exactly
    /// symmetric with an exactly zero diagonal.
    ///
    /// Errors: [`MetricLossError::InvalidConfig`] if `dim == 0` or
    /// `embeddings.len()` is not a multiple of `dim`;
    /// [`MetricLossError::NonFinite`] (with `what = "embeddings"`) for a NaN
    /// or infinite coordinate. Empty embeddings give an empty matrix.
    ///
    /// ```
    /// use metric_loss_core::miners::DistanceMatrix;
    ///
    /// // (0, 0) and (3, 4)
    /// let d = DistanceMatrix::euclidean(&[0.0, 0.0, 3.0, 4.0], 2, false).unwrap();
    /// assert_eq!(d.get(0, 1), 5.0);
    /// let d2 = DistanceMatrix::euclidean(&[0.0, 0.0, 3.0, 4.0], 2, true).unwrap();
    /// assert_eq!(d2.get(1, 0), 25.0);
    /// ```
    pub fn euclidean(
        embeddings: &[f32],
        dim: usize,
        squared: bool,
    ) -> Result<Self, MetricLossError> {
        if dim == 0 {
            return Err(MetricLossError::InvalidConfig(
                "embedding dimension must be at least 1".into(),
            ));
        }
        if embeddings.len() % dim != 0 {
            return Err(MetricLossError::InvalidConfig(format!(
                "{} embedding values are not a whole number of rows of dimension {dim}",
                embeddings.len()
            )));
        }
        if let Some(pos) = embeddings.iter().position(|v| !v.is_finite()) {
            return Err(MetricLossError::NonFinite {
                what: "embeddings",
                row: pos / dim,
                column: pos % dim,
                value: embeddings[pos],
            });
        }
        let n = embeddings.len() / dim;
        let mut data = vec![0.0f32; n * n];
        for i in 0..n {
            let xi = &embeddings[i * dim..(i + 1) * dim];
            for j in (i + 1)..n {
                let xj = &embeddings[j * dim..(j + 1) * dim];
                let sq: f32 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
                let d = if squared { sq } else { sq.sqrt() };
                data[i * n + j] = d;
                data[j * n + i] = d;
            }
        }
        // Squares of huge finite values can overflow to infinity.
        Self::new(n, data)
    }

    /// Number of rows (and columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Distance from row `i` to row `j`. Panics if either is `>= n`, like
    /// slice indexing; miners only call it with checked indices.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.n && j < self.n,
            "index ({i}, {j}) out of range for a {0} x {0} distance matrix",
            self.n
        );
        self.data[i * self.n + j]
    }

    /// Row `i`: the distances from row `i` to every row. Panics if `i >= n`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    /// The whole matrix, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// One mined triplet: indices of rows of the batch, with
/// `labels[anchor] == labels[positive]`, `anchor != positive` and
/// `labels[negative] != labels[anchor]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Triplet {
    /// Index of the anchor row.
    pub anchor: usize,
    /// Index of a row of the anchor's class, other than the anchor.
    pub positive: usize,
    /// Index of a row of another class.
    pub negative: usize,
}

/// One mined pair: indices of two rows (`a < b` for the miners of this
/// module) and whether they are of the same class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexPair {
    /// Index of the first row.
    pub a: usize,
    /// Index of the second row.
    pub b: usize,
    /// `true` if `labels[a] == labels[b]` (a positive pair).
    pub similar: bool,
}

/// A miner of triplets for triplet-margin losses.
///
/// ```
/// use metric_loss_core::miners::{BatchAll, DistanceMatrix, TripletMiner};
///
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 5.0], 1, false).unwrap();
/// let miner: &dyn TripletMiner = &BatchAll::default();
/// assert_eq!(miner.mine(&dist, &[0, 0, 1], 0.2).len(), 2);
/// assert_eq!(miner.name(), "batch-all");
/// ```
pub trait TripletMiner {
    /// Mines the batch whose distance matrix is `dist` and labels `labels`.
    /// `margin` is the loss's margin, in the matrix's units, for miners that
    /// use it (it is validated by all of them). See the [module
    /// docs](self) for the conventions and errors.
    fn try_mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margin: f32,
    ) -> Result<Vec<Triplet>, MetricLossError>;

    /// Like [`TripletMiner::try_mine`], panicking with the error's message.
    #[track_caller]
    fn mine(&self, dist: &DistanceMatrix, labels: &[usize], margin: f32) -> Vec<Triplet> {
        unwrap_or_panic(self.try_mine(dist, labels, margin))
    }

    /// A short name for logs (`"batch-hard"`, ...).
    fn name(&self) -> &'static str;

    /// Whether this miner is exactly [`BatchHard`], which devices with fused
    /// kernels (the CPU) compute in one pass with an `O(N·D)` backward.
    fn is_batch_hard(&self) -> bool {
        false
    }
}

/// A miner of pairs for contrastive losses, whose positive pairs are
/// penalised above `pos_margin` and negative pairs below `neg_margin`.
///
/// ```
/// use metric_loss_core::miners::{AllPairs, DistanceMatrix, PairMiner};
///
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 5.0], 1, false).unwrap();
/// assert_eq!(AllPairs.mine_pairs(&dist, &[0, 0, 1], 0.0, 1.0).len(), 3);
/// ```
pub trait PairMiner {
    /// Mines pairs of the batch. The margins are validated by every miner
    /// (finite, `>= 0`). See the [module docs](self) for the conventions.
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError>;

    /// Like [`PairMiner::try_mine_pairs`], panicking with the error's message.
    #[track_caller]
    fn mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Vec<IndexPair> {
        unwrap_or_panic(self.try_mine_pairs(dist, labels, pos_margin, neg_margin))
    }

    /// A short name for logs (`"all-pairs"`, ...).
    fn name(&self) -> &'static str;
}

/// Checks a margin: finite and `>= 0`.
pub(crate) fn check_margin(margin: f32) -> Result<(), MetricLossError> {
    if margin.is_finite() && margin >= 0.0 {
        Ok(())
    } else {
        Err(MetricLossError::InvalidMargin { value: margin })
    }
}

/// The checks every miner starts with. Returns `Ok(false)` when the batch is
/// valid but has a single class (nothing to mine), `Ok(true)` otherwise.
pub(crate) fn check_batch(
    dist: &DistanceMatrix,
    labels: &[usize],
    margins: &[f32],
) -> Result<bool, MetricLossError> {
    if labels.len() != dist.n() {
        return Err(MetricLossError::LabelCount {
            labels: labels.len(),
            batch: dist.n(),
        });
    }
    if dist.n() == 0 {
        return Err(MetricLossError::EmptyBatch { what: "distances" });
    }
    for &m in margins {
        check_margin(m)?;
    }
    Ok(labels.iter().any(|&l| l != labels[0]))
}

/// Shared helpers for the miners' tests: random batches with fixed seeds.
#[cfg(test)]
pub(crate) mod test_util {
    use super::DistanceMatrix;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random batches: n in 1..=40, 2..=6 classes, dims 1..=4; every other
    /// batch uses small integer coordinates so that distance ties are common.
    pub fn random_batches(seed: u64, count: usize) -> Vec<(DistanceMatrix, Vec<usize>)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|t| {
                let n = rng.gen_range(1..=40);
                let classes = rng.gen_range(2..=6);
                let dim = rng.gen_range(1..=4);
                let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..classes)).collect();
                let emb: Vec<f32> = (0..n * dim)
                    .map(|_| {
                        if t % 2 == 0 {
                            rng.gen_range(-2.0f32..2.0)
                        } else {
                            rng.gen_range(-2i32..=2) as f32
                        }
                    })
                    .collect();
                let squared = t % 3 == 0;
                (
                    DistanceMatrix::euclidean(&emb, dim, squared).unwrap(),
                    labels,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_size_and_finiteness() {
        assert!(matches!(
            DistanceMatrix::new(2, vec![0.0; 3]),
            Err(MetricLossError::InvalidConfig(_))
        ));
        // NaN != NaN, so match on the shape and check the value separately.
        match DistanceMatrix::new(2, vec![0.0, 1.0, f32::NAN, 0.0]) {
            Err(MetricLossError::NonFinite {
                what: "distances",
                row: 1,
                column: 0,
                value,
            }) => assert!(value.is_nan()),
            other => panic!("expected NonFinite, got {other:?}"),
        }
        assert!(matches!(
            DistanceMatrix::new(2, vec![0.0, 1.0, f32::INFINITY, 0.0]),
            Err(MetricLossError::NonFinite {
                row: 1,
                column: 0,
                ..
            })
        ));
        let empty = DistanceMatrix::new(0, vec![]).unwrap();
        assert_eq!(empty.n(), 0);
    }

    #[test]
    fn euclidean_matches_hand_values() {
        // Rows (0,0), (3,4), (6,8): distances 5, 10, 5.
        let e = [0.0, 0.0, 3.0, 4.0, 6.0, 8.0];
        let d = DistanceMatrix::euclidean(&e, 2, false).unwrap();
        assert_eq!(
            d.as_slice(),
            &[0.0, 5.0, 10.0, 5.0, 0.0, 5.0, 10.0, 5.0, 0.0]
        );
        let d2 = DistanceMatrix::euclidean(&e, 2, true).unwrap();
        assert_eq!(d2.row(0), &[0.0, 25.0, 100.0]);
        assert!(DistanceMatrix::euclidean(&e, 0, false).is_err());
        assert!(DistanceMatrix::euclidean(&e, 4, false).is_err());
        assert!(matches!(
            DistanceMatrix::euclidean(&[0.0, f32::NAN], 1, false),
            Err(MetricLossError::NonFinite {
                what: "embeddings",
                row: 1,
                ..
            })
        ));
        assert_eq!(DistanceMatrix::euclidean(&[], 3, false).unwrap().n(), 0);
    }

    #[test]
    fn check_batch_errors() {
        let d = DistanceMatrix::euclidean(&[0.0, 1.0], 1, false).unwrap();
        assert_eq!(
            check_batch(&d, &[0], &[0.1]),
            Err(MetricLossError::LabelCount {
                labels: 1,
                batch: 2
            })
        );
        let e = DistanceMatrix::new(0, vec![]).unwrap();
        assert_eq!(
            check_batch(&e, &[], &[0.1]),
            Err(MetricLossError::EmptyBatch { what: "distances" })
        );
        for bad in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                check_batch(&d, &[0, 1], &[0.1, bad]),
                Err(MetricLossError::InvalidMargin { .. })
            ));
        }
        assert_eq!(check_batch(&d, &[3, 3], &[0.0]), Ok(false));
        assert_eq!(check_batch(&d, &[3, 4], &[0.0]), Ok(true));
    }
}
