//! Fully connected layers on the project's GEMM: [`FusedLinear`], dfdx's
//! `Linear` as one op each way, and [`InputLinear`], the same for the first
//! layer of a network, without the gradient nobody reads.
//!
//! Both have `Linear`'s parameters (`weight: O × I`, `bias: O`), its
//! initialisation (uniform in `±1/√I`) and its field names, so a
//! safetensors file saved from any of the three loads into the others, and
//! `From` converts between them.

use crate::device::MetricDevice;
use dfdx::nn::modules::Linear as LinearModule;
use dfdx::prelude::*;
use rand_distr::Uniform;

/// The builders of [`FusedLinear`] and [`InputLinear`], as dfdx's
/// `builder::Linear` is of `Linear`:
/// `dev.build_module::<(builder::InputLinear<784, 256>, ReLU, builder::FusedLinear<256, 128>), f32>()`
/// (the prelude exports them under the layers' names).
pub mod builder {
    /// Builds a [`FusedLinear`](super::FusedLinear) of `I` inputs and `O` outputs.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::nets::builder;
    /// let dev = Cpu::default();
    /// let layer = dev.build_module::<builder::FusedLinear<256, 128>, f32>();
    /// assert_eq!(layer.weight.shape(), &(Const::<128>, Const::<256>));
    /// ```
    #[derive(Debug, Copy, Clone, Eq, PartialEq)]
    pub struct FusedLinear<const I: usize, const O: usize>;

    /// Builds an [`InputLinear`](super::InputLinear) of `I` inputs and `O` outputs.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::nets::builder;
    /// let dev = Cpu::default();
    /// let layer = dev.build_module::<builder::InputLinear<784, 256>, f32>();
    /// assert_eq!(layer.weight.shape(), &(Const::<256>, Const::<784>));
    /// ```
    #[derive(Debug, Copy, Clone, Eq, PartialEq)]
    pub struct InputLinear<const I: usize, const O: usize>;
}

/// dfdx's `Linear`, `y = x·Wᵀ + b`, with the same parameters, initialisation,
/// safetensors names, values and gradients (for the input, `weight` and
/// `bias`), as **one** op on the tape each way: on the CPU, one call of the
/// project's GEMM forward (the bias is where the product is added to), and
/// one backward that adds `gᵀ·x` and `g·W` straight into the gradient
/// buffers.
///
/// # Why, and the name
///
/// dfdx's `Linear` records a matmul, a broadcast of the bias and an add,
/// and its backward makes temporaries of the weight's size before adding
/// them to the gradient; on the small batches of metric learning that
/// bookkeeping and dfdx's GEMM cost a good part of a training step. This
/// is the same layer — `torch.nn.Linear`, whose forward is one fused
/// `addmm` — hence the name: *Linear*, as in dfdx and PyTorch, *Fused* as
/// in PyTorch's fused kernels (one kernel for what would otherwise be
/// several). Use it wherever `Linear` would go; for the first layer of a
/// network prefer [`InputLinear`], which also skips the input's gradient.
///
/// # Devices
///
/// The fused op is the CPU's ([`MetricDevice::try_linear`]); other devices
/// (CUDA) run dfdx's `Linear` body, so a network using it runs anywhere.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::prelude::{FusedLinear, InputLinear};
///
/// let dev = Cpu::seed_from_u64(0);
/// let mut net = dev.build_module::<(InputLinear<4, 8>, ReLU, FusedLinear<8, 2>), f32>();
/// let x: Tensor<(usize, Const<4>), f32, _> = dev.sample_normal_like(&(5, Const));
/// let grads = net.alloc_grads();
/// let loss = net.forward_mut(x.trace(grads)).square().mean();
/// let grads = loss.backward();
/// // both layers have their gradients, the first through the second's
/// assert!(grads.get(&net.0.weight).as_vec().iter().any(|&g| g != 0.0));
/// assert!(grads.get(&net.2.weight).as_vec().iter().any(|&g| g != 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct FusedLinear<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// `O × I`, as dfdx's `Linear::weight`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// `O`, as dfdx's `Linear::bias`.
    pub bias: Tensor<Rank1<O>, E, D>,
}

