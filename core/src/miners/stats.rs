//! Statistics of a mined batch, for logs and progress bars.

use std::fmt;

use super::{DistanceMatrix, IndexPair, RowStats, Triplet, Tuples, check_batch};
use crate::error::{MetricLossError, unwrap_or_panic};

/// What a miner found in one batch, and whether training looks collapsed.
///
/// Built from the batch's [`DistanceMatrix`], its labels, the mined tuples
/// and the loss's margin(s) with [`MinerStats::try_new`] (triplets) or
/// [`MinerStats::try_for_pairs`] (pairs). All distances are in the matrix's
/// units (squared if the loss is squared).
///
/// Its [`Display`](fmt::Display) is one compact line for a progress bar:
/// `active=0.42 d+=0.31 d-=0.55 spread=0.80`, followed by ` COLLAPSE` when
/// [`collapsed`](MinerStats::collapsed) is set. Means that do not exist print
/// as `-`; values below 0.01 print in scientific notation.
///
/// ```
/// use metric_loss_core::miners::{BatchHard, DistanceMatrix, MinerStats, TripletMiner};
///
/// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 3.0], 1, false).unwrap();
/// let labels = [0, 0, 1, 1];
/// let triplets = BatchHard.mine(&dist, &labels, 0.2);
/// let stats = MinerStats::new(&dist, &labels, &triplets, 0.2);
/// assert_eq!(stats.triplets, 4);
/// assert!(!stats.collapsed);
/// assert_eq!(stats.to_string(), "active=0.50 d+=1.25 d-=1.12 spread=1.58");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinerStats {
    /// Number of triplets mined (0 for pair statistics).
    pub triplets: usize,
    /// Number of pairs mined (0 for triplet statistics).
    pub pairs: usize,
    /// Fraction of the mined tuples with a nonzero loss: triplets with
    /// `d(a, p) - d(a, n) + margin > 0`; positive pairs with
    /// `d > pos_margin` and negative pairs with `d < neg_margin`. `0.0` when
    /// nothing was mined. A fraction near 0 means the miner (or the model)
    /// has run out of informative tuples.
    pub active_fraction: f32,
    /// Mean over anchors of the distance to the anchor's farthest positive,
    /// over the anchors that have both a positive and a negative (the
    /// batch-hard `d+`). `None` when no anchor has both.
    pub mean_hardest_positive: Option<f32>,
    /// Mean over the same anchors of the distance to the closest negative
    /// (the batch-hard `d-`). Training is going well when it grows past
    /// [`mean_hardest_positive`](MinerStats::mean_hardest_positive).
    pub mean_hardest_negative: Option<f32>,
    /// Mean off-diagonal distance of the batch: the scale of the embedding
    /// cloud. `0.0` for a batch of one row.
    pub spread: f32,
    /// The collapse alarm: `spread < MinerStats::collapse_threshold(margin)`
    /// (never set for a batch of one row). See
    /// [`collapse_threshold`](MinerStats::collapse_threshold).
    pub collapsed: bool,
}

impl MinerStats {
    /// Absolute floor of the collapse threshold, in distance units.
    pub const COLLAPSE_ABS: f32 = 1e-3;
    /// Collapse threshold relative to the margin.
    pub const COLLAPSE_REL: f32 = 0.05;

    /// The spread below which a batch is reported as collapsed:
    /// `max(COLLAPSE_ABS, COLLAPSE_REL * margin)` = `max(1e-3, 0.05 * margin)`.
    ///
    /// Why: the known failure of batch-hard mining is that every embedding
    /// shrinks to one point. Every triplet then has `d(a, p) = d(a, n) = 0`
    /// and loss exactly `margin`, and the gradient of a (squared) distance
    /// vanishes there, so training stalls. The margin is the loss's own
    /// length scale, so a cloud 20 times smaller than the margin cannot be
    /// separating anything by it; the absolute floor covers `margin = 0`
    /// (and soft-margin losses), where `1e-3` is far below any useful scale
    /// of normalised embeddings (the unit sphere has diameter 2). A fresh
    /// network with tiny initial weights may trip it on its first steps: if
    /// the alarm stays on, the model has collapsed.
    ///
    /// ```
    /// use metric_loss_core::miners::MinerStats;
    /// assert_eq!(MinerStats::collapse_threshold(0.0), 1e-3);
    /// assert_eq!(MinerStats::collapse_threshold(0.2), 0.05 * 0.2);
    /// ```
    pub fn collapse_threshold(margin: f32) -> f32 {
        Self::COLLAPSE_ABS.max(Self::COLLAPSE_REL * margin)
    }

