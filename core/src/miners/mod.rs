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
//! | [`MultiSimilarityMiner`] | Wang et al. 2019 (PML's) | per anchor, the positives less similar than its most similar negative (+ε), and the negatives more similar than its least similar positive (−ε) |
//! | [`DistanceWeightedMiner`] | Wu et al. 2017 (PML's) | per anchor, random triplets, negatives drawn by the inverse density of distances on the sphere |
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
mod distance_weighted;
mod multi_similarity;
mod pairs;
mod row_stats;
mod semi_hard;
mod stats;

pub use batch_all::BatchAll;
pub use batch_hard::BatchHard;
pub use distance_weighted::DistanceWeightedMiner;
pub use multi_similarity::MultiSimilarityMiner;
pub(crate) use multi_similarity::keep_row as multi_similarity_keep_row;
pub(crate) use multi_similarity::{keeps_negative, keeps_positive};
pub use pairs::{AllPairs, HardPairs};
pub(crate) use row_stats::{RowStats, label_ids};
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
///
/// # Against a reference set
///
/// [`DistanceMatrix::against`] builds the rectangular `N x M` matrix between
/// a batch (rows) and a *reference set* with its own labels (columns):
/// what [`CrossBatchMemory`](crate::xbm::CrossBatchMemory) mines, the batch
/// against the memory of past batches (pytorch-metric-learning's `ref_emb`,
/// `ref_labels`). There no column is the anchor itself: miners consider every
/// column, as PML's do when given `ref_emb`. [`BatchHard`], [`BatchAll`],
/// [`AllPairs`], [`HardPairs`] and [`MultiSimilarityMiner`] mine such
/// matrices; [`SemiHard`] and [`DistanceWeightedMiner`] return
/// [`MetricLossError::InvalidConfig`].
///
/// ```
/// use metric_loss_core::miners::{BatchHard, DistanceMatrix, TripletMiner};
/// // two batch rows against three reference rows of classes 0, 0, 1
/// let d = DistanceMatrix::against(2, 3, vec![0.0, 1.0, 2.0, 3.0, 0.5, 0.2], vec![0, 0, 1]).unwrap();
/// assert_eq!((d.n(), d.cols()), (2, 3));
/// assert_eq!(d.column_labels(&[0, 1]), &[0, 0, 1]);
/// let t = BatchHard.try_mine(&d, &[0, 1], 0.1).unwrap();
/// // row 0 (class 0): farthest positive column 1, closest negative column 2;
/// // row 1 (class 1): its only positive is column 2, its closest negative column 1
/// assert_eq!((t[0].positive, t[0].negative, t[1].positive, t[1].negative), (1, 2, 2, 1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceMatrix {
    n: usize,
    cols: usize,
    data: Vec<f32>,
    units: Units,
    reference: Option<Vec<usize>>,
}

/// What the entries of a [`DistanceMatrix`] measure, for the miners that
/// need more than their order.
///
/// Most miners compare distances only with each other and with the loss's
/// margin, in whatever units the loss uses ([`Units::Distance`]). Some are
/// defined on one geometry: pytorch-metric-learning's
/// [`DistanceWeightedMiner`] weighs negatives by the density of distances
/// between points on the unit sphere of dimension `dim`, and its
/// [`MultiSimilarityMiner`] compares cosine similarities. The mined path of
/// every loss tags the matrix it hands its miner (a loss declared with
/// `normalize` and the Euclidean distance gives [`Units::UnitEuclidean`], a
/// cosine loss [`Units::Cosine`]), so that such miners can convert or refuse.
///
/// ```
/// use metric_loss_core::miners::{DistanceMatrix, Units};
/// let d = DistanceMatrix::new(2, vec![0.0, 2.0_f32.sqrt(), 2.0_f32.sqrt(), 0.0]).unwrap()
///     .with_units(Units::UnitEuclidean { dim: 3, squared: false });
/// // orthogonal unit vectors: cosine similarity 0
/// assert!(d.cosine_similarity(0, 1).unwrap().abs() < 1e-6);
/// assert_eq!(DistanceMatrix::new(1, vec![0.0]).unwrap().units(), Units::Distance);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Units {
    /// The loss's own distance, smaller is closer; nothing more is known.
    Distance,
    /// Euclidean distances (or their squares) between unit-length rows of
    /// width `dim`.
    UnitEuclidean {
        /// The embedding width.
        dim: usize,
        /// Whether the entries are squared distances.
        squared: bool,
    },
    /// Cosine distances `1 − cos θ` between rows of width `dim`.
    Cosine {
        /// The embedding width.
        dim: usize,
    },
}

