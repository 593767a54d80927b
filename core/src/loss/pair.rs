//! Pair (contrastive) losses: the formula from `d` and `Y`, the explicit
//! path, and the pair family's glue.

use super::explicit::{absorb, embed_other};
use super::{
    Col, Family, LossSpec, Margined, MetricLoss, Mined, Rows, Square, check_distances,
    check_finite, check_label_count, check_loss, check_margin, check_rows, check_same,
    distance_matrix_and_host, gather_entries,
};
use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use crate::labels::PairLabels;
use crate::miners::{DistanceMatrix, IndexPair, MinerStats, MiningMargins, PairMiner};
use dfdx::prelude::*;
use dfdx::tensor::Merge;

/// A pair (contrastive) loss declared with `#[metric_loss(pair, ...)]`.
///
/// Labels are [`PairLabels`], built from words (`Pair::Similar`,
/// `from_similar`, `from_dissimilar`, `from_classes`), never a bare 0/1 whose
/// meaning could be flipped silently. [`mined`](Self::mined) mines a batch
/// with a [`PairMiner`](crate::miners::PairMiner) (pairs of equal labels are
/// similar).
///
/// # Non-finite embeddings
///
/// As for [`TripletCriterion`](super::TripletCriterion):
/// [`try_forward`](Self::try_forward) does not scan its arguments (no
/// `O(N·D)` host copy on the hot path), so a NaN embedding gives a NaN loss;
/// [`try_forward_checked`](Self::try_forward_checked) returns
/// [`MetricLossError::NonFinite`] instead (also for distances that overflow
/// `f32` from finite embeddings: a finite loss or an error), and
/// [`try_mined`](Self::try_mined) always does.
pub trait PairCriterion: MetricLoss<Family = PairFamily> {
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
        let margin = check_pair_margin(margin, Self::SPEC.pos_margin)?;
        Ok(Margined { loss: self, margin })
    }

    super::mined_methods!(
        PairMiner,
        Self::Output<usize>,
        "pairs",
        "use metric_loss_core::prelude::*;\nlet dev = Cpu::default();\nlet x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();\nlet m = ContrastiveLoss.mined(&HardPairs, x.leaky_trace(), &[0, 0, 1, 1, 2, 2]);\nassert!(m.stats.pairs <= 15);"
    );

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
    /// [`TripletCriterion::try_forward_checked`](super::TripletCriterion::try_forward_checked):
    /// a NaN or infinite entry is [`MetricLossError::NonFinite`] naming the
    /// argument (`"a"` or `"b"`), its row and column; a distance that
    /// overflows `f32` from finite embeddings is `NonFinite` with `what =
    /// "distances"`, the pair as `row`, column 0; a reduction that overflows
    /// is `what = "loss"`. Costs one `O(N·D)` host scan per argument.
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
    check_label_count(labels.len(), n)?;
    check_margin(margin)
}

/// The distances of explicit pairs on `a`'s tape (`b`'s merged into it),
/// and the labels as a `Y` vector (1 = dissimilar).
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
    let (a, b) = absorb(a, b);
    let b = embed_other::<L, B, D, Dev, T>(&L::SPEC, b)?;
    Ok((L::try_distance(L::try_embed(a)?, b)?, y))
}

/// A pair loss's margin: finite, `>= 0`, and above a positive `pos_margin`.
fn check_pair_margin(margin: f32, pos_margin: f32) -> Result<f32, MetricLossError> {
    let margin = check_margin(margin)?;
    if pos_margin > 0.0 && margin <= pos_margin {
        return Err(MetricLossError::InvalidMargin { value: margin });
    }
    Ok(margin)
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

/// The family of [`PairCriterion`] losses: mined with a
/// [`PairMiner`](crate::miners::PairMiner), statistics per pair, the mined
/// distances gathered from the batch's matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairFamily;

impl<L: PairCriterion> Family<L> for PairFamily {
    type Tuples = Vec<IndexPair>;
    type Output = L::Output<usize>;
    /// The positive and the (negative) margin.
    type Params = MiningMargins;

    fn try_params(loss: &L) -> Result<MiningMargins, MetricLossError> {
        Ok(MiningMargins {
            pos_margin: L::SPEC.pos_margin,
            margin: check_margin(loss.margin())?,
        })
    }

    fn margins(m: &MiningMargins) -> MiningMargins {
        *m
    }

    fn try_matrix<N, const D: usize, Dev, T>(
        _: &MiningMargins,
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
        _: &MiningMargins,
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
        m: &MiningMargins,
        host: &DistanceMatrix,
        labels: &[usize],
        pairs: &Vec<IndexPair>,
    ) -> Result<MinerStats, MetricLossError> {
        MinerStats::try_for_pairs(host, labels, pairs, m.pos_margin, m.margin)
    }

    fn try_loss<R, C, Dev, T>(
        m: &MiningMargins,
        dist: Tensor<(R, C), f32, Dev, T>,
        pairs: &Vec<IndexPair>,
        _: &[usize],
    ) -> Result<Tensor<Self::Output, f32, Dev, T>, MetricLossError>
    where
        R: Dim,
        C: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        let dev = dist.device().clone();
        let run = || -> Result<_, Dev::Err> {
            let flags: Vec<f32> = pairs
                .iter()
                .map(|p| if p.similar { 0.0 } else { 1.0 })
                .collect();
            let y = dev.try_tensor_from_vec(flags, (pairs.len(),))?;
            let d = gather_entries(dist, pairs.iter().map(|p| (p.a, p.b)))?;
            L::try_from_distances(m.margin, d, y)
        };
        run().map_err(MetricLossError::device)
    }
}