/// A fully connected layer for the **first** layer of an encoder: the same
/// parameters as dfdx's `Linear` (`weight: O × I`, `bias: O`, the same
/// initialisation, the same names in a safetensors file), the same output
/// `x·Wᵀ + b`, and the same gradients for `weight` and `bias` — but on the
/// CPU it does not compute the gradient with respect to its input. Like
/// [`FusedLinear`], it is one op each way on the project's GEMM.
///
/// # Why
///
/// dfdx records a network on the tape of its input (`x.traced(grads)`), and
/// its `Linear` backward computes the input's gradient `g·W` whether or not
/// anything reads it. For the first layer nothing does: the input is raw
/// data. That product is as large as the layer's forward GEMM — for the
/// MNIST encoder `784 → 256 → 128` on a batch of 80, 16 M of the step's
/// 56 M multiply-adds. PyTorch skips it because the input does not require
/// a gradient; `InputLinear` is how to skip it in dfdx.
///
/// # Where
///
/// Only as the first layer, reading the network's input. Anywhere else the
/// layers before it would get no gradient from it and silently stop
/// learning. On the CPU the input gets no gradient at all (dfdx's
/// `grads.get(&x)` panics for it, as for any tensor off the tape): use
/// [`FusedLinear`] where the input's gradient is wanted (saliency maps,
/// adversarial examples). On other devices (CUDA) the layer computes exactly
/// what `Linear` does, input gradient included. It takes batches `(B, I)`.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::prelude::InputLinear;
///
/// let dev = Cpu::seed_from_u64(0);
/// let mut net = dev.build_module::<(InputLinear<4, 3>, ReLU, Linear<3, 2>), f32>();
/// let x: Tensor<(usize, Const<4>), f32, _> = dev.sample_normal_like(&(5, Const));
/// let grads = net.alloc_grads();
/// let loss = net.forward_mut(x.trace(grads)).square().mean();
/// let grads = loss.backward();
/// // the parameters have their gradients, as with Linear
/// assert!(grads.get(&net.0.weight).as_vec().iter().any(|&g| g != 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct InputLinear<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// `O × I`, as dfdx's `Linear::weight`.
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// `O`, as dfdx's `Linear::bias`.
    pub bias: Tensor<Rank1<O>, E, D>,
}

/// dfdx's `Linear` initialisation for `I` inputs: uniform in `±1/√I`.
fn init<const I: usize, S: ConstShape, E, D: Device<E>>() -> TensorOptions<S, E, D>
where
    E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
{
    TensorOptions::reset_with(|t| {
        let b = E::one() / E::from(I).unwrap().sqrt();
        t.try_fill_with_distr(Uniform::new(-b, b))
    })
}

/// What both layers share with dfdx's `Linear`: the builder, the
/// parameters (initialised as `Linear`'s, uniform in `±1/√I`, and named as
/// its fields, so a file saved from one loads into the other), the
/// conversion from `Linear`; and the forward, through the device method
/// given.
macro_rules! linear_layer {
    ($layer:ident, $method:ident) => {
        impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E>
            for builder::$layer<I, O>
        where
            $layer<I, O, E, D>: BuildModule<D, E>,
        {
            type Built = $layer<I, O, E, D>;
            fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
                Self::Built::try_build(device)
            }
        }

        impl<const I: usize, const O: usize, E: Dtype, D: Storage<E>> NonMutableModule
            for $layer<I, O, E, D>
        {
        }

        impl<const I: usize, const O: usize, E, D: Device<E>> TensorCollection<E, D>
            for $layer<I, O, E, D>
        where
            E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
        {
            type To<E2: Dtype, D2: Device<E2>> = $layer<I, O, E2, D2>;

            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    (
                        Self::tensor(
                            "weight",
                            |s| &s.weight,
                            |s| &mut s.weight,
                            init::<I, _, _, _>(),
                        ),
                        Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, init::<I, _, _, _>()),
                    ),
                    |(weight, bias)| $layer { weight, bias },
                )
            }
        }

        impl<const I: usize, const O: usize, E: Dtype, D: Storage<E>> From<LinearModule<I, O, E, D>>
            for $layer<I, O, E, D>
        {
            /// The same parameters.
            fn from(l: LinearModule<I, O, E, D>) -> Self {
                $layer {
                    weight: l.weight,
                    bias: l.bias,
                }
            }
        }

        impl<B: Dim, const I: usize, const O: usize, D: MetricDevice, T: Tape<f32, D>>
            Module<Tensor<(B, Const<I>), f32, D, T>> for $layer<I, O, f32, D>
        {
            type Output = Tensor<(B, Const<O>), f32, D, T>;
            type Error = D::Err;

            fn try_forward(
                &self,
                x: Tensor<(B, Const<I>), f32, D, T>,
            ) -> Result<Self::Output, D::Err> {
                D::$method(x, &self.weight, &self.bias)
            }
        }
    };
}

