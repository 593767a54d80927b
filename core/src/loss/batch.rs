//! The ranking family (multi-similarity, NT-Xent, SupCon, circle, lifted
//! structure, N-pairs, margin): losses over every pair of a labelled batch,
//! each a [`BatchFormula`] on one matrix of the batch.

use super::{Family, Fused, MetricLoss, Mined, Rows, Square, host_matrix};
use crate::device::{FusedFormula, MetricDevice, Prepare};
use crate::error::{MetricLossError, unwrap_or_panic};
use crate::formulas::{BatchFormula, PairWeights, Score, Weighting, tape};
use crate::miners::{
    AllPairs, DistanceMatrix, Fusable, Miner, MinerStats, MiningMargins, PairMiner, Tuples, Units,
};
use crate::xbm::MemoryColumns;
use dfdx::prelude::*;

/// A loss of the ranking family, declared with `#[metric_loss(multi_similarity)]`,
/// `ntxent`, `supcon`, `circle`, `lifted_structure`,
/// `generalized_lifted_structure`, `npairs` or `margin_loss`: the built-ins
/// are [`MultiSimilarityLoss`](crate::losses::MultiSimilarityLoss) and its
/// siblings in [`losses`](crate::losses).
///
/// Its definitions are pytorch-metric-learning 2.9's, defaults included
/// (distance, normalization, reducer, pair forming, what a batch without
/// positive pairs gives): see each [`formula`](crate::formulas). It is
/// used like PML's: [`forward`](Self::forward)`(embeddings, labels)` takes
/// every pair of the batch (PML's no-miner call), and
/// [`mined`](Self::mined)`(&miner, embeddings, labels)` the pairs a
/// [`PairMiner`](crate::miners::PairMiner) gives (its [`Tuples`]:
/// [`AllPairs`] is the no-miner default, [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)
/// PML's usual companion of multi-similarity, and
/// [`DistanceWeightedMiner`](crate::miners::DistanceWeightedMiner) gives
/// triplets, as PML's does). Miner statistics and the collapse alarm are the
/// pair losses': the miner sees cosine distances `1 − s` for the losses on
/// cosine similarity, Euclidean distances for the others.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<8, 4>, f32, _> = dev.sample_normal();
/// let labels = [0, 0, 1, 1, 2, 2, 3, 3];
/// let loss = MultiSimilarityLoss.forward(x.leaky_trace(), &labels);
/// let grads = loss.backward();
/// assert!(grads.get(&x).as_vec().iter().all(|g| g.is_finite()));
/// let mined = MultiSimilarityLoss.mined(&MultiSimilarityMiner::default(), x.leaky_trace(), &labels);
/// println!("{} ({})", mined.loss.array(), mined.stats);
/// ```
pub trait BatchCriterion: MetricLoss<Family = BatchFamily> {
    /// The formula and its numbers.
    type Formula: BatchFormula;

    /// The formula in force (the declared numbers).
    fn formula(&self) -> Self::Formula;

    super::mined_methods!(
        PairMiner,
        (),
        "pairs (or triplets)",
        "use metric_loss_core::prelude::*;\nlet dev = Cpu::default();\nlet x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();\nlet miner = MultiSimilarityMiner::default();\nlet m = MultiSimilarityLoss.mined(&miner, x.leaky_trace(), &[0, 0, 1, 1, 2, 2]);\nassert!(m.loss.array().is_finite());"
    );

    /// The loss over every pair of the batch: PML's `loss(embeddings,
    /// labels)`, i.e. [`try_mined`](Self::try_mined) with [`AllPairs`].
    fn try_forward<N, const D: usize, Dev, T>(
        &self,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Tensor<(), f32, Dev, T>, MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        Ok(self.try_mined(&AllPairs, embeddings, labels)?.loss)
    }

    /// [`try_forward`](Self::try_forward), panicking with the error's message.
    #[track_caller]
    fn forward<N, const D: usize, Dev, T>(
        &self,
        embeddings: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Tensor<(), f32, Dev, T>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        unwrap_or_panic(self.try_forward(embeddings, labels))
    }
}

/// The family of [`BatchCriterion`] losses: mined with a
/// [`PairMiner`](crate::miners::PairMiner) into [`Tuples`], the formula's
/// matrix once on the tape ([`Score`]), pair weights from the tuples
/// ([`PairWeights`]), then the formula, through
/// [`MetricDevice::try_batch_formula`] (the CPU runs its row form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchFamily;

