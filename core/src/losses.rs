//! The built-in losses, declared with `#[metric_loss]` like a user's own.
//!
//! | loss | spec | source |
//! |------|------|--------|
//! | [`ContrastiveLoss`] | pair, Euclidean, squared, m = 1 | the classic contrastive loss |
//! | [`DrLim`] | pair, Euclidean, squared, m = 1 | Hadsell, Chopra & LeCun, CVPR 2006 |
//! | [`TripletLoss`] | triplet, Euclidean, m = 0.2 | Weinberger & Saul 2009; Schroff et al. 2015 |
//! | [`FaceNet`] | triplet, squared Euclidean, normalized, m = 0.2 | Schroff, Kalenichenko & Philbin, CVPR 2015 |
//! | [`SoftMarginTriplet`] | triplet, Euclidean, soft margin | Hermans, Beyer & Leibe 2017 |

use crate::metric_loss;

/// `(1 − Y)·D² + Y·[m − D]+²` with `D` the Euclidean distance, `m = 1`,
/// `Y = 1` for a dissimilar pair.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0], [0.0, 0.0], [0.0, 0.0]]);
/// let b = dev.tensor([[0.3f32, 0.4], [0.3, 0.4], [3.0, 4.0]]);
/// let y = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar, Pair::Dissimilar]);
/// let loss = ContrastiveLoss.forward(a, b, &y);
/// // 0.5² = 0.25 (similar: D²); (1 − 0.5)² = 0.25 (dissimilar inside the margin); 0 (beyond it)
/// assert!((loss.array() - 0.5 / 3.0).abs() < 1e-6);
/// ```
#[metric_loss(pair, distance = euclidean, squared, margin = 1.0, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContrastiveLoss;

/// Dimensionality Reduction by Learning an Invariant Mapping (Hadsell, Chopra
/// & LeCun, CVPR 2006): the contrastive loss `(1 − Y)·D² + Y·[m − D]+²`,
/// `m = 1` (the paper's `½` factors dropped). The `embed_2d` example draws
/// its picture.
///
/// ```
/// use metric_loss_core::prelude::*;
/// assert_eq!(DrLim::SPEC.margin, 1.0);
/// ```
#[metric_loss(pair, distance = euclidean, squared, margin = 1.0, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrLim;

/// `[d(A,P) − d(A,N) + m]+`, Euclidean, `m = 0.2`.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0]]);
/// let p = dev.tensor([[1.0f32, 0.0]]);
/// let n = dev.tensor([[0.0f32, 1.1]]);
/// // 1 − 1.1 + 0.2 = 0.1
/// assert!((TripletLoss.forward(a, p, n).array() - 0.1).abs() < 1e-6);
/// ```
#[metric_loss(triplet, distance = euclidean, margin = 0.2, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TripletLoss;

/// FaceNet (Schroff, Kalenichenko & Philbin, CVPR 2015, eq. 1):
/// `[‖f(A) − f(P)‖² − ‖f(A) − f(N)‖² + α]+` on unit-length embeddings, `α = 0.2`.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let a = dev.tensor([[2.0f32, 0.0]]);   // normalized: (1, 0)
/// let p = dev.tensor([[0.0f32, 5.0]]);   // (0, 1): squared distance 2
/// let n = dev.tensor([[-3.0f32, 0.0]]);  // (−1, 0): squared distance 4
/// // [2 − 4 + 0.2]+ = 0
/// assert_eq!(FaceNet.forward(a, p, n).array(), 0.0);
/// ```
#[metric_loss(triplet, distance = euclidean, squared, normalize, margin = 0.2, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaceNet;

/// The soft-margin triplet loss of Hermans, Beyer & Leibe, "In Defense of the
/// Triplet Loss for Person Re-Identification" (2017): `ln(1 + exp(d(A,P) − d(A,N)))`,
/// Euclidean. It never stops pulling, where the hinge stops at the margin.
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0]]);
/// // equal distances: ln 2
/// let loss = SoftMarginTriplet.forward(x.clone(), x.clone(), x);
/// assert!((loss.array() - 2f32.ln()).abs() < 1e-6);
/// ```
#[metric_loss(triplet, distance = euclidean, soft, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftMarginTriplet;

/// Multi-similarity loss (Wang et al., CVPR 2019) with PML's defaults
/// (`alpha = 2`, `beta = 50`, `base = 0.5`): see
/// [`MultiSimilarity`](crate::formulas::MultiSimilarity). Usually mined with
/// [`MultiSimilarityMiner`](crate::miners::MultiSimilarityMiner).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// // two classes of two unit vectors, cosine 0.6 within each; rows 1 and 2 are
/// // closer across (0.8): one hard positive and one hard negative pair each
/// let x = dev.tensor([[1.0f32, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6]]);
/// let loss = MultiSimilarityLoss.forward(x.leaky_trace(), &[0, 0, 1, 1]);
/// assert!(loss.array() > 0.0);
/// let m = MultiSimilarityLoss.mined(&MultiSimilarityMiner::default(), x, &[0, 0, 1, 1]);
/// assert_eq!(m.stats.pairs, 4);
/// ```
#[metric_loss(multi_similarity, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MultiSimilarityLoss;

