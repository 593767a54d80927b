//! [`MetricDevice`]: the dfdx devices this library runs on, with CPU fast paths.
//!
//! Every loss is generic over `Dev: MetricDevice`. The trait is implemented
//! for dfdx's [`Cpu`] and, with the `cuda` feature, for `Cuda`. Its methods
//! have a generic body made of ordinary dfdx tape operations, which any
//! device runs; the CPU implementation overrides some of them with fused
//! kernels that register a hand-written backward on the dfdx tape. Tests
//! check that both paths give the same values and gradients.
//!
//! This file and `fused/` are where the tape juggling lives; the losses
//! themselves read as their formulas.

use crate::nets::Window;
use dfdx::prelude::*;

/// A dfdx device the losses run on: [`Cpu`], or `Cuda` with the `cuda` feature.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::device::MetricDevice;
///
/// let dev = Cpu::default();
/// let x = dev.tensor([0.0f32, 4.0]);
/// let y = Cpu::try_safe_sqrt(x.leaky_trace()).unwrap();
/// assert_eq!(y.array(), [0.0, 2.0]);
/// let g = y.sum().backward();
/// assert_eq!(g.get(&x).array(), [0.0, 0.25]); // zero subgradient at 0, not NaN
/// ```
pub trait MetricDevice: Device<f32> + 'static {
    /// `sqrt(x)` with a zero subgradient where `x == 0` (as PyTorch's `cdist`
    /// backward does) instead of an infinite one that turns into NaN.
    ///
    /// Negative inputs (rounding noise of a clamped Gram matrix) are treated as 0.
    fn try_safe_sqrt<S: Shape, T: Tape<f32, Self>>(
        x: Tensor<S, f32, Self, T>,
    ) -> Result<Tensor<S, f32, Self, T>, Self::Err> {
        generic_safe_sqrt(x)
    }

    /// Row-wise `‖a_i − b_i‖₂` (or its square), zero subgradient at 0.
    /// The CPU runs it as one fused op whose backward also accepts `a` and
    /// `b` being one tensor.
    fn try_euclidean_rows<B: Dim, const D: usize, T: Tape<f32, Self>>(
        a: Tensor<(B, Const<D>), f32, Self, T>,
        b: Tensor<(B, Const<D>), f32, Self, T>,
        squared: bool,
    ) -> Result<Tensor<(B,), f32, Self, T>, Self::Err> {
        generic_euclidean_rows(a, b, squared)
    }

    /// Whether [`try_euclidean_rows`](Self::try_euclidean_rows) is safe when
    /// `a` and `b` are one tensor (dfdx's generic binary ops are not).
    const EUCLIDEAN_ROWS_SAME_ID_SAFE: bool = false;

    /// Batch-hard mining and the mined Euclidean distances in one pass:
    /// `(d(A,P), d(A,N), triplets, statistics)` on the tape, with an
    /// analytic `O(N·D)` backward. `None` gives the embeddings back where the
    /// device has no fused kernel (the caller then takes the generic path).
    #[doc(hidden)]
    fn try_batch_hard_euclidean<N: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        _labels: &[usize],
        _squared: bool,
        _margin: f32,
    ) -> Result<FusedBatchHard<N, D, Self, T>, crate::MetricLossError> {
        Ok(FusedBatchHard::Unavailable(x))
    }

    /// The `N × N` Euclidean distance matrix of a batch (or its square):
    /// the body of [`euclidean_matrix`](crate::distance::euclidean_matrix)
    /// and [`squared_euclidean_matrix`](crate::distance::squared_euclidean_matrix).
    /// The CPU runs it as one op each way (Gram tiles forward, one GEMM
    /// backward) instead of eight over `N × N` tensors.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[0.0f32, 0.0], [3.0, 4.0], [3.0, 4.0]]);
    /// let d = Cpu::try_euclidean_matrix(x.leaky_trace(), false).unwrap();
    /// // equal rows are exactly 0 apart
    /// assert_eq!(d.array(), [[0.0, 5.0, 5.0], [5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]);
    /// // Σ_ij d_ij counts each pair twice: ∂/∂x_0 = 2 Σ_j (x_0 − x_j)/d_0j
    /// let g = d.sum().backward();
    /// assert_eq!(g.get(&x).array(), [[-2.4, -3.2], [1.2, 1.6], [1.2, 1.6]]);
    /// ```
    fn try_euclidean_matrix<N: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        squared: bool,
    ) -> Result<Tensor<(N, N), f32, Self, T>, Self::Err> {
        let d2 = crate::distance::generic_squared_euclidean_matrix(x)?;
        if squared {
            Ok(d2)
        } else {
            Self::try_safe_sqrt(d2)
        }
    }

    /// The inner products `X·Yᵀ` (`B × M`) of a batch with a constant set
    /// of rows (no gradient flows into `y`): the batch against a
    /// [`CrossBatchMemory`](crate::xbm::CrossBatchMemory). The generic body
    /// is dfdx's matmul; the CPU runs one GEMM each way on the project's
    /// GEMM.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[1.0f32, 2.0]]);
    /// let y = dev.tensor([[3.0f32, 4.0], [0.0, 1.0]]);
    /// let s = Cpu::try_cross_gram(x.leaky_trace(), &y).unwrap();
    /// assert_eq!(s.array(), [[11.0, 2.0]]);
    /// let g = s.sum().backward();
    /// assert_eq!(g.get(&x).array(), [[3.0, 5.0]]);
    /// ```
    fn try_cross_gram<B: Dim, M: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<D>), f32, Self, T>,
        y: &Tensor<(M, Const<D>), f32, Self>,
    ) -> Result<Tensor<(B, M), f32, Self, T>, Self::Err> {
        let yt = y.clone().try_permute::<(Const<D>, M), Axes2<1, 0>>()?;
        x.try_matmul(yt)
    }

    /// Each row divided by its norm floored at
    /// [`NORM_EPS`](crate::distance::NORM_EPS): the body of
    /// [`l2_normalize`](crate::distance::l2_normalize). The CPU runs it as
    /// one op (one pass each way) instead of five.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[3.0f32, 4.0]]);
    /// let y = Cpu::try_l2_normalize(x.leaky_trace()).unwrap();
    /// assert_eq!(y.array(), [[0.6, 0.8]]);
    /// // a unit vector's length does not change along the vector itself
    /// let g = y.sum().backward().get(&x).array();
    /// assert!((g[0][0] * 3.0 + g[0][1] * 4.0).abs() < 1e-6);
    /// ```
    fn try_l2_normalize<B: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<D>), f32, Self, T>,
    ) -> Result<Tensor<(B, Const<D>), f32, Self, T>, Self::Err> {
        crate::distance::generic_l2_normalize(x)
    }

    /// A loss of the ranking family from its matrix `s` (the batch's cosine
    /// similarities or distances, `R × C`) and the pair weights `w`: the
    /// body of [`BatchFamily`](crate::loss::BatchFamily)'s loss. The generic
    /// body is [`generic_batch_formula`](crate::formulas::generic_batch_formula)
    /// (dfdx tape ops on `R × C` tensors); the CPU runs the formula's row form
    /// ([`BatchFormula::row`](crate::formulas::BatchFormula::row)), one pass
    /// over the rows each way.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// use metric_loss_core::formulas::{generic_batch_formula, MultiSimilarity, PairWeights, Weighting};
    /// use metric_loss_core::miners::Tuples;
    /// let dev = Cpu::default();
    /// let s = dev.tensor_from_vec(vec![1.0f32, 0.6, 0.0, 0.6, 1.0, 0.8, 0.0, 0.8, 1.0], (3, 3));
    /// let w = PairWeights::try_new(Weighting::Mask, &Tuples::All, &[0, 0, 1]).unwrap();
    /// let f = MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5 };
    /// let cpu = Cpu::try_batch_formula(s.leaky_trace(), &w, &f).unwrap();
    /// let generic = generic_batch_formula(s.leaky_trace(), &w, &f).unwrap();
    /// assert!((cpu.array() - generic.array()).abs() < 1e-6);
    /// ```
    fn try_batch_formula<F: crate::formulas::BatchFormula, T: Tape<f32, Self>>(
        s: Tensor<(usize, usize), f32, Self, T>,
        w: &crate::formulas::PairWeights,
        f: &F,
    ) -> Result<Tensor<(), f32, Self, T>, Self::Err> {
        crate::formulas::generic_batch_formula(s, w, f)
    }

    /// The loss of a formula of the ranking family over every pair of a
    /// batch (PML's no-miner call: `w` holds
    /// [`Tuples::All`](crate::miners::Tuples::All)'s weights for `labels`)
    /// and the statistics of every pair, in one fused pass that never holds
    /// the `N × N` matrix: what [`BatchCriterion`](crate::loss::BatchCriterion)
    /// runs for [`AllPairs`](crate::miners::AllPairs). The CPU computes
    /// blocks of rows from Gram tiles and runs the formula's row form on
    /// them, with a backward through the project's GEMM; the generic body
    /// gives the embeddings back (`Unavailable`: the caller then takes the
    /// matrix on the tape), as does the CPU for a batch PML scores as
    /// exactly 0. A view of the matrix (N-pairs' anchors × positives) is
    /// computed from the rows it reads, its statistics from one more pass.
    ///
    /// `prepare` says what `x` is: rows already normalized
    /// ([`Prepare::AsGiven`]), or the raw embeddings, which the kernel
    /// L2-normalizes as it copies them ([`Prepare::L2Normalize`]: exactly
    /// [`l2_normalize`](crate::distance::l2_normalize)'s values, and its
    /// backward applied as the kernel writes `∂L/∂x`, one tape op instead of
    /// two). `Unavailable` gives `x` back as it came, not normalized.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::{FusedFormula, MetricDevice, Prepare};
    /// use metric_loss_core::formulas::{MultiSimilarity, PairWeights, Weighting};
    /// use metric_loss_core::miners::Tuples;
    /// let dev = Cpu::default();
    /// // raw rows: the kernel normalizes them ([3, 4] becomes [0.6, 0.8])
    /// let x = dev.tensor([[2.0f32, 0.0], [3.0, 4.0], [0.0, 0.5]]);
    /// let labels = [0, 0, 1];
    /// let w = PairWeights::try_new(Weighting::Mask, &Tuples::All, &labels).unwrap();
    /// let f = MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5 };
    /// let fused = Cpu::try_fused_batch_formula(x.leaky_trace(), &labels, &w, &f, Prepare::L2Normalize);
    /// match fused.unwrap() {
    ///     FusedFormula::Done { loss, stats } => {
    ///         assert_eq!(stats.pairs, 6);
    ///         let g = loss.backward();
    ///         assert!(g.get(&x).as_vec().iter().all(|v| v.is_finite()));
    ///     }
    ///     FusedFormula::Unavailable(_) => unreachable!("the CPU has the kernel"),
    /// }
    /// ```
    #[allow(clippy::type_complexity)]
    fn try_fused_batch_formula<
        F: crate::formulas::BatchFormula,
        N: Dim,
        const D: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        labels: &[usize],
        w: &crate::formulas::PairWeights,
        f: &F,
        prepare: Prepare,
    ) -> Result<FusedFormula<N, D, Self, T>, crate::MetricLossError> {
        let _ = (labels, w, f, prepare);
        Ok(FusedFormula::Unavailable(x))
    }

    /// The loss of a formula of the ranking family for a batch of
    /// normalized rows against a cross-batch memory (`memory`: its prepared
    /// entries, labels and each row's own column), with the pairs `miner`
    /// gives — [`AllPairs`](crate::miners::AllPairs) (every (row, entry)
    /// pair) or [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner)
    /// (its rule, per row) — less each row's pair with its own copy, and
    /// their statistics: what [`CrossBatchMemory`](crate::xbm::CrossBatchMemory)
    /// runs for those miners. No gradient flows into the memory. The CPU
    /// computes blocks of rows of the `B × M` matrix from Gram tiles, fills
    /// each row's weights from the labels (and, for the miner, the row's
    /// least similar positive and most similar negative), runs the
    /// formula's row form on it and pushes `∂L/∂s` back with the project's
    /// GEMM in the same pass; the generic body gives the embeddings back
    /// (`Unavailable`: the caller then builds the matrix on the tape and
    /// mines a host copy), as does the CPU for another miner, a formula
    /// whose rows share numbers, N-pairs, or a single-class batch and
    /// memory.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::{FusedFormula, MetricDevice};
    /// use metric_loss_core::formulas::MultiSimilarity;
    /// use metric_loss_core::miners::Fusable;
    /// use metric_loss_core::xbm::MemoryColumns;
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[1.0f32, 0.0], [0.0, 1.0]]);
    /// // the memory: the batch's copies (columns 1 and 2) and an older entry
    /// let entries = [0.6f32, 0.8, 1.0, 0.0, 0.0, 1.0];
    /// let memory = MemoryColumns::try_new(&entries, 2, &[0, 0, 1], &[1, 2]).unwrap();
    /// let f = MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5 };
    /// match Cpu::try_fused_batch_formula_against(x.leaky_trace(), &[0, 1], &memory, Fusable::AllPairs, &f).unwrap() {
    ///     FusedFormula::Done { loss, stats } => {
    ///         assert_eq!(stats.pairs, 4); // 2 × 3, less each row's own copy
    ///         let g = loss.backward();
    ///         assert!(g.get(&x).as_vec().iter().all(|v| v.is_finite()));
    ///     }
    ///     FusedFormula::Unavailable(_) => unreachable!("the CPU has the kernel"),
    /// }
    /// ```
    #[allow(clippy::type_complexity)]
    fn try_fused_batch_formula_against<
        F: crate::formulas::BatchFormula,
        B: Dim,
        const D: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<D>), f32, Self, T>,
        labels: &[usize],
        memory: &crate::xbm::MemoryColumns<'_>,
        miner: crate::miners::Fusable,
        f: &F,
    ) -> Result<FusedFormula<B, D, Self, T>, crate::MetricLossError> {
        let _ = (labels, memory, miner, f);
        Ok(FusedFormula::Unavailable(x))
    }

    /// The affine map of [`InputLinear`](crate::nets::InputLinear),
    /// `x·Wᵀ + b`, on the tape of `x`. The CPU registers a backward for `W`
    /// and `b` only (no gradient for `x`); the generic body is dfdx's
    /// `Linear`, which also computes `x`'s.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// let dev = Cpu::default();
    /// let w = dev.tensor([[1.0f32, 2.0]]);
    /// let b = dev.tensor([0.5f32]);
    /// let x = dev.tensor([[1.0f32, 1.0], [2.0, 0.0]]);
    /// let y = Cpu::try_input_linear(x.leaky_trace(), &w, &b).unwrap();
    /// assert_eq!(y.array(), [[3.5], [2.5]]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&w).array(), [[3.0, 1.0]]);
    /// assert_eq!(g.get(&b).array(), [2.0]);
    /// ```
    fn try_input_linear<B: Dim, const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<I>), f32, Self, T>,
        weight: &Tensor<Rank2<O, I>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
    ) -> Result<Tensor<(B, Const<O>), f32, Self, T>, Self::Err> {
        generic_linear(x, weight, bias)
    }

    /// `x·Wᵀ + b`, the affine map of a fully connected layer
    /// ([`FusedLinear`](crate::nets::FusedLinear)), named after PyTorch's
    /// `torch.nn.functional.linear(x, W, b)`: `W` is `O × I` as in dfdx's
    /// and PyTorch's `Linear`. The gradients are `Linear`'s (for `x`, `W`
    /// and `b`). The generic body is dfdx's `Linear` ([`generic_linear`]);
    /// the CPU runs one op each way on the project's GEMM instead of a
    /// matmul, a broadcast and an add, and adds the parameters' gradients
    /// straight into their buffers.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::device::MetricDevice;
    /// let dev = Cpu::default();
    /// let w = dev.tensor([[1.0f32, 2.0], [0.0, -1.0]]);
    /// let b = dev.tensor([0.5f32, 0.0]);
    /// let x = dev.tensor([[1.0f32, 1.0]]);
    /// let y = Cpu::try_linear(x.leaky_trace(), &w, &b).unwrap();
    /// assert_eq!(y.array(), [[3.5, -1.0]]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&x).array(), [[1.0, 1.0]]); // Σ_o W_oi
    /// assert_eq!(g.get(&w).array(), [[1.0, 1.0], [1.0, 1.0]]);
    /// assert_eq!(g.get(&b).array(), [1.0, 1.0]);
    /// ```
    fn try_linear<B: Dim, const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<I>), f32, Self, T>,
        weight: &Tensor<Rank2<O, I>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
    ) -> Result<Tensor<(B, Const<O>), f32, Self, T>, Self::Err> {
        generic_linear(x, weight, bias)
    }

    /// PyTorch's `conv2d` with a bias: `y[b, o] = bias[o] + Σ_c weight[o, c] ⋆ x[b, c]`
    /// on the zero-padded input, sampled every `stride` pixels, for the
    /// geometry `window` (built from `x`'s height and width and the layer's
    /// kernel, stride and padding; its kernel must be `K`). The body of
    /// [`Conv2D`](crate::nets::Conv2D).
    ///
    /// The generic body is [`generic_conv2d`] (im2col as a `gather` on the
    /// tape, then one matmul); the CPU runs one op with a hand-written
    /// backward whose three products go through the project's GEMM.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::{device::MetricDevice, nets::Window};
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]]]); // (1, 1, 2, 3)
    /// let w = dev.tensor([[[[1.0f32, 0.0], [0.0, -1.0]]]]); // (1, 1, 2, 2)
    /// let b = dev.tensor([10.0f32]);
    /// let win = Window::try_new("Conv2D", 2, 1, 0, 2, 3).unwrap();
    /// let y = Cpu::try_conv2d(x.leaky_trace(), &w, &b, &win).unwrap();
    /// assert_eq!(y.as_vec(), [6.0, 6.0]); // 10 + 1 − 5, 10 + 2 − 6
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&w).as_vec(), [3.0, 5.0, 9.0, 11.0]);
    /// assert_eq!(g.get(&b).as_vec(), [2.0]);
    /// ```
    fn try_conv2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        generic_conv2d(x, weight, bias, window)
    }

    /// [`try_conv2d`](Self::try_conv2d) for the **first** layer of a
    /// network ([`InputConv2D`](crate::nets::InputConv2D)): the same output
    /// and the same gradients for `weight` and `bias`, but the CPU computes
    /// no gradient for `x` (the network's input images: nothing reads it,
    /// and it costs a product as large as the forward one and a col2im).
    /// The generic body is [`generic_conv2d`], which computes `x`'s too.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::{device::MetricDevice, nets::Window};
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]]]); // (1, 1, 2, 3)
    /// let w = dev.tensor([[[[1.0f32, 0.0], [0.0, -1.0]]]]); // (1, 1, 2, 2)
    /// let b = dev.tensor([10.0f32]);
    /// let win = Window::try_new("Conv2D", 2, 1, 0, 2, 3).unwrap();
    /// let y = Cpu::try_input_conv2d(x.leaky_trace(), &w, &b, &win).unwrap();
    /// assert_eq!(y.as_vec(), [6.0, 6.0]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&w).as_vec(), [3.0, 5.0, 9.0, 11.0]);
    /// assert_eq!(g.get(&b).as_vec(), [2.0]);
    /// ```
    fn try_input_conv2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        generic_conv2d(x, weight, bias, window)
    }

    /// `max_pool2d(relu(conv2d(x, weight) + bias))`: PyTorch's
    /// `Conv2d → ReLU → MaxPool2d` as one call, the body of
    /// [`ConvReLUPool`](crate::nets::ConvReLUPool). `window` is the
    /// convolution's geometry, `pool` the pool's on the convolution's
    /// output; `input_grad: false` is [`try_input_conv2d`](Self::try_input_conv2d)'s
    /// no gradient for `x` (the CPU honours it, the generic body computes
    /// `x`'s anyway).
    ///
    /// The generic body is [`try_conv2d`](Self::try_conv2d),
    /// [`try_max_pool2d`](Self::try_max_pool2d) and dfdx's `relu` in a row
    /// (the pool before the ReLU: the same values and gradients, on a
    /// quarter of the pixels). The CPU runs one op: each image's
    /// convolution stays in cache and only the pooled, rectified values are
    /// written, so neither the full-size activation nor its gradient is
    /// ever stored, zeroed or copied; values and gradients are the generic
    /// body's, bit for bit.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::{device::MetricDevice, nets::Window};
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 0.0]]]]);
    /// let w = dev.tensor([[[[1.0f32, 0.0], [0.0, -1.0]]]]); // (1, 1, 2, 2)
    /// let b = dev.tensor([0.5f32]);
    /// // the convolution is [[-4, -4], [-4, 5]] + 0.5, pooled to one pixel
    /// let conv = Window::try_new("Conv2D", 2, 1, 0, 3, 3).unwrap();
    /// let pool = Window::try_new("MaxPool2D", 2, 2, 0, 2, 2).unwrap();
    /// let y = Cpu::try_conv2d_relu_max_pool2d(x.leaky_trace(), &w, &b, &conv, &pool, true).unwrap();
    /// assert_eq!(y.as_vec(), [5.5]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&w).as_vec(), [5.0, 6.0, 8.0, 0.0]); // the winner's pixels
    /// assert_eq!(g.get(&b).as_vec(), [1.0]);
    /// assert_eq!(g.get(&x).as_vec(), [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0]);
    /// ```
    fn try_conv2d_relu_max_pool2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
        pool: &Window,
        input_grad: bool,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        let y = if input_grad {
            Self::try_conv2d(x, weight, bias, window)?
        } else {
            Self::try_input_conv2d(x, weight, bias, window)?
        };
        Self::try_max_pool2d(y, pool)?.try_relu()
    }

    /// PyTorch's `max_pool2d` (no padding): the maximum of each window, and
    /// in the backward the whole gradient to the window's **first** maximum
    /// (row-major) on ties; a NaN in a window propagates. The body of
    /// [`MaxPool2D`](crate::nets::MaxPool2D).
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::{device::MetricDevice, nets::Window};
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[[[1.0f32, 7.0, 7.0, 0.0], [7.0, 2.0, 3.0, 4.0]]]]);
    /// let win = Window::try_new("MaxPool2D", 2, 2, 0, 2, 4).unwrap();
    /// let y = Cpu::try_max_pool2d(x.leaky_trace(), &win).unwrap();
    /// assert_eq!(y.as_vec(), [7.0, 7.0]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&x).as_vec(), [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    /// ```
    fn try_max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Self>>(
        x: Tensor<(B, C, H, W), f32, Self, T>,
        window: &Window,
    ) -> Result<Tensor<(B, C, usize, usize), f32, Self, T>, Self::Err> {
        generic_max_pool2d(x, window)
    }

    /// PyTorch's `avg_pool2d` (no padding): the mean of each window; in the
    /// backward each pixel gets `1/kernel²` of the gradient of every window
    /// it lies in. The body of [`AvgPool2D`](crate::nets::AvgPool2D).
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use metric_loss_core::{device::MetricDevice, nets::Window};
    /// let dev = Cpu::default();
    /// let x = dev.tensor([[[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]]]);
    /// let win = Window::try_new("AvgPool2D", 2, 1, 0, 2, 3).unwrap();
    /// let y = Cpu::try_avg_pool2d(x.leaky_trace(), &win).unwrap();
    /// assert_eq!(y.as_vec(), [3.0, 4.0]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.get(&x).as_vec(), [0.25, 0.5, 0.25, 0.25, 0.5, 0.25]);
    /// ```
    fn try_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Self>>(
        x: Tensor<(B, C, H, W), f32, Self, T>,
        window: &Window,
    ) -> Result<Tensor<(B, C, usize, usize), f32, Self, T>, Self::Err> {
        generic_avg_pool2d(x, window)
    }
}

