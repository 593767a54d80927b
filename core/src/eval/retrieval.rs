//! Retrieval metrics with the definitions of pytorch-metric-learning's
//! `AccuracyCalculator`: Precision@1, R-Precision, MAP@R and Recall@K.
//!
//! For every query the references are ranked by distance (ties broken by
//! reference index, so results are deterministic). With `R` the number of
//! references that share the query's label:
//!
//! - **Precision@1**: whether the nearest reference has the query's label;
//! - **R-Precision**: the fraction of the `R` nearest references that share
//!   the label;
//! - **MAP@R** (Musgrave et al. 2020, *A Metric Learning Reality Check*):
//!   `(1/R) * sum_{i=1..R} P(i) * rel(i)` where `rel(i)` says whether the
//!   `i`-th nearest reference shares the label and `P(i)` is the precision
//!   of the `i` nearest;
//! - **Recall@K**: whether at least one of the `K` nearest references shares
//!   the label (the "Recall@K" of metric-learning papers, not the IR
//!   recall). If `K` exceeds the number of references, all of them are used.
//!
//! Each metric is the mean over queries. Queries whose label no reference
//! has (`R = 0`) are **skipped** by every metric (as pytorch-metric-learning
//! does with "lone" queries) and counted in [`RetrievalMetrics::skipped`].
//!
//! When the queries *are* the references ([`ReferenceSet::SameAsQueries`]),
//! query `i` is removed from its own neighbour list and from its `R`.
//!
//! The search is an [`EmbeddingIndex`]:
//! distances in `f32` as `||q||^2 + ||r||^2 - 2 q.r` (clamped at 0), blocked
//! on the project's GEMM on rayon's threads, never materialising the full
//! query x reference matrix.
//!
//! ```
//! use metric_loss_core::eval::{retrieval_metrics, ReferenceSet, RetrievalOptions};
//!
//! // Four 1-D embeddings, two classes.
//! let emb = [0.0, 1.0, 10.0, 11.0];
//! let labels = [0, 0, 1, 1];
//! let m = retrieval_metrics(&emb, &labels, ReferenceSet::SameAsQueries, 1,
//!                           &RetrievalOptions::default()).unwrap();
//! assert_eq!(m.precision_at_1, 1.0);
//! assert_eq!(m.map_at_r, 1.0);
//! assert_eq!(m.queries, 4);
//! ```

use std::collections::HashMap;

use super::EvalError;
use crate::index::{EmbeddingIndex, Metric, Request, prepare, scan};

/// How distances between embeddings are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distance {
    /// Euclidean (L2) distance.
    #[default]
    Euclidean,
    /// Cosine distance `1 - cos(q, r)`. Rows are L2-normalised first; a zero
    /// row stays zero (it is at the same distance from everything).
    Cosine,
}

/// Where the references come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReferenceSet<'a> {
    /// The queries are the references: query `i` is excluded from its own
    /// neighbours and from its count `R` of same-label references.
    SameAsQueries,
    /// A separate reference set (row-major, same `dim` as the queries).
    Separate {
        /// Reference embeddings, `labels.len() * dim` values.
        embeddings: &'a [f32],
        /// One label per reference row.
        labels: &'a [usize],
    },
}

/// Options of [`retrieval_metrics`].
///
/// ```
/// use metric_loss_core::eval::{Distance, RetrievalOptions};
///
/// let opts = RetrievalOptions { distance: Distance::Cosine, ..Default::default() };
/// assert_eq!(opts.recall_ks, vec![1, 2, 4, 8]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalOptions {
    /// The distance used to rank references (default: Euclidean).
    pub distance: Distance,
    /// The `K`s of Recall@K (default `[1, 2, 4, 8]`); each must be >= 1.
    pub recall_ks: Vec<usize>,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        RetrievalOptions {
            distance: Distance::Euclidean,
            recall_ks: vec![1, 2, 4, 8],
        }
    }
}

/// The result of [`retrieval_metrics`]: means over the evaluated queries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalMetrics {
    /// Fraction of queries whose nearest reference shares their label.
    pub precision_at_1: f64,
    /// Mean R-Precision.
    pub r_precision: f64,
    /// Mean MAP@R.
    pub map_at_r: f64,
    /// `(K, Recall@K)` in the order of [`RetrievalOptions::recall_ks`].
    pub recall_at_k: Vec<(usize, f64)>,
    /// Number of queries evaluated.
    pub queries: usize,
    /// Number of queries skipped because no reference shares their label.
    pub skipped: usize,
}