impl DistanceMatrix {
    /// Wraps `n * n` row-major distances.
    ///
    /// Errors: [`MetricLossError::InvalidConfig`] if `data.len() != n * n`,
    /// [`MetricLossError::NonFinite`] (with `what = "distances"`) for the
    /// first NaN or infinite entry. `n == 0` with empty data is accepted (the
    /// miners then report [`MetricLossError::EmptyBatch`]).
    pub fn new(n: usize, data: Vec<f32>) -> Result<Self, MetricLossError> {
        Self::build(n, n, data, None)
    }

    /// Wraps the `rows * cols` row-major distances between a batch (rows)
    /// and a reference set (columns) whose labels are `reference_labels`:
    /// see [against a reference set](Self#against-a-reference-set).
    ///
    /// Errors: [`MetricLossError::InvalidConfig`] if `data.len() != rows *
    /// cols` or `reference_labels.len() != cols`;
    /// [`MetricLossError::NonFinite`] as [`new`](Self::new).
    pub fn against(
        rows: usize,
        cols: usize,
        data: Vec<f32>,
        reference_labels: Vec<usize>,
    ) -> Result<Self, MetricLossError> {
        if reference_labels.len() != cols {
            return Err(MetricLossError::InvalidConfig(format!(
                "a reference set of {cols} columns needs {cols} labels, got {}",
                reference_labels.len()
            )));
        }
        Self::build(rows, cols, data, Some(reference_labels))
    }

    fn build(
        n: usize,
        cols: usize,
        data: Vec<f32>,
        reference: Option<Vec<usize>>,
    ) -> Result<Self, MetricLossError> {
        let expected = n.checked_mul(cols).ok_or_else(|| {
            MetricLossError::InvalidConfig(format!("distance matrix size {n} x {cols} overflows"))
        })?;
        if data.len() != expected {
            return Err(MetricLossError::InvalidConfig(format!(
                "distance matrix of size {n} x {cols} needs {expected} entries, got {}",
                data.len()
            )));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(MetricLossError::NonFinite {
                what: "distances",
                row: pos / cols,
                column: pos % cols,
                value: data[pos],
            });
        }
        Ok(Self {
            n,
            cols,
            data,
            units: Units::Distance,
            reference,
        })
    }

    /// Number of columns: `n()` for a batch's own matrix, the size of the
    /// reference set for one built [`against`](Self::against) it.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The labels of the columns: the reference set's for a matrix built
    /// [`against`](Self::against) one, else the batch's own `labels`.
    pub fn column_labels<'a>(&'a self, labels: &'a [usize]) -> &'a [usize] {
        self.reference.as_deref().unwrap_or(labels)
    }

    /// Whether the columns are a reference set ([`against`](Self::against)).
    pub fn is_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Whether column `j` is row `a` itself: on the diagonal of a batch's own
    /// matrix; never against a reference set.
    pub fn is_self(&self, a: usize, j: usize) -> bool {
        self.reference.is_none() && a == j
    }

    /// The same matrix, tagged with what its entries measure.
    pub fn with_units(mut self, units: Units) -> Self {
        self.units = units;
        self
    }

    /// What the entries measure ([`Units::Distance`] unless tagged).
    pub fn units(&self) -> Units {
        self.units
    }

    /// The embedding width, when the units know it.
    pub fn dim(&self) -> Option<usize> {
        match self.units {
            Units::Distance => None,
            Units::UnitEuclidean { dim, .. } | Units::Cosine { dim } => Some(dim),
        }
    }

    /// The cosine similarity of rows `i` and `j`, where the units make it
    /// known (unit-length Euclidean: `1 − d²/2`; cosine: `1 − d`); `None`
    /// for [`Units::Distance`]. Panics like [`get`](Self::get).
    pub fn cosine_similarity(&self, i: usize, j: usize) -> Option<f32> {
        let d = self.get(i, j);
        match self.units {
            Units::Distance => None,
            Units::UnitEuclidean { squared: true, .. } => Some(1.0 - 0.5 * d),
            Units::UnitEuclidean { squared: false, .. } => Some(1.0 - 0.5 * d * d),
            Units::Cosine { .. } => Some(1.0 - d),
        }
    }