/// Panics unless `window` was built for `x`'s height and width (and, for a
/// convolution, kernel `K`): a caller's bug, never a user's input.
fn check_window<S: Shape>(shape: &S, window: &Window, kernel: Option<usize>) {
    let dims = shape.concrete();
    let (h, w) = (dims[S::NUM_DIMS - 2], dims[S::NUM_DIMS - 1]);
    assert_eq!(
        window.input_size(),
        (h, w),
        "window built for another image size"
    );
    if let Some(k) = kernel {
        assert_eq!(window.kernel(), k, "window built for another kernel");
    }
}

/// Zeros of `shape` on `x`'s tape: the output for an input with no pixels
/// (an empty batch, or no channels), which dfdx's `gather` cannot read.
fn empty_output<S: Shape, Out: Shape, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<S, f32, Dev, T>,
    shape: Out,
) -> Result<Tensor<Out, f32, Dev, T>, Dev::Err> {
    let dev = x.device().clone();
    let (_, tape) = x.split_tape();
    Ok(dev.try_zeros_like(&shape)?.put_tape(tape))
}

/// The convolution any dfdx device runs: im2col as one `gather` on the tape
/// (a row of `C·K·K` pixels per output pixel; positions in the padding read
/// pixel 0 and are multiplied by a 0 mask), one matmul with the weight seen
/// as `O × C·K·K`, the bias broadcast, and a permute back to
/// `(batch, O, height, width)`. Its backward is dfdx's: the matmul's, then
/// `gather`'s scatter-add, so every pixel collects the gradient of every
/// window it lies in. The index table is built on the host and copied to the
/// device once per call.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::{device::{generic_conv2d, MetricDevice}, nets::Window};
/// let dev = Cpu::seed_from_u64(0);
/// let x: Tensor<Rank4<2, 3, 5, 4>, f32, _> = dev.sample_normal();
/// let w: Tensor<Rank4<4, 3, 3, 3>, f32, _> = dev.sample_normal();
/// let b: Tensor<Rank1<4>, f32, _> = dev.sample_normal();
/// let win = Window::try_new("Conv2D", 3, 2, 1, 5, 4).unwrap();
/// let generic = generic_conv2d(x.clone(), &w, &b, &win).unwrap();
/// let fused = Cpu::try_conv2d(x, &w, &b, &win).unwrap();
/// assert_eq!(generic.shape(), &(Const::<2>, Const::<4>, 3, 2));
/// for (g, f) in generic.as_vec().iter().zip(fused.as_vec()) {
///     assert!((g - f).abs() < 1e-4);
/// }
/// ```
pub fn generic_conv2d<
    B: Dim,
    const C: usize,
    H: Dim,
    W: Dim,
    const O: usize,
    const K: usize,
    Dev: Device<f32>,
    T: Tape<f32, Dev>,
