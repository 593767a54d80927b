//! Shared-weight networks: [`Siamese`] (two branches) and [`TripletNet`]
//! (three branches) around one encoder.
//!
//! Both wrap any dfdx module `M` (the *encoder*, e.g. an MLP
//! `(Linear<784, 256>, ReLU, Linear<256, 128>)`), hold **one** copy of its
//! weights, and run it on two or three inputs recorded on **one** gradient
//! tape. The gradient of every weight is then the sum of what each branch
//! contributes — which is what "shared weights" means.
//!
//! # Siamese + contrastive, or triplet net + triplet loss?
//!
//! | | Siamese network, contrastive loss | Triplet network, triplet loss |
//! |---|---|---|
//! | **input** | a pair `(a, b)` and a label *similar* / *dissimilar* ([`PairLabels`](crate::labels::PairLabels)) | an anchor, a positive (same class) and a negative (other class) |
//! | **optimised** | absolute distances: similar pairs to 0, dissimilar pairs beyond the margin `m` | relative order: `d(A,P) + m < d(A,N)` |
//! | **training** | pairs are cheap to form and need only same/different labels, but most random dissimilar pairs are already far apart ("easy") and contribute nothing | random triplets are mostly easy too; it needs *mining* (semi-hard, batch-hard) to find the informative ones |
//! | **sensitivity** | the margin fixes a scale: every dissimilar pair must be `m` apart, even when the classes naturally differ in spread | no scale to set, but sensitive to the mining strategy: too-hard triplets (label noise, outliers) early on can *collapse* the embedding to a point |
//!
//! In both cases what is learned is a **distance**, not a list of classes:
//! the encoder maps any input to a point, and the distance between points
//! says "same or not". It therefore **generalises to classes never seen in
//! training** — a new person's face, a new speaker, a new signature, a new
//! product in an image search: enrol one example, compare by distance.
//! Typical applications are face verification (FaceNet), speaker and
//! signature verification (the original Siamese network, Bromley et al.
//! 1993), person re-identification, image and text retrieval, few-shot
//! learning and duplicate detection.
//!
//! # Why not a cross-entropy classifier?
//!
//! A softmax classifier trained with cross-entropy is the wrong tool for
//! learning a distance:
//!
//! - it is **closed-set**: its output is a distribution over the `K` classes
//!   of the training set; a new identity has no output unit, and adding one
//!   means retraining;
//! - it puts **no margin on distances** in its feature space: it only asks
//!   that classes be linearly separable, so two samples of one class may be
//!   far apart and samples of two classes close, as long as a hyperplane
//!   splits them;
//! - its features are **not trained to be compared**: nothing in the loss
//!   looks at `‖f(x) − f(y)‖`, so using the penultimate layer for
//!   verification or retrieval works only by accident (and the scale of the
//!   features is arbitrary).
//!
//! A metric loss looks at exactly the quantity used at test time.
//!
//! # Which path: explicit pairs/triplets, or one batch?
//!
//! - [`Siamese::forward_pair`] and [`TripletNet::forward_triplet`] take
//!   explicit pairs or triplets. Each item costs 2 or 3 encoder passes, and
//!   an image that appears in several items is encoded once per appearance.
//!   Use them when the data *comes* as pairs or triplets (verification
//!   datasets, precomputed triplets).
//! - [`Siamese::embed_batch`] (or `siamese.encoder().forward(x)`) runs one
//!   batch of `N` samples through the encoder **once**; a loss over
//!   embeddings by index (`loss.mined(miner, embeddings, labels)`) then
//!   reuses each embedding in up to `O(N²)` pairs or `O(N³)` triplets for the
//!   price of `N` encoder passes. This is why batch-hard / semi-hard mining
//!   (Hermans et al. 2017; Schroff et al. 2015) is efficient: a `P×K` batch of
//!   `N` images yields every triplet of the batch for `N` forward passes.
//!
//! ```
//! use metric_loss_core::prelude::*;
//!
//! type Net = (Linear<4, 8>, ReLU, Linear<8, 2>);
//! let dev = Cpu::default();
//! let net = dev.build_module::<TripletNet<Net>, f32>();
//! let batch: Tensor<Rank2<6, 4>, f32, _> = dev.sample_normal();
//! // 6 encoder passes, one tape ...
//! let e = net.embed_batch(batch.leaky_trace());
//! // ... and every pairwise distance of the batch, for a miner to pick from
//! let d = TripletLoss::try_distance_matrix(e).unwrap();
//! assert_eq!(d.shape(), &(Const::<6>, Const::<6>));
//! let grads = d.sum().backward();
//! assert!(grads.get(&net.encoder().0.weight).as_vec().iter().any(|g| *g != 0.0));
//! ```
//!
//! # Tapes
//!
//! The tape of the **first** input rides through every branch: branch 1 runs,
//! its tape is split off and put on branch 2's input (merged with that
//! input's own tape, if any), and so on. The **first output** carries the
//! whole tape; the others come back with an empty tape of the same type `T`
//! (`retaped::<T>()`), so all outputs fit straight into
//! `TripletLoss.forward(ea, ep, en)`. Feed *all* outputs into one loss (the
//! first output must be part of it) before calling `backward`.
//!
//! The second and third inputs may carry any tape the first one can absorb:
//! with a traced first input (`OwnedTape`), the others can be plain
//! (`NoneTape`) tensors.
//!
//! Inputs whose batch sizes differ (possible with `usize` batch dimensions)
//! are a [`MetricLossError::BatchMismatch`] from the `try_` methods; the
//! others panic with its message.

