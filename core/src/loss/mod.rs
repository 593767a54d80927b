//! The loss traits that `#[metric_loss]` implements, and what every loss
//! shares: input checks, mining, gathering, reductions and statistics.
//!
//! # How the pieces fit
//!
//! A declared loss implements three traits:
//!
//! - [`MetricSpace`]: how embeddings are prepared (`normalize`) and the
//!   distance between them, row by row and as a batch's matrix. Generated
//!   from the spec.
//! - [`MetricLoss`]: names the loss's [`Family`]. The one mined path every
//!   loss uses, [`try_mined`] (`loss.mined(&miner, embeddings, labels)`),
//!   reads it: check the batch and the loss's numbers, embed,
//!   let a device's fused kernel do the whole work where it has one, else
//!   build the matrix on the tape, mine a host copy of it, compute the
//!   statistics, and hand the matrix and the mined tuples to the formula.
//! - The family's own trait, which holds only its formula: [`TripletCriterion`]
//!   (from `d(A,P)`, `d(A,N)`), [`PairCriterion`] (from `d` and `Y`), or
//!   [`BatchCriterion`] (the ranking family: multi-similarity, NT-Xent, ...,
//!   from the batch's similarity matrix and its positive and negative
//!   pairs). The triplet and pair traits also provide the explicit paths
//!   (`forward(a, p, n)`, `forward(a, b, labels)`).
//!
//! A [`Family`] is the glue between the two: which tuples its miners give
//! (triplets, pairs, PML's `indices_tuple`), the numbers the loss checks, the
//! matrix it reads, how the statistics are counted, and how the matrix and
//! the tuples become the loss (gathering the mined entries once with
//! [`gather_entries`], then the family's formula and its reduction).
//!
//! # Contrastive or triplet?
//!
//! A **contrastive** (pair) loss looks at two embeddings and a label: pull
//! similar pairs together, push dissimilar ones beyond a margin `m`. It is
//! trained by a Siamese network, needs only "same or not" labels, and fixes an
//! absolute scale (every dissimilar pair must be `m` apart). A **triplet**
//! loss compares distances: the positive must be closer to the anchor than
//! the negative by `m`. It only asks for a relative order, which leaves the
//! embedding free to use its space, and usually retrieves better; it needs
//! triplets, which is why it comes with mining. The **ranking family**
//! ([`BatchCriterion`]) looks at every pair of a batch at once, weighting
//! each by how much it violates the order (soft maxima, log-sum-exps): no
//! hard triplet selection, and usually the best retrieval.
//!
//! # Why a margin?
//!
//! Without one, `d(A,P) < d(A,N)` is satisfied by shrinking everything to a
//! point (all distances 0). The margin asks for a gap, and its hinge
//! `[·]+` stops pushing once the gap is there, so easy pairs and triplets cost
//! nothing and the gradient goes to the hard ones.

use crate::device::MetricDevice;
use crate::error::MetricLossError;
use crate::miners::{DistanceMatrix, Miner, MinerStats, MiningMargins, SelfPairs, Units};
use crate::xbm::MemoryColumns;
use dfdx::prelude::*;

mod batch;
mod check;
mod explicit;
mod pair;
pub mod reduce;
mod triplet;

pub use batch::{BatchCriterion, BatchFamily};
pub(crate) use check::{
    check_distances, check_label_count, check_labelled_batch, check_loss, check_rows, check_same,
};
pub use check::{check_finite, check_margin};
pub use pair::{PairCriterion, PairFamily};
pub use triplet::{TripletCriterion, TripletFamily};

/// `pair` or `triplet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Two embeddings and a similar/dissimilar label.
    Pair,
    /// Anchor, positive, negative.
    Triplet,
}

/// How per-item losses become the returned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over items (0 for no items).
    Mean,
    /// The sum over items.
    Sum,
    /// No reduction: one loss per item.
    None,
    /// The mean over the items with a positive loss; 0 when there are none
    /// (pytorch-metric-learning's `AvgNonZeroReducer`).
    MeanNonzero,
}

