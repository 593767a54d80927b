//! Triplet losses: the formula from `d(A,P)`, `d(A,N)` (and `d(P,N)` for
//! `swap`), the explicit path, and the triplet family's glue.

use super::explicit::{absorb, embed_other};
use super::{
    Col, Family, Fused, LossSpec, Margined, MetricLoss, Mined, Rows, Square, check_distances,
    check_finite, check_loss, check_margin, check_rows, check_same, distance_matrix_and_host,
    gather_entries,
};
use crate::device::{FusedBatchHard, MetricDevice};
use crate::error::{MetricLossError, unwrap_or_panic};
use crate::miners::{
    DistanceMatrix, Fusable, Miner, MinerStats, MiningMargins, Triplet, TripletMiner,
};
use dfdx::prelude::*;
use dfdx::tensor::Merge;

/// A triplet loss declared with `#[metric_loss(triplet, ...)]`.
///
/// The macro implements [`MetricSpace`](super::MetricSpace), [`MetricLoss`]
/// and the `try_from_distances` item from the spec; the other methods are
/// provided, and [`mined`](Self::mined) mines a batch with a
/// [`TripletMiner`](crate::miners::TripletMiner). Bring it into scope with
/// `use metric_loss::prelude::*`.
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
pub trait TripletCriterion: MetricLoss<Family = TripletFamily> {
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

    super::mined_methods!(
        TripletMiner,
        Self::Output<usize>,
        "triplets",
        "use metric_loss_core::prelude::*;\nlet dev = Cpu::default();\nlet x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();\nlet m = TripletLoss.mined(&BatchHard, x.leaky_trace(), &[0, 0, 1, 1, 2, 2]);\nassert_eq!(m.stats.triplets, 6);\nlet _ = m.loss.backward();"
    );

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

/// `d(A,P)`, `d(A,N)` and (for `swap`) `d(P,N)` of explicit triplets, on
/// the anchor's tape with the other two merged into it.
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
    let (anchor, positive) = absorb(anchor, positive);
    let (anchor, negative) = absorb(anchor, negative);
    // The anchor is used twice: the tape rides on one use, the other is a
    // tape-less handle with the same id (no op sees it twice).
    let (a, a_tape) = L::try_embed(anchor)?.split_tape();
    let p = embed_other::<L, B, D, Dev, T>(&L::SPEC, positive)?;
    let n = embed_other::<L, B, D, Dev, T>(&L::SPEC, negative)?;
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
}

/// The family of [`TripletCriterion`] losses: mined with a
/// [`TripletMiner`](crate::miners::TripletMiner), statistics per triplet,
/// the three distances gathered from the batch's matrix. On the CPU,
/// [`BatchHard`](crate::miners::BatchHard) with the Euclidean distance (and
/// no `swap`) is one fused pass with an `O(N·D)` backward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TripletFamily;

impl<L: TripletCriterion> Family<L> for TripletFamily {
    type Tuples = Vec<Triplet>;
    type Output = L::Output<usize>;
    /// The margin.
    type Params = f32;

    fn try_params(loss: &L) -> Result<f32, MetricLossError> {
        check_margin(loss.margin())
    }

    fn margins(margin: &f32) -> MiningMargins {
        MiningMargins {
            pos_margin: 0.0,
            margin: *margin,
        }
    }

    fn try_fused<N, const D: usize, Dev, T, M>(
        margin: &f32,
        miner: &M,
        x: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Fused<Rows<N, D, Dev, T>, Tensor<Self::Output, f32, Dev, T>>, MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<Vec<Triplet>> + ?Sized,
    {
        let spec = L::SPEC;
        let x = L::try_embed(x).map_err(MetricLossError::device)?;
        if spec.distance != "euclidean" || spec.swap || miner.fusable() != Fusable::BatchHard {
            return Ok(Fused::Unavailable(x));
        }
        match Dev::try_batch_hard_euclidean(x, labels, spec.squared, *margin)? {
            FusedBatchHard::Done {
                d_ap, d_an, stats, ..
            } => {
                let loss = L::try_from_distances(*margin, d_ap, d_an, None)
                    .map_err(MetricLossError::device)?;
                Ok(Fused::Done(Mined { loss, stats }))
            }
            FusedBatchHard::Unavailable(x) => Ok(Fused::Unavailable(x)),
        }
    }

    fn try_matrix<N, const D: usize, Dev, T>(
        _: &f32,
        x: Rows<N, D, Dev, T>,
    ) -> Result<(Square<N, Dev, T>, DistanceMatrix), MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        distance_matrix_and_host::<L, N, D, Dev, T>(x, L::SPEC.units(D))
    }

    fn try_matrix_against<B, M, const D: usize, Dev, T>(
        _: &f32,
        x: Rows<B, D, Dev, T>,
        memory: &Tensor<(M, Const<D>), f32, Dev>,
        memory_labels: &[usize],
    ) -> Result<(Tensor<(B, M), f32, Dev, T>, DistanceMatrix), MetricLossError>
    where
        B: Dim,
        M: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        super::distance_matrix_against::<L, B, M, D, Dev, T>(&L::SPEC, x, memory, memory_labels)
    }

    fn try_stats(
        margin: &f32,
        host: &DistanceMatrix,
        labels: &[usize],
        triplets: &Vec<Triplet>,
    ) -> Result<MinerStats, MetricLossError> {
        MinerStats::try_new(host, labels, triplets, *margin)
    }

    fn try_loss<R, C, Dev, T>(
        margin: &f32,
        dist: Tensor<(R, C), f32, Dev, T>,
        triplets: &Vec<Triplet>,
        _: &[usize],
    ) -> Result<Tensor<Self::Output, f32, Dev, T>, MetricLossError>
    where
        R: Dim,
        C: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        let run = || -> Result<_, Dev::Err> {
            // Three gathers read one matrix: unary ops, so sharing its id is
            // fine; the main tape rides on the first.
            let (dist, tape) = dist.split_tape();
            let pick = |m: Tensor<(R, C), f32, Dev, T>, f: fn(&Triplet) -> (usize, usize)| {
                gather_entries(m, triplets.iter().map(f))
            };
            let d_ap = pick(dist.clone().put_tape(tape), |t| (t.anchor, t.positive))?;
            let d_an = pick(dist.retaped::<T>(), |t| (t.anchor, t.negative))?;
            let d_pn = if L::SPEC.swap {
                Some(pick(dist.retaped::<T>(), |t| (t.positive, t.negative))?)
            } else {
                None
            };
            L::try_from_distances(*margin, d_ap, d_an, d_pn)
        };
        run().map_err(MetricLossError::device)
    }
}
