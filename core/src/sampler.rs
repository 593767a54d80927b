//! Batch samplers.
//!
//! Mining needs batches where every anchor has positives *and* negatives.
//! Random batches from a data set with many classes have almost no positive
//! pairs; the P x K sampler of Hermans et al. 2017 ("In Defense of the Triplet
//! Loss") builds every batch from `P` classes with `K` samples each instead,
//! so every row has `K - 1` positives and `(P - 1) K` negatives.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{MetricLossError, unwrap_or_panic};

/// Batches of `P` classes x `K` samples, drawn with a seeded RNG.
///
/// # One epoch
///
/// [`epoch`](PkSampler::epoch) makes one shuffled pass over the data:
///
/// 1. Each class's indices are shuffled and cut into chunks of `K`. A last
///    chunk shorter than `K` is topped up with other indices of the same
///    class, drawn without replacement (so a chunk never repeats an index
///    when the class has at least `K` samples). A class with fewer than `K`
///    samples gives one chunk: all its samples, topped up by drawing from
///    the class **with replacement** (the only case where a batch contains
///    the same index twice; the duplicates are at distance 0 from each other
///    and so are easy positives).
/// 2. Batches are filled greedily: each takes one chunk from each of the `P`
///    classes with the most chunks left (ties broken at random). When fewer
///    than `P` classes have chunks left, the batch is completed with other
///    random classes, each contributing a fresh random chunk (as in step 1).
///
/// So every sample of every used class appears **at least once** per epoch,
/// some (top-ups and completions) more than once, and the number of batches
/// is the smallest possible: `max(max_c chunks_c, ceil(sum_c chunks_c / P))`
/// ([`batches_per_epoch`](PkSampler::batches_per_epoch)).
///
/// Every batch has exactly `P * K` indices, made of `P` blocks of `K`: block
/// `b` is `batch[b * K..(b + 1) * K]`, all of one class, and the `P` classes
/// are distinct. The order of blocks is random.
///
/// # Classes with a single sample
///
/// are **left out**: such a sample can never have a positive other than a
/// copy of itself, which teaches nothing. They are never sampled;
/// [`num_skipped_samples`](PkSampler::num_skipped_samples) says how many.
///
/// # How large K may be
///
/// A `K` larger than a class tops that class up with repeats, which is fine
/// for a few small classes; a `K` far beyond every class (10⁸, say) would
/// make each epoch `P x K`-index batches of little but repeats, and the
/// index lists would grow with `K` until the allocation aborts the
/// process. So the size of one epoch (`batches_per_epoch() * P * K`
/// indices, known before any is drawn) is checked when the sampler is
/// made: it may be at most [`MAX_DRAWS_PER_SAMPLE`](Self::MAX_DRAWS_PER_SAMPLE)
/// (32) times the number of samples drawn from. One epoch draws every such
/// sample at least once and repeats only to top up classes smaller than
/// `K` and to complete batches, so realistic settings stay far below it
/// (the examples' 5 x 16 over 8,000 digits: about 1.0 draws a sample;
/// classes of only 2 samples with `K = 16`: about 8); past it the
/// sampler would mostly repeat itself, and memory stays linear in the
/// data set.
///
/// ```
/// use metric_loss_core::sampler::PkSampler;
/// use metric_loss_core::MetricLossError;
///
/// let labels: Vec<usize> = (0..40).map(|i| i % 10).collect(); // 10 classes of 4
/// assert!(PkSampler::try_new(&labels, 2, 16, 0).is_ok()); // 10 x 16 = 160 <= 32 x 40
/// assert!(matches!(
///     PkSampler::try_new(&labels, 2, 100_000_000, 0),
///     Err(MetricLossError::InvalidConfig(_))
/// ));
/// ```
///
/// # Determinism
///
/// The same labels, `P`, `K` and seed give the same sequence of epochs;
/// successive epochs differ from each other.
///
/// ```
/// use metric_loss_core::sampler::PkSampler;
///
/// let labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2];
/// let mut sampler = PkSampler::new(&labels, 2, 2, 42);
/// let epoch = sampler.epoch();
/// assert_eq!(epoch.len(), sampler.batches_per_epoch());
/// for batch in &epoch {
///     assert_eq!(batch.len(), 4);
///     assert_eq!(labels[batch[0]], labels[batch[1]]);
///     assert_ne!(labels[batch[0]], labels[batch[2]]);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct PkSampler {
    /// Indices of each used class (at least 2 each), ordered by label.
    classes: Vec<Vec<usize>>,
    skipped: usize,
    p: usize,
    k: usize,
    rng: StdRng,
}