mod avg_pool2d;
mod conv2d;
mod conv_relu_pool;
mod flatten;
mod linear;
mod max_pool2d;
mod unflatten;
mod window;
pub use avg_pool2d::AvgPool2D;
pub use conv_relu_pool::ConvReLUPool;
pub use conv2d::{Conv2D, InputConv2D};
pub use flatten::Flatten;
pub use linear::{FusedLinear, InputLinear};
pub use max_pool2d::MaxPool2D;
pub use unflatten::Unflatten;
pub use window::Window;

/// The builders of this module's layers with parameters, as dfdx's
/// `nn::builders` (the prelude exports them under the same names):
/// `dev.build_module::<(builder::Conv2D<1, 32, 3>, ReLU, ...), f32>()`.
/// The pools, [`Flatten`] and [`Unflatten`] have no parameters and are their own builders.
pub mod builder {
    pub use super::conv_relu_pool::builder::ConvReLUPool;
    pub use super::conv2d::builder::{Conv2D, InputConv2D};
    pub use super::linear::builder::{FusedLinear, InputLinear};
}

use crate::error::{MetricLossError, unwrap_or_panic};
use crate::loss::check_same;
use dfdx::nn::{BuildOnDevice, Module, ModuleMut, ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use dfdx::tensor::{Merge, PutTape, SplitTape};
use std::marker::PhantomData;

type Rows<B, const N: usize, D, T> = Tensor<(B, Const<N>), f32, D, T>;

/// One encoder shared by `A` branches: [`Siamese`] (`A` =
/// [`PairBranches`]) or [`TripletNet`] (`A` = [`TripletBranches`]). Use
/// those names; everything they share is written here once.
#[derive(Debug, Clone, Default)]
pub struct SharedEncoder<M, A> {
    encoder: M,
    branches: PhantomData<A>,
}

/// The branches of a [`Siamese`] network: a pair `(a, b)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairBranches;

/// The branches of a [`TripletNet`]: `(anchor, positive, negative)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TripletBranches;

/// A Siamese network: one encoder applied to both sides of a pair, for a
/// contrastive ([`PairCriterion`](crate::loss::PairCriterion)) loss.
///
/// `Siamese<Net>` is both a builder (`dev.build_module::<Siamese<Net>, f32>()`
/// with `Net` a dfdx builder type) and the built network. Its parameters are
/// the encoder's, stored once (`alloc_grads`, optimisers and safetensors see
/// them once, as `encoder.*`).
///
/// ```
/// use metric_loss_core::prelude::*;
/// use dfdx::optim::{Adam, AdamConfig};
///
/// type Net = (Linear<4, 8>, ReLU, Linear<8, 2>);
/// let dev = Cpu::default();
/// let mut net = dev.build_module::<Siamese<Net>, f32>();
/// let mut opt = Adam::new(&net, AdamConfig::default());
/// let mut grads = net.alloc_grads();
///
/// let a: Tensor<Rank2<3, 4>, f32, _> = dev.sample_normal();
/// let b: Tensor<Rank2<3, 4>, f32, _> = dev.sample_normal();
/// let labels = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar, Pair::Similar]);
///
/// // one tape through both branches; `b` needs no tape of its own
/// let (ea, eb) = net.forward_pair(a.traced(grads), b);
/// let loss = ContrastiveLoss.forward(ea, eb, &labels);
/// grads = loss.backward();
/// opt.update(&mut net, &grads).unwrap();
/// net.zero_grads(&mut grads);
///
/// // inference: the encoder alone, no tape
/// let e: Tensor<Rank2<3, 2>, f32, _> = net.forward(dev.sample_normal::<Rank2<3, 4>>());
/// # let _ = e;
/// ```
pub type Siamese<M> = SharedEncoder<M, PairBranches>;

/// A triplet network: one encoder applied to an anchor, a positive and a
/// negative, for a [`TripletCriterion`](crate::loss::TripletCriterion).
///
/// Built like [`Siamese`]: `dev.build_module::<TripletNet<Net>, f32>()`.
/// For mined triplets, prefer the batch path ([`SharedEncoder::embed_batch`]):
/// see the [module docs](self).
///
/// ```
/// use metric_loss_core::prelude::*;
/// use dfdx::optim::{Adam, AdamConfig};
///
/// type Net = (Linear<4, 8>, ReLU, Linear<8, 2>);
/// let dev = Cpu::default();
/// let mut net = dev.build_module::<TripletNet<Net>, f32>();
/// let mut opt = Adam::new(&net, AdamConfig::default());
/// let mut grads = net.alloc_grads();
///
/// let a: Tensor<Rank2<5, 4>, f32, _> = dev.sample_normal();
/// let p: Tensor<Rank2<5, 4>, f32, _> = dev.sample_normal();
/// let n: Tensor<Rank2<5, 4>, f32, _> = dev.sample_normal();
///
/// let (ea, ep, en) = net.forward_triplet(a.traced(grads), p, n);
/// let loss = TripletLoss.forward(ea, ep, en);
/// grads = loss.backward();
/// opt.update(&mut net, &grads).unwrap();
/// net.zero_grads(&mut grads);
///
/// // evaluation: many rows, in chunks, no tape
/// let test: Tensor<(usize, Const<4>), f32, _> = dev.sample_normal_like(&(1000, Const));
/// let emb = net.embed(&test, 256);
/// assert_eq!(emb.shape().0, 1000);
/// ```
pub type TripletNet<M> = SharedEncoder<M, TripletBranches>;

/// The inputs of the `A` branches of a [`SharedEncoder`]: a pair `(a, b)`
/// for [`Siamese`], a triplet `(anchor, positive, negative)` for
/// [`TripletNet`], each a batch of rows with its own tape.
///
/// [`try_run`](Self::try_run) runs the encoder on each branch in turn. The
/// tape of the **first** input rides through every branch: branch 1 runs,
/// its tape is split off and put on branch 2's input (merged with that
/// input's own tape, if any), and so on; the first output carries the whole
/// tape, the others an empty tape of the same type.
pub trait BranchInputs: Sized {
    /// [`PairBranches`] or [`TripletBranches`]: which net takes these inputs.
    type Arity;
    /// The first branch's input; every branch is run with this type.
    type Input;
    /// The tape of the first input, which the outputs carry.
    type Tape;
    /// One output per branch: `(Y, Y)` or `(Y, Y, Y)`.
    type Outputs<Y>;

    /// Checks that the batch sizes agree ([`MetricLossError::BatchMismatch`],
    /// naming the branches `"a"`, `"b"` or `"anchor"`, `"positive"`,
    /// `"negative"`), then runs `f` on each branch on one tape.
    fn try_run<Y, F, E>(self, f: F) -> Result<Self::Outputs<Y>, MetricLossError>
    where
        Y: SplitTape<Tape = Self::Tape>,
        F: FnMut(Self::Input) -> Result<Y, E>,
        E: std::fmt::Debug;
}

/// Runs one branch: puts `carried` (the tape of the previous branches) on
/// `x`, merged with `x`'s own tape, and returns the output split from its tape.
fn branch<B, const IN: usize, D, T, T2, Y, F, E>(
    x: Rows<B, IN, D, T2>,
    carried: T,
    f: &mut F,
) -> Result<(Y::NoTape, T), MetricLossError>
where
    B: Dim,
    D: Device<f32>,
    T: Tape<f32, D> + Merge<T2>,
    T2: Tape<f32, D>,
    Y: SplitTape<Tape = T>,
    F: FnMut(Rows<B, IN, D, T>) -> Result<Y, E>,
    E: std::fmt::Debug,
{
    let (x, own) = x.split_tape();
    let y = f(x.put_tape(carried.merge(own))).map_err(MetricLossError::device)?;
    Ok(y.split_tape())
}

impl<B, const IN: usize, D, T, T2> BranchInputs for (Rows<B, IN, D, T>, Rows<B, IN, D, T2>)
where
    B: Dim,
    D: Device<f32>,
    T: Tape<f32, D> + Merge<T2>,
    T2: Tape<f32, D>,
{
    type Arity = PairBranches;
    type Input = Rows<B, IN, D, T>;
    type Tape = T;
    type Outputs<Y> = (Y, Y);

    fn try_run<Y, F, E>(self, mut f: F) -> Result<(Y, Y), MetricLossError>
    where
        Y: SplitTape<Tape = T>,
        F: FnMut(Self::Input) -> Result<Y, E>,
        E: std::fmt::Debug,
    {
        let (a, b) = self;
        check_same("a", a.shape().0.size(), "b", b.shape().0.size())?;
        let (ea, tape) = branch(a, T::default(), &mut f)?;
        let (eb, tape) = branch(b, tape, &mut f)?;
        Ok((ea.put_tape(tape), eb.put_tape(T::default())))
    }
}

impl<B, const IN: usize, D, T, T2, T3> BranchInputs
    for (Rows<B, IN, D, T>, Rows<B, IN, D, T2>, Rows<B, IN, D, T3>)
where
    B: Dim,
    D: Device<f32>,
    T: Tape<f32, D> + Merge<T2> + Merge<T3>,
    T2: Tape<f32, D>,
    T3: Tape<f32, D>,
{
    type Arity = TripletBranches;
    type Input = Rows<B, IN, D, T>;
    type Tape = T;
    type Outputs<Y> = (Y, Y, Y);

    fn try_run<Y, F, E>(self, mut f: F) -> Result<(Y, Y, Y), MetricLossError>
    where
        Y: SplitTape<Tape = T>,
        F: FnMut(Self::Input) -> Result<Y, E>,
        E: std::fmt::Debug,
    {
        let (a, p, n) = self;
        let rows = a.shape().0.size();
        check_same("anchor", rows, "positive", p.shape().0.size())?;
        check_same("anchor", rows, "negative", n.shape().0.size())?;
        let (ea, tape) = branch(a, T::default(), &mut f)?;
        let (ep, tape) = branch(p, tape, &mut f)?;
        let (en, tape) = branch(n, tape, &mut f)?;
        Ok((
            ea.put_tape(tape),
            ep.put_tape(T::default()),
            en.put_tape(T::default()),
        ))
    }
}

/// The branches `(a, b)` or `(anchor, positive, negative)`: see
/// [`BranchInputs`]. Errors: batch sizes that differ, or an error of the
/// encoder ([`MetricLossError::Device`]).
impl<M, A, X> Module<X> for SharedEncoder<M, A>
where
    X: BranchInputs<Arity = A>,
    M: Module<X::Input>,
    M::Output: SplitTape<Tape = X::Tape>,
{
    type Output = X::Outputs<M::Output>;
    type Error = MetricLossError;

    fn try_forward(&self, x: X) -> Result<Self::Output, MetricLossError> {
        x.try_run(|x| self.encoder.try_forward(x))
    }

    #[track_caller]
    fn forward(&self, x: X) -> Self::Output {
        unwrap_or_panic(self.try_forward(x))
    }
}

/// The branches in training mode (the encoder's `ModuleMut`).
impl<M, A, X> ModuleMut<X> for SharedEncoder<M, A>
where
    X: BranchInputs<Arity = A>,
    M: ModuleMut<X::Input>,
    M::Output: SplitTape<Tape = X::Tape>,
{
    type Output = X::Outputs<M::Output>;
    type Error = MetricLossError;

    fn try_forward_mut(&mut self, x: X) -> Result<Self::Output, MetricLossError> {
        let encoder = &mut self.encoder;
        x.try_run(|x| encoder.try_forward_mut(x))
    }

    #[track_caller]
    fn forward_mut(&mut self, x: X) -> Self::Output {
        unwrap_or_panic(self.try_forward_mut(x))
    }
}

impl<M> Siamese<M> {
    /// Embeds a pair batch `(a, b)` with the shared encoder on one tape.
    ///
    /// `ea` carries the tape of both branches; `eb` has an empty tape of the
    /// same type. Errors: batch sizes that differ
    /// ([`MetricLossError::BatchMismatch`], names `"a"` and `"b"`), or an
    /// error of the encoder.
    pub fn try_forward_pair<X1, X2>(
        &self,
        a: X1,
        b: X2,
    ) -> Result<<Self as Module<(X1, X2)>>::Output, MetricLossError>
    where
        Self: Module<(X1, X2), Error = MetricLossError>,
    {
        self.try_forward((a, b))
    }

    /// [`try_forward_pair`](Self::try_forward_pair), panicking with the error's message.
    #[track_caller]
    pub fn forward_pair<X1, X2>(&self, a: X1, b: X2) -> <Self as Module<(X1, X2)>>::Output
    where
        Self: Module<(X1, X2), Error = MetricLossError>,
    {
        unwrap_or_panic(self.try_forward_pair(a, b))
    }
}

impl<M> TripletNet<M> {
    /// Embeds a triplet batch `(anchor, positive, negative)` with the shared
    /// encoder on one tape.
    ///
    /// `ea` carries the tape of all three branches; `ep` and `en` have an
    /// empty tape of the same type. Errors: batch sizes that differ
    /// ([`MetricLossError::BatchMismatch`], names `"anchor"`, `"positive"`,
    /// `"negative"`), or an error of the encoder.
    pub fn try_forward_triplet<X1, X2, X3>(
        &self,
        anchor: X1,
        positive: X2,
        negative: X3,
    ) -> Result<<Self as Module<(X1, X2, X3)>>::Output, MetricLossError>
    where
        Self: Module<(X1, X2, X3), Error = MetricLossError>,
    {
        self.try_forward((anchor, positive, negative))
    }

    /// [`try_forward_triplet`](Self::try_forward_triplet), panicking with the error's message.
    #[track_caller]
    pub fn forward_triplet<X1, X2, X3>(
        &self,
        anchor: X1,
        positive: X2,
        negative: X3,
    ) -> <Self as Module<(X1, X2, X3)>>::Output
    where
        Self: Module<(X1, X2, X3), Error = MetricLossError>,
    {
        unwrap_or_panic(self.try_forward_triplet(anchor, positive, negative))
    }
}

/// Runs `f` on `x` in chunks of `chunk` rows, without a tape.
fn embed_chunks<const IN: usize, const OUT: usize, D, F, Err>(
    x: &Rows<usize, IN, D, NoneTape>,
    chunk: usize,
    mut f: F,
) -> Result<Rows<usize, OUT, D, NoneTape>, MetricLossError>
where
    D: Device<f32>,
    F: FnMut(Rows<usize, IN, D, NoneTape>) -> Result<Rows<usize, OUT, D, NoneTape>, Err>,
    Err: std::fmt::Debug,
{
    if chunk == 0 {
        return Err(MetricLossError::InvalidConfig(
            "embed: chunk size must be at least 1".into(),
        ));
    }
    let rows = x.shape().0;
    let dev = x.device().clone();
    if rows == 0 {
        // (dfdx's `as_vec` cannot read an empty tensor)
        return dev
            .try_zeros_like(&(0, Const::<OUT>))
            .map_err(MetricLossError::device);
    }
    let data = x.as_vec();
    let mut out = Vec::with_capacity(rows * OUT);
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        let part = dev
            .try_tensor_from_vec(
                data[start * IN..end * IN].to_vec(),
                (end - start, Const::<IN>),
            )
            .map_err(MetricLossError::device)?;
        let y = f(part).map_err(MetricLossError::device)?;
        out.extend(y.as_vec());
    }
    dev.try_tensor_from_vec(out, (rows, Const::<OUT>))
        .map_err(MetricLossError::device)
}