    /// Statistics of mined triplets.
    ///
    /// Errors: as the miners ([`MetricLossError::LabelCount`],
    /// [`MetricLossError::EmptyBatch`], [`MetricLossError::InvalidMargin`]),
    /// plus [`MetricLossError::IndexOutOfRange`] for a triplet index `>= n`.
    /// A single-class batch is fine (the hardest means are then `None`).
    pub fn try_new(
        dist: &DistanceMatrix,
        labels: &[usize],
        triplets: &[Triplet],
        margin: f32,
    ) -> Result<Self, MetricLossError> {
        check_batch(dist, labels, &[margin])?;
        let (n, cols) = (dist.n(), dist.cols());
        let mut active = 0usize;
        for t in triplets {
            check_index(t.anchor, n)?;
            for index in [t.positive, t.negative] {
                check_index(index, cols)?;
            }
            let row = dist.row(t.anchor);
            if row[t.positive] - row[t.negative] + margin > 0.0 {
                active += 1;
            }
        }
        Ok(Self::build(dist, labels, triplets.len(), 0, active, margin))
    }

    /// Like [`MinerStats::try_new`], panicking with the error's message.
    #[track_caller]
    pub fn new(dist: &DistanceMatrix, labels: &[usize], triplets: &[Triplet], margin: f32) -> Self {
        unwrap_or_panic(Self::try_new(dist, labels, triplets, margin))
    }

