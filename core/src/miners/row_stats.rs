//! One anchor row's part of [`MinerStats`](super::MinerStats), written once
//! for every path that computes it: the mined path's host matrix
//! ([`MinerStats`](super::MinerStats)' own rows), the family's fused pass
//! and the cross-batch memory's fused pass. A row is one sweep, eight
//! columns at a time with AVX2 when the labels fit in `u32`.

/// One anchor row's part of [`MinerStats`](super::MinerStats): the sum of
/// its off-diagonal distances, its farthest positive and closest negative
/// (when it has both), and how many of its pairs are active.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RowStats {
    /// `Σ_{j ≠ a} d_aj`.
    pub sum: f64,
    /// `(max d over positives, min d over negatives)`.
    pub hardest: Option<(f32, f32)>,
    /// With margins `(pos_margin, neg_margin)`: the row's positive pairs
    /// with `d > pos_margin` and negative pairs with `d < neg_margin`.
    pub active: usize,
}

impl RowStats {
    /// The row of an anchor labelled `label` in a distance matrix
    /// (`row[j] = d(anchor, j)`, column `j` labelled `columns[j]`), column
    /// `own` (the anchor itself, on a batch's own matrix) skipped; `margins`
    /// counts the active pairs of every pair of the row. `ids`: the column
    /// labels again as `u32`, when they all fit (see [`label_ids`]), for the
    /// eight-lane sweep; the sum of distances is then added in another
    /// order (in `f64` either way).
    pub(crate) fn of(
        label: usize,
        row: &[f32],
        columns: &[usize],
        ids: Option<&[u32]>,
        own: Option<usize>,
        margins: Option<(f32, f32)>,
    ) -> Self {
        Self::of_units::<false>(label, row, columns, ids, own, margins)
    }

    /// [`of`](Self::of) for a row of cosine similarities `s`: the
    /// statistics of the cosine distances `clamp(1 − s, 0, 2)`, bit for
    /// bit, computed in the same sweep (no row of distances written first).
    pub(crate) fn of_cosines(
        label: usize,
        row: &[f32],
        columns: &[usize],
        ids: Option<&[u32]>,
        own: Option<usize>,
        margins: Option<(f32, f32)>,
    ) -> Self {
        Self::of_units::<true>(label, row, columns, ids, own, margins)
    }

    /// [`of`](Self::of) of the row's values, or of their cosine distances
    /// (`COSINE`).
    fn of_units<const COSINE: bool>(
        label: usize,
        row: &[f32],
        columns: &[usize],
        ids: Option<&[u32]>,
        own: Option<usize>,
        margins: Option<(f32, f32)>,
    ) -> Self {
        let mut t = Totals::new(margins);
        let n = row.len();
        let parts = match own {
            Some(o) => [(0, o), (o + 1, n)],
            None => [(0, n), (n, n)],
        };
        #[cfg(target_arch = "x86_64")]
        if let (Some(ids), Ok(label)) = (ids, u32::try_from(label))
            && ids.len() >= n
            && std::is_x86_feature_detected!("avx2")
        {
            for (from, to) in parts {
                // SAFETY: the CPU has AVX2 (checked just above), and
                // `ids` is at least as long as the row.
                unsafe { t.add_avx2::<COSINE>(label, &row[from..to], &ids[from..to]) };
            }
            return t.stats();
        }
        let _ = ids;
        for (from, to) in parts {
            t.add::<_, COSINE>(label, &row[from..to], &columns[from..to]);
        }
        t.stats()
    }
}

/// The labels as `u32` for [`RowStats::of`]'s eight lanes, when every one
/// fits.
pub(crate) fn label_ids(labels: &[usize]) -> Option<Vec<u32>> {
    labels.iter().map(|&l| u32::try_from(l).ok()).collect()
}

/// [`RowStats::of`]'s running sum, maximum, minimum and counts.
struct Totals {
    sum: f64,
    pos: f32,
    neg: f32,
    n_pos: usize,
    n_neg: usize,
    active: usize,
    /// The margins, or ones no distance passes.
    margins: (f32, f32),
}

impl Totals {
    fn new(margins: Option<(f32, f32)>) -> Self {
        Totals {
            sum: 0.0,
            pos: f32::NEG_INFINITY,
            neg: f32::INFINITY,
            n_pos: 0,
            n_neg: 0,
            active: 0,
            margins: margins.unwrap_or((f32::INFINITY, f32::NEG_INFINITY)),
        }
    }