impl<M, A> SharedEncoder<M, A> {
    /// Wraps an already built encoder.
    pub fn new(encoder: M) -> Self {
        Self {
            encoder,
            branches: PhantomData,
        }
    }

    /// The shared encoder: use it for the batch path
    /// (`net.encoder().forward(x)`, one pass per sample).
    pub fn encoder(&self) -> &M {
        &self.encoder
    }

    /// The shared encoder, mutably.
    pub fn encoder_mut(&mut self) -> &mut M {
        &mut self.encoder
    }

    /// Unwraps the encoder.
    pub fn into_encoder(self) -> M {
        self.encoder
    }

    /// The batch path: runs one batch through the encoder **once**,
    /// keeping `x`'s tape, for a loss over embeddings by index
    /// (mining). See the [module docs](self) for when to prefer it.
    pub fn try_embed_batch<X>(&self, x: X) -> Result<M::Output, MetricLossError>
    where
        M: Module<X>,
    {
        self.encoder.try_forward(x).map_err(MetricLossError::device)
    }

    /// [`try_embed_batch`](Self::try_embed_batch), panicking with the error's message.
    #[track_caller]
    pub fn embed_batch<X>(&self, x: X) -> M::Output
    where
        M: Module<X>,
    {
        unwrap_or_panic(self.try_embed_batch(x))
    }

