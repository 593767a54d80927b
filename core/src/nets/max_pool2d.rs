//! [`MaxPool2D`]: PyTorch's `nn.MaxPool2d` (square window, no padding) as a
//! dfdx module on stable Rust.

use super::window::Window;
use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use dfdx::prelude::*;

/// The maximum of each `KERNEL × KERNEL` window, windows `STRIDE` pixels
/// apart (by default side by side), per channel: PyTorch's
/// `nn.MaxPool2d(KERNEL, stride=STRIDE)`.
///
/// # Why
///
/// Pooling after a convolution halves the image (with `KERNEL = 2`) while
/// keeping the strongest response of each feature, so the next layers see
/// a wider field for a quarter of the work, and the embedding tolerates
/// small shifts of the input. dfdx 0.13's own `MaxPool2D` compiles only
/// under its `nightly` feature.
///
/// # Semantics
///
/// PyTorch's, gradient included: the whole gradient of a window goes to
/// its **first** maximum (row-major) on ties — dfdx's `max` would give it
/// to every tied maximum — and a NaN in a window propagates. Sizes:
/// `⌊(in − KERNEL) / STRIDE⌋ + 1` (see [`Window`]).
///
/// # Shapes
///
/// Input `(batch, channels, height, width)`, any of them `Const` or `usize`;
/// output `(batch, channels, usize, usize)`. An image smaller than the
/// window is [`MetricLossError::ImageTooSmall`] from
/// [`try_max_pool2d`](Self::try_max_pool2d); through `Module::try_forward`
/// it panics with that error's message.
///
/// It has no parameters: it is its own builder, like dfdx's `ReLU`.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::default();
/// let x = dev.tensor([[[[1.0f32, 5.0, 2.0], [5.0, 0.0, 9.0], [4.0, 3.0, 8.0]]]]);
/// let y = MaxPool2D::<2, 1>.forward(x.leaky_trace());
/// assert_eq!(y.as_vec(), [5.0, 9.0, 5.0, 9.0]);
/// let g = y.sum().backward();
/// // the first 5 wins the tie of the first window; 9 is in two windows
/// assert_eq!(g.get(&x).as_vec(), [0.0, 1.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0]);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct MaxPool2D<const KERNEL: usize, const STRIDE: usize = KERNEL>;

impl<const K: usize, const S: usize> ZeroSizedModule for MaxPool2D<K, S> {}
impl<const K: usize, const S: usize> NonMutableModule for MaxPool2D<K, S> {}

impl<const K: usize, const S: usize> MaxPool2D<K, S> {
    const OK: () = assert!(K > 0 && S > 0, "KERNEL and STRIDE must be at least 1");

    /// The geometry of this pool on a `height × width` image: its output
    /// size, or [`MetricLossError::ImageTooSmall`].
    pub fn try_window(height: usize, width: usize) -> Result<Window, MetricLossError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::OK;
        Window::try_new("MaxPool2D", K, S, 0, height, width)
    }

    /// The pooled `x`, on `x`'s tape, with a typed error for an image
    /// smaller than the window ([`MetricLossError::ImageTooSmall`]) or a
    /// device error ([`MetricLossError::Device`]).
    pub fn try_max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D: MetricDevice, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Result<Tensor<(B, C, usize, usize), f32, D, T>, MetricLossError> {
        let (_, _, h, w) = *x.shape();
        let window = Self::try_window(h.size(), w.size())?;
        D::try_max_pool2d(x, &window).map_err(MetricLossError::device)
    }

    /// [`try_max_pool2d`](Self::try_max_pool2d), panicking with the error's message.
    #[track_caller]
    pub fn max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D: MetricDevice, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, C, H, W), f32, D, T>,
    ) -> Tensor<(B, C, usize, usize), f32, D, T> {
        unwrap_or_panic(self.try_max_pool2d(x))
    }
}

/// Batches of images `(B, C, H, W)`; an image smaller than the window panics
/// with [`MetricLossError::ImageTooSmall`]'s message (use
/// [`MaxPool2D::try_max_pool2d`] for the typed error).
impl<B: Dim, C: Dim, H: Dim, W: Dim, const K: usize, const S: usize, D: MetricDevice, T>
    Module<Tensor<(B, C, H, W), f32, D, T>> for MaxPool2D<K, S>
where
    T: Tape<f32, D>,
{
    type Output = Tensor<(B, C, usize, usize), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), f32, D, T>) -> Result<Self::Output, D::Err> {
        let (_, _, h, w) = *x.shape();
        let window = unwrap_or_panic(Self::try_window(h.size(), w.size()));
        D::try_max_pool2d(x, &window)
    }
}