/// A declared pair or triplet loss, as the macro read it (for introspection
/// and docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSpec {
    /// `pair` or `triplet`.
    pub arity: Arity,
    /// The distance's name (`euclidean`, `cosine`, `manhattan`, `dot`, or the user function's path).
    pub distance: &'static str,
    /// The `squared` key.
    pub squared: bool,
    /// The `normalize` key.
    pub normalize: bool,
    /// The `swap` key (triplet only).
    pub swap: bool,
    /// The `soft` key (triplet only).
    pub soft: bool,
    /// The compile-time margin (0 for a soft triplet loss declared without one).
    pub margin: f32,
    /// The positive margin of a pair loss (0 otherwise).
    pub pos_margin: f32,
    /// The reduction.
    pub reduction: Reduction,
}

impl LossSpec {
    /// What the loss's distance matrix measures, for the miners
    /// ([`Units`]): Euclidean on normalized rows, cosine, or just the loss's
    /// distance.
    pub fn units(&self, dim: usize) -> Units {
        match self.distance {
            "euclidean" if self.normalize => Units::UnitEuclidean {
                dim,
                squared: self.squared,
            },
            "cosine" if !self.squared => Units::Cosine { dim },
            _ => Units::Distance,
        }
    }
}

pub(crate) type Rows<B, const D: usize, Dev, T> = Tensor<(B, Const<D>), f32, Dev, T>;
pub(crate) type Col<B, Dev, T> = Tensor<(B,), f32, Dev, T>;
pub(crate) type Square<N, Dev, T> = Tensor<(N, N), f32, Dev, T>;

/// A loss with its margin overridden at run time: see `with_margin`.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let loss = TripletLoss.with_margin(0.5).unwrap();
/// assert_eq!(loss.margin(), 0.5);
/// assert!(TripletLoss.with_margin(-1.0).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margined<L> {
    loss: L,
    margin: f32,
}

impl<L> Margined<L> {
    /// The wrapped loss.
    pub fn inner(&self) -> &L {
        &self.loss
    }
}

/// A loss value together with what the miner found.
#[derive(Debug)]
pub struct Mined<L> {
    /// The loss, on the tape.
    pub loss: L,
    /// Miner statistics for logging and the collapse alarm.
    pub stats: MinerStats,
}

/// A host copy of a (detached) square matrix for the miners, checked finite.
pub(crate) fn host_matrix<N: Dim, Dev: MetricDevice, T>(
    m: &Square<N, Dev, T>,
) -> Result<DistanceMatrix, MetricLossError> {
    DistanceMatrix::new(m.shape().0.size(), m.as_vec())
}

/// Gathers entries `(rows[k], cols[k])` of an `R x C` matrix as a `(K,)`
/// tensor on its tape: how every family reads its mined tuples from one
/// matrix (no `N x N x D` intermediate).
///
/// ```
/// use metric_loss_core::loss::gather_entries;
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let m = dev.tensor([[0.0f32, 1.0], [2.0, 3.0]]);
/// let g = gather_entries(m.leaky_trace(), [(1, 0), (0, 1), (1, 0)].into_iter()).unwrap();
/// assert_eq!(g.as_vec(), [2.0, 1.0, 2.0]);
/// ```
pub fn gather_entries<R: Dim, C: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    m: Tensor<(R, C), f32, Dev, T>,
    entries: impl Iterator<Item = (usize, usize)>,
) -> Result<Col<usize, Dev, T>, Dev::Err> {
    let (r, c) = (m.shape().0.size(), m.shape().1.size());
    let dev = m.device().clone();
    let idx: Vec<usize> = entries.map(|(i, j)| i * c + j).collect();
    let k = idx.len();
    if k == 0 {
        // dfdx's kernels reject empty tensors: an empty result carrying the tape.
        let (_, tape) = m.split_tape();
        return Ok(dev.try_zeros_like(&(0,))?.put_tape(tape));
    }
    let idx = dev.try_tensor_from_vec(idx, (k,))?;
    m.try_reshape_like(&(r * c,))?.try_gather(idx)
}

