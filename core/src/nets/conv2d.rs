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

    /// Builds an [`InputConv2D`](super::InputConv2D): a [`Conv2D`] for the
    /// first layer of a network, whose input gets no gradient.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::nets::builder;
    /// let dev = Cpu::default();
    /// let conv = dev.build_module::<builder::InputConv2D<1, 32, 3>, f32>();
    /// assert_eq!(conv.weight.shape(), &(Const::<32>, Const::<1>, Const::<3>, Const::<3>));
    /// ```
    #[derive(Debug, Copy, Clone, Eq, PartialEq)]
    pub struct InputConv2D<
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

/// A [`Conv2D`] for the **first** layer of an encoder: the same parameters
/// (layout, initialisation, safetensors names), the same output and the
/// same gradients for `weight` and `bias` — but on the CPU it does not
/// compute the gradient with respect to its input. What
/// [`InputLinear`](super::InputLinear) is to `Linear`.
///
/// # Why
///
/// dfdx records a network on the tape of its input (`x.traced(grads)`), and
/// a convolution's backward computes the input's gradient (`Wᵀ·g` for
/// every image, then col2im) whether or not anything reads it. For the
/// first layer nothing does: the input is the images. PyTorch skips it
/// because the images do not require a gradient; `InputConv2D` is how to
/// skip it in dfdx. For the MNIST CNN (conv 1→32 first) that product has
/// 9 rows per output pixel — the GEMM's worst shape.
///
/// # Where
///
/// Only as the first layer with parameters, reading the network's input
/// (layers without parameters before it, such as
/// [`Unflatten`](super::Unflatten), are fine). Anywhere else the layers
/// before it would get no gradient from it and silently stop learning. On
/// the CPU the input gets no gradient at all (dfdx's `grads.get(&x)` panics
/// for it, as for any tensor off the tape): use [`Conv2D`] where it is
/// wanted (saliency maps, adversarial examples). On other devices (CUDA)
/// the layer computes exactly what `Conv2D` does, input gradient included.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::seed_from_u64(0);
/// type Net = (InputConv2D<1, 4, 3>, ReLU, MaxPool2D<2>, Conv2D<4, 2, 3>);
/// let mut net = dev.build_module::<Net, f32>();
/// let x: Tensor<Rank4<2, 1, 10, 10>, f32, _> = dev.sample_normal();
/// let grads = net.alloc_grads();
/// let loss = net.forward_mut(x.trace(grads)).square().mean();
/// let grads = loss.backward();
/// // the parameters have their gradients, as with Conv2D
/// assert!(grads.get(&net.0.weight).as_vec().iter().any(|&g| g != 0.0));
/// assert!(grads.get(&net.3.weight).as_vec().iter().any(|&g| g != 0.0));
/// // the same parameters as a Conv2D: one converts into the other
/// let conv: metric_loss_core::nets::Conv2D<1, 4, 3, 1, 0, f32, Cpu> = net.0.clone().into();
/// assert_eq!(conv.weight.as_vec(), net.0.weight.as_vec());
/// ```
#[derive(Debug, Clone)]
pub struct InputConv2D<
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

/// The builder, parameters (PyTorch's names, layout and initialisation),
/// `try_window`/`try_conv2d`/`conv2d` and the `Module` of a convolution
/// layer, whose forward is the device method given: [`Conv2D`] and
/// [`InputConv2D`] differ only in that.
macro_rules! conv_layer {
    ($layer:ident, $method:ident) => {
        impl<
            const I: usize,
            const O: usize,
            const K: usize,
            const S: usize,
            const P: usize,
            E: Dtype,
            D: Device<E>,
        > BuildOnDevice<D, E> for builder::$layer<I, O, K, S, P>
        where
            $layer<I, O, K, S, P, E, D>: BuildModule<D, E>,
        {
            type Built = $layer<I, O, K, S, P, E, D>;
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
        > NonMutableModule for $layer<I, O, K, S, P, E, D>
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
        > TensorCollection<E, D> for $layer<I, O, K, S, P, E, D>
        where
            E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
        {
            type To<E2: Dtype, D2: Device<E2>> = $layer<I, O, K, S, P, E2, D2>;

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
                    |(weight, bias)| $layer { weight, bias },
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
        > $layer<I, O, K, S, P, f32, D>
        {
            /// The geometry of this layer on a `height × width` image: its output
            /// size, or [`MetricLossError::ImageTooSmall`]. Lets a caller check an
            /// image size before running a network.
            ///
            #[doc = concat!("```
        use metric_loss_core::prelude::*;
        use metric_loss_core::nets::", stringify!($layer), " as Built;
        type Conv = Built<1, 8, 5, 2, 2, f32, Cpu>;
        assert_eq!(Conv::try_window(28, 28).unwrap().output_size(), (14, 14));
        assert!(Conv::try_window(0, 28).is_err());
        ```")]
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
                D::$method(x, &self.weight, &self.bias, &window).map_err(MetricLossError::device)
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
        /// `try_conv2d` for the typed error.
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
        > Module<Tensor<(B, Const<I>, H, W), f32, D, T>> for $layer<I, O, K, S, P, f32, D>
        {
            type Output = Tensor<(B, Const<O>, usize, usize), f32, D, T>;
            type Error = D::Err;

            fn try_forward(
                &self,
                x: Tensor<(B, Const<I>, H, W), f32, D, T>,
            ) -> Result<Self::Output, D::Err> {
                let (_, _, h, w) = *x.shape();
                let window = unwrap_or_panic(Self::try_window(h.size(), w.size()));
                D::$method(x, &self.weight, &self.bias, &window)
            }
        }
    };
}

conv_layer!(Conv2D, try_conv2d);
conv_layer!(InputConv2D, try_input_conv2d);

/// Converts between the two layers (the same parameters).
macro_rules! convert {
    ($from:ident, $to:ident) => {
        impl<
            const I: usize,
            const O: usize,
            const K: usize,
            const S: usize,
            const P: usize,
            E: Dtype,
            D: Storage<E>,
        > From<$from<I, O, K, S, P, E, D>> for $to<I, O, K, S, P, E, D>
        {
            /// The same parameters.
            fn from(l: $from<I, O, K, S, P, E, D>) -> Self {
                $to {
                    weight: l.weight,
                    bias: l.bias,
                }
            }
        }
    };
}

convert!(Conv2D, InputConv2D);
convert!(InputConv2D, Conv2D);
