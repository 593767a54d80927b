//! Input checks every loss shares, each written once: margins, batch sizes,
//! label counts, finite values.

use crate::error::MetricLossError;
use dfdx::prelude::*;

/// Checks a margin given at run time.
///
/// ```
/// use metric_loss_core::loss::check_margin;
/// assert_eq!(check_margin(0.2), Ok(0.2));
/// assert!(check_margin(-1.0).is_err() && check_margin(f32::NAN).is_err());
/// ```
pub fn check_margin(margin: f32) -> Result<f32, MetricLossError> {
    if margin.is_finite() && margin >= 0.0 {
        Ok(margin)
    } else {
        Err(MetricLossError::InvalidMargin { value: margin })
    }
}

/// Checks that every entry of `t` is finite.
///
/// Returns [`MetricLossError::NonFinite`] for the first NaN or infinite
/// value, with `row` and `column` computed from its flat (row-major) index
/// and the size of the last dimension (a tensor of rank 0 or 1 reports
/// row 0). This copies the tensor to the host and scans it: `O(N·D)`, which
/// is why the loss traits' `try_forward` does not call it and
/// `try_forward_checked` does.
///
/// ```
/// use metric_loss_core::loss::check_finite;
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 1.0], [2.0, f32::NAN]]);
/// assert!(matches!(
///     check_finite("x", &x),
///     Err(MetricLossError::NonFinite { what: "x", row: 1, column: 1, .. })
/// ));
/// assert!(check_finite("x", &dev.tensor([1.0f32, 2.0])).is_ok());
/// ```
pub fn check_finite<S: Shape, Dev: Device<f32>, T>(
    what: &'static str,
    t: &Tensor<S, f32, Dev, T>,
) -> Result<(), MetricLossError> {
    let dims = t.shape().concrete();
    let columns = if S::NUM_DIMS >= 2 {
        dims.into_iter().last().unwrap_or(1).max(1)
    } else {
        usize::MAX
    };
    if t.shape().num_elements() == 0 {
        // dfdx's `as_vec` indexes out of bounds on an empty tensor.
        return Ok(());
    }
    let values = t.as_vec();
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => Err(MetricLossError::NonFinite {
            what,
            row: pos / columns,
            column: pos % columns,
            value: values[pos],
        }),
    }
}

/// The number of rows of `t`, which must not be 0.
pub(crate) fn check_rows<S: Shape, Dev: Device<f32>, T>(
    what: &'static str,
    t: &Tensor<S, f32, Dev, T>,
) -> Result<usize, MetricLossError> {
    let n = t.shape().concrete().into_iter().next().unwrap_or(0);
    if n == 0 {
        return Err(MetricLossError::EmptyBatch { what });
    }
    Ok(n)
}

/// Two batch sizes that must agree.
pub(crate) fn check_same(
    left_name: &'static str,
    left: usize,
    right_name: &'static str,
    right: usize,
) -> Result<(), MetricLossError> {
    if left != right {
        return Err(MetricLossError::BatchMismatch {
            left_name,
            left,
            right_name,
            right,
        });
    }
    Ok(())
}

/// One label per row of a batch of `batch` rows.
pub(crate) fn check_label_count(labels: usize, batch: usize) -> Result<(), MetricLossError> {
    if labels != batch {
        return Err(MetricLossError::LabelCount { labels, batch });
    }
    Ok(())
}

/// A batch for mining: at least one row, one label per row.
pub(crate) fn check_labelled_batch<S: Shape, Dev: Device<f32>, T>(
    embeddings: &Tensor<S, f32, Dev, T>,
    labels: &[usize],
) -> Result<usize, MetricLossError> {
    let n = check_rows("embeddings", embeddings)?;
    check_label_count(labels.len(), n)?;
    Ok(n)
}

/// The first entry of `t` (flat, row-major) that is NaN or infinite.
fn first_non_finite<S: Shape, Dev: Device<f32>, T>(
    t: &Tensor<S, f32, Dev, T>,
) -> Option<(usize, f32)> {
    if t.shape().num_elements() == 0 {
        return None;
    }
    let values = t.as_vec();
    let i = values.iter().position(|v| !v.is_finite())?;
    Some((i, values[i]))
}

/// The checked paths' rule for distances computed from finite embeddings:
/// one that overflowed `f32` (or is NaN) is
/// [`MetricLossError::NonFinite`] with `what = "distances"`, the item as
/// `row` and `column` saying which distance (see `try_forward_checked`).
pub(crate) fn check_distances<B: Dim, Dev: Device<f32>, T>(
    column: usize,
    d: &Tensor<(B,), f32, Dev, T>,
) -> Result<(), MetricLossError> {
    match first_non_finite(d) {
        None => Ok(()),
        Some((row, value)) => Err(MetricLossError::NonFinite {
            what: "distances",
            row,
            column,
            value,
        }),
    }
}

/// The checked paths' rule for the loss itself: finite distances whose
/// reduction overflows `f32` are [`MetricLossError::NonFinite`] with
/// `what = "loss"` (row: the item for `reduction = none`, else 0).
pub(crate) fn check_loss<S: Shape, Dev: Device<f32>, T>(
    loss: &Tensor<S, f32, Dev, T>,
) -> Result<(), MetricLossError> {
    match first_non_finite(loss) {
        None => Ok(()),
        Some((row, value)) => Err(MetricLossError::NonFinite {
            what: "loss",
            row,
            column: 0,
            value,
        }),
    }
}
