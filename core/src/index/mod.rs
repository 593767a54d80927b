//! Exact k-nearest-neighbour search over embeddings: [`EmbeddingIndex`].
//!
//! What a trained encoder is for: put the embeddings of a reference set in
//! an index (each row with an id and a class label), then ask which `k`
//! references are nearest to each query. The search is *exact* (every
//! reference is compared with every query, as faiss's `IndexFlatL2` /
//! `IndexFlatIP` do), blocked on the project's GEMM and shared among
//! rayon's threads, with a top-`k` selection that never sorts a whole row.
//! [`retrieval_metrics`](crate::eval::retrieval_metrics) is built on it.
//!
//! **Distances** ([`Metric`]), always "smaller is nearer", results nearest
//! first:
//!
//! | metric | distance reported | faiss equivalent |
//! |---|---|---|
//! | [`Euclidean`](Metric::Euclidean) | `‖q − r‖₂` | `IndexFlatL2`, square-rooted |
//! | [`SquaredEuclidean`](Metric::SquaredEuclidean) | `‖q − r‖₂²` | `IndexFlatL2` |
//! | [`Cosine`](Metric::Cosine) | `1 − cos(q, r)`, in `[0, 2]` | `IndexFlatIP` on unit rows: `1 − score` |
//! | [`Dot`](Metric::Dot) | `−⟨q, r⟩` (the negative inner product) | `IndexFlatIP`: `−score` |
//!
//! `Dot` follows the project's convention for `distance = dot` (see the
//! losses): the inner product negated, so that the largest inner product
//! comes first. **Ties** go to the lower id, then to the row added first:
//! the results are a deterministic function of the index and the queries,
//! whatever the number of threads.
//!
//! **When which**: `Euclidean` for encoders trained with a Euclidean loss
//! on raw embeddings; `Cosine` when the loss normalises (`normalize`,
//! FaceNet-style) — it equals the Euclidean order of unit rows, since
//! `‖q̂ − r̂‖² = 2 − 2 cos`; `Dot` for embeddings trained with inner
//! products, where the norm carries meaning.
//!
//! How distances are computed: the ranking uses the Gram identity
//! `‖q‖² + ‖r‖² − 2⟨q, r⟩` (clamped at 0), as faiss does, whose rounding
//! grows with the norms; the `k` Euclidean distances returned are then
//! recomputed from the differences `q − r` and the `k` re-ordered by them,
//! so a reference equal to the query is reported at exactly 0. Cosine
//! stores unit rows (a zero row stays zero, at distance 1 from everything).
//!
//! ```
//! use metric_loss_core::index::{EmbeddingIndex, Metric};
//!
//! // Three 2-D references, with class labels; ids are their row numbers.
//! let mut index = EmbeddingIndex::new(Metric::Euclidean, 2);
//! index.add(&[0.0, 0.0, 3.0, 4.0, 0.0, 1.0], &[7, 8, 7]);
//!
//! // Two queries, the 2 nearest references of each.
//! let found = index.search(&[0.0, 0.0, 3.0, 3.0], 2);
//! assert_eq!(found.row(0).ids, &[0, 2]);
//! assert_eq!(found.row(0).distances, &[0.0, 1.0]);
//! assert_eq!(found.row(0).labels, &[7, 7]);
//! assert_eq!(found.row(1).ids, &[1, 2]); // 1.0 and √13 away
//! ```
//!
//! Save and load with [`EmbeddingIndex::save`] / [`EmbeddingIndex::load`]
//! (a safetensors file), or export `.npy` files for numpy, faiss and vector
//! databases with [`EmbeddingIndex::export_npy`] (see `docs/search.md`).

mod error;
mod export;
mod file;
mod scan;
mod topk;

pub use error::IndexError;
pub use export::{NpyFiles, write_embeddings_npy, write_ids_npy, write_labels_npy};

use error::unwrap_or_panic;
pub(crate) use scan::{References, Request, scan, squared_norms};
pub(crate) use topk::Hit;

/// How an [`EmbeddingIndex`] measures distance (see the
/// [module documentation](self) for the exact definitions and when to use
/// which).
///
/// ```
/// use metric_loss_core::index::Metric;
///
/// assert_eq!(Metric::from_name("cosine"), Some(Metric::Cosine));
/// assert_eq!(Metric::Dot.name(), "dot");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Metric {
    /// `‖q − r‖₂`.
    #[default]
    Euclidean,
    /// `‖q − r‖₂²` (the numbers faiss's `IndexFlatL2` returns).
    SquaredEuclidean,
    /// `1 − cos(q, r)`; rows are stored L2-normalised.
    Cosine,
    /// `−⟨q, r⟩`: the negative inner product, so that nearer is smaller.
    Dot,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 4] = [
        Metric::Euclidean,
        Metric::SquaredEuclidean,
        Metric::Cosine,
        Metric::Dot,
    ];

    /// The metric's name in files and on command lines:
    /// `euclidean`, `squared_euclidean`, `cosine`, `dot`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean",
            Metric::SquaredEuclidean => "squared_euclidean",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// The metric of a [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// An exact nearest-neighbour index over embeddings of one width, each row