>(
    x: Tensor<(B, Const<C>, H, W), f32, Dev, T>,
    weight: &Tensor<Rank4<O, C, K, K>, f32, Dev>,
    bias: &Tensor<Rank1<O>, f32, Dev>,
    window: &Window,
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Dev, T>, Dev::Err> {
    check_window(x.shape(), window, Some(K));
    let dev = x.device().clone();
    let batch = x.shape().0;
    let (oh, ow) = window.output_size();
    let (rows, taps) = (batch.size() * oh * ow, C * K * K);
    let n = x.shape().num_elements();
    if n == 0 {
        return empty_output(x, (batch, Const::<O>, oh, ow));
    }
    let (index, mask) = window.im2col_index(batch.size(), C);
    let index = dev.try_tensor_from_vec(index, (rows * taps,))?;
    let mut cols = x.try_reshape_like(&(n,))?.try_gather(index)?;
    if let Some(mask) = mask {
        cols = cols.try_mul(dev.try_tensor_from_vec(mask, (rows * taps,))?)?;
    }
    let w = weight
        .retaped::<T>()
        .try_reshape_like(&(Const::<O>, taps))?
        .try_permute::<_, Axes2<1, 0>>()?;
    let y = cols.try_reshape_like(&(rows, taps))?.try_matmul(w)?;
    let y = y.try_add(
        bias.retaped::<T>()
            .try_broadcast_like(&(rows, Const::<O>))?,
    )?;
    y.try_reshape_like(&(batch, oh, ow, Const::<O>))?
        .try_permute::<_, Axes4<0, 3, 1, 2>>()
}

/// The max pooling any dfdx device runs: the input is read to the host once
/// to find each window's first maximum (PyTorch's tie rule, which dfdx's
/// `max`, sending the gradient to every maximum, does not follow), then
/// those pixels are `gather`ed on the tape, so the backward scatters each
/// gradient to its window's winner.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::{device::generic_max_pool2d, nets::Window};
/// let dev = Cpu::default();
/// let x = dev.tensor([[[[2.0f32, 2.0], [2.0, 1.0]]]]);
/// let win = Window::try_new("MaxPool2D", 2, 2, 0, 2, 2).unwrap();
/// let y = generic_max_pool2d(x.leaky_trace(), &win).unwrap();
/// let g = y.sum().backward();
/// assert_eq!(g.get(&x).as_vec(), [1.0, 0.0, 0.0, 0.0]); // the first of three maxima
/// ```
pub fn generic_max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B, C, H, W), f32, Dev, T>,
    window: &Window,
) -> Result<Tensor<(B, C, usize, usize), f32, Dev, T>, Dev::Err> {
    check_window(x.shape(), window, None);
    assert_eq!(window.padding(), 0, "pools have no padding");
    let dev = x.device().clone();
    let (batch, channels, _, _) = *x.shape();
    let (oh, ow) = window.output_size();
    let planes = batch.size() * channels.size();
    let n = x.shape().num_elements();
    if n == 0 {
        return empty_output(x, (batch, channels, oh, ow));
    }
    let flat = x.try_reshape_like(&(n,))?;
    let mut index = Vec::with_capacity(planes * window.out_len());
    let host = flat.as_vec();
    let mut out = vec![0.0; window.out_len()];
    let mut arg = vec![0u32; window.out_len()];
    for (p, plane) in host.chunks_exact(window.in_len()).enumerate() {
        window.max_of_plane(plane, &mut out, &mut arg);
        index.extend(arg.iter().map(|&a| p * window.in_len() + a as usize));
    }
    let len = index.len();
    let index = dev.try_tensor_from_vec(index, (len,))?;
    flat.try_gather(index)?
        .try_reshape_like(&(batch, channels, oh, ow))
}