    /// Statistics of mined pairs for a contrastive loss: `active_fraction` is
    /// the fraction of pairs with a nonzero contrastive loss (positive pairs
    /// with `d > pos_margin`, negative pairs with `d < neg_margin`, using the
    /// pair's own `similar` flag). The collapse threshold uses `neg_margin`,
    /// the distance negatives are pushed to.
    ///
    /// Errors: as [`MinerStats::try_new`], for both margins and both indices.
    ///
    /// ```
    /// use metric_loss_core::miners::{AllPairs, DistanceMatrix, MinerStats, PairMiner};
    ///
    /// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
    /// let pairs = AllPairs.mine_pairs(&dist, &[0, 0, 1], 0.5, 1.0);
    /// let stats = MinerStats::for_pairs(&dist, &[0, 0, 1], &pairs, 0.5, 1.0);
    /// // (0,1) similar at 1 > 0.5: active; (0,2) at 1.5: inactive; (1,2) at 0.5 < 1: active.
    /// assert_eq!(stats.pairs, 3);
    /// assert!((stats.active_fraction - 2.0 / 3.0).abs() < 1e-6);
    /// ```
    pub fn try_for_pairs(
        dist: &DistanceMatrix,
        labels: &[usize],
        pairs: &[IndexPair],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Self, MetricLossError> {
        check_batch(dist, labels, &[pos_margin, neg_margin])?;
        let (n, cols) = (dist.n(), dist.cols());
        let mut active = 0usize;
        for p in pairs {
            check_index(p.a, n)?;
            check_index(p.b, cols)?;
            let d = dist.get(p.a, p.b);
            let is_active = if p.similar {
                d > pos_margin
            } else {
                d < neg_margin
            };
            if is_active {
                active += 1;
            }
        }
        Ok(Self::build(
            dist,
            labels,
            0,
            pairs.len(),
            active,
            neg_margin,
        ))
    }

    /// Like [`MinerStats::try_for_pairs`], panicking with the error's message.
    #[track_caller]
    pub fn for_pairs(
        dist: &DistanceMatrix,
        labels: &[usize],
        pairs: &[IndexPair],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Self {
        unwrap_or_panic(Self::try_for_pairs(
            dist, labels, pairs, pos_margin, neg_margin,
        ))
    }

    /// Statistics of what a pair miner gave a loss of the ranking family:
    /// as [`MinerStats::try_for_pairs`] over the directed pairs
    /// ([`Tuples::to_pairs`]; `pairs` counts them), without building a list
    /// for [`Tuples::All`].
    ///
    /// ```
    /// use metric_loss_core::miners::{DistanceMatrix, MinerStats, Tuples};
    /// let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
    /// let stats = MinerStats::try_for_tuples(&dist, &[0, 0, 1], &Tuples::All, 0.5, 1.0).unwrap();
    /// // 6 directed pairs; active: (0,1), (1,0) (similar, 1 > 0.5) and (1,2), (2,1) (0.5 < 1)
    /// assert_eq!(stats.pairs, 6);
    /// assert!((stats.active_fraction - 4.0 / 6.0).abs() < 1e-6);
    /// ```
    pub fn try_for_tuples(
        dist: &DistanceMatrix,
        labels: &[usize],
        tuples: &Tuples,
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Self, MetricLossError> {
        check_batch(dist, labels, &[pos_margin, neg_margin])?;
        let n = dist.n();
        tuples.check_against(n, dist.cols())?;
        let mut count = 0usize;
        let mut active = 0usize;
        let mut visit = |a: usize, b: usize, similar: bool| {
            let d = dist.get(a, b);
            count += 1;
            if (similar && d > pos_margin) || (!similar && d < neg_margin) {
                active += 1;
            }
        };
        match tuples {
            Tuples::All => {
                let cols = dist.column_labels(labels);
                for (a, &la) in labels.iter().enumerate().take(n) {
                    for b in (0..cols.len()).filter(|&b| !dist.is_self(a, b)) {
                        visit(a, b, la == cols[b]);
                    }
                }
            }
            Tuples::Pairs { positive, negative } => {
                positive.iter().for_each(|&(a, b)| visit(a, b, true));
                negative.iter().for_each(|&(a, b)| visit(a, b, false));
            }
            Tuples::Triplets(t) => {
                for t in t {
                    visit(t.anchor, t.positive, true);
                    visit(t.anchor, t.negative, false);
                }
            }
        }
        Ok(Self::build(dist, labels, 0, count, active, neg_margin))
    }

    /// The matrix-only part, after validation.
    fn build(
        dist: &DistanceMatrix,
        labels: &[usize],
        triplets: usize,
        pairs: usize,
        active: usize,
        margin: f32,
    ) -> Self {
        let n = dist.n();
        let cols = dist.column_labels(labels);
        // against a reference set (a cross-batch memory) no column is the row itself
        let own = !dist.is_reference();
        let rows = (0..n)
            .map(|a| RowStats::of(labels[a], dist.row(a), cols, None, own.then_some(a), None));
        // the number of entries summed: all but the diagonal of a batch's own matrix
        let entries = if own {
            n * n.saturating_sub(1)
        } else {
            n * dist.cols()
        };
        Self::from_rows(entries, rows, triplets, pairs, active, margin)
    }

    /// The statistics from every anchor row's [`RowStats`] (in row order),
    /// `entries` distances summed over all rows, `active` of the
    /// `triplets + pairs` mined tuples with a nonzero loss: what a fused pass
    /// that never holds the distance matrix computes, row by row.
    pub(crate) fn from_rows(
        entries: usize,
        rows: impl Iterator<Item = RowStats>,
        triplets: usize,
        pairs: usize,
        active: usize,
        margin: f32,
    ) -> Self {
        let mined = triplets + pairs;
        let mut sum_pos = 0.0f64;
        let mut sum_neg = 0.0f64;
        let mut anchors = 0usize;
        let mut sum_all = 0.0f64;
        for r in rows {
            sum_all += r.sum;
            if let Some((p, q)) = r.hardest {
                sum_pos += f64::from(p);
                sum_neg += f64::from(q);
                anchors += 1;
            }
        }
        let mean = |s: f64| (anchors > 0).then(|| (s / anchors as f64) as f32);
        let spread = if entries > 0 {
            (sum_all / entries as f64) as f32
        } else {
            0.0
        };
        Self {
            triplets,
            pairs,
            active_fraction: if mined > 0 {
                active as f32 / mined as f32
            } else {
                0.0
            },
            mean_hardest_positive: mean(sum_pos),
            mean_hardest_negative: mean(sum_neg),
            spread,
            collapsed: entries > 0 && spread < Self::collapse_threshold(margin),
        }
    }
}

fn check_index(index: usize, batch: usize) -> Result<(), MetricLossError> {
    if index < batch {
        Ok(())
    } else {
        Err(MetricLossError::IndexOutOfRange { index, batch })
    }
}

struct Num(Option<f32>);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "-"),
            Some(v) if v != 0.0 && v.abs() < 0.01 => write!(f, "{v:.1e}"),
            Some(v) => write!(f, "{v:.2}"),
        }
    }
}