impl RetrievalMetrics {
    /// Recall@`k`, if `k` was among the requested `K`s.
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall_at_k
            .iter()
            .find(|&&(kk, _)| kk == k)
            .map(|&(_, r)| r)
    }
}

/// Computes Precision@1, R-Precision, MAP@R and Recall@K.
///
/// `queries` is row-major with `dim` columns and one label per row in
/// `query_labels`. See the [module documentation](self) for the definitions.
///
/// The references go into an [`EmbeddingIndex`]
/// (ids = reference numbers, so ties go to the lower reference), and every
/// query asks it for its `max(R, K)` nearest, which the metrics read as
/// they come out of the search: no query × reference matrix is held and no
/// row is sorted.
///
/// # Errors
/// [`EvalError::ZeroDim`], [`EvalError::Empty`] (no queries or no
/// references), [`EvalError::NotMultipleOfDim`], [`EvalError::LabelCount`],
/// [`EvalError::NonFiniteEmbedding`], [`EvalError::InvalidK`] (a `K` of 0)
/// and [`EvalError::NoEvaluableQueries`] when every query is skipped.
///
/// ```
/// use metric_loss_core::eval::{retrieval_metrics, ReferenceSet, RetrievalOptions};
///
/// // References at 0 (label 0) and 10 (label 1); queries at 1, 9 and 4.
/// let refs = [0.0, 10.0];
/// let ref_labels = [0, 1];
/// let opts = RetrievalOptions { recall_ks: vec![1, 2], ..Default::default() };
/// let m = retrieval_metrics(
///     &[1.0, 9.0, 4.0], &[0, 1, 1],
///     ReferenceSet::Separate { embeddings: &refs, labels: &ref_labels },
///     1, &opts,
/// ).unwrap();
/// // The query at 4 (label 1) is nearer to 0 (label 0): 2 of 3 are right.
/// assert!((m.precision_at_1 - 2.0 / 3.0).abs() < 1e-12);
/// assert_eq!(m.recall_at(2), Some(1.0));
/// ```
pub fn retrieval_metrics(
    queries: &[f32],
    query_labels: &[usize],
    references: ReferenceSet<'_>,
    dim: usize,
    options: &RetrievalOptions,
) -> Result<RetrievalMetrics, EvalError> {
    if dim == 0 {
        return Err(EvalError::ZeroDim);
    }
    check_set("queries", queries, query_labels, dim)?;
    let (same_set, refs, ref_labels) = match references {
        ReferenceSet::SameAsQueries => (true, queries, query_labels),
        ReferenceSet::Separate { embeddings, labels } => {
            check_set("references", embeddings, labels, dim)?;
            (false, embeddings, labels)
        }
    };
    if let Some(&k) = options.recall_ks.iter().find(|&&k| k == 0) {
        return Err(EvalError::InvalidK { k });
    }

    let metric = match options.distance {
        Distance::Euclidean => Metric::Euclidean,
        Distance::Cosine => Metric::Cosine,
    };
    let mut index = EmbeddingIndex::try_new(metric, dim)?;
    index.try_add(refs, ref_labels)?;
    // With the queries as references, the index holds them already prepared.
    let prepared;
    let q_rows = if same_set {
        index.rows()
    } else {
        prepared = prepare("queries", queries, dim, metric)?;
        &prepared
    };

    let mut label_counts: HashMap<usize, usize> = HashMap::new();
    for &l in ref_labels {
        *label_counts.entry(l).or_insert(0) += 1;
    }
    let own = usize::from(same_set);
    // R of a query: the references with its label, itself excluded.
    let r_of = |q: usize| label_counts.get(&query_labels[q]).map_or(0, |c| c - own);
    let available = ref_labels.len() - own;
    let kmax = options.recall_ks.iter().copied().max().unwrap_or(1);
    let ks = &options.recall_ks;

    // Per query: [evaluated, p@1, r-precision, ap@r, recall@k...].
    let width = 4 + ks.len();
    let nq = query_labels.len();
    let mut out = vec![0.0f64; nq * width];
    if available > 0 {
        scan(
            index.references(),
            Request {
                queries: q_rows,
                exclude_self: same_set,
            },
            &mut out,
            width,
            |q| match r_of(q) {
                0 => 0,
                r => r.max(kmax).min(available),
            },
            |q, hits, row| {
                let r = r_of(q);
                if r == 0 {
                    return;
                }
                let label = query_labels[q];
                let rel = |n: usize| ref_labels[hits[n].pos] == label;
                let mut found = 0usize;
                let mut ap = 0.0f64;
                for n in 0..r {
                    if rel(n) {
                        found += 1;
                        ap += found as f64 / (n + 1) as f64;
                    }
                }
                row[0] = 1.0;
                row[1] = if rel(0) { 1.0 } else { 0.0 };
                row[2] = found as f64 / r as f64;
                row[3] = ap / r as f64;
                for (slot, &k) in row[4..].iter_mut().zip(ks) {
                    *slot = if (0..k.min(hits.len())).any(rel) {
                        1.0
                    } else {
                        0.0
                    };
                }
            },
        );
    }

    // Sum in query order so that the result does not depend on the threads.
    let nk = ks.len();
    let mut sums = vec![0.0f64; 3 + nk];
    let mut evaluated = 0usize;
    for row in out.chunks_exact(width) {
        if row[0] == 1.0 {
            evaluated += 1;
            for (s, v) in sums.iter_mut().zip(&row[1..]) {
                *s += v;
            }
        }
    }
    if evaluated == 0 {
        return Err(EvalError::NoEvaluableQueries { queries: nq });
    }
    let n = evaluated as f64;
    Ok(RetrievalMetrics {
        precision_at_1: sums[0] / n,
        r_precision: sums[1] / n,
        map_at_r: sums[2] / n,
        recall_at_k: ks
            .iter()
            .zip(&sums[3..])
            .map(|(&k, &s)| (k, s / n))
            .collect(),
        queries: evaluated,
        skipped: nq - evaluated,
    })
}