/// NT-Xent, SimCLR's normalized temperature-scaled cross entropy (Chen et
/// al., ICML 2020; InfoNCE, van den Oord et al. 2018), with PML's default
/// `temperature = 0.07`: see [`NtXent`](crate::formulas::NtXent). With
/// labels, every same-label pair is a positive (two augmented views of one
/// image share a label).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// // two views of each of two images: the views agree, the images differ
/// let x = dev.tensor([[1.0f32, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]);
/// let good = NtXentLoss.forward(x.clone(), &[0, 0, 1, 1]).array();
/// let bad = NtXentLoss.forward(x, &[0, 1, 0, 1]).array();
/// assert!(good < 0.01 && bad > 10.0);
/// ```
#[metric_loss(ntxent, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NtXentLoss;

/// Supervised contrastive loss (Khosla et al., NeurIPS 2020) with PML's
/// default `temperature = 0.1`: see [`SupCon`](crate::formulas::SupCon).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]);
/// let loss = SupConLoss.forward(x.leaky_trace(), &[0, 0, 1, 1]);
/// // each row's one positive is far more similar than its negatives: near 0
/// assert!(loss.array() < 0.01);
/// // a single class has no negative pair: PML's 0, with a zero gradient
/// assert_eq!(SupConLoss.forward(x, &[3, 3, 3, 3]).array(), 0.0);
/// ```
#[metric_loss(supcon, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupConLoss;

/// Circle loss (Sun et al., CVPR 2020), pair form, with PML's defaults
/// (`m = 0.4`, `gamma = 80`): see [`Circle`](crate::formulas::Circle).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]);
/// let loss = CircleLoss.forward(x.leaky_trace(), &[0, 0, 1, 1]);
/// assert!(loss.array().is_finite() && loss.array() > 0.0);
/// ```
#[metric_loss(circle, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CircleLoss;

/// Lifted structure loss (Oh Song et al., CVPR 2016) with PML's defaults
/// (`neg_margin = 1`, `pos_margin = 0`): see
/// [`LiftedStructure`](crate::formulas::LiftedStructure).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]);
/// let loss = LiftedStructureLoss.forward(x.leaky_trace(), &[0, 0, 1, 1]);
/// assert!(loss.array() > 0.0);
/// ```
#[metric_loss(lifted_structure, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiftedStructureLoss;

/// The generalized lifted structure loss (Hermans, Beyer & Leibe 2017,
/// p. 4) with PML's defaults (`neg_margin = 1`, `pos_margin = 0`): see
/// [`GeneralizedLiftedStructure`](crate::formulas::GeneralizedLiftedStructure).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]);
/// // PML: a single class still gives its positive term
/// let one = GeneralizedLiftedStructureLoss.forward(x, &[2, 2, 2, 2]);
/// assert!(one.array() > 0.0);
/// ```
#[metric_loss(generalized_lifted_structure, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneralizedLiftedStructureLoss;

/// N-pairs loss (Sohn, NeurIPS 2016) as PML computes it: see
/// [`NPairs`](crate::formulas::NPairs).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]);
/// // pairs (0, 1) and (2, 3): each anchor's own positive is the most similar
/// let loss = NPairsLoss.forward(x.leaky_trace(), &[0, 0, 1, 1]);
/// assert!(loss.array() < 2f32.ln());
/// ```
#[metric_loss(npairs, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NPairsLoss;

/// Margin loss (Wu et al., "Sampling Matters in Deep Embedding Learning",
/// ICCV 2017) with PML's defaults (`margin = 0.2`, `nu = 0`, `beta = 1.2`):
/// see [`Margin`](crate::formulas::Margin). The paper mines it with
/// [`DistanceWeightedMiner`](crate::miners::DistanceWeightedMiner).
///
/// ```
/// use metric_loss_core::prelude::*;
/// let dev = Cpu::default();
/// let x: Tensor<Rank2<8, 4>, f32, _> = dev.sample_normal();
/// let labels = [0, 0, 1, 1, 2, 2, 3, 3];
/// let miner = DistanceWeightedMiner::default().with_seed(1);
/// let m = MarginLoss.mined(&miner, x.leaky_trace(), &labels);
/// assert!(m.loss.array().is_finite());
/// ```
#[metric_loss(margin_loss, crate = crate)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarginLoss;