/// with an id and a class label. See the [module documentation](self).
///
/// ```
/// use metric_loss_core::index::{EmbeddingIndex, Metric};
///
/// let mut index = EmbeddingIndex::new(Metric::Cosine, 3);
/// // Your own ids (say, database keys) instead of row numbers:
/// index.add_with_ids(&[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], &[1001, 1002], &[0, 1]);
/// let found = index.search(&[0.0, 5.0, 0.1], 1);
/// assert_eq!(found.row(0).ids, &[1002]);
/// assert!(found.row(0).distances[0] < 1e-3); // nearly the same direction
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingIndex {
    metric: Metric,
    dim: usize,
    /// `len × dim` values, row-major; unit rows for cosine.
    rows: Vec<f32>,
    /// `‖r‖²` of every row.
    sq: Vec<f32>,
    ids: Vec<u64>,
    labels: Vec<usize>,
    /// Each row's place in the order of (id, position): ties are broken on
    /// it (derived from `ids`).
    ranks: Vec<u32>,
    /// The position of each tie rank (the inverse of `ranks`).
    order: Vec<u32>,
}

/// The neighbours of one query, nearest first: `k` ids, distances and
/// labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbours<'a> {
    /// The neighbours' ids.
    pub ids: &'a [u64],
    /// Their distances (see [`Metric`]), non-decreasing.
    pub distances: &'a [f32],
    /// Their class labels.
    pub labels: &'a [usize],
}

/// What [`EmbeddingIndex::search`] returns: `k` neighbours for each query,
/// nearest first, row-major (`queries × k`) as faiss returns them.
///
/// ```
/// use metric_loss_core::index::{EmbeddingIndex, Metric};
///
/// let mut index = EmbeddingIndex::new(Metric::Dot, 1);
/// index.add(&[1.0, 3.0, 2.0], &[0, 0, 1]);
/// let found = index.search(&[1.0, -1.0], 2);
/// assert_eq!((found.len(), found.k()), (2, 2));
/// assert_eq!(found.ids(), &[1, 2, 0, 2]); // largest q·r first
/// assert_eq!(found.row(1).distances, &[1.0, 2.0]); // −(−1·1), −(−1·2)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    k: usize,
    ids: Vec<u64>,
    distances: Vec<f32>,
    labels: Vec<usize>,
}

impl SearchResult {
    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// Whether there were no queries.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The neighbours of query `q`. Panics if `q >= len()`.
    pub fn row(&self, q: usize) -> Neighbours<'_> {
        assert!(q < self.len(), "query {q} of {}", self.len());
        let r = q * self.k..(q + 1) * self.k;
        Neighbours {
            ids: &self.ids[r.clone()],
            distances: &self.distances[r.clone()],
            labels: &self.labels[r],
        }
    }

    /// Every query's neighbours.
    pub fn rows(&self) -> impl Iterator<Item = Neighbours<'_>> + '_ {
        (0..self.len()).map(|q| self.row(q))
    }

    /// All ids, `queries × k` row-major.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// All distances, `queries × k` row-major.
    pub fn distances(&self) -> &[f32] {
        &self.distances
    }

    /// All labels, `queries × k` row-major.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
}