impl fmt::Display for MinerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "active={:.2} d+={} d-={} spread={}",
            self.active_fraction,
            Num(self.mean_hardest_positive),
            Num(self.mean_hardest_negative),
            Num(Some(self.spread))
        )?;
        if self.collapsed {
            write!(f, " COLLAPSE")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(a: usize, p: usize, n: usize) -> Triplet {
        Triplet {
            anchor: a,
            positive: p,
            negative: n,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn hand_computed_triplet_stats() {
        // 1-D: class 0 at r0 = 0, r1 = 1; class 1 at r2 = 1.5, r3 = 3. Margin 0.2.
        // Hardest positive / closest negative per anchor:
        //   r0: d+ 1,   d- 1.5      r1: d+ 1,   d- 0.5
        //   r2: d+ 1.5, d- 0.5      r3: d+ 1.5, d- 2
        // mean d+ = 5 / 4 = 1.25, mean d- = 4.5 / 4 = 1.125.
        // Off-diagonal distances: 1, 1.5, 3, 0.5, 2, 1.5 (each twice) -> 9.5 / 6.
        // Triplets: (0,1,2): 1 - 1.5 + .2 = -0.3 inactive; (1,0,2): 1 - .5 + .2 active;
        //           (2,3,1): 1.5 - .5 + .2 active;          (3,2,0): 1.5 - 3 + .2 inactive.
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5, 3.0], 1, false).unwrap();
        let labels = [0, 0, 1, 1];
        let t = [tr(0, 1, 2), tr(1, 0, 2), tr(2, 3, 1), tr(3, 2, 0)];
        let s = MinerStats::try_new(&dist, &labels, &t, 0.2).unwrap();
        assert_eq!(s.triplets, 4);
        assert_eq!(s.pairs, 0);
        assert!(close(s.active_fraction, 0.5));
        assert!(close(s.mean_hardest_positive.unwrap(), 1.25));
        assert!(close(s.mean_hardest_negative.unwrap(), 1.125));
        assert!(close(s.spread, 9.5 / 6.0));
        assert!(!s.collapsed);
        assert_eq!(s.to_string(), "active=0.50 d+=1.25 d-=1.12 spread=1.58");
    }

    #[test]
    fn anchors_without_both_are_skipped_in_means() {
        // r2 is alone in class 1: it has a negative but no positive.
        // r0: d+ 2 (r1), d- 5 (r2); r1: d+ 2, d- 3. Means 2 and 4.
        let dist = DistanceMatrix::euclidean(&[0.0, 2.0, 5.0], 1, false).unwrap();
        let s = MinerStats::new(&dist, &[0, 0, 1], &[], 1.0);
        assert_eq!(s.mean_hardest_positive, Some(2.0));
        assert_eq!(s.mean_hardest_negative, Some(4.0));
        assert_eq!(s.active_fraction, 0.0);
        let single = MinerStats::new(&dist, &[0, 0, 0], &[], 1.0);
        assert_eq!(single.mean_hardest_positive, None);
        assert_eq!(single.to_string(), "active=0.00 d+=- d-=- spread=3.33");
    }

    #[test]
    fn collapse_alarm() {
        let labels = [0, 0, 1, 1];
        let t = [tr(0, 1, 2)];
        // All-zero distances: every triplet active (loss = margin), collapsed.
        let zero = DistanceMatrix::new(4, vec![0.0; 16]).unwrap();
        let s = MinerStats::new(&zero, &labels, &t, 0.2);
        assert!(s.collapsed);
        assert_eq!(s.active_fraction, 1.0);
        assert!(s.to_string().ends_with(" COLLAPSE"), "{s}");
        // Zero margin: the absolute floor still fires on all-zero distances.
        assert!(MinerStats::new(&zero, &labels, &t, 0.0).collapsed);
        // Every off-diagonal distance 0.005: spread 0.005.
        let tiny = DistanceMatrix::new(
            4,
            (0..16)
                .map(|k| if k % 5 == 0 { 0.0 } else { 0.005 })
                .collect(),
        )
        .unwrap();
        // margin 0 -> threshold 1e-3: not collapsed; margin 0.2 -> 0.01: collapsed.
        assert!(!MinerStats::new(&tiny, &labels, &t, 0.0).collapsed);
        assert!(MinerStats::new(&tiny, &labels, &t, 0.2).collapsed);
        assert_eq!(
            MinerStats::new(&tiny, &labels, &t, 0.0).to_string(),
            "active=0.00 d+=5.0e-3 d-=5.0e-3 spread=5.0e-3"
        );
        // A single row is never reported as collapsed.
        let one = DistanceMatrix::new(1, vec![0.0]).unwrap();
        assert!(!MinerStats::new(&one, &[0], &[], 0.2).collapsed);
    }

    #[test]
    fn pair_stats() {
        // Class 0 at 0, 1; class 1 at 1.5. pos 0.5, neg 1.0.
        // (0,1) sim d 1 > .5 active; (0,2) d 1.5 not < 1; (1,2) d .5 < 1 active.
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 1.5], 1, false).unwrap();
        let p = |a, b, similar| IndexPair { a, b, similar };
        let pairs = [p(0, 1, true), p(0, 2, false), p(1, 2, false)];
        let s = MinerStats::try_for_pairs(&dist, &[0, 0, 1], &pairs, 0.5, 1.0).unwrap();
        assert_eq!((s.triplets, s.pairs), (0, 3));
        assert!(close(s.active_fraction, 2.0 / 3.0));
        // Collapse threshold from neg_margin: 0.05 * 40 = 2 > spread 1.0.
        assert!(MinerStats::for_pairs(&dist, &[0, 0, 1], &pairs, 0.5, 40.0).collapsed);
    }

    #[test]
    fn errors() {
        let dist = DistanceMatrix::euclidean(&[0.0, 1.0, 2.0], 1, false).unwrap();
        assert_eq!(
            MinerStats::try_new(&dist, &[0, 0, 1], &[tr(0, 1, 3)], 0.1),
            Err(MetricLossError::IndexOutOfRange { index: 3, batch: 3 })
        );
        assert_eq!(
            MinerStats::try_new(&dist, &[0, 1], &[], 0.1),
            Err(MetricLossError::LabelCount {
                labels: 2,
                batch: 3
            })
        );
        assert!(matches!(
            MinerStats::try_new(&dist, &[0, 0, 1], &[], f32::NAN),
            Err(MetricLossError::InvalidMargin { .. })
        ));
        let pair = IndexPair {
            a: 0,
            b: 9,
            similar: true,
        };
        assert_eq!(
            MinerStats::try_for_pairs(&dist, &[0, 0, 1], &[pair], 0.1, 1.0),
            Err(MetricLossError::IndexOutOfRange { index: 9, batch: 3 })
        );
        let empty = DistanceMatrix::new(0, vec![]).unwrap();
        assert!(matches!(
            MinerStats::try_new(&empty, &[], &[], 0.1),
            Err(MetricLossError::EmptyBatch { .. })
        ));
    }
}
