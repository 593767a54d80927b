//! Evaluation: retrieval metrics (P@1, R-Precision, MAP@R, Recall@K) and
//! verification metrics (ROC AUC, EER, TAR@FAR, 10-fold accuracy).

use thiserror::Error;

pub mod retrieval;
pub mod verification;

pub use retrieval::{
    Distance, ReferenceSet, RetrievalMetrics, RetrievalOptions, retrieval_metrics,
};
pub use verification::{
    KFoldAccuracy, RocPoint, eer, kfold_accuracy, roc_auc, roc_curve, tar_at_far,
};

/// What can go wrong when computing retrieval or verification metrics.
///
/// ```
/// use metric_loss_core::eval::{retrieval_metrics, EvalError, ReferenceSet, RetrievalOptions};
///
/// let err = retrieval_metrics(&[1.0, 2.0, 3.0], &[0, 1], ReferenceSet::SameAsQueries, 2,
///                             &RetrievalOptions::default()).unwrap_err();
/// assert!(matches!(err, EvalError::NotMultipleOfDim { len: 3, dim: 2, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The embedding dimension is 0.
    #[error("embedding dimension is 0")]
    ZeroDim,
    /// An input has no rows / no pairs.
    #[error("{what} is empty")]
    Empty {
        /// Which input (`"queries"`, `"references"`, `"scores"`).
        what: &'static str,
    },
    /// A flat embedding buffer whose length is not a multiple of `dim`.
    #[error("{what} has {len} values, which is not a multiple of dim {dim}")]
    NotMultipleOfDim {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The embedding dimension.
        dim: usize,
    },
    /// The number of labels disagrees with the number of embedding rows.
    #[error("{what} has {rows} rows but {labels} labels")]
    LabelCount {
        /// Which input.
        what: &'static str,
        /// Number of embedding rows.
        rows: usize,
        /// Number of labels.
        labels: usize,
    },
    /// An embedding contains NaN or an infinity (or is so large that its
    /// squared norm overflows `f32`).
    #[error("{what} row {row} contains a non-finite value (or its squared norm overflows f32)")]
    NonFiniteEmbedding {
        /// Which input.
        what: &'static str,
        /// The offending row.
        row: usize,
    },
    /// A `K` of 0 in the Recall@K list.
    #[error("Recall@K needs K >= 1, got {k}")]
    InvalidK {
        /// The offending K.
        k: usize,
    },
    /// Every query was skipped because no reference shares its label.
    #[error("none of the {queries} queries has a reference with its label")]
    NoEvaluableQueries {
        /// Number of queries.
        queries: usize,
    },
    /// Scores and `is_same` flags have different lengths.
    #[error("{scores} scores but {labels} is_same flags")]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of flags.
        labels: usize,
    },
    /// Only genuine or only impostor pairs: the metric needs both.
    #[error("need both classes: {positives} same pairs and {negatives} different pairs")]
    OneClass {
        /// Number of genuine (same) pairs.
        positives: usize,
        /// Number of impostor (different) pairs.
        negatives: usize,
    },
    /// A score is NaN or infinite.
    #[error("score {index} is not finite ({value})")]
    NonFiniteScore {
        /// Position of the score.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Fewer pairs than cross-validation folds.
    #[error("{pairs} pairs cannot be split into {folds} folds")]
    TooFewPairs {
        /// Number of pairs.
        pairs: usize,
        /// Number of folds asked for.
        folds: usize,
    },
    /// Cross-validation needs at least 2 folds.
    #[error("cross-validation needs at least 2 folds, got {folds}")]
    InvalidFolds {
        /// Number of folds asked for.
        folds: usize,
    },
    /// The search index refused the embeddings (not expected once the
    /// checks above pass).
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// A target false-accept rate outside `[0, 1]` (or NaN).
    #[error("target FAR must be in [0, 1], got {far}")]
    InvalidFar {
        /// The target given.
        far: f64,
    },
}
