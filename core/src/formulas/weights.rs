//! Pair weights: how the tuples a miner gives become, for each anchor row,
//! a weight per positive and per negative pair, as PML's losses read them.

use super::ListSizes;
use crate::error::MetricLossError;
use crate::miners::Tuples;

/// How a formula reads the mined tuples (PML's two ways, and its two
/// conversions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Pair masks: a pair mined once or more counts once (PML's
    /// `mat_based_loss`: multi-similarity, SupCon, circle, generalized
    /// lifted structure).
    Mask,
    /// Pair counts: a pair counts as often as it was mined (PML's
    /// `pair_based_loss`: NT-Xent, lifted structure).
    Count,
    /// The triplets the lists make (PML's `convert_to_triplets`: every
    /// positive pair with every negative pair of the same anchor; triplets
    /// as given), as weights: the positive pair `(a, p)` weighs the number
    /// of triplets that hold it, likewise `(a, n)` (margin loss).
    Triplet,
    /// N-pairs' selection (PML's `convert_to_pos_pairs_with_unique_labels`):
    /// per anchor label, in increasing label order, the first positive pair
    /// of the list; rows are those anchors, columns their positives, the
    /// diagonal positive and everything else negative.
    NPairs,
}

#[derive(Debug, Clone)]
enum Source {
    /// Every pair of the batch, from the labels: no list, no matrix.
    Labels {
        labels: Vec<usize>,
        pos_scale: Vec<f32>,
        neg_scale: Vec<f32>,
    },
    /// Row-major `rows × cols` weights.
    Dense { pos: Vec<f32>, neg: Vec<f32> },
    /// Positive on the diagonal, negative elsewhere (N-pairs).
    Diagonal,
}

/// The positive and negative weight of every (row, column) pair a formula
/// reads, and which rows and columns of the batch's matrix those are.
///
/// For [`Tuples::All`] (the no-miner default) the weights come from the
/// labels, row by row ([`fill_row`](Self::fill_row)), with no list and no
/// `N × N` buffer: what a fused kernel reads.
///
/// ```
/// use metric_loss_core::formulas::{PairWeights, Weighting};
/// use metric_loss_core::miners::Tuples;
/// let w = PairWeights::try_new(Weighting::Mask, &Tuples::All, &[0, 0, 1]).unwrap();
/// let (mut pos, mut neg) = (vec![0.0; 3], vec![0.0; 3]);
/// w.fill_row(0, &mut pos, &mut neg);
/// assert_eq!((pos, neg), (vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]));
/// assert_eq!((w.sizes().pos, w.sizes().neg, w.sizes().triplets), (2, 4, 2));
/// ```
#[derive(Debug, Clone)]
pub struct PairWeights {
    rows: usize,
    cols: usize,
    view: Option<(Vec<usize>, Vec<usize>)>,
    source: Source,
    sizes: ListSizes,
    /// `Some(ε)`: [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)'s
    /// rule applied to each row of [`Tuples::All`]'s weights by the fused
    /// pass that reads them (which alone knows the row's scores).
    miner: Option<f32>,
}

/// Per-anchor counts of the entries of a list of directed pairs.
fn per_anchor(n: usize, pairs: &[(usize, usize)]) -> Vec<usize> {
    let mut c = vec![0usize; n];
    for &(a, _) in pairs {
        c[a] += 1;
    }
    c
}

impl PairWeights {
    /// The weights of `tuples` over a batch with `labels`, read as `weighting`.
    ///
    /// Errors: an index out of range ([`MetricLossError::IndexOutOfRange`]).
    pub fn try_new(
        weighting: Weighting,
        tuples: &Tuples,
        labels: &[usize],
    ) -> Result<Self, MetricLossError> {
        Self::try_new_sized(weighting, tuples, labels, labels.len())
    }

