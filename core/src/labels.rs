//! Typed labels for pair losses, so the similar/dissimilar convention cannot
//! be mixed up silently.
//!
//! The classic contrastive loss (Hadsell et al. 2006) writes `Y = 0` for a
//! similar pair and `Y = 1` for a dissimilar one; TensorFlow Addons and Keras
//! use the opposite. A bare `0/1` tensor invites the bug, so pair losses take
//! [`PairLabels`], built from words that say which way round they are.

/// Whether the two sides of a pair belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pair {
    /// Same class: the loss pulls them together.
    Similar,
    /// Different classes: the loss pushes them at least a margin apart.
    Dissimilar,
}

/// Labels of a batch of pairs, stored as "is dissimilar" flags (`Y` of the
/// contrastive loss).
///
/// ```
/// use metric_loss_core::labels::{Pair, PairLabels};
/// let a = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar]);
/// let b = PairLabels::from_similar(&[true, false]);
/// let c = PairLabels::from_dissimilar(&[false, true]);
/// let d = PairLabels::from_classes(&[3, 3], &[3, 7]).unwrap();
/// assert!(a == b && b == c && c == d);
/// assert_eq!(a.dissimilar_flags(), &[0.0, 1.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PairLabels {
    dissimilar: Vec<f32>,
}

impl PairLabels {
    /// From one [`Pair`] per pair.
    pub fn from_pairs(pairs: &[Pair]) -> Self {
        Self {
            dissimilar: pairs
                .iter()
                .map(|p| if *p == Pair::Dissimilar { 1.0 } else { 0.0 })
                .collect(),
        }
    }

    /// From flags that are `true` where the pair is **similar** (the
    /// TensorFlow Addons / Keras convention).
    pub fn from_similar(similar: &[bool]) -> Self {
        Self {
            dissimilar: similar.iter().map(|&s| if s { 0.0 } else { 1.0 }).collect(),
        }
    }

    /// From flags that are `true` where the pair is **dissimilar** (the
    /// Hadsell et al. `Y = 1` convention).
    pub fn from_dissimilar(dissimilar: &[bool]) -> Self {
        Self {
            dissimilar: dissimilar
                .iter()
                .map(|&d| if d { 1.0 } else { 0.0 })
                .collect(),
        }
    }

    /// From the class ids of both sides: similar where they are equal.
    pub fn from_classes(left: &[usize], right: &[usize]) -> Result<Self, crate::MetricLossError> {
        if left.len() != right.len() {
            return Err(crate::MetricLossError::LabelCount {
                labels: right.len(),
                batch: left.len(),
            });
        }
        Ok(Self {
            dissimilar: left
                .iter()
                .zip(right)
                .map(|(l, r)| if l == r { 0.0 } else { 1.0 })
                .collect(),
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.dissimilar.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.dissimilar.is_empty()
    }

    /// `Y`: 1.0 where dissimilar, 0.0 where similar.
    pub fn dissimilar_flags(&self) -> &[f32] {
        &self.dissimilar
    }
}
