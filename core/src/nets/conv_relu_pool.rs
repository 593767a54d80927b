//! [`ConvReLUPool`]: PyTorch's `Conv2d → ReLU → MaxPool2d` block as one
//! layer, so that the CPU runs it as one op.

use super::max_pool2d::MaxPool2D;
use super::window::Window;
use super::{Conv2D, InputConv2D};
use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use dfdx::prelude::*;
/// The builder of [`ConvReLUPool`], as dfdx's `builder::Linear` is of
/// `Linear` (the prelude exports it as `ConvReLUPool`).
pub mod builder {
    use std::marker::PhantomData;

    /// Builds a [`ConvReLUPool`](super::ConvReLUPool): the convolution's
    /// builder `CONV` (a [`Conv2D`](crate::nets::builder::Conv2D) or an
    /// [`InputConv2D`](crate::nets::builder::InputConv2D)), then ReLU, then
    /// max pooling over `POOL × POOL` windows side by side.
    ///
    /// ```
    /// use metric_loss_core::prelude::*;
    /// let dev = Cpu::default();
    /// let block = dev.build_module::<ConvReLUPool<Conv2D<1, 32, 3>, 2>, f32>();
    /// assert_eq!(block.conv.weight.shape(), &(Const::<32>, Const::<1>, Const::<3>, Const::<3>));
    /// ```
    #[derive(Debug, Default, Copy, Clone, Eq, PartialEq)]
    pub struct ConvReLUPool<CONV, const POOL: usize>(PhantomData<CONV>);
}

/// `max_pool2d(relu(conv(x)))` with `POOL × POOL` windows side by side:
/// the block `nn.Conv2d(…), nn.ReLU(), nn.MaxPool2d(POOL)` of a PyTorch
/// CNN, as one layer. `CONV` is a built [`Conv2D`] or [`InputConv2D`],
/// whose parameters it holds (`conv.weight`, `conv.bias`).
///
/// # Why
///
/// The same function as the tuple `(Conv2D, ReLU, MaxPool2D)` — or
/// `(Conv2D, MaxPool2D, ReLU)`, which gives the same values and gradients
/// — and the same gradients, bit for bit; but as one op the CPU never
/// stores the convolution's full-size output (for the MNIST CNN's first
/// block 80 × 32 × 26 × 26 values a batch) nor its gradient: each image's
/// convolution stays in cache while it is pooled, and the backward
/// spreads the pooled gradient onto the windows' winners image by image.
/// That saves writing, copying and zeroing four times the pooled size per
/// step, and the ReLU's own tensors on the tape. On other devices
/// (CUDA) it runs the three layers' generic bodies.
///
/// # Shapes
///
/// Input `(batch, Const<IN>, height, width)` as for the convolution; output
/// `(batch, Const<OUT>, usize, usize)`, the convolution's size divided by
/// `POOL` (rounded down). Too small an image for the kernel or the pool is
/// [`MetricLossError::ImageTooSmall`] from
/// [`try_conv_relu_pool`](ConvReLUPool::try_conv_relu_pool) (a panic with
/// its message through `Module::try_forward`).
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::seed_from_u64(0);
/// type Block = ConvReLUPool<Conv2D<1, 4, 3>, 2>;
/// let block = dev.build_module::<Block, f32>();
/// let x: Tensor<Rank4<2, 1, 10, 9>, f32, _> = dev.sample_normal();
/// let y = block.forward(x.leaky_trace());
/// assert_eq!(y.shape(), &(Const::<2>, Const::<4>, 4, 3)); // 8 × 7, pooled
/// // the same as the three layers in a row
/// let layers = (block.conv.clone(), ReLU, MaxPool2D::<2, 2>);
/// assert_eq!(layers.forward(x.clone()).as_vec(), y.as_vec());
/// let grads = y.square().mean().backward();
/// assert!(grads.get(&block.conv.weight).as_vec().iter().any(|&g| g != 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct ConvReLUPool<CONV, const POOL: usize> {
    /// The convolution, with its parameters.
    pub conv: CONV,
}

/// Rejects a zero pool when the block is compiled.
struct PoolOk<const POOL: usize>;

impl<const POOL: usize> PoolOk<POOL> {
    const OK: () = assert!(POOL > 0, "POOL must be at least 1");
}