/// The average pooling any dfdx device runs: each window's pixels
/// `gather`ed on the tape into a row, then the mean of each row.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::{device::generic_avg_pool2d, nets::Window};
/// let dev = Cpu::default();
/// let x = dev.tensor([[[[1.0f32, 2.0], [3.0, 6.0]]]]);
/// let win = Window::try_new("AvgPool2D", 2, 2, 0, 2, 2).unwrap();
/// let y = generic_avg_pool2d(x.leaky_trace(), &win).unwrap();
/// assert_eq!(y.as_vec(), [3.0]);
/// ```
pub fn generic_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<(B, C, H, W), f32, Dev, T>,
    window: &Window,
) -> Result<Tensor<(B, C, usize, usize), f32, Dev, T>, Dev::Err> {
    check_window(x.shape(), window, None);
    assert_eq!(window.padding(), 0, "pools have no padding");
    let dev = x.device().clone();
    let (batch, channels, _, _) = *x.shape();
    let (oh, ow) = window.output_size();
    let planes = batch.size() * channels.size();
    let taps = window.kernel() * window.kernel();
    if x.shape().num_elements() == 0 {
        return empty_output(x, (batch, channels, oh, ow));
    }
    let index = window.pool_index(planes);
    let len = index.len();
    let index = dev.try_tensor_from_vec(index, (len,))?;
    let n = x.shape().num_elements();
    x.try_reshape_like(&(n,))?
        .try_gather(index)?
        .try_reshape_like(&(planes * window.out_len(), taps))?
        .try_mean::<(usize,), Axis<1>>()?
        .try_reshape_like(&(batch, channels, oh, ow))
}