    /// Adds the columns of `d` (with `COSINE`, of `clamp(1 − d, 0, 2)`).
    fn add<L: PartialEq + Copy, const COSINE: bool>(&mut self, label: L, d: &[f32], labels: &[L]) {
        let (pm, nm) = self.margins;
        for (&v, &l) in d.iter().zip(labels) {
            let v = if COSINE { (1.0 - v).clamp(0.0, 2.0) } else { v };
            let same = l == label;
            self.sum += f64::from(v);
            if same {
                self.pos = self.pos.max(v);
                self.n_pos += 1;
            } else {
                self.neg = self.neg.min(v);
                self.n_neg += 1;
            }
            self.active += usize::from((same && v > pm) || (!same && v < nm));
        }
    }

    /// [`add`](Self::add), eight columns at a time, the tail in scalar code.
    ///
    /// # Safety
    /// The CPU has AVX2; `ids` is at least as long as `d`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_avx2<const COSINE: bool>(&mut self, label: u32, d: &[f32], ids: &[u32]) {
        use std::arch::x86_64::*;
        assert!(ids.len() >= d.len());
        let (pm, nm) = self.margins;
        let lab = _mm256_set1_epi32(label as i32);
        let (vpm, vnm) = (_mm256_set1_ps(pm), _mm256_set1_ps(nm));
        let (lo_inf, hi_inf) = (
            _mm256_set1_ps(f32::NEG_INFINITY),
            _mm256_set1_ps(f32::INFINITY),
        );
        let (mut s_lo, mut s_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (mut pos, mut neg) = (lo_inf, hi_inf);
        let (mut n_pos, mut act) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let full = d.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 ≤ d.len() ≤ ids.len()`.
            let (v, l) = unsafe {
                (
                    _mm256_loadu_ps(d.as_ptr().add(i)),
                    _mm256_loadu_si256(ids.as_ptr().add(i).cast()),
                )
            };
            // clamp(1 − v, 0, 2) as `f32::clamp`: NaN and −0 kept (`max`
            // and `min` return their second operand for a NaN or equal zeros)
            let v = if COSINE {
                let one_minus = _mm256_sub_ps(_mm256_set1_ps(1.0), v);
                _mm256_min_ps(
                    _mm256_set1_ps(2.0),
                    _mm256_max_ps(_mm256_setzero_ps(), one_minus),
                )
            } else {
                v
            };
            let same = _mm256_castsi256_ps(_mm256_cmpeq_epi32(l, lab));
            s_lo = _mm256_add_pd(s_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s_hi = _mm256_add_pd(s_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
            pos = _mm256_max_ps(pos, _mm256_blendv_ps(lo_inf, v, same));
            neg = _mm256_min_ps(neg, _mm256_blendv_ps(v, hi_inf, same));
            // a mask's lanes are −1: subtracting counts them
            n_pos = _mm256_sub_epi32(n_pos, _mm256_castps_si256(same));
            let a = _mm256_or_ps(
                _mm256_and_ps(same, _mm256_cmp_ps::<_CMP_GT_OQ>(v, vpm)),
                _mm256_andnot_ps(same, _mm256_cmp_ps::<_CMP_LT_OQ>(v, vnm)),
            );
            act = _mm256_sub_epi32(act, _mm256_castps_si256(a));
        }
        let mut f = [0.0f32; 8];
        let mut g = [0.0f32; 8];
        let mut c = [0u32; 8];
        let mut e = [0u32; 8];
        let mut s = [0.0f64; 4];
        // SAFETY: each buffer holds one register's lanes.
        unsafe {
            _mm256_storeu_ps(f.as_mut_ptr(), pos);
            _mm256_storeu_ps(g.as_mut_ptr(), neg);
            _mm256_storeu_si256(c.as_mut_ptr().cast(), n_pos);
            _mm256_storeu_si256(e.as_mut_ptr().cast(), act);
            _mm256_storeu_pd(s.as_mut_ptr(), _mm256_add_pd(s_lo, s_hi));
        }
        let n_pos = c.iter().map(|&k| k as usize).sum::<usize>();
        self.sum += s.iter().sum::<f64>();
        self.pos = f.iter().copied().fold(self.pos, f32::max);
        self.neg = g.iter().copied().fold(self.neg, f32::min);
        self.n_pos += n_pos;
        self.n_neg += full - n_pos;
        self.active += e.iter().map(|&k| k as usize).sum::<usize>();
        self.add::<_, COSINE>(label, &d[full..], &ids[full..d.len()]);
    }

    fn stats(&self) -> RowStats {
        let pos = (self.n_pos > 0).then_some(self.pos);
        let neg = (self.n_neg > 0).then_some(self.neg);
        RowStats {
            sum: self.sum,
            hardest: pos.zip(neg),
            active: self.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics as the definition reads: one column at a time.
    fn naive(
        label: usize,
        row: &[f32],
        columns: &[usize],
        own: Option<usize>,
        margins: Option<(f32, f32)>,
    ) -> RowStats {
        let mut sum = 0.0f64;
        let (mut pos, mut neg): (Option<f32>, Option<f32>) = (None, None);
        let mut active = 0;
        for (j, (&d, &l)) in row.iter().zip(columns).enumerate() {
            if own == Some(j) {
                continue;
            }
            sum += f64::from(d);
            let similar = l == label;
            if similar {
                pos = Some(pos.map_or(d, |p| p.max(d)));
            } else {
                neg = Some(neg.map_or(d, |q| q.min(d)));
            }
            if let Some((pm, nm)) = margins {
                active += usize::from((similar && d > pm) || (!similar && d < nm));
            }
        }
        RowStats {
            sum,
            hardest: pos.zip(neg),
            active,
        }
    }

    /// Eight lanes and one at a time against the definition, on rows whose
    /// lengths cross the lanes' multiples, with and without an own column.
    #[test]
    fn both_sweeps_equal_the_definition() {
        for n in [1usize, 2, 7, 8, 9, 17, 64, 101, 1021] {
            let labels: Vec<usize> = (0..n).map(|j| (j * 5) % 3).collect();
            let d: Vec<f32> = (0..n).map(|j| ((j * 37) % 19) as f32 / 9.0).collect();
            let ids = label_ids(&labels).expect("small labels");
            for own in [Some(0), Some(n / 2), Some(n - 1), None] {
                let label = labels[own.unwrap_or(n / 2)];
                for margins in [None, Some((0.5, 1.2)), Some((0.0, 2.0))] {
                    let want = naive(label, &d, &labels, own, margins);
                    for ids in [None, Some(&ids[..])] {
                        let got = RowStats::of(label, &d, &labels, ids, own, margins);
                        assert!((got.sum - want.sum).abs() <= 1e-12 * want.sum.max(1.0));
                        assert_eq!(got.hardest, want.hardest, "n={n} own={own:?}");
                        assert_eq!(got.active, want.active, "n={n} own={own:?} {margins:?}");
                    }
                }
            }
        }
    }

    /// `of_cosines` is `of` of the clamped cosine distances bit for bit,
    /// eight lanes and one at a time: scores past 1 and below −1, ±0, ±1,
    /// NaN and infinities among them.
    #[test]
    fn cosines_are_the_distances_stats_bit_for_bit() {
        let special = [
            1.0,
            -1.0,
            1.5,
            -1.5,
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + f32::EPSILON,
        ];
        for n in [1usize, 7, 8, 9, 64, 1021] {
            let labels: Vec<usize> = (0..n).map(|j| (j * 5) % 3).collect();
            let ids = label_ids(&labels).expect("small labels");
            for with_special in [false, true] {
                let s: Vec<f32> = (0..n)
                    .map(|j| match j % 6 {
                        4 if with_special => special[(j / 6) % special.len()],
                        _ => ((j * 37) % 23) as f32 / 11.0 - 1.0,
                    })
                    .collect();
                let d: Vec<f32> = s.iter().map(|&v| (1.0 - v).clamp(0.0, 2.0)).collect();
                for own in [Some(0), Some(n / 2), None] {
                    let label = labels[own.unwrap_or(n / 2)];
                    for margins in [None, Some((0.5, 1.2))] {
                        for ids in [None, Some(&ids[..])] {
                            let want = RowStats::of(label, &d, &labels, ids, own, margins);
                            let got = RowStats::of_cosines(label, &s, &labels, ids, own, margins);
                            let bits = |r: RowStats| {
                                (
                                    r.sum.to_bits(),
                                    r.hardest.map(|(p, q)| (p.to_bits(), q.to_bits())),
                                    r.active,
                                )
                            };
                            assert_eq!(bits(got), bits(want), "n={n} own={own:?}");
                        }
                    }
                }
            }
        }
    }

    /// A single class has no negative, so no hardest pair; a label too wide
    /// for `u32` takes the one-at-a-time sweep.
    #[test]
    fn no_negative_and_wide_labels() {
        let d = [0.0f32, 0.5, 0.25];
        for ids in [None, Some(&[4u32, 4, 4][..])] {
            let got = RowStats::of(4, &d, &[4, 4, 4], ids, Some(1), None);
            assert_eq!(got.hardest, None);
            assert_eq!(got.sum, 0.25);
        }
        let wide = [usize::MAX, 1, usize::MAX];
        assert_eq!(label_ids(&wide), None);
        let got = RowStats::of(usize::MAX, &d, &wide, None, None, Some((0.1, 0.3)));
        assert_eq!(got.hardest, Some((0.25, 0.5)));
        assert_eq!(got.active, 1);
    }
}
