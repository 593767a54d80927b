//! The one error type of the library's tensor-facing API.
//!
//! dfdx's convention is followed throughout: every fallible operation has a
//! `try_x` that returns `Result<_, MetricLossError>` and an `x` that unwraps
//! it, panicking with the error's message (never from deep inside dfdx).

use thiserror::Error;

/// What can go wrong when computing a loss, mining a batch or running a net.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MetricLossError {
    /// A batch with no rows: a mean over nothing is undefined.
    #[error("empty batch: {what} has 0 rows")]
    EmptyBatch {
        /// Which argument was empty (`"anchor"`, `"embeddings"`, ...).
        what: &'static str,
    },
    /// Two arguments that must have the same number of rows do not.
    #[error("batch sizes differ: {left_name} has {left} rows but {right_name} has {right}")]
    BatchMismatch {
        /// Name of the first argument.
        left_name: &'static str,
        /// Its number of rows.
        left: usize,
        /// Name of the second argument.
        right_name: &'static str,
        /// Its number of rows.
        right: usize,
    },
    /// A label list whose length is not the batch size.
    #[error("label count mismatch: {labels} labels for a batch of {batch}")]
    LabelCount {
        /// Number of labels given.
        labels: usize,
        /// Number of rows in the batch.
        batch: usize,
    },
    /// Every label in the batch is the same class: there are no negatives.
    #[error(
        "all {batch} labels are class {class}: a metric loss needs at least two classes in the batch"
    )]
    SingleClass {
        /// Number of rows in the batch.
        batch: usize,
        /// The one class present.
        class: usize,
    },
    /// A margin that is negative, NaN or infinite.
    #[error("invalid margin {value}: a margin must be a finite number >= 0")]
    InvalidMargin {
        /// The rejected value.
        value: f32,
    },
    /// An embedding contains NaN or an infinite value (reported by the checked paths).
    #[error("non-finite embedding: {what} row {row} column {column} is {value}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        column: usize,
        /// The value itself.
        value: f32,
    },
    /// An index (from a miner, a sampler or a caller) outside the batch.
    #[error("index {index} out of range for a batch of {batch}")]
    IndexOutOfRange {
        /// The offending index.
        index: usize,
        /// Number of rows in the batch.
        batch: usize,
    },
    /// A sampler or miner configuration that cannot work (P < 2, K < 1, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An image smaller than a layer's window (kernel minus twice the
    /// padding): PyTorch's "kernel size can't be greater than actual input
    /// size". Output sizes are computed at run time, so this cannot be a
    /// type error.
    #[error("image too small: {layer} has a {kernel}x{kernel} kernel with padding {padding}, so it needs images of at least {min}x{min}, but got {height}x{width}", min = kernel.saturating_sub(2 * padding))]
    ImageTooSmall {
        /// The layer (`"Conv2D"`, `"MaxPool2D"`, `"AvgPool2D"`).
        layer: &'static str,
        /// Its kernel size.
        kernel: usize,
        /// Its zero padding on each side.
        padding: usize,
        /// The image's height.
        height: usize,
        /// The image's width.
        width: usize,
    },
    /// `Flatten<WIDTH>` given images of another number of values.
    #[error(
        "flatten width mismatch: Flatten<{expected}> expects {expected} values per image, but got {channels}x{height}x{width} = {actual}"
    )]
    FlattenWidth {
        /// `WIDTH`, the width the layer was declared with.
        expected: usize,
        /// `channels · height · width` of the images given.
        actual: usize,
        /// Channels of the images given.
        channels: usize,
        /// Their height.
        height: usize,
        /// Their width.
        width: usize,
    },
    /// A cross-batch memory of no entries, or of more values (`size · dim`)
    /// than a `Vec` can hold.
    #[error(
        "invalid memory size {size}: a cross-batch memory holds 1 or more embeddings of width {dim}, and size x width must fit in memory"
    )]
    MemorySize {
        /// The memory size asked for.
        size: usize,
        /// The embedding width.
        dim: usize,
    },
    /// A batch larger than the cross-batch memory it is enqueued into
    /// (pytorch-metric-learning asserts the same).
    #[error("batch of {batch} rows does not fit a cross-batch memory of {memory}")]
    MemoryTooSmall {
        /// Rows in the batch.
        batch: usize,
        /// The memory size.
        memory: usize,
    },
    /// An error from the dfdx device (allocation failure, CUDA error, ...).
    #[error("device error: {0}")]
    Device(String),
}

impl MetricLossError {
    /// Wraps a device error (dfdx's `D::Err`).
    pub fn device(err: impl std::fmt::Debug) -> Self {
        MetricLossError::Device(format!("{err:?}"))
    }
}

/// Unwraps a `try_x` result the way dfdx does: panic with the error's message.
#[track_caller]
pub fn unwrap_or_panic<T>(r: Result<T, MetricLossError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric-loss: {e}"),
    }
}
