//! pytorch-metric-learning's `DistanceWeightedMiner` (Wu et al. 2017).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{DistanceMatrix, IndexPair, PairMiner, Triplet, TripletMiner, Tuples, check_batch};
use crate::error::MetricLossError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Distance-weighted sampling (Wu, Manmatha, Smola & Krähenbühl, "Sampling
/// Matters in Deep Embedding Learning", ICCV 2017), as PML 2.9's
/// `DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)`.
///
/// On the unit sphere of dimension `n`, pairwise distances `d` of random
/// points have density `q(d) ∝ d^{n−2} (1 − d²/4)^{(n−3)/2}`: almost all
/// near `√2`. Sampling negatives with weight `1/q(d)` (distances clamped
/// below at `cutoff`, for the variance) spreads them over all distances;
/// negatives at `nonzero_loss_cutoff` or farther, which a margin loss
/// ignores, get weight 0. Each anchor of a class with `k ≥ 2` members gets
/// `k` triplets: a positive drawn uniformly from its class (with
/// replacement), a negative drawn by weight. An anchor with no negative of
/// nonzero weight is dropped. Classes are visited in increasing label
/// order, anchors in increasing index, `k` triplets each.
///
/// It reads distances between **L2-normalized** embeddings (PML asserts
/// `LpDistance(normalize_embeddings=True)`): the matrix's
/// [`Units`](super::Units) must say so (a loss declared with `normalize`,
/// a cosine loss, or the ranking family); anything else is
/// [`MetricLossError::InvalidConfig`].
///
/// # Randomness
///
/// PML draws from torch's global generator; this miner has its own, seeded
/// ([`with_seed`](Self::with_seed), default 0): call `t` of a miner draws
/// from a generator seeded with `(seed, t)`, so a run is reproducible and
/// successive batches get fresh draws. A clone continues from the same call
/// count.
///
/// As a [`PairMiner`] (for the ranking family and the pair losses) its
/// triplets become the pairs `(a, p)` and `(a, n)` of each triplet (PML's
/// `convert_to_pairs`); the margin loss reads the triplets themselves.
///
/// ```
/// use metric_loss_core::miners::{DistanceMatrix, DistanceWeightedMiner, TripletMiner, Units};
/// // four points on the unit circle, two classes
/// let pts: [[f32; 2]; 4] = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]];
/// let flat: Vec<f32> = pts.iter().flatten().copied().collect();
/// let d = DistanceMatrix::euclidean(&flat, 2, false).unwrap()
///     .with_units(Units::UnitEuclidean { dim: 2, squared: false });
/// let miner = DistanceWeightedMiner::default().with_seed(7);
/// let t = miner.try_mine(&d, &[0, 0, 1, 1], 0.2).unwrap();
/// assert_eq!(t.len(), 4); // 2 anchors × 2 triplets per class
/// assert!(t.iter().all(|t| t.anchor != t.positive));
/// ```
#[derive(Debug)]
pub struct DistanceWeightedMiner {
    /// Distances below this count as this (PML's `cutoff`, default 0.5).
    pub cutoff: f32,
    /// Negatives at this distance or farther are never drawn (PML's
    /// `nonzero_loss_cutoff`, default 1.4).
    pub nonzero_loss_cutoff: f32,
    seed: u64,
    calls: AtomicU64,
}

impl Default for DistanceWeightedMiner {
    fn default() -> Self {
        Self::new(0.5, 1.4)
    }
}

impl Clone for DistanceWeightedMiner {
    fn clone(&self) -> Self {
        Self {
            cutoff: self.cutoff,
            nonzero_loss_cutoff: self.nonzero_loss_cutoff,
            seed: self.seed,
            calls: AtomicU64::new(self.calls.load(Ordering::Relaxed)),
        }
    }
}

impl DistanceWeightedMiner {
    /// The miner with these cut-offs, seed 0.
    pub fn new(cutoff: f32, nonzero_loss_cutoff: f32) -> Self {
        Self {
            cutoff,
            nonzero_loss_cutoff,
            seed: 0,
            calls: AtomicU64::new(0),
        }
    }

    /// The same miner with its own seed (and its call count reset).
    pub fn with_seed(self, seed: u64) -> Self {
        Self {
            seed,
            calls: AtomicU64::new(0),
            ..self
        }
    }

    /// The probability of drawing each negative for each anchor: row-major
    /// `N × N`, each row summing to 1, or all 0 where the anchor has no
    /// negative of nonzero weight (PML's weights; PML's are NaN there).
    /// Computed as PML does, in `f32`: `ln w = (2 − n) ln d − ((n − 3)/2)
    /// ln(1 − d²/4)` with `d` clamped at `cutoff`, shifted by the largest
    /// finite value of the batch (same-class entries counting as 0), then
    /// `0` for same-class pairs, distances `≥ nonzero_loss_cutoff` and
    /// non-finite values, and normalized per row.
    ///
    /// Errors: as the miners, and [`MetricLossError::InvalidConfig`] for
    /// cut-offs that are not finite with `0 ≤ cutoff < nonzero_loss_cutoff`
    /// or a matrix not known to be of unit-length embeddings.
    pub fn try_weights(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
    ) -> Result<Vec<f32>, MetricLossError> {
        super::refuse_reference(dist, "distance-weighted")?;
        check_batch(dist, labels, &[])?;
        let (cutoff, nonzero) = (self.cutoff, self.nonzero_loss_cutoff);
        if !(cutoff.is_finite() && nonzero.is_finite() && cutoff >= 0.0 && cutoff < nonzero) {
            return Err(MetricLossError::InvalidConfig(format!(
                "distance-weighted miner: need finite 0 <= cutoff < nonzero_loss_cutoff, got {cutoff} and {nonzero}"
            )));
        }
        let dim = match (dist.dim(), dist.unit_euclidean(0, 0)) {
            (Some(dim), Some(_)) => dim as f32,
            _ => {
                return Err(MetricLossError::InvalidConfig(
                    "the distance-weighted miner reads distances between L2-normalized embeddings \
                     (PML: LpDistance(normalize_embeddings=True)); use it with a loss that normalizes"
                        .into(),
                ))
            }
        };
        let n = dist.n();
        let mut lw = vec![0.0f32; n * n];
        let mut bad = vec![false; n * n];
        let mut max = f32::NEG_INFINITY;
        for i in 0..n {
            for j in 0..n {
                let d = dist.unit_euclidean(i, j).unwrap_or(f32::NAN).max(cutoff);
                let v = (2.0 - dim) * d.ln() - ((dim - 3.0) / 2.0) * (1.0 - 0.25 * d * d).ln();
                let k = i * n + j;
                bad[k] = !v.is_finite();
                lw[k] = if labels[i] == labels[j] { 0.0 } else { v };
                if !bad[k] {
                    max = max.max(lw[k]);
                }
            }
        }
        for i in 0..n {
            let row = &mut lw[i * n..(i + 1) * n];
            for (j, w) in row.iter_mut().enumerate() {
                let d = dist.unit_euclidean(i, j).unwrap_or(f32::NAN).max(cutoff);
                let keep = labels[i] != labels[j] && d < nonzero && !bad[i * n + j];
                *w = if keep { (*w - max).exp() } else { 0.0 };
            }
            let sum: f32 = row.iter().sum();
            for w in row.iter_mut() {
                *w = if sum > 0.0 { *w / sum } else { 0.0 };
            }
        }
        Ok(lw)
    }

    fn sample(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
    ) -> Result<Vec<Triplet>, MetricLossError> {
        let weights = self.try_weights(dist, labels)?;
        let n = dist.n();
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = StdRng::seed_from_u64(self.seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut classes: Vec<usize> = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let mut out = Vec::new();
        for c in classes {
            let members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
            let k = members.len();
            if k < 2 || k == n {
                continue;
            }
            for &a in &members {
                let row = &weights[a * n..(a + 1) * n];
                let total: f32 = row.iter().sum();
                if total <= 0.0 {
                    continue;
                }
                let others: Vec<usize> = members.iter().copied().filter(|&p| p != a).collect();
                for _ in 0..k {
                    let positive = others[rng.gen_range(0..others.len())];
                    out.push(Triplet {
                        anchor: a,
                        positive,
                        negative: draw(row, total, &mut rng),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// An index drawn with probability `row[j] / total`.
fn draw(row: &[f32], total: f32, rng: &mut StdRng) -> usize {
    let u = rng.r#gen::<f32>() * total;
    let mut acc = 0.0f32;
    let mut last = 0;
    for (j, &w) in row.iter().enumerate() {
        if w > 0.0 {
            acc += w;
            last = j;
            if u < acc {
                return j;
            }
        }
    }
    last
}

impl TripletMiner for DistanceWeightedMiner {
    /// The sampled triplets (the margin is validated, not used).
    fn try_mine(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        margin: f32,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        check_batch(dist, labels, &[margin])?;
        self.sample(dist, labels)
    }

    fn name(&self) -> &'static str {
        "distance-weighted"
    }
}

impl PairMiner for DistanceWeightedMiner {
    /// Each sampled triplet as its pairs `(a, p)` (similar) and `(a, n)`
    /// (dissimilar), in order; a pair drawn twice is listed twice.
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        Ok(self
            .try_mine_tuples(dist, labels, pos_margin, neg_margin)?
            .to_index_pairs(labels))
    }

    /// [`Tuples::Triplets`].
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Tuples, MetricLossError> {
        check_batch(dist, labels, &[pos_margin, neg_margin])?;
        Ok(Tuples::Triplets(self.sample(dist, labels)?))
    }

    fn name(&self) -> &'static str {
        "distance-weighted"
    }
}