    /// The Euclidean distance of rows `i` and `j` as unit vectors, where the
    /// units make it known (cosine: `√(2d)`); `None` for
    /// [`Units::Distance`]. Panics like [`get`](Self::get).
    pub fn unit_euclidean(&self, i: usize, j: usize) -> Option<f32> {
        let d = self.get(i, j);
        match self.units {
            Units::Distance => None,
            Units::UnitEuclidean { squared: true, .. } => Some(d.max(0.0).sqrt()),
            Units::UnitEuclidean { squared: false, .. } => Some(d),
            Units::Cosine { .. } => Some((2.0 * d).max(0.0).sqrt()),
        }
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
        if !embeddings.len().is_multiple_of(dim) {
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

    /// Number of rows (the batch; also the columns of a batch's own matrix).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Distance from row `i` to column `j`. Panics if `i >= n` or `j >=
    /// cols`, like slice indexing; miners only call it with checked indices.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.n && j < self.cols,
            "index ({i}, {j}) out of range for a {} x {} distance matrix",
            self.n,
            self.cols
        );
        self.data[i * self.cols + j]
    }

    /// Row `i`: the distances from row `i` to every column. Panics if `i >= n`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
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

/// One mined pair: indices of two rows and whether they are of the same
/// class. [`AllPairs`] and [`HardPairs`] give each unordered pair once, with
/// `a < b`; the directed miners ([`MultiSimilarityMiner`],
/// [`DistanceWeightedMiner`]) give `a` as the anchor.
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

    /// The pairs as the ranking-loss family reads them (pytorch-metric-learning's
    /// `indices_tuple`): every pair, directed pairs `(anchor, other)`, or
    /// triplets.
    ///
    /// The default reads [`try_mine_pairs`](Self::try_mine_pairs) as
    /// *unordered* pairs and gives each in both directions (against a
    /// reference set: as given, row then column), sorted by anchor
    /// then other row: what PML's pair miners return for a symmetric rule
    /// (its `PairMarginMiner`, which [`HardPairs`] is). [`AllPairs`] gives
    /// [`Tuples::All`] (PML's `indices_tuple = None`), and miners with their
    /// own directed or triplet output override it.
    ///
    /// ```
    /// use metric_loss_core::miners::{DistanceMatrix, HardPairs, PairMiner, Tuples};
    /// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
    /// let t = HardPairs.try_mine_tuples(&dist, &[0, 0, 1], 0.5, 1.0).unwrap();
    /// assert_eq!(
    ///     t,
    ///     Tuples::Pairs { positive: vec![(0, 1), (1, 0)], negative: vec![(1, 2), (2, 1)] }
    /// );
    /// ```
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Tuples, MetricLossError> {
        let pairs = self.try_mine_pairs(dist, labels, pos_margin, neg_margin)?;
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        for p in pairs {
            let side = if p.similar {
                &mut positive
            } else {
                &mut negative
            };
            side.push((p.a, p.b));
            // Against a reference set a pair is (batch row, reference column).
            if !dist.is_reference() {
                side.push((p.b, p.a));
            }
        }
        positive.sort_unstable();
        negative.sort_unstable();
        Ok(Tuples::Pairs { positive, negative })
    }

    /// Whether this miner is exactly [`AllPairs`]: every pair of the batch,
    /// which a fused kernel can read from the labels without any list.
    fn is_all_pairs(&self) -> bool {
        false
    }

    /// `Some(ε)` when this miner is exactly
    /// [`MultiSimilarityMiner`] (with a valid `ε`), whose rule is per
    /// anchor row: devices with a fused kernel (the CPU) apply it inside
    /// their pass over the rows, without listing the pairs.
    ///
    /// ```
    /// use metric_loss_core::miners::{AllPairs, MultiSimilarityMiner, PairMiner};
    /// assert_eq!(MultiSimilarityMiner::new(0.2).multi_similarity_epsilon(), Some(0.2));
    /// assert_eq!(MultiSimilarityMiner::new(-1.0).multi_similarity_epsilon(), None);
    /// assert_eq!(AllPairs.multi_similarity_epsilon(), None);
    /// ```
    fn multi_similarity_epsilon(&self) -> Option<f32> {
        None
    }
}