    /// Embeds a large set of rows (e.g. 10,000 test digits) in chunks
    /// of `chunk` rows, without a tape; returns one embedding row per
    /// input row, in order.
    ///
    /// Errors: `chunk == 0` ([`MetricLossError::InvalidConfig`]), or a
    /// device error.
    pub fn try_embed<const IN: usize, const OUT: usize, D: Device<f32>>(
        &self,
        x: &Rows<usize, IN, D, NoneTape>,
        chunk: usize,
    ) -> Result<Rows<usize, OUT, D, NoneTape>, MetricLossError>
    where
        M: Module<Rows<usize, IN, D, NoneTape>, Output = Rows<usize, OUT, D, NoneTape>>,
    {
        embed_chunks(x, chunk, |part| self.encoder.try_forward(part))
    }

    /// [`try_embed`](Self::try_embed), panicking with the error's message.
    #[track_caller]
    pub fn embed<const IN: usize, const OUT: usize, D: Device<f32>>(
        &self,
        x: &Rows<usize, IN, D, NoneTape>,
        chunk: usize,
    ) -> Rows<usize, OUT, D, NoneTape>
    where
        M: Module<Rows<usize, IN, D, NoneTape>, Output = Rows<usize, OUT, D, NoneTape>>,
    {
        unwrap_or_panic(self.try_embed(x, chunk))
    }

