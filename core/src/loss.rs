//! The loss traits that `#[metric_loss]` implements, and what every loss
//! shares: input checks, reductions, run-time margins and mining.
//!
//! The macro generates, per declared loss, the pieces that depend on its spec
//! — how embeddings are prepared (`normalize`), the distance (row-wise and as
//! a matrix) and the formula with its reduction — as straight-line dfdx tape
//! code. The provided methods here put them together: [`TripletCriterion::forward`]
//! for explicit `(anchor, positive, negative)` batches, [`TripletCriterion::mined`]
//! for one batch of embeddings with class labels and a miner.
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
//! triplets, which is why it comes with mining.
//!
//! # Why a margin?
//!
//! Without one, `d(A,P) < d(A,N)` is satisfied by shrinking everything to a
//! point (all distances 0). The margin asks for a gap, and its hinge
//! `[·]+` stops pushing once the gap is there, so easy pairs and triplets cost
//! nothing and the gradient goes to the hard ones.

use crate::device::{FusedBatchHard, MetricDevice};
use crate::error::{MetricLossError, unwrap_or_panic};
use crate::labels::PairLabels;
use crate::miners::{DistanceMatrix, IndexPair, MinerStats, PairMiner, TripletMiner};
use dfdx::prelude::*;

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

/// A declared loss, as the macro read it (for introspection and docs).
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

type Rows<B, const D: usize, Dev, T> = Tensor<(B, Const<D>), f32, Dev, T>;
type Col<B, Dev, T> = Tensor<(B,), f32, Dev, T>;
type Square<N, Dev, T> = Tensor<(N, N), f32, Dev, T>;

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

/// Checks a margin given at run time.
pub fn check_margin(margin: f32) -> Result<f32, MetricLossError> {
    if margin.is_finite() && margin >= 0.0 {
        Ok(margin)
    } else {
        Err(MetricLossError::InvalidMargin { value: margin })
    }
}

/// Checks that every entry of `t` is finite.
///
/// Returns [`MetricLossError::NonFinite`] for the first NaN or infinite
/// value, with `row` and `column` computed from its flat (row-major) index
/// and the size of the last dimension (a tensor of rank 0 or 1 reports
/// row 0). This copies the tensor to the host and scans it: `O(N·D)`, which
/// is why the loss traits' `try_forward` does not call it and
/// `try_forward_checked` does.
///
/// ```
/// use metric_loss_core::loss::check_finite;
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 1.0], [2.0, f32::NAN]]);
/// assert!(matches!(
///     check_finite("x", &x),
///     Err(MetricLossError::NonFinite { what: "x", row: 1, column: 1, .. })
/// ));
/// assert!(check_finite("x", &dev.tensor([1.0f32, 2.0])).is_ok());
/// ```
pub fn check_finite<S: Shape, Dev: Device<f32>, T>(
    what: &'static str,
    t: &Tensor<S, f32, Dev, T>,
) -> Result<(), MetricLossError> {
    let dims = t.shape().concrete();
    let columns = if S::NUM_DIMS >= 2 {
        dims.into_iter().last().unwrap_or(1).max(1)
    } else {
        usize::MAX
    };
    if t.shape().num_elements() == 0 {
        // dfdx's `as_vec` indexes out of bounds on an empty tensor.
        return Ok(());
    }
    let values = t.as_vec();
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => Err(MetricLossError::NonFinite {
            what,
            row: pos / columns,
            column: pos % columns,
            value: values[pos],
        }),
    }
}

fn check_rows<S: Shape, Dev: Device<f32>, T>(
    what: &'static str,
    t: &Tensor<S, f32, Dev, T>,
) -> Result<usize, MetricLossError> {
    let n = t.shape().concrete().into_iter().next().unwrap_or(0);
    if n == 0 {
        return Err(MetricLossError::EmptyBatch { what });
    }
    Ok(n)
}

/// A caller may pass one tensor as two arguments (`loss.forward(x, x, x)`);
/// dfdx's backward panics on a binary op with one id on both sides, so a
/// tracked argument goes through an identity op that gives it its own id.
///
/// Not needed (and skipped) where the distance's own op tolerates one id on
/// both sides or a fresh op comes first: `normalize`, or a device's fused
/// Euclidean rows.
fn own_id<S: Shape, Dev: MetricDevice, T: Tape<f32, Dev>>(
    spec: &LossSpec,
    t: Tensor<S, f32, Dev, T>,
) -> Result<Tensor<S, f32, Dev, T>, Dev::Err> {
    let safe = spec.normalize
        || (Dev::EUCLIDEAN_ROWS_SAME_ID_SAFE && spec.distance.as_bytes() == b"euclidean");
    if T::OWNS_TAPE && !safe {
        t.try_mul(1.0)
    } else {
        Ok(t)
    }
}

