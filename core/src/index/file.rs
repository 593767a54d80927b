//! Saving and loading an [`EmbeddingIndex`] as one safetensors file (the
//! format dfdx saves models in).
//!
//! Tensors: `embeddings` (`F32`, `[len, dim]`, the rows as stored: unit rows
//! for cosine), `ids` (`U64`, `[len]`), `labels` (`U64`, `[len]`).
//! Metadata: `format = metric-loss/EmbeddingIndex`, `version = 1`,
//! `metric` (a [`Metric::name`]) and `dim`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::error::unwrap_or_panic;
use super::{EmbeddingIndex, IndexError, Metric, prepare, squared_norms};

const FORMAT: &str = "metric-loss/EmbeddingIndex";
const VERSION: &str = "1";

impl EmbeddingIndex {
    /// Writes the index to `path` as one safetensors file (the format dfdx
    /// saves models in):
    /// tensors `embeddings` (`F32`, `[len, dim]`, the rows as stored),
    /// `ids` and `labels` (`U64`, `[len]`), and the metric, width and a
    /// format tag in the metadata. [`try_load`](Self::try_load) gives back
    /// an equal index, bit for bit.
    ///
    /// # Errors
    /// [`IndexError::Io`] when the file cannot be written.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, Metric};
    ///
    /// let mut index = EmbeddingIndex::new(Metric::Cosine, 2);
    /// index.add_with_ids(&[1.0, 2.0, -3.0, 0.5], &[40, 41], &[1, 2]);
    /// let path = std::env::temp_dir().join("metric-loss-doc-index.safetensors");
    /// index.try_save(&path).unwrap();
    /// let loaded = EmbeddingIndex::try_load(&path).unwrap();
    /// assert_eq!(loaded, index);
    /// # std::fs::remove_file(&path).ok();
    /// ```
    pub fn try_save(&self, path: impl AsRef<Path>) -> Result<(), IndexError> {
        let path = path.as_ref();
        let rows: Vec<u8> = self.rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ids: Vec<u8> = self.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|&v| (v as u64).to_le_bytes())
            .collect();
        let n = self.len();
        let view = |dtype, shape, data| {
            TensorView::new(dtype, shape, data).map_err(|e| IndexError::io(path, format!("{e:?}")))
        };
        let tensors = [
            ("embeddings", view(Dtype::F32, vec![n, self.dim], &rows)?),
            ("ids", view(Dtype::U64, vec![n], &ids)?),
            ("labels", view(Dtype::U64, vec![n], &labels)?),
        ];
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("metric", self.metric.name().to_string()),
            ("dim", self.dim.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::tensor::serialize_to_file(tensors, &Some(meta), path)
            .map_err(|e| IndexError::io(path, format!("{e:?}")))
    }

    /// [`try_save`](Self::try_save), panicking on an I/O error.
    #[track_caller]
    pub fn save(&self, path: impl AsRef<Path>) {
        unwrap_or_panic(self.try_save(path))
    }

    /// Reads an index written by [`try_save`](Self::try_save).
    ///
    /// # Errors
    /// [`IndexError::Io`] when the file cannot be read,
    /// [`IndexError::Format`] when it is not a saved index (missing tensors
    /// or metadata, wrong types or shapes, an unknown metric, cosine rows
    /// that are not unit rows), [`IndexError::NonFinite`] for a row with a
    /// NaN or an infinity.
    ///
    /// ```
    /// use metric_loss_core::index::{EmbeddingIndex, IndexError};
    ///
    /// let err = EmbeddingIndex::try_load("no/such/file.safetensors").unwrap_err();
    /// assert!(matches!(err, IndexError::Io { .. }));
    /// ```
    pub fn try_load(path: impl AsRef<Path>) -> Result<Self, IndexError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
        let bad = |m: String| IndexError::format(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let field = |k: &str| {
            meta.get(k)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("no `{k}` in the metadata")))
        };
        if field("format")? != FORMAT {
            return Err(bad(format!("format is not {FORMAT}")));
        }
        if field("version")? != VERSION {
            return Err(bad(format!(
                "version {} (this library reads {VERSION})",
                field("version")?
            )));
        }
        let metric = Metric::from_name(field("metric")?).ok_or_else(|| {
            bad(format!(
                "unknown metric `{}`",
                field("metric").unwrap_or("")
            ))
        })?;
        let dim: usize = field("dim")?
            .parse()
            .map_err(|_| bad("`dim` is not a number".into()))?;
        let mut index = EmbeddingIndex::try_new(metric, dim).map_err(|e| bad(e.to_string()))?;

        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let tensor = |name: &str, dtype: Dtype| {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("no `{name}` tensor")))?;
            if t.dtype() != dtype {
                return Err(bad(format!("`{name}` is {:?}, not {dtype:?}", t.dtype())));
            }
            Ok((t.shape().to_vec(), t.data().to_vec()))
        };
        let (shape, rows) = tensor("embeddings", Dtype::F32)?;
        let n = match shape[..] {
            [n, d] if d == dim => n,
            _ => {
                return Err(bad(format!(
                    "`embeddings` has shape {shape:?}, not [rows, {dim}]"
                )));
            }
        };
        let rows: Vec<f32> = rows
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let u64s = |name: &str| -> Result<Vec<u64>, IndexError> {
            let (shape, data) = tensor(name, Dtype::U64)?;
            if shape != [n] {
                return Err(bad(format!("`{name}` has shape {shape:?}, not [{n}]")));
            }
            Ok(data
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect())
        };
        let ids = u64s("ids")?;
        let labels = u64s("labels")?
            .into_iter()
            .map(|l| usize::try_from(l).map_err(|_| bad(format!("label {l} does not fit usize"))))
            .collect::<Result<Vec<usize>, _>>()?;

        // Checked, not prepared again: the rows are taken as stored, so the
        // loaded index is the saved one bit for bit.
        prepare("rows", &rows, dim, Metric::Euclidean)?;
        if metric == Metric::Cosine {
            let sq = squared_norms(&rows, dim);
            if let Some(row) = sq.iter().position(|&s| s != 0.0 && (s - 1.0).abs() > 1e-4) {
                return Err(bad(format!("cosine row {row} is not a unit row")));
            }
        }
        if n > super::MAX_ROWS {
            return Err(IndexError::TooLarge { rows: n });
        }
        index.sq = squared_norms(&rows, dim);
        index.rows = rows;
        (index.ranks, index.order) = super::topk::tie_ranks(&ids);
        index.ids = ids;
        index.labels = labels;
        Ok(index)
    }

    /// [`try_load`](Self::try_load), panicking on error.
    #[track_caller]
    pub fn load(path: impl AsRef<Path>) -> Self {
        unwrap_or_panic(Self::try_load(path))
    }
}