impl<CONV: BuildOnDevice<D, E>, const POOL: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E>
    for builder::ConvReLUPool<CONV, POOL>
where
    ConvReLUPool<CONV::Built, POOL>: BuildModule<D, E>,
{
    type Built = ConvReLUPool<CONV::Built, POOL>;
    fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
        #[allow(clippy::let_unit_value)]
        let () = PoolOk::<POOL>::OK;
        Self::Built::try_build(device)
    }
}

impl<CONV, const POOL: usize> NonMutableModule for ConvReLUPool<CONV, POOL> {}

/// The convolution's parameters, under the prefix `conv.` (e.g.
/// `conv.weight` in a safetensors file).
impl<CONV: TensorCollection<E, D>, const POOL: usize, E: Dtype, D: Device<E>> TensorCollection<E, D>
    for ConvReLUPool<CONV, POOL>
{
    type To<E2: Dtype, D2: Device<E2>> = ConvReLUPool<CONV::To<E2, D2>, POOL>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("conv", |s| &s.conv, |s| &mut s.conv), |conv| {
            ConvReLUPool { conv }
        })
    }
}

/// The windows, `try_conv_relu_pool` and the `Module` of the block on one
/// kind of convolution; `$input_grad` says whether its input gets a
/// gradient (not for an [`InputConv2D`]).
macro_rules! block_of {
    ($layer:ident, $input_grad:expr) => {
        impl<
            const I: usize,
            const O: usize,
            const K: usize,
            const S: usize,
            const P: usize,
            const POOL: usize,
            D: MetricDevice,
        > ConvReLUPool<$layer<I, O, K, S, P, f32, D>, POOL>
        {
            /// The convolution's and the pool's geometry on a `height × width`
            /// image, or [`MetricLossError::ImageTooSmall`].
            pub fn try_windows(
                height: usize,
                width: usize,
            ) -> Result<(Window, Window), MetricLossError> {
                #[allow(clippy::let_unit_value)]
                let () = PoolOk::<POOL>::OK;
                let conv = $layer::<I, O, K, S, P, f32, D>::try_window(height, width)?;
                let (oh, ow) = conv.output_size();
                let pool = MaxPool2D::<POOL>::try_window(oh, ow)?;
                Ok((conv, pool))
            }

            /// The block's output for `x`, on `x`'s tape, with a typed error
            /// for too small an image ([`MetricLossError::ImageTooSmall`]) or
            /// a device error ([`MetricLossError::Device`]).
            pub fn try_conv_relu_pool<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
                &self,
                x: Tensor<(B, Const<I>, H, W), f32, D, T>,
            ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, D, T>, MetricLossError> {
                let (_, _, h, w) = *x.shape();
                let (conv, pool) = Self::try_windows(h.size(), w.size())?;
                D::try_conv2d_relu_max_pool2d(
                    x,
                    &self.conv.weight,
                    &self.conv.bias,
                    &conv,
                    &pool,
                    $input_grad,
                )
                .map_err(MetricLossError::device)
            }
        }

        /// Batches of images `(B, Const<IN>, H, W)`; too small an image
        /// panics with [`MetricLossError::ImageTooSmall`]'s message (use
        /// `try_conv_relu_pool` for the typed error).
        impl<
            B: Dim,
            H: Dim,
            W: Dim,
            const I: usize,
            const O: usize,
            const K: usize,
            const S: usize,
            const P: usize,
            const POOL: usize,
            D: MetricDevice,
            T: Tape<f32, D>,
        > Module<Tensor<(B, Const<I>, H, W), f32, D, T>>
            for ConvReLUPool<$layer<I, O, K, S, P, f32, D>, POOL>
        {
            type Output = Tensor<(B, Const<O>, usize, usize), f32, D, T>;
            type Error = D::Err;

            fn try_forward(
                &self,
                x: Tensor<(B, Const<I>, H, W), f32, D, T>,
            ) -> Result<Self::Output, D::Err> {
                let (_, _, h, w) = *x.shape();
                let (conv, pool) = unwrap_or_panic(Self::try_windows(h.size(), w.size()));
                D::try_conv2d_relu_max_pool2d(
                    x,
                    &self.conv.weight,
                    &self.conv.bias,
                    &conv,
                    &pool,
                    $input_grad,
                )
            }
        }
    };
}

block_of!(Conv2D, true);
block_of!(InputConv2D, false);