/// A batch for mining: at least one row, one label per row.
fn check_labelled_batch<S: Shape, Dev: Device<f32>, T>(
    embeddings: &Tensor<S, f32, Dev, T>,
    labels: &[usize],
) -> Result<usize, MetricLossError> {
    let n = check_rows("embeddings", embeddings)?;
    if labels.len() != n {
        return Err(MetricLossError::LabelCount {
            labels: labels.len(),
            batch: n,
        });
    }
    Ok(n)
}

/// Two batch sizes that must agree.
pub(crate) fn check_same(
    left_name: &'static str,
    left: usize,
    right_name: &'static str,
    right: usize,
) -> Result<(), MetricLossError> {
    if left != right {
        return Err(MetricLossError::BatchMismatch {
            left_name,
            left,
            right_name,
            right,
        });
    }
    Ok(())
}

/// Reductions shared by every generated loss. Each is safe on an empty
/// input (it returns 0 with a zero gradient, never NaN).
pub mod reduce {
    use dfdx::prelude::*;

    /// The loss of no items: 0, carrying `x`'s tape so that backward still
    /// runs and gives zero gradients (dfdx's reductions divide by zero on an
    /// empty tensor).
    fn zero<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let (x, tape) = x.split_tape();
        Ok(x.device().try_zeros::<()>()?.put_tape(tape))
    }

    /// Mean over items; 0 for none.
    pub fn mean<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        let n = x.shape().0.size();
        if n == 0 {
            return zero(x);
        }
        x.try_sum()?.try_div(n as f32)
    }

    /// Sum over items.
    pub fn sum<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        if x.shape().0.size() == 0 {
            return zero(x);
        }
        x.try_sum()
    }

    /// No reduction.
    pub fn none<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
        Ok(x)
    }

    /// Mean over the items with a positive loss; 0 when there are none.
    pub fn mean_nonzero<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
        if x.shape().0.size() == 0 {
            return zero(x);
        }
        let positive = x.as_vec().iter().filter(|&&v| v > 0.0).count().max(1) as f32;
        x.try_sum()?.try_div(positive)
    }

    /// The hinge `[x]+ = max(x, 0)`, with relu's gradient, that keeps NaN.
    ///
    /// dfdx's `relu` computes `x.max(0)`, which maps NaN to 0: a NaN
    /// embedding would then give a finite, silently wrong loss. Here a NaN
    /// item stays NaN (two extra elementwise ops on a `(B,)` vector, off the
    /// tape).
    pub fn hinge<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
        if x.shape().0.size() == 0 {
            return Ok(x);
        }
        let plain = x.retaped::<NoneTape>();
        let is_nan = plain.try_ne(&plain)?;
        let zeros = plain.device().try_zeros_like(plain.shape())?;
        let nans = is_nan.try_choose(plain, zeros)?;
        x.try_relu()?.try_add(nans)
    }

    /// `softplus(x) = ln(1 + eᕽ)`, stable for large `|x|` and with the exact
    /// derivative `σ(x)` everywhere (0.5 at 0), as `logsumexp([x, 0])`.
    pub fn softplus<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
        x: Tensor<(B,), f32, Dev, T>,
    ) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
        if x.shape().0.size() == 0 {
            return Ok(x);
        }
        let zeros = x.device().try_zeros_like(x.shape())?.retaped::<T>();
        [x, zeros].try_stack()?.try_logsumexp::<(B,), Axis<0>>()
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

/// A host copy of a (detached) distance matrix, for the miners.
fn host_matrix<N: Dim, Dev: MetricDevice, T>(
    m: &Square<N, Dev, T>,
) -> Result<DistanceMatrix, MetricLossError> {
    DistanceMatrix::new(m.shape().0.size(), m.as_vec())
}

