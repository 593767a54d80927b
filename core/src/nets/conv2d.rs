//! [`Conv2D`]: PyTorch's `nn.Conv2d` (square kernel, stride, zero padding,
//! bias) as a dfdx module on stable Rust.

use super::window::Window;
use crate::device::MetricDevice;
use crate::error::{MetricLossError, unwrap_or_panic};
use dfdx::prelude::*;
use rand_distr::Uniform;

/// The builder of [`Conv2D`], as dfdx's `builder::Linear` is of `Linear`
/// (the prelude exports it as `Conv2D`): `IN` input channels, `OUT` output
/// channels, a `KERNEL × KERNEL` kernel moved `STRIDE` pixels at a time over
/// the input with `PADDING` zeros around it.
pub mod builder {
    /// Builds a [`Conv2D`](super::Conv2D).
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::nets::builder;
    /// let dev = Cpu::default();
    /// let conv = dev.build_module::<builder::Conv2D<1, 32, 3>, f32>();
    /// assert_eq!(conv.weight.shape(), &(Const::<32>, Const::<1>, Const::<3>, Const::<3>));
    /// ```
    #[derive(Debug, Copy, Clone, Eq, PartialEq)]
    pub struct Conv2D<
        const IN: usize,
        const OUT: usize,
        const KERNEL: usize,
        const STRIDE: usize = 1,
        const PADDING: usize = 0,
    >;
}

/// A 2-D convolution with a bias, as PyTorch's
/// `nn.Conv2d(IN, OUT, KERNEL, stride=STRIDE, padding=PADDING)`: the same
/// parameters in the same layout (`weight: OUT × IN × KERNEL × KERNEL`,
/// `bias: OUT`), the same initialisation, the same output.
///
/// # Why
///
/// Image embedders (retrieval, face, signature and re-identification
/// networks) are convolutional, and dfdx 0.13's own `Conv2D` compiles only
/// under its `nightly` feature, which no longer builds on current
/// nightlies. This layer runs on stable Rust, on any dfdx device (an
/// im2col `gather` and a matmul, [`generic_conv2d`](crate::device::generic_conv2d)),
/// and on the CPU as one op each way built on the project's GEMM.
///
/// # Shapes
///
/// Input `(batch, Const<IN>, height, width)`, each of batch, height and
/// width a `Const` or a `usize`; output `(batch, Const<OUT>, usize, usize)`
/// with PyTorch's sizes ([`Window`]): stable Rust cannot compute them in
/// types. A wrong channel count does not compile. An image smaller than the
/// kernel (after padding) is [`MetricLossError::ImageTooSmall`] from
/// [`try_conv2d`](Self::try_conv2d); through `Module::try_forward` (in a
/// tuple of layers), whose error type is the device's, it panics with that
/// error's message.
///
/// # Initialisation
///
/// PyTorch's default: `weight` from kaiming-uniform with `a = √5` and
/// `bias` uniform, which both come to `U(−1/√fan_in, 1/√fan_in)` with
/// `fan_in = IN·KERNEL²`.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::seed_from_u64(0);
/// let mut conv = dev.build_module::<Conv2D<1, 4, 3, 1, 1>, f32>();
/// // a batch of 2 grey 5 × 7 images, sizes known at run time
/// let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.sample_normal_like(&(2, Const, 5, 7));
/// let y = conv.forward_mut(x.leaky_trace());
/// assert_eq!(y.shape(), &(2, Const::<4>, 5, 7)); // padding 1 keeps the size
/// let grads = y.square().mean().backward();
/// assert!(grads.get(&conv.weight).as_vec().iter().any(|&g| g != 0.0));
/// // too small an image is a typed error: a 5 × 5 kernel on 4 × 4 pixels
/// let wide = dev.build_module::<Conv2D<1, 2, 5>, f32>();
/// let tiny: Tensor<Rank4<1, 1, 4, 4>, f32, _> = dev.zeros();
/// assert!(matches!(wide.try_conv2d(tiny), Err(MetricLossError::ImageTooSmall { .. })));
/// ```
#[derive(Debug, Clone)]
pub struct Conv2D<
    const IN: usize,
    const OUT: usize,
    const KERNEL: usize,
    const STRIDE: usize,
    const PADDING: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// `OUT × IN × KERNEL × KERNEL`, PyTorch's layout.
    pub weight: Tensor<Rank4<OUT, IN, KERNEL, KERNEL>, E, D>,
    /// `OUT`.
    pub bias: Tensor<Rank1<OUT>, E, D>,
}