/// `x·Wᵀ + b` exactly as dfdx's `Linear` computes it: a matmul and a
/// broadcast bias on the tape, with gradients for `x`, `W` and `b`.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::device::generic_linear;
/// let dev = Cpu::default();
/// let w = dev.tensor([[1.0f32, 2.0], [0.0, -1.0], [3.0, 0.0]]);
/// let b = dev.tensor([0.5f32, 0.0, -1.0]);
/// let x = dev.tensor([[1.0f32, 1.0]]);
/// let y = generic_linear(x.leaky_trace(), &w, &b).unwrap();
/// assert_eq!(y.array(), [[3.5, -1.0, 2.0]]);
/// let g = y.sum().backward();
/// assert_eq!(g.get(&x).array(), [[4.0, 1.0]]); // Linear's input gradient
/// ```
pub fn generic_linear<
    B: Dim,
    const I: usize,
    const O: usize,
    Dev: Device<f32>,
    T: Tape<f32, Dev>,
>(
    x: Tensor<(B, Const<I>), f32, Dev, T>,
    weight: &Tensor<Rank2<O, I>, f32, Dev>,
    bias: &Tensor<Rank1<O>, f32, Dev>,
) -> Result<Tensor<(B, Const<O>), f32, Dev, T>, Dev::Err> {
    let y = x.try_matmul(weight.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?)?;
    let shape = *y.shape();
    y.try_add(bias.retaped::<T>().try_broadcast_like(&shape)?)
}

