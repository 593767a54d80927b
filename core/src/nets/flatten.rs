//! [`Flatten`]: a batch of images to a batch of rows of a width known at
//! compile time, for the `Linear` layers after a convolutional trunk.

use crate::error::{MetricLossError, unwrap_or_panic};
use dfdx::prelude::*;

/// Flattens each image of a batch `(B, C, H, W)` into one row of `WIDTH`
/// values (channel by channel, row by row: PyTorch's `nn.Flatten()` order),
/// giving `(B, Const<WIDTH>)`.
///
/// # Why
///
/// A convolutional trunk's output sizes are `usize` (stable Rust cannot
/// compute them in types), but dfdx's `Linear<WIDTH, OUT>` wants its input
/// width as a `Const`. `Flatten<WIDTH>` is where the two meet: the width is
/// written once in the network's type and checked at run time. dfdx 0.13's
/// own `Flatten2D` compiles only under its `nightly` feature.
///
/// # Errors
///
/// Images of another size (`C·H·W ≠ WIDTH`) are
/// [`MetricLossError::FlattenWidth`] from [`try_flatten`](Self::try_flatten),
/// naming the expected and the actual width; through `Module::try_forward`
/// (in a tuple of layers, where the error type is the device's) they panic
/// with that error's message.
///
/// It has no parameters: it is its own builder, like dfdx's `ReLU`.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::default();
/// // the end of the reference CNN: 64 channels of 5 × 5, then 128 outputs
/// let head = dev.build_module::<(Flatten<1600>, Linear<1600, 128>), f32>();
/// let x: Tensor<(usize, Const<64>, usize, usize), f32, _> = dev.zeros_like(&(3, Const, 5, 5));
/// assert_eq!(head.forward(x).shape(), &(3, Const::<128>));
/// let wrong: Tensor<(usize, Const<64>, usize, usize), f32, _> = dev.zeros_like(&(3, Const, 6, 6));
/// let err = Flatten::<1600>.try_flatten(wrong).unwrap_err();
/// assert_eq!(err, MetricLossError::FlattenWidth { expected: 1600, actual: 2304, channels: 64, height: 6, width: 6 });
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Flatten<const WIDTH: usize>;

impl<const WIDTH: usize> ZeroSizedModule for Flatten<WIDTH> {}
impl<const WIDTH: usize> NonMutableModule for Flatten<WIDTH> {}

impl<const WIDTH: usize> Flatten<WIDTH> {
    /// `x` as `(B, Const<WIDTH>)`, on `x`'s tape (a view when `x` is
    /// contiguous, else a copy), or [`MetricLossError::FlattenWidth`].
    pub fn try_flatten<B: Dim, C: Dim, H: Dim, W: Dim, D: Device<f32>, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Result<Tensor<(B, Const<WIDTH>), f32, D, T>, MetricLossError> {
        Self::check(x.shape())?;
        let batch = x.shape().0;
        x.try_reshape_like(&(batch, Const::<WIDTH>))
            .map_err(MetricLossError::device)
    }

    /// `Ok` when images of `shape` hold `WIDTH` values each.
    fn check<B: Dim, C: Dim, H: Dim, W: Dim>(
        &(_, c, h, w): &(B, C, H, W),
    ) -> Result<(), MetricLossError> {
        let actual = c.size() * h.size() * w.size();
        if actual == WIDTH {
            return Ok(());
        }
        Err(MetricLossError::FlattenWidth {
            expected: WIDTH,
            actual,
            channels: c.size(),
            height: h.size(),
            width: w.size(),
        })
    }

    /// [`try_flatten`](Self::try_flatten), panicking with the error's message.
    #[track_caller]
    pub fn flatten<B: Dim, C: Dim, H: Dim, W: Dim, D: Device<f32>, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Tensor<(B, Const<WIDTH>), f32, D, T> {
        unwrap_or_panic(self.try_flatten(x))
    }
}

/// Batches of images `(B, C, H, W)`; a width other than `WIDTH` panics with
/// [`MetricLossError::FlattenWidth`]'s message (use [`Flatten::try_flatten`]
/// for the typed error).
impl<B: Dim, C: Dim, H: Dim, W: Dim, const WIDTH: usize, D: Device<f32>, T: Tape<f32, D>>
    Module<Tensor<(B, C, H, W), f32, D, T>> for Flatten<WIDTH>
{
    type Output = Tensor<(B, Const<WIDTH>), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), f32, D, T>) -> Result<Self::Output, D::Err> {
        unwrap_or_panic(Self::check(x.shape()));
        let batch = x.shape().0;
        x.try_reshape_like(&(batch, Const::<WIDTH>))
    }
}