    /// [`try_embed`](Self::try_embed) on flat rows: `rows` holds
    /// `rows.len() / IN` inputs of width `IN` (e.g. MNIST pixels as
    /// read from an IDX file); returns their embeddings as flat rows
    /// of width `OUT`. Call as `net.try_embed_rows::<784, 128, _>(&dev, &pixels, 500)`.
    ///
    /// Errors: `rows.len()` not a multiple of `IN`, or `chunk == 0`
    /// ([`MetricLossError::InvalidConfig`]), or a device error.
    pub fn try_embed_rows<const IN: usize, const OUT: usize, D: Device<f32>>(
        &self,
        dev: &D,
        rows: &[f32],
        chunk: usize,
    ) -> Result<Vec<f32>, MetricLossError>
    where
        M: Module<Rows<usize, IN, D, NoneTape>, Output = Rows<usize, OUT, D, NoneTape>>,
    {
        if IN == 0 || !rows.len().is_multiple_of(IN) {
            return Err(MetricLossError::InvalidConfig(format!(
                "embed_rows: {} values are not rows of width {IN}",
                rows.len()
            )));
        }
        let n = rows.len() / IN;
        let x = dev
            .try_tensor_from_vec(rows.to_vec(), (n, Const::<IN>))
            .map_err(MetricLossError::device)?;
        let e = self.try_embed(&x, chunk)?;
        Ok(if n == 0 { Vec::new() } else { e.as_vec() })
    }

    /// [`try_embed_rows`](Self::try_embed_rows), panicking with the error's message.
    #[track_caller]
    pub fn embed_rows<const IN: usize, const OUT: usize, D: Device<f32>>(
        &self,
        dev: &D,
        rows: &[f32],
        chunk: usize,
    ) -> Vec<f32>
    where
        M: Module<Rows<usize, IN, D, NoneTape>, Output = Rows<usize, OUT, D, NoneTape>>,
    {
        unwrap_or_panic(self.try_embed_rows(dev, rows, chunk))
    }
}

impl<D: Device<E>, E: Dtype, M: BuildOnDevice<D, E>, A> BuildOnDevice<D, E> for SharedEncoder<M, A>
where
    SharedEncoder<M::Built, A>: dfdx::nn::BuildModule<D, E>,
{
    type Built = SharedEncoder<M::Built, A>;
}

/// The parameters are the encoder's, once, under the prefix `encoder.`
/// (e.g. `encoder.0.weight` in a safetensors file).
impl<E: Dtype, D: Device<E>, M: TensorCollection<E, D>, A> TensorCollection<E, D>
    for SharedEncoder<M, A>
{
    type To<E2: Dtype, D2: Device<E2>> = SharedEncoder<M::To<E2, D2>, A>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::module("encoder", |s| &s.encoder, |s| &mut s.encoder),
            SharedEncoder::new,
        )
    }
}

/// One input: the encoder alone (inference, or the batch path).
impl<M, A, S: Shape, D: Device<f32>, T: Tape<f32, D>> Module<Tensor<S, f32, D, T>>
    for SharedEncoder<M, A>
where
    M: Module<Tensor<S, f32, D, T>>,
{
    type Output = M::Output;
    type Error = M::Error;

    fn try_forward(&self, x: Tensor<S, f32, D, T>) -> Result<M::Output, M::Error> {
        self.encoder.try_forward(x)
    }
}