/// What [`MetricDevice::try_batch_hard_euclidean`] gives back.
#[doc(hidden)]
pub enum FusedBatchHard<N: Dim, const D: usize, Dev: Device<f32>, T> {
    /// The fused kernel ran.
    Done {
        /// Hardest-positive distance per kept anchor, on the tape.
        d_ap: Tensor<(usize,), f32, Dev, T>,
        /// Hardest-negative distance per kept anchor (tape-less; its backward
        /// is registered with `d_ap`'s).
        d_an: Tensor<(usize,), f32, Dev, T>,
        /// The mined triplets.
        triplets: Vec<crate::miners::Triplet>,
        /// Miner statistics, computed in the same pass.
        stats: crate::miners::MinerStats,
    },
    /// No fused kernel on this device: the embeddings, untouched.
    Unavailable(Tensor<(N, Const<D>), f32, Dev, T>),
}

/// What a fused kernel does to the rows it is given before any distance
/// ([`MetricDevice::try_fused_batch_formula`]).
///
/// A loss whose embeddings are L2-normalized (the whole ranking family:
/// [`MetricSpace::L2_NORMALIZES`](crate::loss::MetricSpace::L2_NORMALIZES))
/// hands its raw rows to the kernel with [`L2Normalize`](Self::L2Normalize):
/// the CPU then normalizes them while copying them for its pass and folds
/// the normalization's backward into its own, instead of running
/// [`l2_normalize`](crate::distance::l2_normalize) as a separate tape op
/// first (a copy of the rows and a second backward op fewer). The values
/// and gradients are the same bits either way.
///
/// ```
/// use metric_loss_core::device::Prepare;
/// use metric_loss_core::loss::MetricSpace;
/// use metric_loss_core::losses::SupConLoss;
/// // the ranking family normalizes: its fused kernel may do it itself
/// assert!(SupConLoss::L2_NORMALIZES);
/// assert_ne!(Prepare::AsGiven, Prepare::L2Normalize);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// The rows are used as given (already prepared by the caller).
    AsGiven,
    /// The rows are L2-normalized first, exactly as
    /// [`l2_normalize`](crate::distance::l2_normalize) does (`NORM_EPS`
    /// floor, overflow-safe norms, NaN rows NaN), inside the kernel.
    L2Normalize,
}