/// What a miner hands a loss of the ranking family (multi-similarity,
/// NT-Xent, ...): pytorch-metric-learning's `indices_tuple`.
///
/// Indices are rows of the batch. Pairs are *directed*, `(anchor, other)`,
/// and may repeat: a repeated pair counts as many times as it appears in the
/// losses that PML computes per pair (NT-Xent, lifted structure), and once in
/// those it computes from pair masks (multi-similarity, SupCon, circle,
/// generalized lifted structure), as PML does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuples {
    /// Every pair of the batch: each row with every other row of its class
    /// (positive) and of another class (negative). PML's `indices_tuple =
    /// None`, what [`AllPairs`] gives; no list is built.
    All,
    /// Positive pairs `(anchor, positive)` and negative pairs `(anchor, negative)`
    /// (PML's 4-tuple `(a1, p, a2, n)`).
    Pairs {
        /// `(anchor, positive)` pairs, in the miner's order.
        positive: Vec<(usize, usize)>,
        /// `(anchor, negative)` pairs, in the miner's order.
        negative: Vec<(usize, usize)>,
    },
    /// Triplets (PML's 3-tuple), e.g. from [`DistanceWeightedMiner`]. As pairs
    /// they are `(a, p)` and `(a, n)` per triplet (PML's `convert_to_pairs`).
    Triplets(Vec<Triplet>),
}

impl Tuples {
    /// The directed pairs `(a, b)` of `pairs`, positive then negative, in
    /// order: [`Tuples::Pairs`].
    ///
    /// ```
    /// use metric_loss_core::miners::{IndexPair, Tuples};
    /// let p = [IndexPair { a: 0, b: 2, similar: false }, IndexPair { a: 1, b: 0, similar: true }];
    /// assert_eq!(Tuples::from_directed(&p), Tuples::Pairs { positive: vec![(1, 0)], negative: vec![(0, 2)] });
    /// ```
    pub fn from_directed(pairs: &[IndexPair]) -> Self {
        let side = |similar: bool| {
            pairs
                .iter()
                .filter(|p| p.similar == similar)
                .map(|p| (p.a, p.b))
                .collect()
        };
        Tuples::Pairs {
            positive: side(true),
            negative: side(false),
        }
    }

    /// The directed pairs of a batch with these labels, positive then
    /// negative, in order (PML's `convert_to_pairs`; for [`Tuples::All`],
    /// every pair by anchor then other row, as PML's `get_all_pairs_indices`).
    /// Builds the lists: `O(N²)` for [`Tuples::All`].
    ///
    /// ```
    /// use metric_loss_core::miners::{Triplet, Tuples};
    /// let t = Tuples::Triplets(vec![Triplet { anchor: 0, positive: 1, negative: 2 }]);
    /// assert_eq!(t.to_pairs(&[0, 0, 1]), (vec![(0, 1)], vec![(0, 2)]));
    /// let (pos, neg) = Tuples::All.to_pairs(&[0, 0, 1]);
    /// assert_eq!(pos, vec![(0, 1), (1, 0)]);
    /// assert_eq!(neg, vec![(0, 2), (1, 2), (2, 0), (2, 1)]);
    /// ```
    pub fn to_pairs(&self, labels: &[usize]) -> (Vec<(usize, usize)>, Vec<(usize, usize)>) {
        match self {
            Tuples::All => {
                let mut pos = Vec::new();
                let mut neg = Vec::new();
                for (i, &li) in labels.iter().enumerate() {
                    for (j, &lj) in labels.iter().enumerate() {
                        if li != lj {
                            neg.push((i, j));
                        } else if i != j {
                            pos.push((i, j));
                        }
                    }
                }
                (pos, neg)
            }
            Tuples::Pairs { positive, negative } => (positive.clone(), negative.clone()),
            Tuples::Triplets(t) => (
                t.iter().map(|t| (t.anchor, t.positive)).collect(),
                t.iter().map(|t| (t.anchor, t.negative)).collect(),
            ),
        }
    }

    /// The directed pairs of [`to_pairs`](Self::to_pairs) as [`IndexPair`]s,
    /// positive then negative (`a` is the anchor): what a directed miner's
    /// [`PairMiner::try_mine_pairs`] gives a contrastive loss.
    ///
    /// ```
    /// use metric_loss_core::miners::{IndexPair, Tuples};
    /// let t = Tuples::Pairs { positive: vec![(1, 0)], negative: vec![(1, 2)] };
    /// assert_eq!(
    ///     t.to_index_pairs(&[0, 0, 1]),
    ///     [IndexPair { a: 1, b: 0, similar: true }, IndexPair { a: 1, b: 2, similar: false }]
    /// );
    /// ```
    pub fn to_index_pairs(&self, labels: &[usize]) -> Vec<IndexPair> {
        let (pos, neg) = self.to_pairs(labels);
        let pair = |similar| move |(a, b)| IndexPair { a, b, similar };
        pos.into_iter()
            .map(pair(true))
            .chain(neg.into_iter().map(pair(false)))
            .collect()
    }