/// One input: the encoder alone, in training mode.
impl<M, A, S: Shape, D: Device<f32>, T: Tape<f32, D>> ModuleMut<Tensor<S, f32, D, T>>
    for SharedEncoder<M, A>
where
    M: ModuleMut<Tensor<S, f32, D, T>>,
{
    type Output = M::Output;
    type Error = M::Error;

    fn try_forward_mut(&mut self, x: Tensor<S, f32, D, T>) -> Result<M::Output, M::Error> {
        self.encoder.try_forward_mut(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::PairLabels;
    use crate::loss::{PairCriterion, TripletCriterion};
    use crate::losses::{ContrastiveLoss, TripletLoss};
    use dfdx::nn::builders::{Linear, Tanh};
    use dfdx::optim::{Adam, AdamConfig, Sgd, SgdConfig};

    type Net = (Linear<3, 5>, Tanh, Linear<5, 2>);
    type Built = <Net as BuildOnDevice<Cpu, f32>>::Built;

    /// The four parameter tensors' gradients, flattened.
    fn param_grads(net: &Built, g: &Gradients<f32, Cpu>) -> Vec<Vec<f32>> {
        vec![
            g.get(&net.0.weight).as_vec(),
            g.get(&net.0.bias).as_vec(),
            g.get(&net.2.weight).as_vec(),
            g.get(&net.2.bias).as_vec(),
        ]
    }

    fn assert_rel_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) {
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.len(), w.len());
            for (x, y) in g.iter().zip(w) {
                let scale = x.abs().max(y.abs()).max(1e-3);
                assert!((x - y).abs() / scale < tol, "{x} vs {y}");
            }
        }
    }

    fn add(a: Vec<Vec<f32>>, b: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        a.into_iter()
            .zip(b)
            .map(|(x, y)| x.iter().zip(&y).map(|(p, q)| p + q).collect())
            .collect()
    }

    fn batch(dev: &Cpu, seed: f32) -> Tensor<Rank2<4, 3>, f32, Cpu> {
        let v: Vec<f32> = (0..12)
            .map(|i| ((i as f32 + 1.0) * seed).sin() * 1.5)
            .collect();
        dev.tensor_from_vec(v, (Const::<4>, Const::<3>))
    }

    #[test]
    fn siamese_gradient_is_sum_of_branch_gradients() {
        let dev = Cpu::default();
        let net = dev.build_module::<Siamese<Net>, f32>();
        let (a, b) = (batch(&dev, 0.7), batch(&dev, 1.3));

        let (ea, eb) = net.forward_pair(a.leaky_trace(), b.clone());
        let g = (ea.square().sum() + eb.sin().sum()).backward();
        let joint = param_grads(net.encoder(), &g);

        let enc = net.encoder();
        let ga = enc.forward(a.leaky_trace()).square().sum().backward();
        let gb = enc.forward(b.leaky_trace()).sin().sum().backward();
        let separate = add(param_grads(enc, &ga), param_grads(enc, &gb));
        assert_rel_close(&joint, &separate, 1e-5);
        // and not just one branch
        assert!(
            joint[2]
                .iter()
                .zip(&param_grads(enc, &ga)[2])
                .any(|(x, y)| (x - y).abs() > 1e-4)
        );
    }

    #[test]
    fn triplet_gradient_is_sum_of_branch_gradients() {
        let dev = Cpu::default();
        let net = dev.build_module::<TripletNet<Net>, f32>();
        let (a, p, n) = (batch(&dev, 0.7), batch(&dev, 1.3), batch(&dev, 2.1));

        // through the tuple `Module` impl, with all inputs traced
        let (ea, ep, en) = net.forward((a.leaky_trace(), p.leaky_trace(), n.leaky_trace()));
        let g = (ea.square().sum() + ep.sin().sum() + en.exp().sum()).backward();
        let joint = param_grads(net.encoder(), &g);

        let enc = net.encoder();
        let ga = enc.forward(a.leaky_trace()).square().sum().backward();
        let gp = enc.forward(p.leaky_trace()).sin().sum().backward();
        let gn = enc.forward(n.leaky_trace()).exp().sum().backward();
        let separate = add(
            add(param_grads(enc, &ga), param_grads(enc, &gp)),
            param_grads(enc, &gn),
        );
        assert_rel_close(&joint, &separate, 1e-5);
        // the inputs' gradients come out too (tapes of p and n were merged)
        assert_eq!(
            g.get(&n).as_vec(),
            gn.get(&n).as_vec(),
            "negative's input gradient"
        );
    }

    #[test]
    fn triplet_loss_gradient_matches_finite_differences() {
        let dev = Cpu::default();
        let mut net = dev.build_module::<TripletNet<Net>, f32>();
        let (a, p, n) = (batch(&dev, 0.7), batch(&dev, 1.3), batch(&dev, 2.1));
        let loss_of = |net: &TripletNet<Built>| {
            let (ea, ep, en) = net.forward_triplet(a.clone(), p.clone(), n.clone());
            TripletLoss
                .with_margin(5.0)
                .unwrap()
                .forward(ea, ep, en)
                .array()
        };
        let (ea, ep, en) = net.forward_triplet(a.leaky_trace(), p.clone(), n.clone());
        let g = TripletLoss
            .with_margin(5.0)
            .unwrap()
            .forward(ea, ep, en)
            .backward();
        let analytic = g.get(&net.encoder().2.weight).as_vec();
        let h = 1e-2f32;
        let mut w = net.encoder().2.weight.as_vec();
        for (i, &an) in analytic.iter().enumerate() {
            let w0 = w[i];
            w[i] = w0 + h;
            net.encoder_mut().2.weight.copy_from(&w);
            let up = loss_of(&net);
            w[i] = w0 - h;
            net.encoder_mut().2.weight.copy_from(&w);
            let down = loss_of(&net);
            w[i] = w0;
            net.encoder_mut().2.weight.copy_from(&w);
            let numeric = (up - down) / (2.0 * h);
            assert!(
                (numeric - an).abs() < 2e-3 * an.abs().max(1.0),
                "w[{i}]: numeric {numeric} vs analytic {an}"
            );
        }
    }

    #[test]
    fn one_copy_of_weights() {
        let dev = Cpu::default();
        let mut net = dev.build_module::<Siamese<Net>, f32>();
        let enc_params = dev.build_module::<Net, f32>().num_trainable_params();
        assert_eq!(net.num_trainable_params(), enc_params);

        let x = batch(&dev, 0.9);
        let before = net.forward(x.clone()).as_vec();
        let mut sgd = Sgd::new(&net, SgdConfig::default());
        let (ea, eb) = net.forward_pair(x.leaky_trace(), batch(&dev, 1.7));
        let labels = PairLabels::from_similar(&[true, false, true, false]);
        let g = ContrastiveLoss.forward(ea, eb, &labels).backward();
        sgd.update(&mut net, &g).unwrap();

        let (ea, eb) = net.forward_pair(x.clone(), x.clone());
        let single = net.forward(x.clone()).as_vec();
        assert_ne!(single, before, "the update changed the encoder");
        assert_eq!(ea.as_vec(), single);
        assert_eq!(eb.as_vec(), single);

        let tri = TripletNet::new(net.into_encoder());
        let (a, p, n) = tri.forward_triplet(x.clone(), x.clone(), x.clone());
        assert_eq!(a.as_vec(), single);
        assert_eq!(p.as_vec(), single);
        assert_eq!(n.as_vec(), single);
    }

    /// Points around 3 class centres in 3-d, with a deterministic jitter.
    fn cluster_point(class: usize, k: usize) -> [f32; 3] {
        let centres = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let j = |s: f32| ((k as f32 + 1.0) * s).sin() * 0.3;
        let c = centres[class];
        [c[0] + j(1.1), c[1] + j(2.3), c[2] + j(3.7)]
    }

    fn rows(dev: &Cpu, pts: &[[f32; 3]]) -> Tensor<(usize, Const<3>), f32, Cpu> {
        let v = pts.iter().flatten().copied().collect();
        dev.tensor_from_vec(v, (pts.len(), Const::<3>))
    }

    #[test]
    fn siamese_training_lowers_contrastive_loss() {
        let dev = Cpu::seed_from_u64(7);
        let mut net = dev.build_module::<Siamese<Net>, f32>();
        let mut opt = Adam::new(
            &net,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let (mut left, mut right, mut cl, mut cr) = (vec![], vec![], vec![], vec![]);
        for k in 0..24 {
            let (c1, c2) = (k % 3, (k / 3 + k / 2) % 3);
            left.push(cluster_point(c1, k));
            right.push(cluster_point(c2, k + 100));
            cl.push(c1);
            cr.push(c2);
        }
        let labels = PairLabels::from_classes(&cl, &cr).unwrap();
        let (a, b) = (rows(&dev, &left), rows(&dev, &right));
        let mut grads = net.alloc_grads();
        let mut losses = vec![];
        for _ in 0..30 {
            let (ea, eb) = net.forward_mut((a.trace(grads), b.clone()));
            let loss = ContrastiveLoss.forward(ea, eb, &labels);
            losses.push(loss.array());
            grads = loss.backward();
            opt.update(&mut net, &grads).unwrap();
            net.zero_grads(&mut grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.7 * first, "{losses:?}");
    }

    #[test]
    fn triplet_training_lowers_triplet_loss() {
        let dev = Cpu::seed_from_u64(11);
        let mut net = dev.build_module::<TripletNet<Net>, f32>();
        let mut opt = Adam::new(
            &net,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let (mut a, mut p, mut n) = (vec![], vec![], vec![]);
        for k in 0..24 {
            let c = k % 3;
            a.push(cluster_point(c, k));
            p.push(cluster_point(c, k + 50));
            n.push(cluster_point((c + 1 + k % 2) % 3, k + 100));
        }
        let (a, p, n) = (rows(&dev, &a), rows(&dev, &p), rows(&dev, &n));
        let loss_fn = TripletLoss.with_margin(1.0).unwrap();
        let mut grads = net.alloc_grads();
        let mut losses = vec![];
        for _ in 0..30 {
            let (ea, ep, en) = net.forward_mut((a.trace(grads), p.clone(), n.clone()));
            let loss = loss_fn.forward(ea, ep, en);
            losses.push(loss.array());
            grads = loss.backward();
            opt.update(&mut net, &grads).unwrap();
            net.zero_grads(&mut grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.7 * first, "{losses:?}");
    }

    fn safetensors_keys(path: &std::path::Path) -> Vec<String> {
        let bytes = std::fs::read(path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
        // keys are the strings followed by `:{"dtype"`
        header
            .split("\":{\"dtype\"")
            .filter_map(|s| s.rsplit('"').next())
            .filter(|k| !k.is_empty() && !k.starts_with('}'))
            .map(|k| k.to_string())
            .take(header.matches("\"dtype\"").count())
            .collect()
    }

    #[test]
    fn save_then_load_gives_identical_embeddings() {
        let dev = Cpu::seed_from_u64(3);
        let net = dev.build_module::<Siamese<Net>, f32>();
        let path = std::env::temp_dir().join(format!(
            "metric-loss-nets-{}-siamese.safetensors",
            std::process::id()
        ));
        net.save_safetensors(&path).unwrap();

        let mut keys = safetensors_keys(&path);
        keys.sort();
        assert_eq!(
            keys,
            [
                "encoder.0.bias",
                "encoder.0.weight",
                "encoder.2.bias",
                "encoder.2.weight"
            ]
        );

        let mut other = dev.build_module::<Siamese<Net>, f32>();
        let x = batch(&dev, 0.5);
        assert_ne!(
            other.forward(x.clone()).as_vec(),
            net.forward(x.clone()).as_vec()
        );
        other.load_safetensors(&path).unwrap();
        assert_eq!(
            other.forward(x.clone()).as_vec(),
            net.forward(x.clone()).as_vec()
        );

        // the same file loads into a triplet net around the same encoder
        let mut tri = dev.build_module::<TripletNet<Net>, f32>();
        tri.load_safetensors(&path).unwrap();
        assert_eq!(tri.forward(x.clone()).as_vec(), net.forward(x).as_vec());
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn chunked_embedding_matches_one_pass() {
        let dev = Cpu::seed_from_u64(5);
        let net = dev.build_module::<TripletNet<Net>, f32>();
        let x: Tensor<(usize, Const<3>), f32, Cpu> = dev.sample_normal_like(&(103, Const));
        let whole = net.encoder().forward(x.clone()).as_vec();
        for chunk in [1, 10, 103, 500] {
            let e = net.embed(&x, chunk);
            assert_eq!(e.shape().0, 103);
            let e = e.as_vec();
            for (u, v) in e.iter().zip(&whole) {
                assert!((u - v).abs() < 1e-5);
            }
        }
        assert!(matches!(
            net.try_embed(&x, 0),
            Err(MetricLossError::InvalidConfig(_))
        ));
        let empty: Tensor<(usize, Const<3>), f32, Cpu> = dev.zeros_like(&(0, Const));
        assert_eq!(net.embed(&empty, 8).shape().0, 0);

        let flat = net.embed_rows::<3, 2, _>(&dev, &x.as_vec(), 7);
        assert_eq!(flat.len(), 103 * 2);
        for (u, v) in flat.iter().zip(&whole) {
            assert!((u - v).abs() < 1e-5);
        }
        assert!(net.embed_rows::<3, 2, _>(&dev, &[], 7).is_empty());
        assert!(matches!(
            net.try_embed_rows::<3, 2, _>(&dev, &[0.0; 4], 7),
            Err(MetricLossError::InvalidConfig(_))
        ));
    }

    #[test]
    fn batch_path_runs_the_encoder_once() {
        let dev = Cpu::default();
        let net = dev.build_module::<Siamese<Net>, f32>();
        let x = batch(&dev, 0.3);
        let e = net.embed_batch(x.leaky_trace());
        assert_eq!(e.as_vec(), net.encoder().forward(x.clone()).as_vec());
        let g = e.sum().backward();
        assert!(
            g.get(&net.encoder().0.weight)
                .as_vec()
                .iter()
                .any(|v| *v != 0.0)
        );
    }

    #[test]
    fn batch_mismatch_is_a_typed_error() {
        let dev = Cpu::default();
        let net = dev.build_module::<Siamese<Net>, f32>();
        let three: Tensor<(usize, Const<3>), f32, Cpu> = dev.zeros_like(&(3, Const));
        let two: Tensor<(usize, Const<3>), f32, Cpu> = dev.zeros_like(&(2, Const));
        let err = net
            .try_forward_pair(three.leaky_trace(), two.clone())
            .unwrap_err();
        assert_eq!(
            err,
            MetricLossError::BatchMismatch {
                left_name: "a",
                left: 3,
                right_name: "b",
                right: 2
            }
        );
        assert!(net.try_forward((two.clone(), three.clone())).is_err());

        let tri = TripletNet::new(net.into_encoder());
        let err = tri
            .try_forward_triplet(three.clone(), three.clone(), two.clone())
            .unwrap_err();
        assert_eq!(
            err,
            MetricLossError::BatchMismatch {
                left_name: "anchor",
                left: 3,
                right_name: "negative",
                right: 2
            }
        );
        let err = tri
            .try_forward_triplet(three.clone(), two.clone(), three.clone())
            .unwrap_err();
        assert!(matches!(
            err,
            MetricLossError::BatchMismatch {
                right_name: "positive",
                ..
            }
        ));
        // same sizes work
        let (a, p, n) = tri.forward_triplet(three.clone(), three.clone(), three);
        assert_eq!((a.shape().0, p.shape().0, n.shape().0), (3, 3, 3));
    }

    #[test]
    #[should_panic(expected = "batch sizes differ: a has 3 rows but b has 2")]
    fn batch_mismatch_panics_with_the_message() {
        let dev = Cpu::default();
        let net = dev.build_module::<Siamese<Net>, f32>();
        let three: Tensor<(usize, Const<3>), f32, Cpu> = dev.zeros_like(&(3, Const));
        let two: Tensor<(usize, Const<3>), f32, Cpu> = dev.zeros_like(&(2, Const));
        let _ = net.forward_pair(three, two);
    }
}
