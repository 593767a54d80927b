//! Embeddings, labels and ids as NumPy `.npy` files (through the `npyz`
//! crate): what numpy (`np.load`), faiss (`index.add(np.load(...))`) and
//! the import tools of vector databases read directly. `docs/search.md`
//! shows the Python side.
//!
//! Types: embeddings `float32` (`<f4`), shape `(rows, width)`, C order;
//! labels and ids `int64` (`<i8`), shape `(rows,)` — faiss's id type.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use super::error::unwrap_or_panic;
use super::{EmbeddingIndex, IndexError};

/// The files [`EmbeddingIndex::export_npy`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyFiles {
    /// `embeddings.npy`: `float32`, `(rows, width)`.
    pub embeddings: PathBuf,
    /// `labels.npy`: `int64`, `(rows,)`.
    pub labels: PathBuf,
    /// `ids.npy`: `int64`, `(rows,)`.
    pub ids: PathBuf,
}

/// Writes `rows` (row-major, `width` values each) to `path` as a
/// `float32` array of shape `(rows.len() / width, width)`.
///
/// # Errors
/// [`IndexError::ZeroWidth`], [`IndexError::WidthMismatch`] when `rows` is
/// not a whole number of rows, [`IndexError::Io`].
///
/// ```
/// use metric_loss_core::index::write_embeddings_npy;
///
/// let path = std::env::temp_dir().join("metric-loss-doc-embeddings.npy");
/// write_embeddings_npy(&path, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
/// // numpy: np.load(path) is array([[1., 2., 3.], [4., 5., 6.]], dtype=float32)
/// let bytes = std::fs::read(&path).unwrap();
/// assert_eq!(&bytes[..6], b"\x93NUMPY");
/// # std::fs::remove_file(&path).ok();
/// ```
pub fn write_embeddings_npy(
    path: impl AsRef<Path>,
    rows: &[f32],
    width: usize,
) -> Result<(), IndexError> {
    let path = path.as_ref();
    if width == 0 {
        return Err(IndexError::ZeroWidth);
    }
    if !rows.len().is_multiple_of(width) {
        return Err(IndexError::WidthMismatch {
            what: "rows",
            values: rows.len(),
            width,
            rows: None,
        });
    }
    let shape = [(rows.len() / width) as u64, width as u64];
    write(path, &shape, rows.iter().copied())
}

/// Writes class labels to `path` as an `int64` array of shape `(n,)`.
///
/// # Errors
/// [`IndexError::OutOfRange`] for a label above `i64::MAX`,
/// [`IndexError::Io`].
///
/// ```
/// use metric_loss_core::index::write_labels_npy;
///
/// let path = std::env::temp_dir().join("metric-loss-doc-labels.npy");
/// write_labels_npy(&path, &[3, 1, 4]).unwrap();
/// # std::fs::remove_file(&path).ok();
/// ```
pub fn write_labels_npy(path: impl AsRef<Path>, labels: &[usize]) -> Result<(), IndexError> {
    let values = signed("label", labels.iter().map(|&l| l as u64))?;
    write(path.as_ref(), &[values.len() as u64], values)
}

/// Writes ids to `path` as an `int64` array of shape `(n,)` (faiss's
/// `add_with_ids` takes them as they are).
///
/// # Errors
/// [`IndexError::OutOfRange`] for an id above `i64::MAX`, [`IndexError::Io`].
///
/// ```
/// use metric_loss_core::index::write_ids_npy;
///
/// let path = std::env::temp_dir().join("metric-loss-doc-ids.npy");
/// write_ids_npy(&path, &[1001, 1002]).unwrap();
/// assert!(write_ids_npy(&path, &[u64::MAX]).is_err());
/// # std::fs::remove_file(&path).ok();
/// ```
pub fn write_ids_npy(path: impl AsRef<Path>, ids: &[u64]) -> Result<(), IndexError> {
    let values = signed("id", ids.iter().copied())?;
    write(path.as_ref(), &[values.len() as u64], values)
}

fn signed(what: &'static str, values: impl Iterator<Item = u64>) -> Result<Vec<i64>, IndexError> {
    values
        .map(|v| i64::try_from(v).map_err(|_| IndexError::OutOfRange { what, value: v }))
        .collect()
}

fn write<T: npyz::AutoSerialize>(
    path: &Path,
    shape: &[u64],
    values: impl IntoIterator<Item = T>,
) -> Result<(), IndexError> {
    let io = |e: std::io::Error| IndexError::io(path, e);
    let file = File::create(path).map_err(io)?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    writer.extend(values).map_err(io)?;
    writer.finish().map_err(io)
}

impl EmbeddingIndex {
    /// Writes `embeddings.npy`, `labels.npy` and `ids.npy` into the folder
    /// `dir` (created if needed): the rows as stored (unit rows for
    /// cosine, so faiss's `IndexFlatIP` on them ranks by cosine), labels and
    /// ids as `int64`. See `docs/search.md` for loading them into faiss or
    /// a vector database.
    ///
    /// # Errors
    /// [`IndexError::OutOfRange`] for an id or label above `i64::MAX`,
    /// [`IndexError::Io`].
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, Metric};
    ///
    /// let mut index = EmbeddingIndex::new(Metric::Euclidean, 2);
    /// index.add(&[0.0, 1.0, 2.0, 3.0], &[5, 6]);
    /// let dir = std::env::temp_dir().join("metric-loss-doc-export");
    /// let files = index.try_export_npy(&dir).unwrap();
    /// assert!(files.embeddings.ends_with("embeddings.npy"));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    pub fn try_export_npy(&self, dir: impl AsRef<Path>) -> Result<NpyFiles, IndexError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let files = NpyFiles {
            embeddings: dir.join("embeddings.npy"),
            labels: dir.join("labels.npy"),
            ids: dir.join("ids.npy"),
        };
        write_embeddings_npy(&files.embeddings, self.rows(), self.dim())?;
        write_labels_npy(&files.labels, self.labels())?;
        write_ids_npy(&files.ids, self.ids())?;
        Ok(files)
    }

    /// [`try_export_npy`](Self::try_export_npy), panicking on error.
    #[track_caller]
    pub fn export_npy(&self, dir: impl AsRef<Path>) -> NpyFiles {
        unwrap_or_panic(self.try_export_npy(dir))
    }
}