/// The metric space a declared loss works in: how embeddings are prepared
/// and the distance between them, row by row and as a batch's `N x N`
/// matrix, in the units of the loss's formula (squared for a `squared`
/// triplet loss). `#[metric_loss]` implements it from the spec; every loss
/// builds on it.
pub trait MetricSpace {
    /// Whether [`try_embed`](Self::try_embed) is exactly
    /// [`l2_normalize`](crate::distance::l2_normalize) (the ranking family,
    /// and the pair and triplet losses declared with `normalize`). A fused
    /// kernel may then take the raw rows and normalize them in its own pass
    /// ([`Prepare::L2Normalize`](crate::device::Prepare::L2Normalize));
    /// otherwise (the default, right for any `try_embed`) it is given
    /// `try_embed`'s output.
    ///
    /// ```
    /// use metric_loss_core::prelude::*;
    /// use metric_loss_core::loss::MetricSpace;
    /// assert!(MultiSimilarityLoss::L2_NORMALIZES);
    /// assert!(!TripletLoss::L2_NORMALIZES); // PML's default: raw Euclidean
    /// ```
    const L2_NORMALIZES: bool = false;

    /// Prepares embeddings before any distance (`normalize`, or nothing).
    fn try_embed<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        x: Rows<B, D, Dev, T>,
    ) -> Result<Rows<B, D, Dev, T>, Dev::Err>;

    /// The distance, row by row.
    fn try_distance<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, T>,
    ) -> Result<Col<B, Dev, T>, Dev::Err>;

    /// The distance between all rows of one (prepared) batch.
    fn try_distance_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        x: Rows<N, D, Dev, T>,
    ) -> Result<Square<N, Dev, T>, Dev::Err>;
}

impl<L: MetricSpace> MetricSpace for Margined<L> {
    const L2_NORMALIZES: bool = L::L2_NORMALIZES;

    fn try_embed<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        x: Rows<B, D, Dev, T>,
    ) -> Result<Rows<B, D, Dev, T>, Dev::Err> {
        L::try_embed(x)
    }
    fn try_distance<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, T>,
    ) -> Result<Col<B, Dev, T>, Dev::Err> {
        L::try_distance(a, b)
    }
    fn try_distance_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
        x: Rows<N, D, Dev, T>,
    ) -> Result<Square<N, Dev, T>, Dev::Err> {
        L::try_distance_matrix(x)
    }
}

/// The loss's distance matrix on the tape, and its host copy tagged with
/// `units` for the miners: what the triplet and pair families read.
pub(crate) fn distance_matrix_and_host<L, N, const D: usize, Dev, T>(
    x: Rows<N, D, Dev, T>,
    units: Units,
) -> Result<(Square<N, Dev, T>, DistanceMatrix), MetricLossError>
where
    L: MetricSpace,
    N: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
{
    let dist = L::try_distance_matrix(x).map_err(MetricLossError::device)?;
    let host = host_matrix(&dist)?.with_units(units);
    Ok((dist, host))
}

/// What a device's fused kernel gives back to the mined path: the whole
/// result, or the embeddings untouched where it has no kernel for this case.
#[doc(hidden)]
pub enum Fused<X, L> {
    /// The kernel did the whole work.
    Done(Mined<L>),
    /// No kernel: the embeddings, for the generic path.
    Unavailable(X),
}

/// A family of losses: the glue between the one mined path
/// ([`try_mined`]) and a family's formula.
///
/// Implemented by [`TripletFamily`], [`PairFamily`] and [`BatchFamily`] for
/// every loss of their trait; a declared loss names its family in
/// [`MetricLoss::Family`]. Everything here runs once per mined batch, in the
/// order of [`try_mined`].
pub trait Family<L: MetricSpace>: Sized {
    /// What the family's miners give ([`Miner`]`<Tuples>`).
    type Tuples: SelfPairs;
    /// The shape of the mined loss.
    type Output: Shape;
    /// The loss's numbers, checked ([`Family::try_params`]).
    type Params;

    /// Checks the loss's numbers (a run-time margin, say) and keeps them.
    fn try_params(loss: &L) -> Result<Self::Params, MetricLossError>;

    /// The margins handed to the miner and the statistics, in the units of
    /// the host matrix.
    fn margins(params: &Self::Params) -> MiningMargins;