    /// The weights of `tuples` over `cols` columns: a batch's own matrix
    /// (`cols = labels.len()`, [`try_new`](Self::try_new)), or a batch
    /// against a reference set of `cols` rows (a cross-batch memory), where
    /// the tuples must be lists (`(row, column)` pairs or triplets).
    ///
    /// Errors: an index out of range ([`MetricLossError::IndexOutOfRange`]);
    /// [`MetricLossError::InvalidConfig`] for [`Tuples::All`] or
    /// [`Weighting::NPairs`] against a reference set of another size.
    ///
    /// ```
    /// use metric_loss_core::formulas::{PairWeights, Weighting};
    /// use metric_loss_core::miners::Tuples;
    /// let t = Tuples::Pairs { positive: vec![(0, 3)], negative: vec![(1, 0)] };
    /// let w = PairWeights::try_new_sized(Weighting::Mask, &t, &[0, 1], 4).unwrap();
    /// assert_eq!((w.rows(), w.cols()), (2, 4));
    /// assert!(PairWeights::try_new_sized(Weighting::Mask, &Tuples::All, &[0, 1], 4).is_err());
    /// ```
    pub fn try_new_sized(
        weighting: Weighting,
        tuples: &Tuples,
        labels: &[usize],
        cols: usize,
    ) -> Result<Self, MetricLossError> {
        let n = labels.len();
        if cols != n && (weighting == Weighting::NPairs || *tuples == Tuples::All) {
            return Err(MetricLossError::InvalidConfig(format!(
                "pair weights over {n} rows and {cols} columns need listed tuples and a weighting other than N-pairs'"
            )));
        }
        tuples.check_against(n, cols)?;
        if weighting == Weighting::NPairs {
            return Ok(Self::npairs(tuples, labels));
        }
        let full = |source, sizes| Self {
            rows: n,
            cols,
            view: None,
            source,
            sizes,
            miner: None,
        };
        if let Tuples::All = tuples {
            // each label's class size from the sorted labels (its run's
            // length, two binary searches): not a sweep per row, nor a
            // hash map (SipHash per label cost more than the sort)
            let mut sorted = labels.to_vec();
            sorted.sort_unstable();
            let class_size =
                |l: usize| sorted.partition_point(|&x| x <= l) - sorted.partition_point(|&x| x < l);
            let pos_count: Vec<usize> = labels.iter().map(|&l| class_size(l) - 1).collect();
            let neg_count: Vec<usize> = pos_count.iter().map(|p| n - 1 - p).collect();
            let sizes = ListSizes {
                pos: pos_count.iter().sum(),
                neg: neg_count.iter().sum(),
                triplets: pos_count.iter().zip(&neg_count).map(|(p, q)| p * q).sum(),
            };
            let (pos_scale, neg_scale) = if weighting == Weighting::Triplet {
                let f = |v: &[usize]| v.iter().map(|&c| c as f32).collect();
                (f(&neg_count), f(&pos_count))
            } else {
                (vec![1.0; n], vec![1.0; n])
            };
            let labels = labels.to_vec();
            return Ok(full(
                Source::Labels {
                    labels,
                    pos_scale,
                    neg_scale,
                },
                sizes,
            ));
        }
        let (pos, neg) = tuples.to_pairs(labels);
        let (pos_per, neg_per) = (per_anchor(n, &pos), per_anchor(n, &neg));
        let sizes = ListSizes {
            pos: pos.len(),
            neg: neg.len(),
            triplets: match tuples {
                Tuples::Triplets(t) => t.len(),
                _ => pos_per.iter().zip(&neg_per).map(|(p, q)| p * q).sum(),
            },
        };
        let mut wp = vec![0.0f32; n * cols];
        let mut wn = vec![0.0f32; n * cols];
        for &(a, p) in &pos {
            wp[a * cols + p] += 1.0;
        }
        for &(a, q) in &neg {
            wn[a * cols + q] += 1.0;
        }
        match (weighting, tuples) {
            (Weighting::Mask, _) => {
                for w in wp.iter_mut().chain(wn.iter_mut()) {
                    *w = f32::from(u8::from(*w > 0.0));
                }
            }
            (Weighting::Triplet, Tuples::Pairs { .. }) => {
                for a in 0..n {
                    for w in &mut wp[a * cols..(a + 1) * cols] {
                        *w *= neg_per[a] as f32;
                    }
                    for w in &mut wn[a * cols..(a + 1) * cols] {
                        *w *= pos_per[a] as f32;
                    }
                }
            }
            _ => {}
        }
        Ok(full(Source::Dense { pos: wp, neg: wn }, sizes))
    }