/// Gathers entries `(rows[k], cols[k])` of an `N x N` matrix as a `(K,)` tensor.
fn gather_entries<N: Dim, Dev: MetricDevice, T: Tape<f32, Dev>>(
    m: Square<N, Dev, T>,
    rows: impl Iterator<Item = (usize, usize)>,
) -> Result<Col<usize, Dev, T>, Dev::Err> {
    let n = m.shape().0.size();
    let dev = m.device().clone();
    let idx: Vec<usize> = rows.map(|(i, j)| i * n + j).collect();
    let k = idx.len();
    if k == 0 {
        // dfdx's kernels reject empty tensors: an empty result carrying the tape.
        let (_, tape) = m.split_tape();
        return Ok(dev.try_zeros_like(&(0,))?.put_tape(tape));
    }
    let idx = dev.try_tensor_from_vec(idx, (k,))?;
    m.try_reshape_like(&(n * n,))?.try_gather(idx)
}

/// The checks of an explicit triplet batch: no empty argument, equal
/// sizes, a valid margin (returned).
fn check_triplets<S: Shape, Dev: Device<f32>, T, TP, TN>(
    anchor: &Tensor<S, f32, Dev, T>,
    positive: &Tensor<S, f32, Dev, TP>,
    negative: &Tensor<S, f32, Dev, TN>,
    margin: f32,
) -> Result<f32, MetricLossError> {
    let n = check_rows("anchor", anchor)?;
    check_same("anchor", n, "positive", check_rows("positive", positive)?)?;
    check_same("anchor", n, "negative", check_rows("negative", negative)?)?;
    check_margin(margin)
}

/// The checks of an explicit pair batch: no empty argument, equal sizes,
/// one label per pair, a valid margin (returned).
fn check_pairs<S: Shape, Dev: Device<f32>, T, TB>(
    a: &Tensor<S, f32, Dev, T>,
    b: &Tensor<S, f32, Dev, TB>,
    labels: &PairLabels,
    margin: f32,
) -> Result<f32, MetricLossError> {
    let n = check_rows("a", a)?;
    check_same("a", n, "b", check_rows("b", b)?)?;
    if labels.len() != n {
        return Err(MetricLossError::LabelCount {
            labels: labels.len(),
            batch: n,
        });
    }
    check_margin(margin)
}

/// `d(A,P)`, `d(A,N)` and (for `swap`) `d(P,N)` of explicit triplets, on
/// the anchor's tape with the other two merged into it.
#[allow(clippy::type_complexity)]
fn triplet_distances<L, B, const D: usize, Dev, T, TP, TN>(
    anchor: Rows<B, D, Dev, T>,
    positive: Rows<B, D, Dev, TP>,
    negative: Rows<B, D, Dev, TN>,
) -> Result<(Col<B, Dev, T>, Col<B, Dev, T>, Option<Col<B, Dev, T>>), Dev::Err>
where
    L: TripletCriterion,
    B: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev> + Merge<TP> + Merge<TN>,
    TP: Tape<f32, Dev>,
    TN: Tape<f32, Dev>,
{
    // A tensor used twice: the tape rides on one use, the other is a
    // tape-less handle with the same id (fine: no op sees it twice).
    let (positive, p_tape) = positive.split_tape();
    let (negative, n_tape) = negative.split_tape();
    let (anchor, a_tape) = anchor.split_tape();
    let anchor = anchor.put_tape(a_tape.merge(p_tape).merge(n_tape));
    let (a, a_tape) = L::try_embed(anchor)?.split_tape();
    let p = L::try_embed(own_id(&L::SPEC, positive.retaped::<T>())?)?;
    let n = L::try_embed(own_id(&L::SPEC, negative.retaped::<T>())?)?;
    let a1 = a.clone().put_tape(a_tape);
    let a2 = a.retaped::<T>();
    if L::SPEC.swap {
        let (p, p_tape) = p.split_tape();
        let (n, n_tape) = n.split_tape();
        let d_ap = L::try_distance(a1, p.clone().put_tape(p_tape))?;
        let d_an = L::try_distance(a2, n.clone().put_tape(n_tape))?;
        let d_pn = L::try_distance(p.retaped::<T>(), n.retaped::<T>())?;
        Ok((d_ap, d_an, Some(d_pn)))
    } else {
        let d_ap = L::try_distance(a1, p)?;
        let d_an = L::try_distance(a2, n)?;
        Ok((d_ap, d_an, None))
    }
}

