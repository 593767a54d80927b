//! Cross-batch memory (XBM): mining each batch against the embeddings of
//! the batches before it.
//!
//! # Why
//!
//! A miner only sees the batch it is given, so the batch size bounds how
//! hard its negatives can be: with 80 rows of 10 classes, each anchor has 72
//! negatives to choose from. Once a network has trained for a while its
//! embeddings drift slowly, so the embeddings of the last few hundred batches
//! are still good stand-ins for the current ones. *Cross-batch memory*
//! (Wang, Zhang, Huang & Scott, "Cross-Batch Memory for Embedding Learning",
//! CVPR 2020; pytorch-metric-learning's `CrossBatchMemory`) keeps them in a
//! queue of `M` entries and mines every batch against the whole queue: an
//! effective batch of `M` for the price of `M × D` floats and a `B × M`
//! matrix, with no extra forward pass.
//!
//! # When
//!
//! With many classes and small batches (retrieval datasets with thousands
//! of classes, where a batch holds few positives and hardly any hard
//! negatives), the paper reports large gains. With few, large classes
//! (MNIST's ten) a batch already holds hard negatives and the gain is small.
//! The memory's entries were made by older weights: start with a memory of
//! a few batches, or after a warm-up, if the embedding moves fast early on.
//!
//! # Semantics (pytorch-metric-learning 2.9's)
//!
//! 1. The batch is enqueued first, detached: the oldest entries leave, and
//!    the ring wraps.
//! 2. Each batch row is then an anchor against the whole memory, which now
//!    holds the batch's own detached copies; a row's pair with its own copy
//!    is removed from what the miner gives (PML's `remove_self_comparisons`:
//!    positive pairs and triplets whose positive is the anchor's copy).
//! 3. The memory carries no gradient: the batch gets its gradient through
//!    the anchor side only.
//! 4. The miner sees the `B × M` matrix (batch, memory), as PML's miners
//!    see `(embeddings, ref_emb)`: [`DistanceMatrix::against`].
//!
//! # Speed
//!
//! On the CPU, the ranking family with [`AllPairs`](crate::miners::AllPairs)
//! (PML's no-miner call) or [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)
//! runs as one fused pass over blocks of the `B × M` matrix
//! ([`MetricDevice::try_fused_batch_formula_against`]): no matrix on the
//! tape, no host copy, no pair list. Other losses and miners, and other
//! devices, take the mined path on the `B × M` matrix; both give the same
//! loss, gradient and statistics.
//!
//! The memory holds the embeddings as the loss prepares them (unit length
//! for a loss that normalizes), which gives the same distances as PML's
//! raw memory normalized at each use.
//!
//! Losses: every triplet loss (with a [`TripletMiner`](crate::miners::TripletMiner)),
//! every pair loss and the ranking family (with a [`PairMiner`]), except the
//! lifted structure and N-pairs losses, whose rows read the batch's own
//! columns ([`MetricLossError::InvalidConfig`]). Miners: [`BatchHard`](crate::miners::BatchHard),
//! [`BatchAll`](crate::miners::BatchAll), [`AllPairs`](crate::miners::AllPairs),
//! [`HardPairs`](crate::miners::HardPairs) and [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner);
//! `SemiHard` and `DistanceWeightedMiner` return `InvalidConfig`.

use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use crate::loss::{Family, Fused, MetricLoss, MinedLoss, try_mined_matrix};
use crate::miners::{DistanceMatrix, Miner, SelfPairs};
use dfdx::prelude::*;