impl PkSampler {
    /// A sampler over `labels` (one label per sample of the data set) making
    /// batches of `p` classes x `k` samples, seeded with `seed`.
    ///
    /// Errors:
    /// * [`MetricLossError::EmptyBatch`] (`what = "labels"`) if `labels` is
    ///   empty;
    /// * [`MetricLossError::InvalidConfig`] if `p < 2` (no negatives), if
    ///   `k < 2` (with `K = 1` no row has a positive, every miner returns
    ///   nothing and training silently does nothing), if `p * k` overflows,
    ///   if fewer than `p` classes have at least 2 samples, or if one epoch
    ///   would hold more than [`MAX_DRAWS_PER_SAMPLE`](Self::MAX_DRAWS_PER_SAMPLE)
    ///   indices per sample drawn from (a `k` far beyond the classes' sizes,
    ///   see [How large K may be](PkSampler#how-large-k-may-be)).
    ///
    /// ```
    /// use metric_loss_core::sampler::PkSampler;
    /// use metric_loss_core::MetricLossError;
    ///
    /// assert!(PkSampler::try_new(&[0, 0, 1, 1], 2, 2, 0).is_ok());
    /// assert!(matches!(
    ///     PkSampler::try_new(&[0, 0, 1, 1], 3, 2, 0),
    ///     Err(MetricLossError::InvalidConfig(_))
    /// ));
    /// ```
    pub fn try_new(
        labels: &[usize],
        p: usize,
        k: usize,
        seed: u64,
    ) -> Result<Self, MetricLossError> {
        if labels.is_empty() {
            return Err(MetricLossError::EmptyBatch { what: "labels" });
        }
        if p < 2 {
            return Err(MetricLossError::InvalidConfig(format!(
                "P = {p} classes per batch: a P x K batch needs P >= 2 so that anchors have negatives"
            )));
        }
        if k < 2 {
            return Err(MetricLossError::InvalidConfig(format!(
                "K = {k} samples per class: a P x K batch needs K >= 2 so that anchors have positives"
            )));
        }
        if p.checked_mul(k).is_none() {
            return Err(MetricLossError::InvalidConfig(format!(
                "batch size P x K = {p} x {k} overflows"
            )));
        }
        let mut by_label: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, &l) in labels.iter().enumerate() {
            by_label.entry(l).or_default().push(i);
        }
        let total_classes = by_label.len();
        let (classes, singletons): (Vec<Vec<usize>>, Vec<Vec<usize>>) =
            by_label.into_values().partition(|v| v.len() >= 2);
        if classes.len() < p {
            return Err(MetricLossError::InvalidConfig(format!(
                "P = {p} classes per batch, but only {} of the {total_classes} classes have at least 2 samples",
                classes.len()
            )));
        }
        let samples: usize = classes.iter().map(Vec::len).sum();
        let epoch = epoch_batches(&classes, p, k).checked_mul(p * k);
        if epoch.is_none_or(|len| len > Self::MAX_DRAWS_PER_SAMPLE * samples) {
            let largest = classes.iter().map(Vec::len).max().unwrap_or(0);
            return Err(MetricLossError::InvalidConfig(format!(
                "K = {k} samples per class is far beyond the classes' sizes (the largest has {largest}): \
                 one epoch would hold {} indices for {samples} samples, more than {} per sample",
                epoch.map_or_else(|| "more than usize::MAX".to_string(), |l| l.to_string()),
                Self::MAX_DRAWS_PER_SAMPLE
            )));
        }
        Ok(Self {
            classes,
            skipped: singletons.len(),
            p,
            k,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The most indices one epoch may hold per sample drawn from; see
    /// [How large K may be](PkSampler#how-large-k-may-be).
    ///
    /// ```
    /// use metric_loss_core::sampler::PkSampler;
    ///
    /// // Two classes of 2 samples: an epoch is one batch of 2 x K indices.
    /// let k = PkSampler::MAX_DRAWS_PER_SAMPLE * 4 / 2;
    /// assert!(PkSampler::try_new(&[0, 0, 1, 1], 2, k, 0).is_ok());
    /// assert!(PkSampler::try_new(&[0, 0, 1, 1], 2, k + 1, 0).is_err());
    /// ```
    pub const MAX_DRAWS_PER_SAMPLE: usize = 32;

    /// Like [`PkSampler::try_new`], panicking with the error's message.
    #[track_caller]
    pub fn new(labels: &[usize], p: usize, k: usize, seed: u64) -> Self {
        unwrap_or_panic(Self::try_new(labels, p, k, seed))
    }

    /// Classes per batch.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Samples per class in a batch.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `P * K`, the length of every batch.
    pub fn batch_size(&self) -> usize {
        self.p * self.k
    }

    /// Number of classes sampled from (those with at least 2 samples).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Number of samples never sampled because their class has only one.
    pub fn num_skipped_samples(&self) -> usize {
        self.skipped
    }

    /// Number of batches of every [`epoch`](PkSampler::epoch):
    /// `max(max_c chunks_c, ceil(sum_c chunks_c / P))` with
    /// `chunks_c = ceil(len_c / K)`.
    ///
    /// ```
    /// use metric_loss_core::sampler::PkSampler;
    ///
    /// // Chunks of 2: class 0 -> 3, class 1 -> 1, class 2 -> 1. Five chunks,
    /// // P = 2: at least 3 batches, and class 0 alone needs 3.
    /// let labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2];
    /// assert_eq!(PkSampler::new(&labels, 2, 2, 0).batches_per_epoch(), 3);
    /// ```
    pub fn batches_per_epoch(&self) -> usize {
        epoch_batches(&self.classes, self.p, self.k)
    }

    /// One chunk of `K` indices of `class`: a random subset if the class has
    /// at least `K` samples, else all of them topped up with replacement.
    fn fresh_chunk(&mut self, class: usize) -> Vec<usize> {
        let members = &self.classes[class];
        let k = self.k;
        if members.len() >= k {
            members.choose_multiple(&mut self.rng, k).copied().collect()
        } else {
            let mut chunk = members.clone();
            chunk.shuffle(&mut self.rng);
            while chunk.len() < k {
                chunk.push(members[self.rng.gen_range(0..members.len())]);
            }
            chunk
        }
    }

    /// The chunks of `class` for one epoch (step 1 of the type docs).
    fn class_chunks(&mut self, class: usize) -> Vec<Vec<usize>> {
        let k = self.k;
        let n = self.classes[class].len();
        if n < k {
            return vec![self.fresh_chunk(class)];
        }
        let mut shuffled = self.classes[class].clone();
        shuffled.shuffle(&mut self.rng);
        let full = n / k;
        let mut chunks: Vec<Vec<usize>> = shuffled[..full * k]
            .chunks(k)
            .map(<[usize]>::to_vec)
            .collect();
        let rest = &shuffled[full * k..];
        if !rest.is_empty() {
            let mut last = rest.to_vec();
            // Top up from the indices not in `last` (there are n - rest >= k - rest).
            last.extend(
                shuffled[..full * k]
                    .choose_multiple(&mut self.rng, k - rest.len())
                    .copied(),
            );
            chunks.push(last);
        }
        chunks
    }

    /// One epoch of batches (see the type docs). Each call draws a new
    /// shuffle from the sampler's RNG.
    pub fn epoch(&mut self) -> Vec<Vec<usize>> {
        let c = self.classes.len();
        let mut queues: Vec<Vec<Vec<usize>>> =
            (0..c).map(|class| self.class_chunks(class)).collect();
        let mut left: usize = queues.iter().map(Vec::len).sum();
        let mut batches = Vec::with_capacity(self.batches_per_epoch());
        let mut order: Vec<usize> = (0..c).collect();
        while left > 0 {
            // Random tie-break, then most chunks left first (stable sort).
            order.shuffle(&mut self.rng);
            order.sort_by_key(|&class| std::cmp::Reverse(queues[class].len()));
            let mut blocks: Vec<Vec<usize>> = Vec::with_capacity(self.p);
            for &class in &order[..self.p] {
                match queues[class].pop() {
                    Some(chunk) => {
                        left -= 1;
                        blocks.push(chunk);
                    }
                    // Classes after the first empty queue are empty too.
                    None => blocks.push(self.fresh_chunk(class)),
                }
            }
            blocks.shuffle(&mut self.rng);
            batches.push(blocks.concat());
        }
        batches
    }
}

/// `max(max_c chunks_c, ceil(sum_c chunks_c / P))` with
/// `chunks_c = ceil(len_c / K)` (no overflow: the sum is at most the number
/// of samples).
fn epoch_batches(classes: &[Vec<usize>], p: usize, k: usize) -> usize {
    let chunks = classes.iter().map(|c| c.len().div_ceil(k));
    let max = chunks.clone().max().unwrap_or(0);
    let total: usize = chunks.sum();
    max.max(total.div_ceil(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashSet};

    /// Checks the P x K structure of every batch and returns the indices seen.
    fn check_structure(
        labels: &[usize],
        p: usize,
        k: usize,
        epoch: &[Vec<usize>],
    ) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        for batch in epoch {
            assert_eq!(batch.len(), p * k);
            let mut classes = HashSet::new();
            for block in batch.chunks(k) {
                let l = labels[block[0]];
                assert!(
                    block.iter().all(|&i| labels[i] == l),
                    "mixed block {block:?}"
                );
                assert!(classes.insert(l), "class {l} twice in {batch:?}");
            }
            assert_eq!(classes.len(), p);
            seen.extend(batch.iter().copied());
        }
        seen
    }

    #[test]
    fn covers_every_index_with_exact_pk_batches() {
        let mut rng = StdRng::seed_from_u64(5);
        for case in 0..200 {
            let classes = rng.gen_range(2..=8);
            let n = rng.gen_range(classes * 2..=60);
            // Every class gets at least 2 samples, the rest at random.
            let mut labels: Vec<usize> = (0..n)
                .map(|i| {
                    if i < 2 * classes {
                        i / 2
                    } else {
                        rng.gen_range(0..classes)
                    }
                })
                .collect();
            labels.shuffle(&mut rng);
            let p = rng.gen_range(2..=classes);
            let k = rng.gen_range(2..=5);
            let mut s = PkSampler::new(&labels, p, k, case);
            for _ in 0..2 {
                let epoch = s.epoch();
                assert_eq!(epoch.len(), s.batches_per_epoch(), "{labels:?} p={p} k={k}");
                let seen = check_structure(&labels, p, k, &epoch);
                assert_eq!(seen, (0..n).collect::<BTreeSet<_>>());
            }
        }
    }

    #[test]
    fn no_duplicates_when_classes_have_k_samples() {
        // Class sizes 5, 7, 4 with K = 4: top-ups are drawn without replacement.
        let labels: Vec<usize> = [0; 5].into_iter().chain([1; 7]).chain([2; 4]).collect();
        let mut s = PkSampler::new(&labels, 2, 4, 9);
        for _ in 0..20 {
            for batch in s.epoch() {
                let set: HashSet<_> = batch.iter().collect();
                assert_eq!(set.len(), batch.len(), "{batch:?}");
            }
        }
    }

    #[test]
    fn small_classes_are_topped_up_and_singletons_skipped() {
        // Class 0: 2 samples (< K = 3) -> topped up with replacement.
        // Class 1: 3 samples; class 2: 1 sample (index 5) -> skipped.
        let labels = [0, 0, 1, 1, 1, 2];
        let mut s = PkSampler::new(&labels, 2, 3, 1);
        assert_eq!(s.num_classes(), 2);
        assert_eq!(s.num_skipped_samples(), 1);
        // One chunk each -> one batch.
        assert_eq!(s.batches_per_epoch(), 1);
        let epoch = s.epoch();
        assert_eq!(epoch.len(), 1);
        let seen = check_structure(&labels, 2, 3, &epoch);
        assert_eq!(seen, (0..5).collect::<BTreeSet<_>>());
    }

    #[test]
    fn uneven_classes_are_completed_with_other_classes() {
        // Class 0 has 4 chunks of 2, classes 1 and 2 one each; P = 2.
        // Lower bound max(4, ceil(6 / 2)) = 4 batches, each with class 0.
        let labels: Vec<usize> = [0; 8].into_iter().chain([1, 1, 2, 2]).collect();
        let mut s = PkSampler::new(&labels, 2, 2, 3);
        let epoch = s.epoch();
        assert_eq!(epoch.len(), 4);
        for batch in &epoch {
            assert!(batch.iter().any(|&i| labels[i] == 0));
        }
        let seen = check_structure(&labels, 2, 2, &epoch);
        assert_eq!(seen.len(), labels.len());
    }

    #[test]
    fn seeding_is_deterministic() {
        let labels: Vec<usize> = (0..100).map(|i| i % 7).collect();
        let run = |seed| {
            let mut s = PkSampler::new(&labels, 3, 4, seed);
            (s.epoch(), s.epoch())
        };
        let (a1, a2) = run(7);
        let (b1, b2) = run(7);
        assert_eq!((&a1, &a2), (&b1, &b2));
        assert_ne!(a1, a2, "successive epochs should differ");
        let (c1, _) = run(8);
        assert_ne!(a1, c1, "different seeds should differ");
    }

    #[test]
    fn errors() {
        let labels = [0, 0, 1, 1, 2];
        assert_eq!(
            PkSampler::try_new(&[], 2, 2, 0).unwrap_err(),
            MetricLossError::EmptyBatch { what: "labels" }
        );
        for (p, k) in [
            (1, 2),
            (0, 2),
            (2, 1),
            (2, 0),
            (usize::MAX, 2),
            (2, 100_000_000),
        ] {
            assert!(
                matches!(
                    PkSampler::try_new(&labels, p, k, 0),
                    Err(MetricLossError::InvalidConfig(_))
                ),
                "p={p} k={k}"
            );
        }
        // Three classes, but class 2 is a singleton: only 2 usable.
        assert!(matches!(
            PkSampler::try_new(&labels, 3, 2, 0),
            Err(MetricLossError::InvalidConfig(_))
        ));
        assert!(PkSampler::try_new(&labels, 2, 2, 0).is_ok());
    }

    #[test]
    #[should_panic(expected = "metric-loss: invalid configuration")]
    fn new_panics_with_message() {
        let _ = PkSampler::new(&[0, 0, 1, 1], 1, 2, 0);
    }
}