impl<L: BatchCriterion> Family<L> for BatchFamily {
    type Tuples = Tuples;
    type Output = ();
    type Params = L::Formula;

    fn try_params(loss: &L) -> Result<L::Formula, MetricLossError> {
        let f = loss.formula();
        f.check()?;
        Ok(f)
    }

    fn margins(f: &L::Formula) -> MiningMargins {
        f.margins()
    }

    /// [`AllPairs`] (PML's no-miner call) is one fused pass where the device
    /// has a kernel ([`MetricDevice::try_fused_batch_formula`]: the CPU's,
    /// every formula): no `N × N` matrix on the tape, no
    /// host copy of it, and the embeddings normalized inside the pass
    /// ([`Prepare::L2Normalize`]) rather than by a tape op of their own.
    fn try_fused<N, const D: usize, Dev, T, M>(
        f: &L::Formula,
        miner: &M,
        x: Rows<N, D, Dev, T>,
        labels: &[usize],
    ) -> Result<Fused<Rows<N, D, Dev, T>, Tensor<(), f32, Dev, T>>, MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<Tuples> + ?Sized,
    {
        type F<L> = <L as BatchCriterion>::Formula;
        let weighting = F::<L>::WEIGHTING;
        let w = match miner.fusable() {
            Fusable::AllPairs => PairWeights::try_new(weighting, &Tuples::All, labels)?,
            // the miner's pairs, once each: weights 1 under masks and counts alike
            Fusable::MultiSimilarity { epsilon }
                if matches!(weighting, Weighting::Mask | Weighting::Count) && !F::<L>::SHARED =>
            {
                PairWeights::try_new(weighting, &Tuples::All, labels)?
                    .with_multi_similarity_miner(epsilon)
            }
            _ => {
                return Ok(Fused::Unavailable(
                    L::try_embed(x).map_err(MetricLossError::device)?,
                ));
            }
        };
        // the kernel normalizes the raw rows itself where the loss's
        // `try_embed` is exactly that; it is given `try_embed`'s rows else
        let (x, prepare) = if L::L2_NORMALIZES {
            (x, Prepare::L2Normalize)
        } else {
            (
                L::try_embed(x).map_err(MetricLossError::device)?,
                Prepare::AsGiven,
            )
        };
        match Dev::try_fused_batch_formula(x, labels, &w, f, prepare)? {
            FusedFormula::Done { loss, stats } => Ok(Fused::Done(Mined { loss, stats })),
            FusedFormula::Unavailable(x) if prepare == Prepare::L2Normalize => Ok(
                Fused::Unavailable(L::try_embed(x).map_err(MetricLossError::device)?),
            ),
            FusedFormula::Unavailable(x) => Ok(Fused::Unavailable(x)),
        }
    }

    /// [`AllPairs`] and [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)
    /// against a memory are one fused pass where the device has a kernel
    /// ([`MetricDevice::try_fused_batch_formula_against`]: the CPU's): no
    /// `B × M` matrix on the tape, no host copy of it, no pair list.
    fn try_fused_against<B, const D: usize, Dev, T, M>(
        f: &L::Formula,
        miner: &M,
        x: Rows<B, D, Dev, T>,
        labels: &[usize],
        memory: &MemoryColumns<'_>,
    ) -> Result<Fused<Rows<B, D, Dev, T>, Tensor<(), f32, Dev, T>>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<Tuples> + ?Sized,
    {
        let rule = miner.fusable();
        if !matches!(rule, Fusable::AllPairs | Fusable::MultiSimilarity { .. }) {
            return Ok(Fused::Unavailable(x));
        }
        match Dev::try_fused_batch_formula_against(x, labels, memory, rule, f)? {
            FusedFormula::Done { loss, stats } => Ok(Fused::Done(Mined { loss, stats })),
            FusedFormula::Unavailable(x) => Ok(Fused::Unavailable(x)),
        }
    }