    /// The whole mined loss in one fused pass where the device has a kernel
    /// for this loss and miner. `x` is the **raw** embeddings: a kernel
    /// prepares them itself (normalizing while it copies them, say, see
    /// [`Prepare`](crate::device::Prepare)) or is given
    /// [`L::try_embed`](MetricSpace::try_embed)'s output. Where there is no
    /// kernel, the embeddings back, **prepared** (`L::try_embed`), for the
    /// generic path (the default).
    fn try_fused<N, const D: usize, Dev, T, M>(
        params: &Self::Params,
        miner: &M,
        x: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Fused<Rows<N, D, Dev, T>, Tensor<Self::Output, f32, Dev, T>>, MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<Self::Tuples> + ?Sized,
    {
        let _ = (params, miner, labels);
        Ok(Fused::Unavailable(
            L::try_embed(x).map_err(MetricLossError::device)?,
        ))
    }

    /// The whole mined loss of a batch against a cross-batch memory
    /// (`memory`: its entries, labels and each batch row's own column, the
    /// batch already enqueued) in one fused pass where the device has a
    /// kernel for this loss and miner; the embeddings back otherwise (the
    /// default), for [`try_matrix_against`](Self::try_matrix_against) and
    /// the mined path. What it gives equals that path's: the same loss,
    /// gradient (none into the memory) and statistics, each row's pair with
    /// its own copy removed.
    fn try_fused_against<B, const D: usize, Dev, T, M>(
        params: &Self::Params,
        miner: &M,
        x: Rows<B, D, Dev, T>,
        labels: &[usize],
        memory: &MemoryColumns<'_>,
    ) -> Result<Fused<Rows<B, D, Dev, T>, Tensor<Self::Output, f32, Dev, T>>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<Self::Tuples> + ?Sized,
    {
        let _ = (params, miner, labels, memory);
        Ok(Fused::Unavailable(x))
    }

    /// The matrix the formula reads, on the tape, and the host copy the
    /// miner and the statistics read (a distance matrix, smaller is closer,
    /// tagged with its [`Units`]).
    fn try_matrix<N, const D: usize, Dev, T>(
        params: &Self::Params,
        x: Rows<N, D, Dev, T>,
    ) -> Result<(Square<N, Dev, T>, DistanceMatrix), MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>;

    /// The matrix between a batch (on the tape, prepared) and a constant
    /// reference set (`memory`, prepared, no gradient; its labels
    /// `memory_labels`), `B × M`, and its host copy for the miner and the
    /// statistics ([`DistanceMatrix::against`]): what
    /// [`CrossBatchMemory`](crate::xbm::CrossBatchMemory) mines. Errors:
    /// [`MetricLossError::InvalidConfig`] for a loss that cannot read a
    /// rectangular matrix.
    fn try_matrix_against<B, M, const D: usize, Dev, T>(
        params: &Self::Params,
        x: Rows<B, D, Dev, T>,
        memory: &Tensor<(M, Const<D>), f32, Dev>,
        memory_labels: &[usize],
    ) -> Result<(Tensor<(B, M), f32, Dev, T>, DistanceMatrix), MetricLossError>
    where
        B: Dim,
        M: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>;

    /// The statistics of what was mined.
    fn try_stats(
        params: &Self::Params,
        host: &DistanceMatrix,
        labels: &[usize],
        tuples: &Self::Tuples,
    ) -> Result<MinerStats, MetricLossError>;

    /// The loss of the mined tuples, read from the matrix (the batch's
    /// `N × N`, or `B × M` against a reference set): gather, formula,
    /// reduction.
    fn try_loss<R, C, Dev, T>(
        params: &Self::Params,
        matrix: Tensor<(R, C), f32, Dev, T>,
        tuples: &Self::Tuples,
        labels: &[usize],
    ) -> Result<Tensor<Self::Output, f32, Dev, T>, MetricLossError>
    where
        R: Dim,
        C: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>;
}

/// What [`try_mined`] returns for a loss `L` on device `Dev` with tape `T`.
pub type MinedLoss<L, Dev, T> =
    Mined<Tensor<<<L as MetricLoss>::Family as Family<L>>::Output, f32, Dev, T>>;

/// The `try_mined`/`mined` methods of a family's trait: [`try_mined`],
/// the one mined path, with the family's miner trait and output, and an
/// example.
macro_rules! mined_methods {
    ($miner:path, $out:ty, $what:literal, $example:literal) => {
        #[doc = concat!(
                    "The loss of the ", $what, " `miner` finds in one batch of embeddings with\n",
                    "class labels: the one mined path of every loss,\n",
                    "[`try_mined`](crate::loss::try_mined) (see it for the errors and for what\n",
                    "a batch with nothing to mine gives).\n\n```\n", $example, "\n```"
                )]
        fn try_mined<N, const D: usize, Dev, T, M>(
            &self,
            miner: &M,
            embeddings: Rows<N, D, Dev, T>,
            labels: &[usize],
        ) -> Result<Mined<Tensor<$out, f32, Dev, T>>, MetricLossError>
        where
            N: Dim,
            Dev: MetricDevice,
            T: Tape<f32, Dev>,
            M: $miner + ?Sized,
        {
            crate::loss::try_mined(self, miner, embeddings, labels)
        }

