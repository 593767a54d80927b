//! Reductions shared by every generated loss. Each is safe on an empty
//! input (it returns 0 with a zero gradient, never NaN).
use dfdx::prelude::*;

/// The loss of no items: 0, carrying `x`'s tape so that backward still
/// runs and gives zero gradients (dfdx's reductions divide by zero on an
/// empty tensor).
fn zero<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    let (x, tape) = x.split_tape();
    Ok(x.device().try_zeros::<()>()?.put_tape(tape))
}

/// Mean over items; 0 for none.
pub fn mean<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    let n = x.shape().0.size();
    if n == 0 {
        return zero(x);
    }
    x.try_sum()?.try_div(n as f32)
}

/// Sum over items.
pub fn sum<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    if x.shape().0.size() == 0 {
        return zero(x);
    }
    x.try_sum()
}

/// No reduction.
pub fn none<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    Ok(x)
}

/// Mean over the items with a positive loss; 0 when there are none.
pub fn mean_nonzero<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    if x.shape().0.size() == 0 {
        return zero(x);
    }
    let positive = x.as_vec().iter().filter(|&&v| v > 0.0).count().max(1) as f32;
    x.try_sum()?.try_div(positive)
}

/// The hinge `[x]+ = max(x, 0)`, with relu's gradient, that keeps NaN.
///
/// dfdx's `relu` computes `x.max(0)`, which maps NaN to 0: a NaN
/// embedding would then give a finite, silently wrong loss. Here a NaN
/// item stays NaN (two extra elementwise ops on a `(B,)` vector, off the
/// tape).
pub fn hinge<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    if x.shape().0.size() == 0 {
        return Ok(x);
    }
    let plain = x.retaped::<NoneTape>();
    let is_nan = plain.try_ne(&plain)?;
    let zeros = plain.device().try_zeros_like(plain.shape())?;
    let nans = is_nan.try_choose(plain, zeros)?;
    x.try_relu()?.try_add(nans)
}

/// `softplus(x) = ln(1 + eᕽ)`, stable for large `|x|` and with the exact
/// derivative `σ(x)` everywhere (0.5 at 0), as `logsumexp([x, 0])`.
pub fn softplus<B: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B,), f32, Dev, T>,
) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    if x.shape().0.size() == 0 {
        return Ok(x);
    }
    let zeros = x.device().try_zeros_like(x.shape())?.retaped::<T>();
    [x, zeros].try_stack()?.try_logsumexp::<(B,), Axis<0>>()
}