/// A cross-batch memory as the columns of the matrix a batch is mined
/// against, on the host: what a device's fused kernel reads
/// ([`Family::try_fused_against`](crate::loss::Family::try_fused_against),
/// [`MetricDevice::try_fused_batch_formula_against`]). The batch is
/// already enqueued, so every batch row has its own column.
///
/// ```
/// use metric_loss_core::xbm::MemoryColumns;
/// // two entries of width 2; batch row 0 is entry 1
/// let m = MemoryColumns::try_new(&[1.0, 0.0, 0.0, 1.0], 2, &[3, 4], &[1]).unwrap();
/// assert_eq!((m.len(), m.dim()), (2, 2));
/// assert_eq!(m.own_column(0), 1);
/// // an own column outside the memory
/// assert!(MemoryColumns::try_new(&[1.0, 0.0], 2, &[3], &[1]).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MemoryColumns<'a> {
    rows: &'a [f32],
    dim: usize,
    labels: &'a [usize],
    own: &'a [usize],
}

impl<'a> MemoryColumns<'a> {
    /// The entries `rows` (row-major, `labels.len() × dim`), their labels,
    /// and `own[i]`, the column of batch row `i`'s own copy.
    ///
    /// Errors: [`MetricLossError::InvalidConfig`] when the sizes do not
    /// match or an own column is out of range.
    pub fn try_new(
        rows: &'a [f32],
        dim: usize,
        labels: &'a [usize],
        own: &'a [usize],
    ) -> Result<Self, MetricLossError> {
        let fits = labels.len().checked_mul(dim) == Some(rows.len());
        if !fits || own.iter().any(|&c| c >= labels.len()) {
            return Err(MetricLossError::InvalidConfig(format!(
                "memory columns: {} values for {} entries of width {dim}, own columns {own:?}",
                rows.len(),
                labels.len()
            )));
        }
        Ok(Self {
            rows,
            dim,
            labels,
            own,
        })
    }

    /// The entries, row-major (`len() × dim()`).
    pub fn rows(&self) -> &'a [f32] {
        self.rows
    }

    /// The width of an entry.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of entries (columns).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The entries' labels.
    pub fn labels(&self) -> &'a [usize] {
        self.labels
    }

    /// The column of each batch row's own copy.
    pub fn own_columns(&self) -> &'a [usize] {
        self.own
    }

    /// The column of batch row `i`'s own copy. Panics if `i` is not a row.
    pub fn own_column(&self, i: usize) -> usize {
        self.own[i]
    }
}

/// A loss `L` mined against a memory of the last `memory_size` embeddings
/// of width `D` (see the [module docs](self) for why, when, and the exact
/// semantics, which are pytorch-metric-learning 2.9's `CrossBatchMemory`).
///
/// The memory grows as batches arrive (at most `memory_size × D` floats);
/// nothing is allocated up front, so a large `memory_size` costs only what
/// is stored.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let mut xbm = CrossBatchMemory::<_, 4>::new(MultiSimilarityLoss, 16);
/// let miner = MultiSimilarityMiner::default();
/// for step in 0..3 {
///     let x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();
///     let labels = [0, 0, 1, 1, 2, 2];
///     let mined = xbm.mined(&miner, x.leaky_trace(), &labels);
///     let grads = mined.loss.backward();
///     assert!(grads.get(&x).as_vec().iter().all(|g| g.is_finite()));
///     assert_eq!(xbm.len(), (6 * (step + 1)).min(16));
/// }
/// // typed errors: a memory of 0, a wrong label count, a batch larger than the memory
/// assert!(CrossBatchMemory::<_, 4>::try_new(TripletLoss, 0).is_err());
/// let x: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();
/// assert!(matches!(
///     xbm.try_mined(&miner, x.clone(), &[0, 1]),
///     Err(MetricLossError::LabelCount { labels: 2, batch: 6 })
/// ));
/// let mut small = CrossBatchMemory::<_, 4>::new(TripletLoss, 4);
/// assert!(matches!(
///     small.try_mined(&BatchHard, x, &[0, 0, 1, 1, 2, 2]),
///     Err(MetricLossError::MemoryTooSmall { batch: 6, memory: 4 })
/// ));
/// xbm.reset();
/// assert!(xbm.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct CrossBatchMemory<L, const D: usize> {
    loss: L,
    size: usize,
    /// `len() × D` prepared embeddings, slot by slot.
    embeddings: Vec<f32>,
    /// `len()` labels, slot by slot.
    labels: Vec<usize>,
    /// The next slot to write (PML's `queue_idx`).
    next: usize,
}