        /// [`try_mined`](Self::try_mined), panicking with the error's message.
        #[track_caller]
        fn mined<N, const D: usize, Dev, T, M>(
            &self,
            miner: &M,
            embeddings: Rows<N, D, Dev, T>,
            labels: &[usize],
        ) -> Mined<Tensor<$out, f32, Dev, T>>
        where
            N: Dim,
            Dev: MetricDevice,
            T: Tape<f32, Dev>,
            M: $miner + ?Sized,
        {
            crate::error::unwrap_or_panic(self.try_mined(miner, embeddings, labels))
        }
    };
}
pub(crate) use mined_methods;

/// Every declared loss: its [`Family`]. `#[metric_loss]` implements it
/// (`type Family = TripletFamily`, ...); the mined path, [`try_mined`],
/// is written once for all of them, and each family's trait offers it as
/// its `try_mined`/`mined` methods.
pub trait MetricLoss: MetricSpace + Sized {
    /// The loss's family: what its miners give and what its formula reads.
    type Family: Family<Self>;
}

/// The mined path of every loss, written once: the loss of the tuples
/// `miner` finds in one batch of embeddings with class labels. The matrix is
/// built once on the tape, mining and statistics read a detached host copy,
/// then the mined entries are gathered from the matrix (no `N x N x D`
/// intermediate) for the family's formula — or one fused pass does it all
/// where the device has a kernel for this loss and miner (batch-hard on the
/// CPU). Call it as `loss.mined(&miner, embeddings, labels)`
/// ([`TripletCriterion::mined`], [`PairCriterion::mined`],
/// [`BatchCriterion::mined`]).
///
/// A batch where nothing can be mined (one class, no positives) gives a
/// zero loss whose gradient is zeros (with `reduction = none`: a `(0,)`
/// tensor; note that dfdx's `as_vec` panics on an empty tensor, so check
/// `loss.shape().0` first); the ranking family follows
/// pytorch-metric-learning there (see each loss). Errors: an empty batch, a
/// label count that is not the batch size, an invalid number of the loss,
/// and [`MetricLossError::NonFinite`] (with `what = "distances"`, row and
/// column of the first bad entry of the matrix) when an embedding holds a
/// NaN or an infinite value: the miners read a host copy of the matrix,
/// which [`DistanceMatrix::new`] checks, so no separate scan of the
/// embeddings is needed (`tests/it/reliability.rs` checks this for every
/// distance and miner). The fused CPU batch-hard Euclidean path reads the
/// embeddings on the host anyway and reports `what = "embeddings"` with the
/// row and column of the bad value.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();
/// let labels = [0, 0, 1, 1, 2, 2];
/// let m = TripletLoss.mined(&BatchHard, x.leaky_trace(), &labels);
/// assert_eq!(m.stats.triplets, 6);
/// let m = ContrastiveLoss.mined(&AllPairs, x.leaky_trace(), &labels);
/// assert_eq!(m.stats.pairs, 15);
/// let m = MultiSimilarityLoss.mined(&MultiSimilarityMiner::default(), x.leaky_trace(), &labels);
/// assert!(m.loss.array().is_finite());
/// // the same path, called directly
/// let m = metric_loss_core::loss::try_mined(&TripletLoss, &BatchHard, x, &labels).unwrap();
/// assert_eq!(m.stats.triplets, 6);
/// ```
pub fn try_mined<L, N, const D: usize, Dev, T, M>(
    loss: &L,
    miner: &M,
    embeddings: Rows<N, D, Dev, T>,
    labels: &[usize],
) -> Result<MinedLoss<L, Dev, T>, MetricLossError>
where
    L: MetricLoss,
    N: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
    M: Miner<<L::Family as Family<L>>::Tuples> + ?Sized,
{
    check::check_labelled_batch(&embeddings, labels)?;
    let params = L::Family::try_params(loss)?;
    // the raw rows: a fused kernel may normalize them in its own pass; the
    // generic path gets them prepared (`L::try_embed`)
    let x = match L::Family::try_fused(&params, miner, embeddings, labels)? {
        Fused::Done(mined) => return Ok(mined),
        Fused::Unavailable(x) => x,
    };
    let (matrix, host) = L::Family::try_matrix(&params, x)?;
    try_mined_matrix::<L, _, _, _, _, _>(&params, miner, matrix, &host, labels, Ok)
}

