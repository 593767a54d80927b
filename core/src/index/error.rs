//! What can go wrong with an [`EmbeddingIndex`](super::EmbeddingIndex).

use thiserror::Error;

/// What can go wrong when filling, searching, saving or loading an
/// [`EmbeddingIndex`](super::EmbeddingIndex), or exporting it.
///
/// The `try_` methods return it; the plain methods panic with its message.
///
/// ```
/// use metric_loss_core::index::{EmbeddingIndex, IndexError, Metric};
///
/// let mut index = EmbeddingIndex::new(Metric::Euclidean, 2);
/// index.try_add(&[0.0, 0.0, 1.0, 1.0], &[0, 1]).unwrap();
/// let err = index.try_search(&[0.5, 0.5], 3).unwrap_err();
/// assert_eq!(err, IndexError::InvalidK { k: 3, len: 2 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IndexError {
    /// An index of width 0: no distance is defined between empty rows.
    #[error("an embedding index needs a width of at least 1")]
    ZeroWidth,
    /// A search of an index that holds no rows.
    #[error("the index is empty: add rows before searching it")]
    EmptyIndex,
    /// A `k` of 0, or more neighbours than the index holds.
    #[error("k must be in 1..={len} (the rows the index holds), got {k}")]
    InvalidK {
        /// The `k` asked for.
        k: usize,
        /// The number of rows that can be returned.
        len: usize,
    },
    /// Rows whose width is not the index's: a flat buffer whose length is
    /// not a whole number of rows, or not the number of labels times the
    /// width.
    #[error("{what}: {values} values do not make rows of width {width}{}", rows_note(*.rows))]
    WidthMismatch {
        /// Which input (`"rows"`, `"queries"`, a tensor name).
        what: &'static str,
        /// The number of values given.
        values: usize,
        /// The index's width.
        width: usize,
        /// The number of rows expected (from the labels), if known.
        rows: Option<usize>,
    },
    /// A list of ids or labels whose length is not the number of rows.
    #[error("{what}: {given} given for {rows} rows")]
    CountMismatch {
        /// Which list (`"ids"`, `"labels"`).
        what: &'static str,
        /// Its length.
        given: usize,
        /// The number of rows.
        rows: usize,
    },
    /// A row with NaN or an infinity, or one whose squared norm overflows
    /// `f32` (its distances would be NaN).
    #[error("{what} row {row} is not finite (a NaN, an infinity, or a squared norm beyond f32)")]
    NonFinite {
        /// Which input (`"rows"`, `"queries"`).
        what: &'static str,
        /// The first offending row.
        row: usize,
    },
    /// More rows than an index holds (`u32::MAX`).
    #[error("an embedding index holds at most 4294967295 rows, not {rows}")]
    TooLarge {
        /// The rows it would hold.
        rows: usize,
    },
    /// An id or label that does not fit the file format (`.npy` files hold
    /// them as signed 64-bit integers, as numpy and faiss do).
    #[error("{what} {value} does not fit a signed 64-bit integer")]
    OutOfRange {
        /// `"id"` or `"label"`.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// A file that is not a saved index (wrong tensors, shapes, types or
    /// metadata).
    #[error("{path}: not a saved embedding index: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

fn rows_note(rows: Option<usize>) -> String {
    rows.map_or_else(String::new, |r| format!(" ({r} rows expected)"))
}

impl IndexError {
    pub(crate) fn io(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        IndexError::Io {
            path: path.display().to_string(),
            message: err.to_string(),
        }
    }

    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        IndexError::Format {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Unwraps a `try_` result: panic with the error's message.
#[track_caller]
pub(crate) fn unwrap_or_panic<T>(r: Result<T, IndexError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric-loss index: {e}"),
    }
}