/// The distances of explicit pairs on `a`'s tape (`b`'s merged into it),
/// and the labels as a `Y` vector (1 = dissimilar).
#[allow(clippy::type_complexity)]
fn pair_distances<L, B, const D: usize, Dev, T, TB>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, TB>,
    labels: &PairLabels,
) -> Result<(Col<B, Dev, T>, Tensor<(B,), f32, Dev>), Dev::Err>
where
    L: PairCriterion,
    B: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev> + Merge<TB>,
    TB: Tape<f32, Dev>,
{
    let rows = a.shape().0;
    let y = a
        .device()
        .try_tensor_from_vec(labels.dissimilar_flags().to_vec(), (rows,))?;
    let (b, b_tape) = b.split_tape();
    let (a, a_tape) = a.split_tape();
    let a = a.put_tape(a_tape.merge(b_tape));
    let b = own_id(&L::SPEC, b.retaped::<T>())?;
    Ok((L::try_distance(L::try_embed(a)?, L::try_embed(b)?)?, y))
}

/// The first entry of `t` (flat, row-major) that is NaN or infinite.
fn first_non_finite<S: Shape, Dev: Device<f32>, T>(
    t: &Tensor<S, f32, Dev, T>,
) -> Option<(usize, f32)> {
    if t.shape().num_elements() == 0 {
        return None;
    }
    let values = t.as_vec();
    let i = values.iter().position(|v| !v.is_finite())?;
    Some((i, values[i]))
}

/// The checked paths' rule for distances computed from finite embeddings:
/// one that overflowed `f32` (or is NaN) is
/// [`MetricLossError::NonFinite`] with `what = "distances"`, the item as
/// `row` and `column` saying which distance (see `try_forward_checked`).
fn check_distances<B: Dim, Dev: Device<f32>, T>(
    column: usize,
    d: &Col<B, Dev, T>,
) -> Result<(), MetricLossError> {
    match first_non_finite(d) {
        None => Ok(()),
        Some((row, value)) => Err(MetricLossError::NonFinite {
            what: "distances",
            row,
            column,
            value,
        }),
    }
}

/// The checked paths' rule for the loss itself: finite distances whose
/// reduction overflows `f32` are [`MetricLossError::NonFinite`] with
/// `what = "loss"` (row: the item for `reduction = none`, else 0).
fn check_loss<S: Shape, Dev: Device<f32>, T>(
    loss: &Tensor<S, f32, Dev, T>,
) -> Result<(), MetricLossError> {
    match first_non_finite(loss) {
        None => Ok(()),
        Some((row, value)) => Err(MetricLossError::NonFinite {
            what: "loss",
            row,
            column: 0,
            value,
        }),
    }
}

/// The metric space a declared loss works in: how embeddings are prepared
/// and the distance between them, row by row and as a batch's `N x N`
/// matrix, in the units of the loss's formula (squared for a `squared`
/// triplet loss). `#[metric_loss]` implements it from the spec; both loss
/// traits build on it.
pub trait MetricSpace {
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

/// A triplet loss declared with `#[metric_loss(triplet, ...)]`.
///
/// The macro implements [`MetricSpace`] and the `try_from_distances` item
/// from the spec; the other methods are provided. Bring it into scope with `use metric_loss::prelude::*`.
///
/// # Non-finite embeddings
///
/// [`try_forward`](Self::try_forward) does **not** look at the values of its
/// arguments: a NaN or infinite embedding gives a NaN loss, not an error.
/// Scanning every entry would cost an `O(N·D)` host copy on the hot path of
/// every training step. Call [`try_forward_checked`](Self::try_forward_checked)
/// (or [`check_finite`]) to get [`MetricLossError::NonFinite`] instead, e.g.
/// while debugging a diverging run. The mined path
/// ([`try_mined`](Self::try_mined)) always rejects them, for free: it reads
/// the distance matrix on the host anyway.
///
/// The checked path's rule is *a finite loss or an error*: finite
/// embeddings whose distances overflow `f32` (entries near `1e20`, whose
/// squares pass `f32::MAX`) are an error too (`what = "distances"`), as a
/// non-finite entry of the mined path's distance matrix is.
pub trait TripletCriterion: MetricSpace + Sized {
    /// `()` for a reduced loss, `(B,)` for `reduction = none`.
    type Output<B: Dim>: Shape;
    /// The declared spec.
    const SPEC: LossSpec;

    /// The margin in force: the declared one, or the one set by `with_margin`.
    fn margin(&self) -> f32 {
        Self::SPEC.margin
    }