impl<L, const D: usize> CrossBatchMemory<L, D> {
    /// A memory of `memory_size` embeddings for `loss`.
    ///
    /// Errors: [`MetricLossError::MemorySize`] for `memory_size == 0` or a
    /// `memory_size × D` that overflows what a `Vec<f32>` can address.
    pub fn try_new(loss: L, memory_size: usize) -> Result<Self, MetricLossError> {
        let fits = memory_size
            .checked_mul(D.max(1))
            .and_then(|v| v.checked_mul(std::mem::size_of::<f32>()))
            .is_some_and(|bytes| bytes <= isize::MAX as usize);
        if memory_size == 0 || !fits {
            return Err(MetricLossError::MemorySize {
                size: memory_size,
                dim: D,
            });
        }
        Ok(Self {
            loss,
            size: memory_size,
            embeddings: Vec::new(),
            labels: Vec::new(),
            next: 0,
        })
    }

    /// [`try_new`](Self::try_new), panicking with the error's message.
    #[track_caller]
    pub fn new(loss: L, memory_size: usize) -> Self {
        unwrap_or_panic(Self::try_new(loss, memory_size))
    }

    /// The wrapped loss.
    pub fn loss(&self) -> &L {
        &self.loss
    }

    /// The memory size `M`.
    pub fn memory_size(&self) -> usize {
        self.size
    }

    /// The number of embeddings held: everything enqueued so far, up to `M`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether nothing has been enqueued since creation or [`reset`](Self::reset).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Empties the memory (PML's `reset_queue`); its storage is freed.
    pub fn reset(&mut self) {
        self.embeddings = Vec::new();
        self.labels = Vec::new();
        self.next = 0;
    }

    /// The memory's prepared embeddings (row-major, `len() × D`) and labels,
    /// in slot order: the columns of the matrix the miner sees.
    pub fn memory(&self) -> (&[f32], &[usize]) {
        (&self.embeddings, &self.labels)
    }

    /// The slot the next enqueued row goes to (PML's `queue_idx`).
    pub fn next_slot(&self) -> usize {
        self.next
    }

    /// Writes `rows` (`labels.len() × D`, prepared, detached) at the ring's
    /// head and returns the slot of each row.
    fn enqueue(&mut self, rows: &[f32], labels: &[usize]) -> Vec<usize> {
        let mut slots = Vec::with_capacity(labels.len());
        for (row, &label) in rows.chunks_exact(D.max(1)).zip(labels) {
            let slot = self.next;
            if slot == self.labels.len() {
                // still filling: the ring has not wrapped yet
                self.embeddings.extend_from_slice(&row[..D]);
                self.labels.push(label);
            } else {
                self.embeddings[slot * D..(slot + 1) * D].copy_from_slice(&row[..D]);
                self.labels[slot] = label;
            }
            slots.push(slot);
            self.next = (slot + 1) % self.size;
        }
        slots
    }
}