/// What [`MetricDevice::try_fused_batch_formula`](crate::device::MetricDevice::try_fused_batch_formula)
/// gives back.
pub enum FusedFormula<N: Dim, const D: usize, Dev: Device<f32>, T> {
    /// The fused kernel ran.
    Done {
        /// The loss, on the tape of the embeddings.
        loss: Tensor<(), f32, Dev, T>,
        /// The statistics of every pair of the batch.
        stats: crate::miners::MinerStats,
    },
    /// No fused kernel for this case: the embeddings, untouched.
    Unavailable(Tensor<(N, Const<D>), f32, Dev, T>),
}

/// The generic row-wise Euclidean distance: `sub`, `square`, `sum` and
/// [`generic_safe_sqrt`] on the tape (what [`Cpu`] fuses into one op).
pub fn generic_euclidean_rows<B: Dim, const D: usize, Dev: Device<f32>, T: Tape<f32, Dev>>(
    a: Tensor<(B, Const<D>), f32, Dev, T>,
    b: Tensor<(B, Const<D>), f32, Dev, T>,
    squared: bool,
) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    let d2 = a.try_sub(b)?.try_square()?.try_sum::<(B,), Axis<1>>()?;
    if squared {
        Ok(d2)
    } else {
        generic_safe_sqrt(d2)
    }
}

/// The generic `safe_sqrt`: `(sqrt(x + z) - z) * (1 - z)` with `z = [x <= 0]`
/// held constant. Where `x > 0` this is exactly `sqrt(x)`; where `x <= 0` it
/// is exactly 0 with derivative `0.5 * 0 = 0`.
pub fn generic_safe_sqrt<S: Shape, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<S, f32, Dev, T>,
) -> Result<Tensor<S, f32, Dev, T>, Dev::Err> {
    let dev = x.device().clone();
    let detached = x.retaped::<NoneTape>();
    let zero = detached.try_le(0.0)?;
    let ones = dev.try_ones_like(&detached)?;
    let zeros = dev.try_zeros_like(&detached)?;
    let z = zero.try_choose(ones.clone(), zeros)?;
    let keep = ones.try_sub(z.clone())?;
    x.try_clamp(0.0, f32::INFINITY)?
        .try_add(z.clone())?
        .try_sqrt()?
        .try_sub(z)?
        .try_mul(keep)
}

impl MetricDevice for Cpu {
    const EUCLIDEAN_ROWS_SAME_ID_SAFE: bool = true;