    /// PML's N-pairs selection, from the positive list in order (for
    /// [`Tuples::All`], by anchor then positive, without building it).
    fn npairs(tuples: &Tuples, labels: &[usize]) -> Self {
        let mut first: Vec<(usize, usize, usize)> = Vec::new(); // (label, anchor, positive)
        let mut take = |a: usize, p: usize| {
            if !first.iter().any(|&(l, _, _)| l == labels[a]) {
                first.push((labels[a], a, p));
            }
        };
        match tuples {
            Tuples::All => {
                for (a, &la) in labels.iter().enumerate() {
                    if let Some(p) = (0..labels.len()).find(|&p| p != a && labels[p] == la) {
                        take(a, p);
                    }
                }
            }
            other => other
                .to_pairs(labels)
                .0
                .into_iter()
                .for_each(|(a, p)| take(a, p)),
        }
        first.sort_by_key(|&(l, _, _)| l);
        let k = first.len();
        Self {
            rows: k,
            cols: k,
            view: Some((
                first.iter().map(|f| f.1).collect(),
                first.iter().map(|f| f.2).collect(),
            )),
            source: Source::Diagonal,
            sizes: ListSizes {
                pos: k,
                neg: k * k.saturating_sub(1),
                triplets: k * k.saturating_sub(1),
            },
            miner: None,
        }
    }

    /// [`Tuples::All`]'s weights with
    /// [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)`(ε)`'s
    /// rule on each row: what a fused pass applies with the row's scores in
    /// hand ([`fill_row`](Self::fill_row) alone still gives every pair).
    pub(crate) fn with_multi_similarity_miner(self, epsilon: f32) -> Self {
        debug_assert!(matches!(self.source, Source::Labels { .. }));
        Self {
            miner: Some(epsilon),
            ..self
        }
    }

    /// The `ε` of [`with_multi_similarity_miner`](Self::with_multi_similarity_miner).
    pub(crate) fn multi_similarity_miner(&self) -> Option<f32> {
        self.miner
    }

    /// Rows of the formula's view.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the formula's view.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Which rows and columns of the batch's matrix the view holds (`None`:
    /// all of them, in order).
    pub fn view(&self) -> Option<(&[usize], &[usize])> {
        self.view
            .as_ref()
            .map(|(r, c)| (r.as_slice(), c.as_slice()))
    }

    /// PML's list sizes, for its zero-loss rules.
    pub fn sizes(&self) -> ListSizes {
        self.sizes
    }

    /// Writes row `i`'s positive and negative weights (`cols` each).
    /// Panics if `i >= rows` or a slice is shorter than `cols`.
    pub fn fill_row(&self, i: usize, pos: &mut [f32], neg: &mut [f32]) {
        let (pos, neg) = (&mut pos[..self.cols], &mut neg[..self.cols]);
        match &self.source {
            Source::Labels {
                labels,
                pos_scale,
                neg_scale,
            } => {
                let (li, ps, ns) = (labels[i], pos_scale[i], neg_scale[i]);
                // eight columns at a time, then the pair with itself: same
                // label, neither weight
                fill_by_label(labels, li, (ps, ns), pos, neg);
                if let Some(p) = pos.get_mut(i) {
                    *p = 0.0;
                }
            }
            Source::Dense { pos: wp, neg: wn } => {
                let c = self.cols;
                pos.copy_from_slice(&wp[i * c..(i + 1) * c]);
                neg.copy_from_slice(&wn[i * c..(i + 1) * c]);
            }
            Source::Diagonal => {
                for (j, (p, q)) in pos.iter_mut().zip(neg.iter_mut()).enumerate() {
                    *p = f32::from(u8::from(j == i));
                    *q = f32::from(u8::from(j != i));
                }
            }
        }
    }

