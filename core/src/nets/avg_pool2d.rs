//! [`AvgPool2D`]: PyTorch's `nn.AvgPool2d` (square window, no padding) as a
//! dfdx module on stable Rust.

use super::window::Window;
use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use dfdx::prelude::*;

/// The mean of each `KERNEL × KERNEL` window, windows `STRIDE` pixels
/// apart (by default side by side), per channel: PyTorch's
/// `nn.AvgPool2d(KERNEL, stride=STRIDE)`.
///
/// # Why
///
/// Average pooling shrinks an image like [`MaxPool2D`](super::MaxPool2D)
/// but keeps every pixel's share of the gradient, which smooths the
/// features; it is also the usual last step of a convolutional encoder
/// before the embedding layer (a global average with `KERNEL` the feature
/// map's size). dfdx 0.13's own `AvgPool2D` compiles only under its
/// `nightly` feature.
///
/// # Semantics
///
/// PyTorch's with no padding (so `count_include_pad` makes no difference):
/// each output is the sum of its window divided by `KERNEL²`, and each pixel
/// gets `1/KERNEL²` of the gradient of every window it lies in. Sizes:
/// `⌊(in − KERNEL) / STRIDE⌋ + 1` (see [`Window`]).
///
/// # Shapes
///
/// Input `(batch, channels, height, width)`, any of them `Const` or `usize`;
/// output `(batch, channels, usize, usize)`. An image smaller than the
/// window is [`MetricLossError::ImageTooSmall`] from
/// [`try_avg_pool2d`](Self::try_avg_pool2d); through `Module::try_forward`
/// it panics with that error's message.
///
/// It has no parameters: it is its own builder, like dfdx's `ReLU`.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::default();
/// let x = dev.tensor([[[[1.0f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]]);
/// let y = AvgPool2D::<2>.forward(x.leaky_trace());
/// assert_eq!(y.as_vec(), [3.5, 5.5]);
/// let g = y.sum().backward();
/// assert_eq!(g.get(&x).as_vec(), [0.25; 8]);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct AvgPool2D<const KERNEL: usize, const STRIDE: usize = KERNEL>;

impl<const K: usize, const S: usize> ZeroSizedModule for AvgPool2D<K, S> {}
impl<const K: usize, const S: usize> NonMutableModule for AvgPool2D<K, S> {}

impl<const K: usize, const S: usize> AvgPool2D<K, S> {
    const OK: () = assert!(K > 0 && S > 0, "KERNEL and STRIDE must be at least 1");

    /// The geometry of this pool on a `height × width` image: its output
    /// size, or [`MetricLossError::ImageTooSmall`].
    pub fn try_window(height: usize, width: usize) -> Result<Window, MetricLossError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::OK;
        Window::try_new("AvgPool2D", K, S, 0, height, width)
    }

    /// The pooled `x`, on `x`'s tape, with a typed error for an image
    /// smaller than the window ([`MetricLossError::ImageTooSmall`]) or a
    /// device error ([`MetricLossError::Device`]).
    pub fn try_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D: MetricDevice, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Result<Tensor<(B, C, usize, usize), f32, D, T>, MetricLossError> {
        let (_, _, h, w) = *x.shape();
        let window = Self::try_window(h.size(), w.size())?;
        D::try_avg_pool2d(x, &window).map_err(MetricLossError::device)
    }

    /// [`try_avg_pool2d`](Self::try_avg_pool2d), panicking with the error's message.
    #[track_caller]
    pub fn avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D: MetricDevice, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Tensor<(B, C, usize, usize), f32, D, T> {
        unwrap_or_panic(self.try_avg_pool2d(x))
    }
}

/// Batches of images `(B, C, H, W)`; an image smaller than the window panics
/// with [`MetricLossError::ImageTooSmall`]'s message (use
/// [`AvgPool2D::try_avg_pool2d`] for the typed error).
impl<B: Dim, C: Dim, H: Dim, W: Dim, const K: usize, const S: usize, D: MetricDevice, T>
    Module<Tensor<(B, C, H, W), f32, D, T>> for AvgPool2D<K, S>
where
    T: Tape<f32, D>,
{
    type Output = Tensor<(B, C, usize, usize), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), f32, D, T>) -> Result<Self::Output, D::Err> {
        let (_, _, h, w) = *x.shape();
        let window = unwrap_or_panic(Self::try_window(h.size(), w.size()));
        D::try_avg_pool2d(x, &window)
    }
}