    /// Checks every index against the batch size `n`.
    pub fn check(&self, n: usize) -> Result<(), MetricLossError> {
        self.check_against(n, n)
    }

    /// Checks every anchor against `rows` and every other index against
    /// `cols` (a batch against a reference set: [`DistanceMatrix::against`]).
    pub fn check_against(&self, rows: usize, cols: usize) -> Result<(), MetricLossError> {
        let bad = |i: usize, n: usize| {
            (i >= n).then_some(MetricLossError::IndexOutOfRange { index: i, batch: n })
        };
        let found = match self {
            Tuples::All => None,
            Tuples::Pairs { positive, negative } => positive
                .iter()
                .chain(negative)
                .find_map(|&(a, b)| bad(a, rows).or_else(|| bad(b, cols))),
            Tuples::Triplets(t) => t.iter().find_map(|t| {
                bad(t.anchor, rows)
                    .or_else(|| bad(t.positive, cols))
                    .or_else(|| bad(t.negative, cols))
            }),
        };
        found.map_or(Ok(()), Err)
    }
}

/// The margins a loss hands its miner, in the units of the matrix mined:
/// the triplet margin (or the negative margin of a pair loss) and the
/// positive margin of a pair loss (0 for triplet losses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiningMargins {
    /// Positive pairs closer than this cost nothing (pair losses).
    pub pos_margin: f32,
    /// The triplet margin, or how far apart negative pairs must be.
    pub margin: f32,
}

/// A miner whose output a loss of one family reads: triplet miners give
/// `Vec<Triplet>` (triplet losses), pair miners give `Vec<IndexPair>`
/// (contrastive losses) and [`Tuples`] (the ranking family). Implemented for
/// every [`TripletMiner`] and [`PairMiner`]; the mined path of every loss
/// calls it, so that it is written once.
pub trait Miner<T> {
    /// Mines one batch for the loss.
    fn try_mine_for(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margins: MiningMargins,
    ) -> Result<T, MetricLossError>;

    /// Which miner, where a fused kernel can do its work in the same pass.
    fn fusable(&self) -> Fusable {
        Fusable::No
    }
}

/// Miners a device's fused kernels know: see [`Miner::fusable`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Fusable {
    /// Any other miner.
    No,
    /// [`BatchHard`].
    BatchHard,
    /// [`AllPairs`].
    AllPairs,
    /// [`MultiSimilarityMiner`] with this `ε`.
    MultiSimilarity {
        /// The miner's `ε`.
        epsilon: f32,
    },
}

impl<M: TripletMiner + ?Sized> Miner<Vec<Triplet>> for M {
    fn try_mine_for(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margins: MiningMargins,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        self.try_mine(dist, labels, margins.margin)
    }
    fn fusable(&self) -> Fusable {
        if self.is_batch_hard() {
            Fusable::BatchHard
        } else {
            Fusable::No
        }
    }
}

impl<M: PairMiner + ?Sized> Miner<Vec<IndexPair>> for M {
    fn try_mine_for(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margins: MiningMargins,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        self.try_mine_pairs(dist, labels, margins.pos_margin, margins.margin)
    }
    fn fusable(&self) -> Fusable {
        if self.is_all_pairs() {
            Fusable::AllPairs
        } else {
            Fusable::No
        }
    }
}

impl<M: PairMiner + ?Sized> Miner<Tuples> for M {
    fn try_mine_for(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margins: MiningMargins,
    ) -> Result<Tuples, MetricLossError> {
        let t = self.try_mine_tuples(dist, labels, margins.pos_margin, margins.margin)?;
        t.check_against(dist.n(), dist.cols())?;
        Ok(t)
    }
    fn fusable(&self) -> Fusable {
        if self.is_all_pairs() {
            Fusable::AllPairs
        } else if let Some(epsilon) = self.multi_similarity_epsilon() {
            Fusable::MultiSimilarity { epsilon }
        } else {
            Fusable::No
        }
    }
}