    /// [`fill_row`](Self::fill_row) for row `i` into buffers that hold
    /// row `prev`'s weights as `fill_row` wrote them: when both rows have
    /// the same label (and scales) in a batch's own weights, only the two
    /// pairs of a row with itself differ, so only those two are written
    /// (rows of one class follow each other in a P × K batch).
    pub(crate) fn fill_row_after(
        &self,
        i: usize,
        prev: Option<usize>,
        pos: &mut [f32],
        neg: &mut [f32],
    ) {
        if let (
            Some(k),
            Source::Labels {
                labels,
                pos_scale,
                neg_scale,
            },
        ) = (prev, &self.source)
        {
            let same = labels[k] == labels[i]
                && pos_scale[k].to_bits() == pos_scale[i].to_bits()
                && neg_scale[k].to_bits() == neg_scale[i].to_bits();
            if same && k < self.cols && i < self.cols && labels.len() == self.cols {
                pos[k] = pos_scale[i];
                pos[i] = 0.0;
                return;
            }
        }
        self.fill_row(i, pos, neg);
    }

    /// Both weights as row-major `rows × cols` host matrices (the generic
    /// path's constant tensors).
    pub fn dense(&self) -> (Vec<f32>, Vec<f32>) {
        let (r, c) = (self.rows, self.cols);
        let mut pos = vec![0.0f32; r * c];
        let mut neg = vec![0.0f32; r * c];
        for (i, (p, q)) in pos
            .chunks_exact_mut(c.max(1))
            .zip(neg.chunks_exact_mut(c.max(1)))
            .enumerate()
            .take(r)
        {
            self.fill_row(i, p, q);
        }
        (pos, neg)
    }
}

/// `pos_j = ps` and `neg_j = 0` where `labels_j == label`, `pos_j = 0` and
/// `neg_j = ns` elsewhere, over the columns the three slices share: eight
/// at a time where the CPU has AVX2.
fn fill_by_label(labels: &[usize], label: usize, s: (f32, f32), pos: &mut [f32], neg: &mut [f32]) {
    let n = labels.len().min(pos.len()).min(neg.len());
    let (labels, pos, neg) = (&labels[..n], &mut pos[..n], &mut neg[..n]);
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 (checked just above); the three slices have length n.
        done = unsafe { avx2::fill_by_label(labels, label, s, pos, neg) };
    }
    fill_by_label_portable(
        &labels[done..],
        label,
        s,
        &mut pos[done..],
        &mut neg[done..],
    );
}