impl EmbeddingIndex {
    /// An empty index of rows of width `dim`. Errors with
    /// [`IndexError::ZeroWidth`] if `dim` is 0.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, IndexError, Metric};
    ///
    /// assert_eq!(EmbeddingIndex::try_new(Metric::Euclidean, 0), Err(IndexError::ZeroWidth));
    /// ```
    pub fn try_new(metric: Metric, dim: usize) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::ZeroWidth);
        }
        Ok(EmbeddingIndex {
            metric,
            dim,
            rows: Vec::new(),
            sq: Vec::new(),
            ids: Vec::new(),
            labels: Vec::new(),
            ranks: Vec::new(),
            order: Vec::new(),
        })
    }

    /// [`try_new`](Self::try_new), panicking on a width of 0.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, Metric};
    ///
    /// let index = EmbeddingIndex::new(Metric::Euclidean, 128);
    /// assert!(index.is_empty());
    /// ```
    #[track_caller]
    pub fn new(metric: Metric, dim: usize) -> Self {
        unwrap_or_panic(Self::try_new(metric, dim))
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rows as stored (`len × dim`, row-major): unit rows for
    /// [`Metric::Cosine`], the rows as added otherwise.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// The ids, in the order the rows were added.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The labels, in the order the rows were added.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Adds `labels.len()` rows (`rows` holds `labels.len() × dim` values,
    /// row-major), with ids numbering the index's rows: the first row ever
    /// added is id 0. Nothing is added if an error is returned.
    ///
    /// # Errors
    /// [`IndexError::WidthMismatch`] when `rows` does not hold one row of
    /// width `dim` per label, [`IndexError::NonFinite`] for a row with a NaN
    /// or an infinity.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, IndexError, Metric};
    ///
    /// let mut index = EmbeddingIndex::new(Metric::Euclidean, 2);
    /// index.try_add(&[1.0, 2.0], &[0]).unwrap();
    /// // three values for two labels: not rows of width 2
    /// let err = index.try_add(&[1.0, 2.0, 3.0], &[0, 1]).unwrap_err();
    /// assert!(matches!(err, IndexError::WidthMismatch { values: 3, width: 2, .. }));
    /// let err = index.try_add(&[1.0, f32::NAN], &[0]).unwrap_err();
    /// assert_eq!(err, IndexError::NonFinite { what: "rows", row: 0 });
    /// assert_eq!(index.len(), 1);
    /// ```
    pub fn try_add(&mut self, rows: &[f32], labels: &[usize]) -> Result<(), IndexError> {
        let first = self.len() as u64;
        let ids: Vec<u64> = (first..first + labels.len() as u64).collect();
        self.try_add_with_ids(rows, &ids, labels)
    }

    /// [`try_add`](Self::try_add), panicking on bad input.
    #[track_caller]
    pub fn add(&mut self, rows: &[f32], labels: &[usize]) {
        unwrap_or_panic(self.try_add(rows, labels))
    }

    /// Adds rows with ids of your choice (a database key, an image number):
    /// one id and one label per row. Ids need not be unique or ordered;
    /// ties in distance go to the lower id, then to the row added first.
    ///
    /// # Errors
    /// As [`try_add`](Self::try_add), and [`IndexError::CountMismatch`]
    /// when there are not as many ids as labels.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, Metric};
    ///
    /// let mut index = EmbeddingIndex::new(Metric::Euclidean, 1);
    /// index.try_add_with_ids(&[5.0, 5.0, 1.0], &[30, 10, 20], &[0, 0, 1]).unwrap();
    /// // two rows at the same distance: the lower id first
    /// assert_eq!(index.search(&[5.0], 2).row(0).ids, &[10, 30]);
    /// ```
    pub fn try_add_with_ids(
        &mut self,
        rows: &[f32],
        ids: &[u64],
        labels: &[usize],
    ) -> Result<(), IndexError> {
        let n = labels.len();
        if ids.len() != n {
            return Err(IndexError::CountMismatch {
                what: "ids",
                given: ids.len(),
                rows: n,
            });
        }
        if Some(rows.len()) != n.checked_mul(self.dim) {
            return Err(IndexError::WidthMismatch {
                what: "rows",
                values: rows.len(),
                width: self.dim,
                rows: Some(n),
            });
        }
        if self.len() + n > MAX_ROWS {
            return Err(IndexError::TooLarge {
                rows: self.len() + n,
            });
        }
        let prepared = prepare("rows", rows, self.dim, self.metric)?;
        self.sq.extend(squared_norms(&prepared, self.dim));
        self.rows.extend_from_slice(&prepared);
        self.ids.extend_from_slice(ids);
        self.labels.extend_from_slice(labels);
        // (ids that increase with the position, as `try_add` numbers them,
        // need no sort: their ranks are the positions)
        (self.ranks, self.order) = topk::tie_ranks(&self.ids);
        Ok(())
    }

    /// [`try_add_with_ids`](Self::try_add_with_ids), panicking on bad input.
    #[track_caller]
    pub fn add_with_ids(&mut self, rows: &[f32], ids: &[u64], labels: &[usize]) {
        unwrap_or_panic(self.try_add_with_ids(rows, ids, labels))
    }

    /// The `k` nearest rows of each query (`queries` is row-major, width
    /// [`dim`](Self::dim)), nearest first, ties to the lower id. Queries are
    /// shared among rayon's threads in blocks.
    ///
    /// # Errors
    /// [`IndexError::WidthMismatch`] when `queries` is not a whole number of
    /// rows, [`IndexError::EmptyIndex`], [`IndexError::InvalidK`] for a `k`
    /// of 0 or above [`len`](Self::len), [`IndexError::NonFinite`] for a
    /// query with a NaN or an infinity.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, IndexError, Metric};
    ///
    /// let mut index = EmbeddingIndex::new(Metric::Euclidean, 2);
    /// assert_eq!(index.try_search(&[0.0, 0.0], 1).unwrap_err(), IndexError::EmptyIndex);
    /// index.add(&[0.0, 0.0, 1.0, 0.0], &[0, 1]);
    /// assert_eq!(index.try_search(&[0.0, 0.0], 0).unwrap_err(), IndexError::InvalidK { k: 0, len: 2 });
    /// assert!(matches!(index.try_search(&[0.0, 0.0, 0.0], 1), Err(IndexError::WidthMismatch { .. })));
    /// let found = index.try_search(&[0.9, 0.0], 2).unwrap();
    /// assert_eq!(found.row(0).ids, &[1, 0]);
    /// ```
    pub fn try_search(&self, queries: &[f32], k: usize) -> Result<SearchResult, IndexError> {
        let dim = self.dim;
        if !queries.len().is_multiple_of(dim) {
            return Err(IndexError::WidthMismatch {
                what: "queries",
                values: queries.len(),
                width: dim,
                rows: None,
            });
        }
        if self.is_empty() {
            return Err(IndexError::EmptyIndex);
        }
        if k == 0 || k > self.len() {
            return Err(IndexError::InvalidK { k, len: self.len() });
        }
        let queries = prepare("queries", queries, dim, self.metric)?;
        let nq = queries.len() / dim;
        let mut out = vec![(0u64, 0.0f32, 0usize); nq * k];
        let exact = matches!(self.metric, Metric::Euclidean | Metric::SquaredEuclidean);
        scan(
            self.references(),
            Request {
                queries: &queries,
                exclude_self: false,
            },
            &mut out,
            k,
            |_| k,
            |q, hits, out| {
                if exact {
                    let query = &queries[q * dim..(q + 1) * dim];
                    // the rows are scattered over the index: ask for all of
                    // them before reading any
                    for h in hits {
                        prefetch(&self.rows[h.pos * dim..][..dim]);
                    }
                    let mut refined: Vec<Hit> = hits
                        .iter()
                        .map(|h| Hit {
                            key: squared_difference(query, &self.rows[h.pos * dim..][..dim]),
                            ..*h
                        })
                        .collect();
                    refined.sort_unstable();
                    self.emit(&refined, out);
                } else {
                    self.emit(hits, out);
                }
            },
        );
        let mut found = SearchResult {
            k,
            ids: Vec::with_capacity(out.len()),
            distances: Vec::with_capacity(out.len()),
            labels: Vec::with_capacity(out.len()),
        };
        for (id, d, l) in out {
            found.ids.push(id);
            found.distances.push(d);
            found.labels.push(l);
        }
        Ok(found)
    }

    /// [`try_search`](Self::try_search), panicking on bad input.
    #[track_caller]
    pub fn search(&self, queries: &[f32], k: usize) -> SearchResult {
        unwrap_or_panic(self.try_search(queries, k))
    }

    /// The rows as the search reads them.
    pub(crate) fn references(&self) -> References<'_> {
        References {
            metric: self.metric,
            dim: self.dim,
            rows: &self.rows,
            sq: &self.sq,
            ids: &self.ids,
            ranks: &self.ranks,
            order: &self.order,
        }
    }

    /// Writes hits as (id, distance, label).
    fn emit(&self, hits: &[Hit], out: &mut [(u64, f32, usize)]) {
        for (o, h) in out.iter_mut().zip(hits) {
            let distance = match self.metric {
                Metric::Euclidean => h.key.sqrt(),
                _ => h.key,
            };
            *o = (h.id, distance, self.labels[h.pos]);
        }
    }
}