linear_layer!(FusedLinear, try_linear);
linear_layer!(InputLinear, try_input_linear);

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::optim::{Adam, AdamConfig};

    fn close(a: &[f32], b: &[f32], what: &str) {
        close_within(a, b, 1e-5, what);
    }

    /// Equal to `tol · (1 + |b|)`: sums of many terms (long dot products
    /// summed in another order) need more than [`close`]'s `1e-5`.
    fn close_within(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    type Rows<const N: usize, T = NoneTape> = Tensor<(usize, Const<N>), f32, Cpu, T>;

    /// Both layers' parameters, for the tests.
    trait Params<const I: usize, const O: usize> {
        fn params(&self) -> (&Tensor<Rank2<O, I>, f32, Cpu>, &Tensor<Rank1<O>, f32, Cpu>);
    }

    impl<const I: usize, const O: usize> Params<I, O> for FusedLinear<I, O, f32, Cpu> {
        fn params(&self) -> (&Tensor<Rank2<O, I>, f32, Cpu>, &Tensor<Rank1<O>, f32, Cpu>) {
            (&self.weight, &self.bias)
        }
    }

    impl<const I: usize, const O: usize> Params<I, O> for InputLinear<I, O, f32, Cpu> {
        fn params(&self) -> (&Tensor<Rank2<O, I>, f32, Cpu>, &Tensor<Rank1<O>, f32, Cpu>) {
            (&self.weight, &self.bias)
        }
    }

    /// Values and gradients of a layer `L` made from a dfdx `Linear`, against
    /// that `Linear`, through a nonlinear loss, on batches of `batches` rows
    /// and on a strided input (a transposed view). The input's gradient is
    /// `Linear`'s with `input_grad`; without, it is not even allocated (zero
    /// for the strided input, through its contiguous copy).
    fn against_linear<const I: usize, const O: usize, L>(input_grad: bool, batches: &[usize])
    where
        L: From<LinearModule<I, O, f32, Cpu>>
            + Params<I, O>
            + Module<Rows<I, OwnedTape<f32, Cpu>>, Output = Rows<O, OwnedTape<f32, Cpu>>>,
    {
        let dev = Cpu::seed_from_u64(I as u64 * 1000 + O as u64);
        let linear = dev.build_module::<dfdx::nn::builders::Linear<I, O>, f32>();
        let ours = L::from(linear.clone());
        let (w, b) = ours.params();
        let loss = |y: Rows<O, OwnedTape<f32, Cpu>>| y.square().sin().sum();
        let xt: Tensor<(Const<I>, usize), f32, _> = dev.sample_normal_like(&(Const, 4));
        let strided: Rows<I> = xt.permute::<(usize, Const<I>), _>();
        let inputs: Vec<Rows<I>> = batches
            .iter()
            .map(|&rows| dev.sample_normal_like(&(rows, Const)))
            .chain([strided])
            .collect();
        for (case, x) in inputs.iter().enumerate() {
            let rows = x.shape().0;
            let what = format!("{I} -> {O}, input {case} ({rows} rows)");
            // dot products of I terms (forward) and `rows` terms (weight
            // gradient), summed in another order than dfdx's GEMM
            let tol = 1e-6 * ((I + rows) as f32).sqrt().max(10.0);
            let close = |x: &[f32], y: &[f32], part: &str| {
                close_within(x, y, tol, &format!("{part}, {what}"))
            };
            let (y1, y2) = (
                ours.forward(x.leaky_trace()),
                linear.forward(x.leaky_trace()),
            );
            close(&y1.as_vec(), &y2.as_vec(), "output");
            let (g1, g2) = (loss(y1).backward(), loss(y2).backward());
            close(
                &g1.get(w).as_vec(),
                &g2.get(&linear.weight).as_vec(),
                "weight grad",
            );
            close(
                &g1.get(b).as_vec(),
                &g2.get(&linear.bias).as_vec(),
                "bias grad",
            );
            if input_grad {
                close(&g1.get(x).as_vec(), &g2.get(x).as_vec(), "input grad");
            } else {
                // none at all; a strided input's contiguous copy, recorded
                // on the tape, leaves zeros
                let get = std::panic::AssertUnwindSafe(|| g1.get(x).as_vec());
                match std::panic::catch_unwind(get) {
                    Err(_) => assert!(case < batches.len(), "strided input, {what}"),
                    Ok(g) => assert!(g.iter().all(|&v| v == 0.0), "input grad, {what}"),
                }
            }
        }
    }

    /// `FusedLinear` is `Linear`: values and the gradients of the input, the
    /// weight and the bias, on a single tile, edges, several blocks of `k`.
    #[test]
    fn fused_linear_equals_linear() {
        against_linear::<7, 5, FusedLinear<7, 5, f32, Cpu>>(true, &[1, 3, 80]);
        against_linear::<1, 1, FusedLinear<1, 1, f32, Cpu>>(true, &[1, 2]);
        against_linear::<300, 37, FusedLinear<300, 37, f32, Cpu>>(true, &[13]);
        against_linear::<256, 128, FusedLinear<256, 128, f32, Cpu>>(true, &[80]);
    }

    /// `InputLinear` is `Linear` but for the input, which gets no gradient.
    #[test]
    fn input_linear_equals_linear_but_for_the_input_gradient() {
        against_linear::<7, 5, InputLinear<7, 5, f32, Cpu>>(false, &[1, 3, 80]);
        against_linear::<300, 37, InputLinear<300, 37, f32, Cpu>>(false, &[13]);
    }

    /// A network of the two layers trains as one of `Linear`s: the gradients
    /// accumulate over two backward passes into one buffer, and the
    /// parameters stay equal over several Adam steps.
    #[test]
    fn networks_train_like_linear() {
        let dev = Cpu::seed_from_u64(11);
        let mut a =
            dev.build_module::<(Linear<9, 20>, ReLU, Linear<20, 6>, ReLU, Linear<6, 3>), f32>();
        let mut b = (
            InputLinear::from(a.0.clone()),
            a.1,
            FusedLinear::from(a.2.clone()),
            a.3,
            FusedLinear::from(a.4.clone()),
        );
        let mut oa = Adam::new(&a, AdamConfig::default());
        let mut ob = Adam::new(&b, AdamConfig::default());
        let x: Rows<9> = dev.sample_normal_like(&(16, Const));
        for _ in 0..5 {
            let mut ga = a.alloc_grads();
            let mut gb = b.alloc_grads();
            for _ in 0..2 {
                ga = a
                    .forward_mut(x.clone().traced(ga))
                    .square()
                    .mean()
                    .backward();
                gb = b
                    .forward_mut(x.clone().traced(gb))
                    .square()
                    .mean()
                    .backward();
            }
            let pairs = [
                (gb.get(&b.0.weight).as_vec(), ga.get(&a.0.weight).as_vec()),
                (gb.get(&b.2.weight).as_vec(), ga.get(&a.2.weight).as_vec()),
                (gb.get(&b.4.weight).as_vec(), ga.get(&a.4.weight).as_vec()),
                (gb.get(&b.2.bias).as_vec(), ga.get(&a.2.bias).as_vec()),
            ];
            for (at, (got, want)) in pairs.iter().enumerate() {
                close(got, want, &format!("accumulated grad {at}"));
            }
            oa.update(&mut a, &ga).unwrap();
            ob.update(&mut b, &gb).unwrap();
        }
        close(
            &b.0.weight.as_vec(),
            &a.0.weight.as_vec(),
            "first after Adam",
        );
        close(
            &b.2.weight.as_vec(),
            &a.2.weight.as_vec(),
            "second after Adam",
        );
        close(
            &b.4.bias.as_vec(),
            &a.4.bias.as_vec(),
            "third bias after Adam",
        );
    }

    /// In a Siamese network both branches record on one tape: each shared
    /// layer's gradient is the sum of the two branches', the first layer's
    /// reached through the second.
    #[test]
    fn shared_across_branches_on_one_tape() {
        use crate::nets::Siamese;
        use dfdx::nn::builders::Tanh;
        type Encoder = (builder::InputLinear<3, 5>, Tanh, builder::FusedLinear<5, 2>);
        let dev = Cpu::seed_from_u64(6);
        let net = dev.build_module::<Siamese<Encoder>, f32>();
        let a: Tensor<Rank2<4, 3>, f32, _> = dev.sample_normal();
        let b: Tensor<Rank2<4, 3>, f32, _> = dev.sample_normal();
        let (ea, eb) = net.forward_pair(a.leaky_trace(), b.clone());
        let joint = (ea.square().sum() + eb.sin().sum()).backward();
        let enc = net.encoder();
        let ga = enc.forward(a.leaky_trace()).square().sum().backward();
        let gb = enc.forward(b.leaky_trace()).sin().sum().backward();
        let sum = |x: Vec<f32>, y: Vec<f32>| -> Vec<f32> {
            x.iter().zip(y).map(|(x, y)| x + y).collect()
        };
        let want = sum(
            ga.get(&enc.0.weight).as_vec(),
            gb.get(&enc.0.weight).as_vec(),
        );
        close(&joint.get(&enc.0.weight).as_vec(), &want, "first");
        let want = sum(
            ga.get(&enc.2.weight).as_vec(),
            gb.get(&enc.2.weight).as_vec(),
        );
        close(&joint.get(&enc.2.weight).as_vec(), &want, "second");
    }

    /// Built and initialised like `Linear` (within `±1/√I`), and named like
    /// it: a safetensors file of either loads into the other.
    fn named_like_linear<L>(tag: &str)
    where
        L: BuildOnDevice<Cpu, f32>,
        L::Built: TensorCollection<f32, Cpu> + Params<9, 3>,
    {
        let dev = Cpu::seed_from_u64(1);
        let l = dev.build_module::<Linear<9, 3>, f32>();
        let mut ours = dev.build_module::<L, f32>();
        let (w, b) = ours.params();
        let bound = 1.0 / 3.0;
        let values = [w.as_vec(), b.as_vec()].concat();
        assert!(values.iter().all(|v| v.abs() <= bound), "{tag} init");
        assert_eq!(ours.num_trainable_params(), l.num_trainable_params());
        let path = std::env::temp_dir().join(format!("{tag}_{}.safetensors", std::process::id()));
        l.save_safetensors(&path).unwrap();
        ours.load_safetensors(&path).unwrap();
        assert_eq!(ours.params().0.as_vec(), l.weight.as_vec(), "{tag} loaded");
        let fresh = dev.build_module::<L, f32>();
        let mut back = dev.build_module::<Linear<9, 3>, f32>();
        fresh.save_safetensors(&path).unwrap();
        back.load_safetensors(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back.bias.as_vec(), fresh.params().1.as_vec(), "{tag} saved");
    }

    #[test]
    fn parameters_and_names_match_linear() {
        named_like_linear::<builder::FusedLinear<9, 3>>("fused_linear");
        named_like_linear::<builder::InputLinear<9, 3>>("input_linear");
    }
}