/// What a miner gives, without each batch row's pair with its own copy in a
/// reference set: how [`CrossBatchMemory`](crate::xbm::CrossBatchMemory)
/// removes an item's comparison with its own entry of the memory
/// (pytorch-metric-learning's `remove_self_comparisons`: the positive pairs
/// `(i, self_columns[i])` and the triplets whose positive is the anchor's own
/// copy; negatives are never the anchor's copy).
///
/// ```
/// use metric_loss_core::miners::{SelfPairs, Triplet, Tuples};
/// // batch row 0 sits in column 2 of the memory, row 1 in column 3
/// let t = Tuples::Pairs { positive: vec![(0, 2), (0, 1), (1, 3)], negative: vec![(0, 0)] };
/// assert_eq!(
///     t.try_without_self(&[2, 3]).unwrap(),
///     Tuples::Pairs { positive: vec![(0, 1)], negative: vec![(0, 0)] }
/// );
/// let t = vec![Triplet { anchor: 1, positive: 3, negative: 0 }];
/// assert!(t.try_without_self(&[2, 3]).unwrap().is_empty());
/// ```
pub trait SelfPairs: Sized {
    /// The tuples without the pairs `(i, self_columns[i])`.
    ///
    /// Errors: [`MetricLossError::IndexOutOfRange`] for an anchor `>=
    /// self_columns.len()`; [`MetricLossError::InvalidConfig`] for
    /// [`Tuples::All`], which has no list to filter (miners give lists
    /// against a reference set).
    fn try_without_self(self, self_columns: &[usize]) -> Result<Self, MetricLossError>;
}

/// Whether `(a, b)` is row `a` with its own copy; an error for an anchor
/// outside the batch.
fn is_own_copy(a: usize, b: usize, self_columns: &[usize]) -> Result<bool, MetricLossError> {
    match self_columns.get(a) {
        Some(&c) => Ok(c == b),
        None => Err(MetricLossError::IndexOutOfRange {
            index: a,
            batch: self_columns.len(),
        }),
    }
}

/// `items` without those `own` flags, the first error kept.
fn retain_checked<T>(
    items: Vec<T>,
    mut own: impl FnMut(&T) -> Result<bool, MetricLossError>,
) -> Result<Vec<T>, MetricLossError> {
    let mut out = Vec::with_capacity(items.len());
    for t in items {
        if !own(&t)? {
            out.push(t);
        }
    }
    Ok(out)
}

impl SelfPairs for Vec<Triplet> {
    fn try_without_self(self, self_columns: &[usize]) -> Result<Self, MetricLossError> {
        retain_checked(self, |t| is_own_copy(t.anchor, t.positive, self_columns))
    }
}

impl SelfPairs for Vec<IndexPair> {
    fn try_without_self(self, self_columns: &[usize]) -> Result<Self, MetricLossError> {
        retain_checked(self, |p| {
            Ok(p.similar && is_own_copy(p.a, p.b, self_columns)?)
        })
    }
}

impl SelfPairs for Tuples {
    fn try_without_self(self, self_columns: &[usize]) -> Result<Self, MetricLossError> {
        match self {
            Tuples::All => Err(MetricLossError::InvalidConfig(
                "Tuples::All has no list to remove self comparisons from".into(),
            )),
            Tuples::Pairs { positive, negative } => Ok(Tuples::Pairs {
                positive: retain_checked(positive, |&(a, b)| is_own_copy(a, b, self_columns))?,
                negative,
            }),
            Tuples::Triplets(t) => Ok(Tuples::Triplets(t.try_without_self(self_columns)?)),
        }
    }
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
    if dist.n() == 0 || dist.cols() == 0 {
        return Err(MetricLossError::EmptyBatch { what: "distances" });
    }
    for &m in margins {
        check_margin(m)?;
    }
    let cols = dist.column_labels(labels);
    Ok(labels.iter().chain(cols).any(|&l| l != labels[0]))
}

/// The error of a miner that does not mine against a reference set
/// ([`DistanceMatrix::against`]).
pub(crate) fn refuse_reference(dist: &DistanceMatrix, miner: &str) -> Result<(), MetricLossError> {
    if dist.is_reference() {
        return Err(MetricLossError::InvalidConfig(format!(
            "the {miner} miner does not mine against a reference set (cross-batch memory): \
             use BatchHard, BatchAll, AllPairs, HardPairs or MultiSimilarityMiner"
        )));
    }
    Ok(())
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