    /// The formula and the reduction, from `d(A,P)`, `d(A,N)` and (for `swap`) `d(P,N)`.
    fn try_from_distances<B: Dim, Dev: MetricDevice, T: Tape<f32, Dev>>(
        margin: f32,
        d_ap: Col<B, Dev, T>,
        d_an: Col<B, Dev, T>,
        d_pn: Option<Col<B, Dev, T>>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err>;

    /// The same loss with another margin, checked (finite, `>= 0`).
    fn with_margin(self, margin: f32) -> Result<Margined<Self>, MetricLossError> {
        Ok(Margined {
            loss: self,
            margin: check_margin(margin)?,
        })
    }

    /// The loss of explicit triplets: row `i` of each argument is one triplet.
    ///
    /// The arguments may carry different tapes (a traced anchor with plain
    /// positives, say): they are merged into the anchor's, which the result carries.
    ///
    /// Errors: an empty batch, or batch sizes that differ (runtime `usize` dims).
    fn try_forward<B, const D: usize, Dev, T, TP, TN>(
        &self,
        anchor: Rows<B, D, Dev, T>,
        positive: Rows<B, D, Dev, TP>,
        negative: Rows<B, D, Dev, TN>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TP> + Merge<TN>,
        TP: Tape<f32, Dev>,
        TN: Tape<f32, Dev>,
    {
        let margin = check_triplets(&anchor, &positive, &negative, self.margin())?;
        let (d_ap, d_an, d_pn) =
            triplet_distances::<Self, B, D, Dev, T, TP, TN>(anchor, positive, negative)
                .map_err(MetricLossError::device)?;
        Self::try_from_distances(margin, d_ap, d_an, d_pn).map_err(MetricLossError::device)
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    #[track_caller]
    fn forward<B, const D: usize, Dev, T, TP, TN>(
        &self,
        anchor: Rows<B, D, Dev, T>,
        positive: Rows<B, D, Dev, TP>,
        negative: Rows<B, D, Dev, TN>,
    ) -> Tensor<Self::Output<B>, f32, Dev, T>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TP> + Merge<TN>,
        TP: Tape<f32, Dev>,
        TN: Tape<f32, Dev>,
    {
        unwrap_or_panic(self.try_forward(anchor, positive, negative))
    }

    /// [`try_forward`](Self::try_forward) that returns a finite loss or an
    /// error, never a NaN or an infinity:
    ///
    /// * a NaN or infinite entry of an argument ([`check_finite`]) is
    ///   [`MetricLossError::NonFinite`] naming the argument (`"anchor"`,
    ///   `"positive"`, `"negative"`), its row and column;
    /// * a distance that is not finite although the embeddings are — their
    ///   squares overflow `f32` (entries near `1e20` and beyond) — is
    ///   `NonFinite` with `what = "distances"`, the triplet as `row` and
    ///   `column` 0 for `d(A,P)`, 1 for `d(A,N)`, 2 for `d(P,N)` (`swap`),
    ///   as the mined path reports a distance matrix entry;
    /// * finite distances whose reduction overflows (a `sum` of huge
    ///   losses) are `NonFinite` with `what = "loss"`.
    ///
    /// Costs one `O(N·D)` host scan per argument and an `O(N)` copy of the
    /// distances and the loss.
    ///
    /// ```
    /// use metric_loss_core::prelude::*;
    /// let dev = Cpu::default();
    /// let a = dev.tensor([[0.0f32, 0.0]]);
    /// let p = dev.tensor([[1.0f32, f32::INFINITY]]);
    /// let n = dev.tensor([[0.0f32, 1.0]]);
    /// assert!(matches!(
    ///     TripletLoss.try_forward_checked(a, p, n.clone()),
    ///     Err(MetricLossError::NonFinite { what: "positive", row: 0, column: 1, .. })
    /// ));
    /// // Finite, but 3e20² overflows f32: d(A,P) is infinite.
    /// let far = dev.tensor([[3e20f32, 0.0]]);
    /// assert!(matches!(
    ///     TripletLoss.try_forward_checked(far, dev.tensor([[0.0f32, 0.0]]), n),
    ///     Err(MetricLossError::NonFinite { what: "distances", row: 0, column: 0, .. })
    /// ));
    /// ```
    fn try_forward_checked<B, const D: usize, Dev, T, TP, TN>(
        &self,
        anchor: Rows<B, D, Dev, T>,
        positive: Rows<B, D, Dev, TP>,
        negative: Rows<B, D, Dev, TN>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TP> + Merge<TN>,
        TP: Tape<f32, Dev>,
        TN: Tape<f32, Dev>,
    {
        check_finite("anchor", &anchor)?;
        check_finite("positive", &positive)?;
        check_finite("negative", &negative)?;
        let margin = check_triplets(&anchor, &positive, &negative, self.margin())?;
        let (d_ap, d_an, d_pn) =
            triplet_distances::<Self, B, D, Dev, T, TP, TN>(anchor, positive, negative)
                .map_err(MetricLossError::device)?;
        check_distances(0, &d_ap)?;
        check_distances(1, &d_an)?;
        if let Some(d_pn) = &d_pn {
            check_distances(2, d_pn)?;
        }
        let loss =
            Self::try_from_distances(margin, d_ap, d_an, d_pn).map_err(MetricLossError::device)?;
        check_loss(&loss)?;
        Ok(loss)
    }

    /// The loss of the triplets `miner` finds in one batch of embeddings with
    /// class labels: one distance matrix on the tape, mining on a detached
    /// copy, then the mined distances gathered from the matrix (no `N x N x D`
    /// intermediate).
    ///
    /// A batch where nothing can be mined (one class, no positives) gives a
    /// zero loss whose gradient is zeros (with `reduction = none`: a `(0,)`
    /// tensor; note that dfdx's `as_vec` panics on an empty tensor, so check
    /// `loss.shape().0` first). Errors: an empty batch, a label count
    /// that is not the batch size, and [`MetricLossError::NonFinite`] (with
    /// `what = "distances"`, row and column of the first bad entry of the
    /// distance matrix) when an embedding holds a NaN or an infinite value:
    /// the miners read a host copy of the matrix, which
    /// [`DistanceMatrix::new`] checks, so no separate scan of the embeddings
    /// is needed (`tests/it/reliability.rs` checks this for every distance and
    /// miner). The fused CPU batch-hard Euclidean path reads the embeddings
    /// on the host anyway and reports `what = "embeddings"` with the row and
    /// column of the bad value.
    fn try_mined<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>, M: TripletMiner>(
        &self,
        miner: &M,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Mined<Tensor<Self::Output<usize>, f32, Dev, T>>, MetricLossError> {
        check_labelled_batch(&embeddings, labels)?;
        let margin = check_margin(self.margin())?;
        let embeddings = Self::try_embed(embeddings).map_err(MetricLossError::device)?;
        let embeddings = match Self::SPEC.distance {
            "euclidean" if miner.is_batch_hard() && !Self::SPEC.swap => {
                let squared = Self::SPEC.squared;
                match Dev::try_batch_hard_euclidean(embeddings, labels, squared, margin)? {
                    FusedBatchHard::Done {
                        d_ap, d_an, stats, ..
                    } => {
                        let loss = Self::try_from_distances(margin, d_ap, d_an, None)
                            .map_err(MetricLossError::device)?;
                        return Ok(Mined { loss, stats });
                    }
                    FusedBatchHard::Unavailable(x) => x,
                }
            }
            _ => embeddings,
        };
        let dist = Self::try_distance_matrix(embeddings).map_err(MetricLossError::device)?;
        let host = host_matrix(&dist)?;
        let triplets = miner.try_mine(&host, labels, margin)?;
        let stats = MinerStats::try_new(&host, labels, &triplets, margin)?;
        let run = || -> Result<_, Dev::Err> {
            // Three gathers read one matrix: unary ops, so sharing its id is
            // fine; the main tape rides on the first.
            let (dist, tape) = dist.split_tape();
            let d_ap = gather_entries(
                dist.clone().put_tape(tape),
                triplets.iter().map(|t| (t.anchor, t.positive)),
            )?;
            let d_an = gather_entries(
                dist.retaped::<T>(),
                triplets.iter().map(|t| (t.anchor, t.negative)),
            )?;
            let d_pn = if Self::SPEC.swap {
                Some(gather_entries(
                    dist.retaped::<T>(),
                    triplets.iter().map(|t| (t.positive, t.negative)),
                )?)
            } else {
                None
            };
            Self::try_from_distances(margin, d_ap, d_an, d_pn)
        };
        let loss = run().map_err(MetricLossError::device)?;
        Ok(Mined { loss, stats })
    }

    /// [`try_mined`](Self::try_mined), panicking with the error's message.
    #[track_caller]
    fn mined<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>, M: TripletMiner>(
        &self,
        miner: &M,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Mined<Tensor<Self::Output<usize>, f32, Dev, T>> {
        unwrap_or_panic(self.try_mined(miner, embeddings, labels))
    }
}

/// A pair (contrastive) loss declared with `#[metric_loss(pair, ...)]`.
///
/// Labels are [`PairLabels`], built from words (`Pair::Similar`,
/// `from_similar`, `from_dissimilar`, `from_classes`), never a bare 0/1 whose
/// meaning could be flipped silently.
///
/// # Non-finite embeddings
///
/// As for [`TripletCriterion`]: [`try_forward`](Self::try_forward) does not
/// scan its arguments (no `O(N·D)` host copy on the hot path), so a NaN
/// embedding gives a NaN loss; [`try_forward_checked`](Self::try_forward_checked)
/// returns [`MetricLossError::NonFinite`] instead (also for distances that
/// overflow `f32` from finite embeddings: a finite loss or an error), and
/// [`try_mined`](Self::try_mined) always does.
pub trait PairCriterion: MetricSpace + Sized {
    /// `()` for a reduced loss, `(B,)` for `reduction = none`.
    type Output<B: Dim>: Shape;
    /// The declared spec.
    const SPEC: LossSpec;

    /// The margin in force: the declared one, or the one set by `with_margin`.
    fn margin(&self) -> f32 {
        Self::SPEC.margin
    }

    /// The formula and the reduction, from distances and `Y` (1 = dissimilar).
    fn try_from_distances<B: Dim, Dev: MetricDevice, T: Tape<f32, Dev>>(
        margin: f32,
        d: Col<B, Dev, T>,
        dissimilar: Tensor<(B,), f32, Dev>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err>;

    /// The same loss with another margin, checked (finite, `>= 0`, above `pos_margin`).
    fn with_margin(self, margin: f32) -> Result<Margined<Self>, MetricLossError> {
        let margin = check_margin(margin)?;
        if Self::SPEC.pos_margin > 0.0 && margin <= Self::SPEC.pos_margin {
            return Err(MetricLossError::InvalidMargin { value: margin });
        }
        Ok(Margined { loss: self, margin })
    }

    /// The loss of explicit pairs: row `i` of `a` with row `i` of `b`, labelled by `labels`.
    ///
    /// Errors: an empty batch, batch sizes that differ, a label count that is
    /// not the batch size.
    fn try_forward<B, const D: usize, Dev, T, TB>(
        &self,
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, TB>,
        labels: &PairLabels,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TB>,
        TB: Tape<f32, Dev>,
    {
        let margin = check_pairs(&a, &b, labels, self.margin())?;
        let (d, y) = pair_distances::<Self, B, D, Dev, T, TB>(a, b, labels)
            .map_err(MetricLossError::device)?;
        Self::try_from_distances(margin, d, y).map_err(MetricLossError::device)
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    #[track_caller]
    fn forward<B, const D: usize, Dev, T, TB>(
        &self,
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, TB>,
        labels: &PairLabels,
    ) -> Tensor<Self::Output<B>, f32, Dev, T>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TB>,
        TB: Tape<f32, Dev>,
    {
        unwrap_or_panic(self.try_forward(a, b, labels))
    }

    /// [`try_forward`](Self::try_forward) that returns a finite loss or an
    /// error, never a NaN or an infinity, by the rule of
    /// [`TripletCriterion::try_forward_checked`]: a NaN or infinite entry is
    /// [`MetricLossError::NonFinite`] naming the argument (`"a"` or `"b"`),
    /// its row and column; a distance that overflows `f32` from finite
    /// embeddings is `NonFinite` with `what = "distances"`, the pair as
    /// `row`, column 0; a reduction that overflows is `what = "loss"`.
    /// Costs one `O(N·D)` host scan per argument.
    ///
    /// ```
    /// use metric_loss_core::prelude::*;
    /// let dev = Cpu::default();
    /// let a = dev.tensor([[0.0f32, 0.0], [f32::NAN, 1.0]]);
    /// let b = dev.tensor([[1.0f32, 0.0], [0.0, 1.0]]);
    /// let y = PairLabels::from_similar(&[true, false]);
    /// assert!(matches!(
    ///     ContrastiveLoss.try_forward_checked(a, b.clone(), &y),
    ///     Err(MetricLossError::NonFinite { what: "a", row: 1, column: 0, .. })
    /// ));
    /// let far = dev.tensor([[0.0f32, 0.0], [0.0, -2e20]]);
    /// assert!(matches!(
    ///     ContrastiveLoss.try_forward_checked(far, b, &y),
    ///     Err(MetricLossError::NonFinite { what: "distances", row: 1, column: 0, .. })
    /// ));
    /// ```
    fn try_forward_checked<B, const D: usize, Dev, T, TB>(
        &self,
        a: Rows<B, D, Dev, T>,
        b: Rows<B, D, Dev, TB>,
        labels: &PairLabels,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev> + Merge<TB>,
        TB: Tape<f32, Dev>,
    {
        check_finite("a", &a)?;
        check_finite("b", &b)?;
        let margin = check_pairs(&a, &b, labels, self.margin())?;
        let (d, y) = pair_distances::<Self, B, D, Dev, T, TB>(a, b, labels)
            .map_err(MetricLossError::device)?;
        check_distances(0, &d)?;
        let loss = Self::try_from_distances(margin, d, y).map_err(MetricLossError::device)?;
        check_loss(&loss)?;
        Ok(loss)
    }

    /// The loss of the pairs `miner` finds in one batch of embeddings with
    /// class labels (pairs of equal labels are similar), gathered from one
    /// distance matrix on the tape.
    ///
    /// A batch where nothing can be mined gives a zero loss whose gradient is
    /// zeros. Errors: an empty batch, a label count that is not the batch
    /// size, and [`MetricLossError::NonFinite`] (`what = "distances"`) when an
    /// embedding holds a NaN or an infinite value, found by
    /// [`DistanceMatrix::new`] on the host copy the miners read.
    fn try_mined<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>, M: PairMiner>(
        &self,
        miner: &M,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Mined<Tensor<Self::Output<usize>, f32, Dev, T>>, MetricLossError> {
        check_labelled_batch(&embeddings, labels)?;
        let margin = check_margin(self.margin())?;
        let dev = embeddings.device().clone();
        let dist = Self::try_embed(embeddings)
            .and_then(Self::try_distance_matrix)
            .map_err(MetricLossError::device)?;
        let host = host_matrix(&dist)?;
        let pairs: Vec<IndexPair> =
            miner.try_mine_pairs(&host, labels, Self::SPEC.pos_margin, margin)?;
        let stats =
            MinerStats::try_for_pairs(&host, labels, &pairs, Self::SPEC.pos_margin, margin)?;
        let run = || -> Result<_, Dev::Err> {
            let flags: Vec<f32> = pairs
                .iter()
                .map(|p| if p.similar { 0.0 } else { 1.0 })
                .collect();
            let y = dev.try_tensor_from_vec(flags, (pairs.len(),))?;
            let d = gather_entries(dist, pairs.iter().map(|p| (p.a, p.b)))?;
            Self::try_from_distances(margin, d, y)
        };
        let loss = run().map_err(MetricLossError::device)?;
        Ok(Mined { loss, stats })
    }

    /// [`try_mined`](Self::try_mined), panicking with the error's message.
    #[track_caller]
    fn mined<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>, M: PairMiner>(
        &self,
        miner: &M,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Mined<Tensor<Self::Output<usize>, f32, Dev, T>> {
        unwrap_or_panic(self.try_mined(miner, embeddings, labels))
    }
}

impl<L: TripletCriterion> TripletCriterion for Margined<L> {
    type Output<B: Dim> = L::Output<B>;
    const SPEC: LossSpec = L::SPEC;
    fn margin(&self) -> f32 {
        self.margin
    }
    fn try_from_distances<B: Dim, Dev: MetricDevice, T: Tape<f32, Dev>>(
        margin: f32,
        d_ap: Col<B, Dev, T>,
        d_an: Col<B, Dev, T>,
        d_pn: Option<Col<B, Dev, T>>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err> {
        L::try_from_distances(margin, d_ap, d_an, d_pn)
    }
    fn with_margin(self, margin: f32) -> Result<Margined<Self>, MetricLossError> {
        Ok(Margined {
            margin: check_margin(margin)?,
            loss: self,
        })
    }
}

impl<L: PairCriterion> PairCriterion for Margined<L> {
    type Output<B: Dim> = L::Output<B>;
    const SPEC: LossSpec = L::SPEC;
    fn margin(&self) -> f32 {
        self.margin
    }
    fn try_from_distances<B: Dim, Dev: MetricDevice, T: Tape<f32, Dev>>(
        margin: f32,
        d: Col<B, Dev, T>,
        dissimilar: Tensor<(B,), f32, Dev>,
    ) -> Result<Tensor<Self::Output<B>, f32, Dev, T>, Dev::Err> {
        L::try_from_distances(margin, d, dissimilar)
    }
}