    fn try_euclidean_rows<B: Dim, const D: usize, T: Tape<f32, Self>>(
        a: Tensor<(B, Const<D>), f32, Self, T>,
        b: Tensor<(B, Const<D>), f32, Self, T>,
        squared: bool,
    ) -> Result<Tensor<(B,), f32, Self, T>, Self::Err> {
        crate::fused::euclidean_rows_cpu(a, b, squared)
    }

    fn try_batch_hard_euclidean<N: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        labels: &[usize],
        squared: bool,
        margin: f32,
    ) -> Result<FusedBatchHard<N, D, Self, T>, crate::MetricLossError> {
        crate::fused::batch_hard_euclidean_cpu(x, labels, squared, margin)
    }

    fn try_safe_sqrt<S: Shape, T: Tape<f32, Self>>(
        x: Tensor<S, f32, Self, T>,
    ) -> Result<Tensor<S, f32, Self, T>, Self::Err> {
        crate::fused::safe_sqrt_cpu(x)
    }

    fn try_input_linear<B: Dim, const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<I>), f32, Self, T>,
        weight: &Tensor<Rank2<O, I>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
    ) -> Result<Tensor<(B, Const<O>), f32, Self, T>, Self::Err> {
        crate::fused::linear_cpu(x, weight, bias, false)
    }

    fn try_linear<B: Dim, const I: usize, const O: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<I>), f32, Self, T>,
        weight: &Tensor<Rank2<O, I>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
    ) -> Result<Tensor<(B, Const<O>), f32, Self, T>, Self::Err> {
        crate::fused::linear_cpu(x, weight, bias, true)
    }

    fn try_l2_normalize<B: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<D>), f32, Self, T>,
    ) -> Result<Tensor<(B, Const<D>), f32, Self, T>, Self::Err> {
        crate::fused::l2_normalize_cpu(x)
    }

    fn try_euclidean_matrix<N: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        squared: bool,
    ) -> Result<Tensor<(N, N), f32, Self, T>, Self::Err> {
        crate::fused::euclidean_matrix_cpu(x, squared)
    }

    fn try_batch_formula<F: crate::formulas::BatchFormula, T: Tape<f32, Self>>(
        s: Tensor<(usize, usize), f32, Self, T>,
        w: &crate::formulas::PairWeights,
        f: &F,
    ) -> Result<Tensor<(), f32, Self, T>, Self::Err> {
        crate::fused::batch_formula_cpu(s, w, f)
    }

    fn try_fused_batch_formula<
        F: crate::formulas::BatchFormula,
        N: Dim,
        const D: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(N, Const<D>), f32, Self, T>,
        labels: &[usize],
        w: &crate::formulas::PairWeights,
        f: &F,
        prepare: Prepare,
    ) -> Result<FusedFormula<N, D, Self, T>, crate::MetricLossError> {
        crate::fused::batch_formula_fused_cpu(x, labels, w, f, prepare)
    }

    fn try_cross_gram<B: Dim, M: Dim, const D: usize, T: Tape<f32, Self>>(
        x: Tensor<(B, Const<D>), f32, Self, T>,
        y: &Tensor<(M, Const<D>), f32, Self>,
    ) -> Result<Tensor<(B, M), f32, Self, T>, Self::Err> {
        crate::fused::cross_gram_cpu(x, y)
    }

    fn try_fused_batch_formula_against<
        F: crate::formulas::BatchFormula,
        B: Dim,
        const D: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<D>), f32, Self, T>,
        labels: &[usize],
        memory: &crate::xbm::MemoryColumns<'_>,
        miner: crate::miners::Fusable,
        f: &F,
    ) -> Result<FusedFormula<B, D, Self, T>, crate::MetricLossError> {
        crate::fused::batch_formula_against_cpu(x, labels, memory, miner, f)
    }

    fn try_conv2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        check_window(x.shape(), window, Some(K));
        crate::fused::conv2d_cpu(x, weight, bias, window, true)
    }

    fn try_input_conv2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        check_window(x.shape(), window, Some(K));
        crate::fused::conv2d_cpu(x, weight, bias, window, false)
    }

    fn try_conv2d_relu_max_pool2d<
        B: Dim,
        const C: usize,
        H: Dim,
        W: Dim,
        const O: usize,
        const K: usize,
        T: Tape<f32, Self>,
    >(
        x: Tensor<(B, Const<C>, H, W), f32, Self, T>,
        weight: &Tensor<Rank4<O, C, K, K>, f32, Self>,
        bias: &Tensor<Rank1<O>, f32, Self>,
        window: &Window,
        pool: &Window,
        input_grad: bool,
    ) -> Result<Tensor<(B, Const<O>, usize, usize), f32, Self, T>, Self::Err> {
        check_window(x.shape(), window, Some(K));
        assert_eq!(
            pool.input_size(),
            window.output_size(),
            "pool built for another image size"
        );
        crate::fused::conv2d_relu_max_pool2d_cpu(x, weight, bias, window, pool, input_grad)
    }

    fn try_max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Self>>(
        x: Tensor<(B, C, H, W), f32, Self, T>,
        window: &Window,
    ) -> Result<Tensor<(B, C, usize, usize), f32, Self, T>, Self::Err> {
        check_window(x.shape(), window, None);
        crate::fused::max_pool2d_cpu(x, window)
    }

    fn try_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, T: Tape<f32, Self>>(
        x: Tensor<(B, C, H, W), f32, Self, T>,
        window: &Window,
    ) -> Result<Tensor<(B, C, usize, usize), f32, Self, T>, Self::Err> {
        check_window(x.shape(), window, None);
        crate::fused::avg_pool2d_cpu(x, window)
    }
}

#[cfg(feature = "cuda")]
impl MetricDevice for Cuda {}