fn fill_by_label_portable(
    labels: &[usize],
    label: usize,
    (ps, ns): (f32, f32),
    pos: &mut [f32],
    neg: &mut [f32],
) {
    for ((p, q), &l) in pos.iter_mut().zip(neg.iter_mut()).zip(labels) {
        let same = l == label;
        *p = if same { ps } else { 0.0 };
        *q = if same { 0.0 } else { ns };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`fill_by_label`](super::fill_by_label) over the whole blocks of
    /// eight columns (64-bit labels, four to a register); returns how many
    /// columns it wrote.
    ///
    /// # Safety
    /// The CPU has AVX2; the three slices have the same length; `usize` is
    /// 64 bits (x86-64).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fill_by_label(
        labels: &[usize],
        label: usize,
        (ps, ns): (f32, f32),
        pos: &mut [f32],
        neg: &mut [f32],
    ) -> usize {
        let full = labels.len() / 8 * 8;
        let l = _mm256_set1_epi64x(label as i64);
        let (vp, vn) = (_mm256_set1_ps(ps), _mm256_set1_ps(ns));
        for j in (0..full).step_by(8) {
            // SAFETY: `j + 8 ≤ full ≤` the slices' length (the caller's contract).
            unsafe {
                let lo = _mm256_loadu_si256(labels.as_ptr().add(j).cast());
                let hi = _mm256_loadu_si256(labels.as_ptr().add(j + 4).cast());
                let (lo, hi) = (
                    _mm256_castsi256_ps(_mm256_cmpeq_epi64(lo, l)),
                    _mm256_castsi256_ps(_mm256_cmpeq_epi64(hi, l)),
                );
                // each 64-bit mask's low half, in column order: the shuffle
                // gives columns [0 1 4 5 | 2 3 6 7], the permute restores it
                let mixed = _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi));
                let same = _mm256_castsi256_ps(_mm256_permute4x64_epi64::<0b11_01_10_00>(mixed));
                _mm256_storeu_ps(pos.as_mut_ptr().add(j), _mm256_and_ps(same, vp));
                _mm256_storeu_ps(neg.as_mut_ptr().add(j), _mm256_andnot_ps(same, vn));
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    /// `fill_by_label` writes what the portable loop writes, bit for bit:
    /// labels past `u32`, lengths across eight, scales -0 and NaN.
    #[test]
    fn fill_by_label_lanes_equal_the_portable_loop() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [0usize, 1, 7, 8, 9, 16, 61, 1027] {
            let labels: Vec<usize> = (0..n)
                .map(|j| match j % 9 {
                    4 => usize::MAX - (j % 2),
                    7 => 1 << 40,
                    _ => (j * 5) % 7,
                })
                .collect();
            for label in [3usize, usize::MAX, 1 << 40, 99] {
                for s in [(1.0f32, 1.0f32), (2.5, -0.0), (f32::NAN, 4.0)] {
                    let (mut wp, mut wn) = (vec![9.0f32; n], vec![9.0f32; n]);
                    super::fill_by_label_portable(&labels, label, s, &mut wp, &mut wn);
                    let (mut gp, mut gn) = (vec![9.0f32; n], vec![9.0f32; n]);
                    super::fill_by_label(&labels, label, s, &mut gp, &mut gn);
                    assert_eq!(bits(&gp), bits(&wp), "n={n} label={label}");
                    assert_eq!(bits(&gn), bits(&wn), "n={n} label={label}");
                }
            }
        }
    }

    use super::*;
    use crate::miners::Triplet;

    #[test]
    fn fill_row_after_is_fill_row() {
        let labels = [3usize, 3, 3, 1, 1, 3, 7, 1];
        let t = Tuples::All;
        for wt in [Weighting::Mask, Weighting::Count, Weighting::Triplet] {
            let w = PairWeights::try_new(wt, &t, &labels).unwrap();
            let (mut p, mut q) = (vec![0.0f32; 8], vec![0.0f32; 8]);
            let mut prev = None;
            // in order, backwards, and repeated
            for i in (0..8).chain((0..8).rev()).chain([2, 2, 5]) {
                w.fill_row_after(i, prev, &mut p, &mut q);
                let (mut wp, mut wq) = (vec![0.0f32; 8], vec![0.0f32; 8]);
                w.fill_row(i, &mut wp, &mut wq);
                assert_eq!((&p, &q), (&wp, &wq), "{wt:?} row {i} after {prev:?}");
                prev = Some(i);
            }
        }
    }

    fn dense(w: &PairWeights) -> (Vec<f32>, Vec<f32>) {
        w.dense()
    }

    #[test]
    fn all_pairs_from_labels_equal_the_listed_pairs() {
        let labels = [0, 1, 0, 2, 1, 0];
        let (pos, neg) = Tuples::All.to_pairs(&labels);
        let listed = Tuples::Pairs {
            positive: pos,
            negative: neg,
        };
        for wt in [Weighting::Mask, Weighting::Count, Weighting::Triplet] {
            let a = PairWeights::try_new(wt, &Tuples::All, &labels).unwrap();
            let b = PairWeights::try_new(wt, &listed, &labels).unwrap();
            assert_eq!(dense(&a), dense(&b), "{wt:?}");
            assert_eq!(a.sizes(), b.sizes(), "{wt:?}");
        }
    }

    #[test]
    fn repeats_count_or_not() {
        let labels = [0, 0, 1];
        let t = Tuples::Pairs {
            positive: vec![(0, 1), (0, 1)],
            negative: vec![(0, 2), (1, 2), (0, 2), (0, 2)],
        };
        let m = PairWeights::try_new(Weighting::Mask, &t, &labels).unwrap();
        let c = PairWeights::try_new(Weighting::Count, &t, &labels).unwrap();
        let tr = PairWeights::try_new(Weighting::Triplet, &t, &labels).unwrap();
        assert_eq!(dense(&m).0[1], 1.0);
        assert_eq!(dense(&c).0[1], 2.0);
        assert_eq!(dense(&c).1[2], 3.0);
        // (0,1) twice with 3 negatives of anchor 0: 6 triplets; (0,2) three times with 2 positives: 6
        assert_eq!(dense(&tr).0[1], 6.0);
        assert_eq!(dense(&tr).1[2], 6.0);
        // anchor 1 has no positive: its negative (1,2) makes no triplet
        assert_eq!(dense(&tr).1[5], 0.0);
        assert_eq!(tr.sizes().triplets, 6);
        assert_eq!((c.sizes().pos, c.sizes().neg), (2, 4));
    }

    #[test]
    fn triplets_as_weights() {
        let t = Tuples::Triplets(vec![
            Triplet {
                anchor: 0,
                positive: 1,
                negative: 2,
            },
            Triplet {
                anchor: 0,
                positive: 1,
                negative: 3,
            },
        ]);
        let w = PairWeights::try_new(Weighting::Triplet, &t, &[0, 0, 1, 2]).unwrap();
        let (p, q) = dense(&w);
        assert_eq!(p[1], 2.0);
        assert_eq!((q[2], q[3]), (1.0, 1.0));
        assert_eq!(
            w.sizes(),
            ListSizes {
                pos: 2,
                neg: 2,
                triplets: 2
            }
        );
    }

    #[test]
    fn npairs_selection_is_pml_s() {
        // labels 3 at rows 1, 4; label 0 at rows 0, 2, 5; label 7 alone at 3
        let labels = [0, 3, 0, 7, 3, 0];
        let w = PairWeights::try_new(Weighting::NPairs, &Tuples::All, &labels).unwrap();
        assert_eq!(w.view(), Some((&[0, 1][..], &[2, 4][..])));
        // from a list: the first pair of each anchor label, in label order
        let t = Tuples::Pairs {
            positive: vec![(4, 1), (5, 0), (1, 4), (0, 2)],
            negative: vec![],
        };
        let w = PairWeights::try_new(Weighting::NPairs, &t, &labels).unwrap();
        assert_eq!(w.view(), Some((&[5, 4][..], &[0, 1][..])));
        let (p, q) = dense(&w);
        assert_eq!((p, q), (vec![1.0, 0.0, 0.0, 1.0], vec![0.0, 1.0, 1.0, 0.0]));
    }

    #[test]
    fn bad_index() {
        let t = Tuples::Pairs {
            positive: vec![(0, 9)],
            negative: vec![],
        };
        assert_eq!(
            PairWeights::try_new(Weighting::Count, &t, &[0, 0]).unwrap_err(),
            MetricLossError::IndexOutOfRange { index: 9, batch: 2 }
        );
    }
}