    fn try_matrix<N, const D: usize, Dev, T>(
        _: &L::Formula,
        x: Rows<N, D, Dev, T>,
    ) -> Result<(Square<N, Dev, T>, DistanceMatrix), MetricLossError>
    where
        N: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        score_matrix_and_host::<L::Formula, N, D, Dev, T>(x)
    }

    fn try_matrix_against<B, M, const D: usize, Dev, T>(
        _: &L::Formula,
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
        type F<L> = <L as BatchCriterion>::Formula;
        if F::<L>::SHARED || F::<L>::WEIGHTING == Weighting::NPairs {
            return Err(MetricLossError::InvalidConfig(format!(
                "{} does not read a batch against a reference set (cross-batch memory): \
                 its rows share numbers across the batch's own columns",
                F::<L>::NAME
            )));
        }
        let (rows, cols) = (x.shape().0.size(), memory.shape().0.size());
        let against = |d: Vec<f32>, units| {
            Ok::<_, MetricLossError>(
                DistanceMatrix::against(rows, cols, d, memory_labels.to_vec())?.with_units(units),
            )
        };
        match F::<L>::SCORE {
            Score::Cosine => {
                // rows and memory are unit length (the family normalizes)
                let s = Dev::try_cross_gram(x, memory).map_err(MetricLossError::device)?;
                let d = s
                    .as_vec()
                    .iter()
                    .map(|&v| (1.0 - v).clamp(0.0, 2.0))
                    .collect();
                let host = against(d, Units::Cosine { dim: D })?;
                Ok((s, host))
            }
            Score::UnitEuclidean => {
                let s = crate::distance::euclidean_against(x, memory, false)
                    .map_err(MetricLossError::device)?;
                let units = Units::UnitEuclidean {
                    dim: D,
                    squared: false,
                };
                let host = against(s.as_vec(), units)?;
                Ok((s, host))
            }
        }
    }

    fn try_stats(
        f: &L::Formula,
        host: &DistanceMatrix,
        labels: &[usize],
        tuples: &Tuples,
    ) -> Result<MinerStats, MetricLossError> {
        let m = f.margins();
        MinerStats::try_for_tuples(host, labels, tuples, m.pos_margin, m.margin)
    }

    fn try_loss<R, C, Dev, T>(
        f: &L::Formula,
        s: Tensor<(R, C), f32, Dev, T>,
        tuples: &Tuples,
        labels: &[usize],
    ) -> Result<Tensor<(), f32, Dev, T>, MetricLossError>
    where
        R: Dim,
        C: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
    {
        let (r, c) = (s.shape().0.size(), s.shape().1.size());
        let weighting = <L::Formula as BatchFormula>::WEIGHTING;
        let w = PairWeights::try_new_sized(weighting, tuples, labels, c)?;
        let run = || -> Result<_, Dev::Err> {
            let s = s.try_reshape_like(&(r, c))?;
            if f.is_zero(w.sizes()) {
                return tape::zero(s);
            }
            Dev::try_batch_formula(s, &w, f)
        };
        run().map_err(MetricLossError::device)
    }
}

/// The matrix a formula reads, on the tape, from prepared (normalized)
/// embeddings, and the host distance matrix its miner reads: `1 − s`
/// ([`Units::Cosine`]) for a similarity, the distances themselves
/// ([`Units::UnitEuclidean`]) otherwise.
pub(crate) fn score_matrix_and_host<F, N, const D: usize, Dev, T>(
    x: Rows<N, D, Dev, T>,
) -> Result<(Square<N, Dev, T>, DistanceMatrix), MetricLossError>
where
    F: BatchFormula,
    N: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
{
    match F::SCORE {
        Score::Cosine => {
            let s = crate::distance::gram(x).map_err(MetricLossError::device)?;
            let sim = host_matrix(&s)?;
            let n = sim.n();
            let mut d: Vec<f32> = sim
                .as_slice()
                .iter()
                .map(|&v| (1.0 - v).clamp(0.0, 2.0))
                .collect();
            for i in 0..n {
                d[i * n + i] = 0.0;
            }
            Ok((
                s,
                DistanceMatrix::new(n, d)?.with_units(Units::Cosine { dim: D }),
            ))
        }
        Score::UnitEuclidean => {
            let s = Dev::try_euclidean_matrix(x, false).map_err(MetricLossError::device)?;
            let host = host_matrix(&s)?.with_units(Units::UnitEuclidean {
                dim: D,
                squared: false,
            });
            Ok((s, host))
        }
    }
}