/// The most rows an index holds: positions and tie ranks are `u32` (at
/// width 128, 2 TiB of embeddings).
const MAX_ROWS: usize = u32::MAX as usize;

/// Asks the CPU to bring `row` into the cache (a hint; nothing on other
/// targets).
#[inline]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch only hints, and `line` is a live slice.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `‖a − b‖²` from the differences (exactly 0 when `a == b`).
fn squared_difference(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            lanes[l] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Checks rows (finite values, finite squared norms) and prepares them for
/// the metric: unit rows for cosine (computed in `f64`; a zero row stays
/// zero), the rows themselves otherwise.
pub(crate) fn prepare(
    what: &'static str,
    rows: &[f32],
    dim: usize,
    metric: Metric,
) -> Result<Vec<f32>, IndexError> {
    for (row, values) in rows.chunks_exact(dim).enumerate() {
        if !crate::fused::sum_of_squares(values).is_finite() {
            return Err(IndexError::NonFinite { what, row });
        }
    }
    let mut out = rows.to_vec();
    if metric == Metric::Cosine {
        for row in out.chunks_exact_mut(dim) {
            let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            if norm > 0.0 {
                for v in row.iter_mut() {
                    *v = (*v as f64 / norm) as f32;
                }
            }
        }
    }
    Ok(out)
}