impl<L: MetricLoss, const D: usize> CrossBatchMemory<L, D> {
    /// Enqueues the batch, then returns the loss of what `miner` finds
    /// between the batch and the memory (which now holds the batch): the
    /// shared mined path of every loss ([`try_mined`](crate::loss::try_mined))
    /// on the `B × M` matrix, each row's pair with its own copy removed.
    /// The memory carries no gradient.
    ///
    /// Errors, before anything is enqueued: an empty batch, a label count
    /// that is not the batch size, a batch larger than the memory
    /// ([`MetricLossError::MemoryTooSmall`]), an invalid number of the loss,
    /// a NaN or infinite embedding ([`MetricLossError::NonFinite`], `what =
    /// "embeddings"`: it would stay in the memory for `M` rows). After:
    /// [`MetricLossError::InvalidConfig`] for a loss or miner that does not
    /// read a batch against a reference set (see the [module docs](self)).
    pub fn try_mined<B, Dev, T, M>(
        &mut self,
        miner: &M,
        embeddings: Tensor<(B, Const<D>), f32, Dev, T>,
        labels: &[usize],
    ) -> Result<MinedLoss<L, Dev, T>, MetricLossError>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<<L::Family as Family<L>>::Tuples> + ?Sized,
    {
        let rows = crate::loss::check_labelled_batch(&embeddings, labels)?;
        if rows > self.size {
            return Err(MetricLossError::MemoryTooSmall {
                batch: rows,
                memory: self.size,
            });
        }
        let params = L::Family::try_params(&self.loss)?;
        let x = L::try_embed(embeddings).map_err(MetricLossError::device)?;
        let prepared = x.as_vec();
        if let Some(pos) = prepared.iter().position(|v| !v.is_finite()) {
            return Err(MetricLossError::NonFinite {
                what: "embeddings",
                row: pos / D,
                column: pos % D,
                value: prepared[pos],
            });
        }
        let slots = self.enqueue(&prepared, labels);
        // the device's fused pass where it has one for this loss and miner
        let columns = MemoryColumns::try_new(&self.embeddings, D, &self.labels, &slots)?;
        let x = match L::Family::try_fused_against(&params, miner, x, labels, &columns)? {
            Fused::Done(mined) => return Ok(mined),
            Fused::Unavailable(x) => x,
        };
        let dev = x.device().clone();
        let memory = dev
            .try_tensor_from_vec(self.embeddings.clone(), (self.len(), Const::<D>))
            .map_err(MetricLossError::device)?;
        let (matrix, host): (_, DistanceMatrix) =
            L::Family::try_matrix_against(&params, x, &memory, &self.labels)?;
        try_mined_matrix::<L, _, _, _, _, _>(&params, miner, matrix, &host, labels, |t| {
            t.try_without_self(&slots)
        })
    }

    /// [`try_mined`](Self::try_mined), panicking with the error's message.
    #[track_caller]
    pub fn mined<B, Dev, T, M>(
        &mut self,
        miner: &M,
        embeddings: Tensor<(B, Const<D>), f32, Dev, T>,
        labels: &[usize],
    ) -> MinedLoss<L, Dev, T>
    where
        B: Dim,
        Dev: MetricDevice,
        T: Tape<f32, Dev>,
        M: Miner<<L::Family as Family<L>>::Tuples> + ?Sized,
    {
        unwrap_or_panic(self.try_mined(miner, embeddings, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::TripletLoss;

    #[test]
    fn ring_wraps_like_pml() {
        let mut m = CrossBatchMemory::<_, 1>::new(TripletLoss, 5);
        assert_eq!(m.enqueue(&[0.0, 1.0, 2.0], &[0, 1, 2]), [0, 1, 2]);
        assert_eq!(m.next_slot(), 3);
        // 3, 4, then wraps to 0
        assert_eq!(m.enqueue(&[3.0, 4.0, 5.0], &[3, 4, 5]), [3, 4, 0]);
        assert_eq!(
            m.memory(),
            (&[5.0, 1.0, 2.0, 3.0, 4.0][..], &[5, 1, 2, 3, 4][..])
        );
        assert_eq!(m.len(), 5);
        assert_eq!(m.next_slot(), 1);
        m.reset();
        assert_eq!((m.len(), m.next_slot()), (0, 0));
    }

    #[test]
    fn memory_size_is_validated() {
        assert_eq!(
            CrossBatchMemory::<_, 8>::try_new(TripletLoss, 0).unwrap_err(),
            MetricLossError::MemorySize { size: 0, dim: 8 }
        );
        assert!(matches!(
            CrossBatchMemory::<_, 8>::try_new(TripletLoss, usize::MAX / 4),
            Err(MetricLossError::MemorySize { .. })
        ));
        // a large but addressable memory allocates nothing up front
        let m = CrossBatchMemory::<_, 8>::try_new(TripletLoss, 1 << 40).unwrap();
        assert_eq!(m.len(), 0);
    }
}