/// Rejects a zero kernel or stride when the layer is compiled.
struct NonZero<const KERNEL: usize, const STRIDE: usize>;

impl<const KERNEL: usize, const STRIDE: usize> NonZero<KERNEL, STRIDE> {
    const OK: () = assert!(
        KERNEL > 0 && STRIDE > 0,
        "KERNEL and STRIDE must be at least 1"
    );
}

impl<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    E: Dtype,
    D: Device<E>,
> BuildOnDevice<D, E> for builder::Conv2D<I, O, K, S, P>
where
    Conv2D<I, O, K, S, P, E, D>: BuildModule<D, E>,
{
    type Built = Conv2D<I, O, K, S, P, E, D>;
    fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
        #[allow(clippy::let_unit_value)]
        let () = NonZero::<K, S>::OK;
        Self::Built::try_build(device)
    }
}

impl<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    E: Dtype,
    D: Storage<E>,
> NonMutableModule for Conv2D<I, O, K, S, P, E, D>
{
}

/// `weight` and `bias`, under those names (PyTorch's), initialised as
/// PyTorch does.
impl<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    E,
    D: Device<E>,
> TensorCollection<E, D> for Conv2D<I, O, K, S, P, E, D>
where
    E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2D<I, O, K, S, P, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_with(|t| {
                        let b = E::one() / E::from(I * K * K).unwrap().sqrt();
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_with(|t| {
                        let b = E::one() / E::from(I * K * K).unwrap().sqrt();
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
            ),
            |(weight, bias)| Conv2D { weight, bias },
        )
    }
}

impl<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    D: MetricDevice,
> Conv2D<I, O, K, S, P, f32, D>
{
    /// The geometry of this layer on a `height × width` image: its output
    /// size, or [`MetricLossError::ImageTooSmall`]. Lets a caller check an
    /// image size before running a network.
    ///
    /// ```
    /// use metric_loss_core::prelude::*;
    /// use metric_loss_core::nets::Conv2D as Built;
    /// type Conv = Built<1, 8, 5, 2, 2, f32, Cpu>;
    /// assert_eq!(Conv::try_window(28, 28).unwrap().output_size(), (14, 14));
    /// assert!(Conv::try_window(0, 28).is_err());
    /// ```
    pub fn try_window(height: usize, width: usize) -> Result<Window, MetricLossError> {
        #[allow(clippy::let_unit_value)]
        let () = NonZero::<K, S>::OK;
        Window::try_new("Conv2D", K, S, P, height, width)
    }

    /// The convolution of `x`, on `x`'s tape, with a typed error for an
    /// image smaller than the kernel
    /// ([`MetricLossError::ImageTooSmall`]) or a device error
    /// ([`MetricLossError::Device`]).
    pub fn try_conv2d<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, D, T>, MetricLossError> {
        let (_, _, h, w) = *x.shape();
        let window = Self::try_window(h.size(), w.size())?;
        D::try_conv2d(x, &self.weight, &self.bias, &window).map_err(MetricLossError::device)
    }

    /// [`try_conv2d`](Self::try_conv2d), panicking with the error's message.
    #[track_caller]
    pub fn conv2d<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &self,
        x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    ) -> Tensor<(B, Const<O>, usize, usize), f32, D, T> {
        unwrap_or_panic(self.try_conv2d(x))
    }
}

/// Batches of images `(B, Const<IN>, H, W)`. An image smaller than the
/// kernel panics with [`MetricLossError::ImageTooSmall`]'s message (the
/// error type here is the device's, shared by every layer of a tuple); use
/// [`Conv2D::try_conv2d`] for the typed error.
impl<
    B: Dim,
    H: Dim,
    W: Dim,
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    D: MetricDevice,
    T: Tape<f32, D>,
> Module<Tensor<(B, Const<I>, H, W), f32, D, T>> for Conv2D<I, O, K, S, P, f32, D>
{
    type Output = Tensor<(B, Const<O>, usize, usize), f32, D, T>;
    type Error = D::Err;

    fn try_forward(
        &self,
        x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    ) -> Result<Self::Output, D::Err> {
        let (_, _, h, w) = *x.shape();
        let window = unwrap_or_panic(Self::try_window(h.size(), w.size()));
        D::try_conv2d(x, &self.weight, &self.bias, &window)
    }
}