/// The second half of the mined path, shared by [`try_mined`] and
/// [`CrossBatchMemory`](crate::xbm::CrossBatchMemory): mine the host copy,
/// `keep` what the loss reads (all of it, or all but each row's pair with
/// its own copy), compute the statistics, and hand the matrix and the tuples
/// to the family's formula.
pub(crate) fn try_mined_matrix<L, R, C, Dev, T, M>(
    params: &<L::Family as Family<L>>::Params,
    miner: &M,
    matrix: Tensor<(R, C), f32, Dev, T>,
    host: &DistanceMatrix,
    labels: &[usize],
    keep: impl FnOnce(
        <L::Family as Family<L>>::Tuples,
    ) -> Result<<L::Family as Family<L>>::Tuples, MetricLossError>,
) -> Result<MinedLoss<L, Dev, T>, MetricLossError>
where
    L: MetricLoss,
    R: Dim,
    C: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
    M: Miner<<L::Family as Family<L>>::Tuples> + ?Sized,
{
    let margins = L::Family::margins(params);
    let tuples = keep(miner.try_mine_for(host, labels, margins)?)?;
    let stats = L::Family::try_stats(params, host, labels, &tuples)?;
    let loss = L::Family::try_loss(params, matrix, &tuples, labels)?;
    Ok(Mined { loss, stats })
}

/// The distance matrix of a declared pair or triplet loss between a batch
/// and a constant reference set, `B × M`, with its host copy: the loss's
/// distance ([`LossSpec`]) on the project's GEMM where it has a Gram form
/// (Euclidean, cosine, dot), row by row otherwise.
pub(crate) fn distance_matrix_against<L, B, M, const D: usize, Dev, T>(
    spec: &LossSpec,
    x: Rows<B, D, Dev, T>,
    memory: &Tensor<(M, Const<D>), f32, Dev>,
    memory_labels: &[usize],
) -> Result<(Tensor<(B, M), f32, Dev, T>, DistanceMatrix), MetricLossError>
where
    L: MetricSpace,
    B: Dim,
    M: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
{
    use crate::distance as d;
    // `squared` squares a triplet loss's distance, a pair loss's hinges
    let square = spec.squared && spec.arity == Arity::Triplet;
    let run = || -> Result<_, Dev::Err> {
        let m = match spec.distance {
            "euclidean" => return d::euclidean_against(x, memory, square),
            "cosine" => d::cosine_against(x, memory)?,
            "dot" => Dev::try_cross_gram(x, memory)?.try_negate()?,
            _ => return d::matrix_against_by_rows(x, memory, |a, b| L::try_distance(a, b)),
        };
        if square { m.try_square() } else { Ok(m) }
    };
    let dist = run().map_err(MetricLossError::device)?;
    let (rows, cols) = (dist.shape().0.size(), dist.shape().1.size());
    let host = DistanceMatrix::against(rows, cols, dist.as_vec(), memory_labels.to_vec())?
        .with_units(spec.units(D));
    Ok((dist, host))
}

impl<L: MetricLoss> MetricLoss for Margined<L>
where
    L::Family: Family<Margined<L>>,
{
    type Family = L::Family;
}