fn check_set(
    what: &'static str,
    emb: &[f32],
    labels: &[usize],
    dim: usize,
) -> Result<(), EvalError> {
    if emb.is_empty() || labels.is_empty() {
        return Err(EvalError::Empty { what });
    }
    if !emb.len().is_multiple_of(dim) {
        return Err(EvalError::NotMultipleOfDim {
            what,
            len: emb.len(),
            dim,
        });
    }
    let rows = emb.len() / dim;
    if rows != labels.len() {
        return Err(EvalError::LabelCount {
            what,
            rows,
            labels: labels.len(),
        });
    }
    if let Some(row) = emb
        .chunks_exact(dim)
        .position(|r| !crate::fused::sum_of_squares(r).is_finite())
    {
        return Err(EvalError::NonFiniteEmbedding { what, row });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ks: &[usize]) -> RetrievalOptions {
        RetrievalOptions {
            distance: Distance::Euclidean,
            recall_ks: ks.to_vec(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Six 1-D points, same-set mode; every neighbour list worked out by hand.
    ///
    /// x      = [0, 1, 2, 4, 7, 8], labels = [0, 1, 0, 0, 1, 1]
    /// Each class has 3 members, so R = 2 for every query (self excluded).
    ///
    /// q0 (x=0, L0): d 1:1 2:2 3:4 4:7 5:8 -> order 1,2,3,4,5 rel 0,1,1,0,0
    ///     P@1 0, R-prec 1/2, AP = (P(2)=1/2)/2 = 1/4, R@1 0 R@2 1 R@4 1
    /// q1 (x=1, L1): d 0:1 2:1 3:3 4:6 5:7 -> order 0,2,3,4,5 rel 0,0,0,1,1
    ///     P@1 0, R-prec 0, AP 0, R@1 0 R@2 0 R@4 1
    /// q2 (x=2, L0): d 0:2 1:1 3:2 4:5 5:6 -> order 1,0,3,4,5 rel 0,1,1,0,0
    ///     P@1 0, R-prec 1/2, AP 1/4, R@1 0 R@2 1 R@4 1
    /// q3 (x=4, L0): d 0:4 1:3 2:2 4:3 5:4 -> order 2,1,4,0,5 rel 1,0,0,1,0
    ///     P@1 1, R-prec 1/2, AP = (P(1)=1)/2 = 1/2, R@1 1 R@2 1 R@4 1
    /// q4 (x=7, L1): d 0:7 1:6 2:5 3:3 5:1 -> order 5,3,2,1,0 rel 1,0,0,1,0
    ///     P@1 1, R-prec 1/2, AP 1/2, R@k 1
    /// q5 (x=8, L1): d 0:8 1:7 2:6 3:4 4:1 -> order 4,3,2,1,0 rel 1,0,0,1,0
    ///     P@1 1, R-prec 1/2, AP 1/2, R@k 1
    ///
    /// P@1 = 3/6, R-prec = 2.5/6, MAP@R = 2/6, R@1 = 3/6, R@2 = 5/6, R@4 = 1.
    #[test]
    fn hand_computed_same_set() {
        let x = [0.0, 1.0, 2.0, 4.0, 7.0, 8.0];
        let l = [0, 1, 0, 0, 1, 1];
        let m =
            retrieval_metrics(&x, &l, ReferenceSet::SameAsQueries, 1, &opts(&[1, 2, 4])).unwrap();
        assert!(close(m.precision_at_1, 0.5), "{m:?}");
        assert!(close(m.r_precision, 2.5 / 6.0), "{m:?}");
        assert!(close(m.map_at_r, 2.0 / 6.0), "{m:?}");
        assert!(close(m.recall_at(1).unwrap(), 0.5));
        assert!(close(m.recall_at(2).unwrap(), 5.0 / 6.0));
        assert!(close(m.recall_at(4).unwrap(), 1.0));
        assert_eq!(m.recall_at(3), None);
        assert_eq!((m.queries, m.skipped), (6, 0));
    }

    /// x = [0, 1, 10, 11], labels [0, 1, 0, 1].
    /// Same-set, neighbours (distance, label) with the query itself removed:
    ///   q0: 1 (1, L1), 2 (10, L0), 3 (11, L1)
    ///   q1: 0 (1, L0), 2 (9, L0), 3 (10, L1)
    ///   q2: 3 (1, L1), 1 (9, L1), 0 (10, L0)
    ///   q3: 2 (1, L0), 1 (10, L1), 0 (11, L0)
    /// Every nearest neighbour has the other label: P@1 = 0, and R = 1 so
    /// MAP@R = R-prec = 0. Recall@2: q0 and q3 yes, q1 and q2 no -> 1/2;
    /// Recall@3 = 1. (Without the exclusion each query would find itself.)
    /// Separate with the same points: each query finds itself first (d 0),
    /// then the other label (d 1); R = 2, so AP = (1/2)(1 + 0) = 1/2.
    #[test]
    fn same_set_excludes_the_query_itself() {
        let x = [0.0, 1.0, 10.0, 11.0];
        let l = [0, 1, 0, 1];
        let m =
            retrieval_metrics(&x, &l, ReferenceSet::SameAsQueries, 1, &opts(&[1, 2, 3])).unwrap();
        assert_eq!(m.precision_at_1, 0.0);
        assert_eq!(m.map_at_r, 0.0);
        assert_eq!(m.r_precision, 0.0);
        assert_eq!(m.recall_at_k, vec![(1, 0.0), (2, 0.5), (3, 1.0)]);
        let refs = ReferenceSet::Separate {
            embeddings: &x,
            labels: &l,
        };
        let m = retrieval_metrics(&x, &l, refs, 1, &opts(&[1, 2])).unwrap();
        assert_eq!(m.precision_at_1, 1.0);
        assert_eq!(m.map_at_r, 0.5);
        assert_eq!(m.r_precision, 0.5);
    }

    /// A query at 0 (label 0) with references at -1 and +1 (equal distance):
    /// the lower reference index wins the tie.
    #[test]
    fn ties_broken_by_reference_index() {
        let q = [0.0];
        let ql = [0];
        let m = retrieval_metrics(
            &q,
            &ql,
            ReferenceSet::Separate {
                embeddings: &[-1.0, 1.0],
                labels: &[1, 0],
            },
            1,
            &opts(&[1]),
        )
        .unwrap();
        // order: ref 0 (label 1), ref 1 (label 0); R = 1
        assert_eq!(
            (m.precision_at_1, m.map_at_r, m.recall_at_k[0].1),
            (0.0, 0.0, 0.0)
        );
        let m = retrieval_metrics(
            &q,
            &ql,
            ReferenceSet::Separate {
                embeddings: &[1.0, -1.0],
                labels: &[0, 1],
            },
            1,
            &opts(&[1]),
        )
        .unwrap();
        assert_eq!(
            (m.precision_at_1, m.map_at_r, m.recall_at_k[0].1),
            (1.0, 1.0, 1.0)
        );
    }

    /// References 0 (L0) and 10 (L1); queries 1 (L0), 9 (L1), 5 (L2).
    /// The L2 query has no reference of its class and is skipped.
    #[test]
    fn query_without_reference_of_its_class_is_skipped() {
        let refs = ReferenceSet::Separate {
            embeddings: &[0.0, 10.0],
            labels: &[0, 1],
        };
        let m = retrieval_metrics(&[1.0, 9.0, 5.0], &[0, 1, 2], refs, 1, &opts(&[1, 5])).unwrap();
        assert_eq!((m.queries, m.skipped), (2, 1));
        assert_eq!(m.precision_at_1, 1.0);
        assert_eq!(m.map_at_r, 1.0);
        // K = 5 > 2 references: all references are used.
        assert_eq!(m.recall_at(5), Some(1.0));
        // In same-set mode a singleton class is skipped too.
        let m = retrieval_metrics(
            &[0.0, 1.0, 5.0],
            &[0, 0, 1],
            ReferenceSet::SameAsQueries,
            1,
            &opts(&[1]),
        )
        .unwrap();
        assert_eq!((m.queries, m.skipped, m.precision_at_1), (2, 1, 1.0));
        // All skipped: an error.
        let e = retrieval_metrics(
            &[0.0, 1.0],
            &[0, 1],
            ReferenceSet::SameAsQueries,
            1,
            &opts(&[1]),
        )
        .unwrap_err();
        assert_eq!(e, EvalError::NoEvaluableQueries { queries: 2 });
    }

    /// q = (1,1), label 0; references a = (10,10) label 0 and b = (1,0)
    /// label 1. Euclidean: |q-b| = 1 < |q-a| = 9*sqrt(2): P@1 = 0.
    /// Cosine: cos(q,a) = 1, cos(q,b) = 1/sqrt(2): P@1 = 1.
    #[test]
    fn cosine_ranks_by_angle() {
        let refs = ReferenceSet::Separate {
            embeddings: &[10.0, 10.0, 1.0, 0.0],
            labels: &[0, 1],
        };
        let e = retrieval_metrics(&[1.0, 1.0], &[0], refs, 2, &opts(&[1])).unwrap();
        assert_eq!(e.precision_at_1, 0.0);
        let c = retrieval_metrics(
            &[1.0, 1.0],
            &[0],
            refs,
            2,
            &RetrievalOptions {
                distance: Distance::Cosine,
                recall_ks: vec![1],
            },
        )
        .unwrap();
        assert_eq!(c.precision_at_1, 1.0);
    }

    #[test]
    fn input_errors() {
        let o = opts(&[1]);
        let s = ReferenceSet::SameAsQueries;
        assert_eq!(
            retrieval_metrics(&[1.0], &[0], s, 0, &o),
            Err(EvalError::ZeroDim)
        );
        assert_eq!(
            retrieval_metrics(&[], &[], s, 2, &o),
            Err(EvalError::Empty { what: "queries" })
        );
        assert_eq!(
            retrieval_metrics(&[1.0, 2.0, 3.0], &[0], s, 2, &o),
            Err(EvalError::NotMultipleOfDim {
                what: "queries",
                len: 3,
                dim: 2
            })
        );
        assert_eq!(
            retrieval_metrics(&[1.0, 2.0], &[0], s, 1, &o),
            Err(EvalError::LabelCount {
                what: "queries",
                rows: 2,
                labels: 1
            })
        );
        assert_eq!(
            retrieval_metrics(&[1.0, f32::NAN, 0.0, 0.0], &[0, 0], s, 2, &o),
            Err(EvalError::NonFiniteEmbedding {
                what: "queries",
                row: 0
            })
        );
        let refs = ReferenceSet::Separate {
            embeddings: &[0.0, 1.0, f32::INFINITY],
            labels: &[0, 0, 0],
        };
        assert_eq!(
            retrieval_metrics(&[1.0], &[0], refs, 1, &o),
            Err(EvalError::NonFiniteEmbedding {
                what: "references",
                row: 2
            })
        );
        let refs = ReferenceSet::Separate {
            embeddings: &[],
            labels: &[],
        };
        assert_eq!(
            retrieval_metrics(&[1.0], &[0], refs, 1, &o),
            Err(EvalError::Empty { what: "references" })
        );
        assert_eq!(
            retrieval_metrics(&[1.0, 2.0], &[0, 0], s, 1, &opts(&[1, 0])),
            Err(EvalError::InvalidK { k: 0 })
        );
    }

    /// Straightforward definition: full sort of every neighbour list.
    fn naive(
        q: &[f32],
        ql: &[usize],
        r: &[f32],
        rl: &[usize],
        dim: usize,
        same: bool,
        ks: &[usize],
    ) -> Vec<f64> {
        let mut sums = vec![0.0; 3 + ks.len()];
        let mut n = 0.0;
        for (i, qv) in q.chunks(dim).enumerate() {
            let mut list: Vec<(f64, usize)> = r
                .chunks(dim)
                .enumerate()
                .filter(|&(j, _)| !(same && i == j))
                .map(|(j, rv)| {
                    (
                        qv.iter()
                            .zip(rv)
                            .map(|(a, b)| ((a - b) as f64).powi(2))
                            .sum(),
                        j,
                    )
                })
                .collect();
            list.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let rel: Vec<bool> = list.iter().map(|&(_, j)| rl[j] == ql[i]).collect();
            let big_r = rel.iter().filter(|&&b| b).count();
            if big_r == 0 {
                continue;
            }
            n += 1.0;
            sums[0] += rel[0] as u8 as f64;
            sums[1] += rel[..big_r].iter().filter(|&&b| b).count() as f64 / big_r as f64;
            let mut hits = 0.0;
            let mut ap = 0.0;
            for (p, &b) in rel[..big_r].iter().enumerate() {
                if b {
                    hits += 1.0;
                    ap += hits / (p + 1) as f64;
                }
            }
            sums[2] += ap / big_r as f64;
            for (s, &k) in sums[3..].iter_mut().zip(ks) {
                *s += rel.iter().take(k).any(|&b| b) as u8 as f64;
            }
        }
        sums.iter().map(|s| s / n).collect()
    }

    /// Small-integer coordinates make the f32 distance expansion exact, so
    /// the blocked, threaded code must agree exactly with the naive one,
    /// ties included, across several query blocks and reference tiles.
    #[test]
    fn agrees_with_naive_definition_across_blocks() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let dim = 3;
        let (nq, nr) = (150, 1300);
        let q: Vec<f32> = (0..nq * dim).map(|_| (next() % 5) as f32).collect();
        let ql: Vec<usize> = (0..nq).map(|_| next() % 7).collect();
        let r: Vec<f32> = (0..nr * dim).map(|_| (next() % 5) as f32).collect();
        let rl: Vec<usize> = (0..nr).map(|_| next() % 6).collect();
        let ks = [1, 3, 10, 1000];
        let m = retrieval_metrics(
            &q,
            &ql,
            ReferenceSet::Separate {
                embeddings: &r,
                labels: &rl,
            },
            dim,
            &opts(&ks),
        )
        .unwrap();
        let want = naive(&q, &ql, &r, &rl, dim, false, &ks);
        let got: Vec<f64> = [m.precision_at_1, m.r_precision, m.map_at_r]
            .into_iter()
            .chain(m.recall_at_k.iter().map(|x| x.1))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "got {got:?} want {want:?}");
        }
        assert_eq!(m.queries + m.skipped, nq);
        assert!(m.skipped > 0, "label 6 has no reference");

        let m = retrieval_metrics(&r, &rl, ReferenceSet::SameAsQueries, dim, &opts(&ks)).unwrap();
        let want = naive(&r, &rl, &r, &rl, dim, true, &ks);
        let got: Vec<f64> = [m.precision_at_1, m.r_precision, m.map_at_r]
            .into_iter()
            .chain(m.recall_at_k.iter().map(|x| x.1))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "got {got:?} want {want:?}");
        }
    }
}
