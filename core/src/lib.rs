//! # metric-loss-core
//!
//! Distances, metric losses, miners, shared-weight networks, samplers,
//! retrieval and verification metrics, and an IDX reader, on dfdx.
//! Users depend on the `metric-loss` crate, which re-exports this one and the
//! `#[metric_loss]` macro.

#![warn(missing_docs)]
// dfdx tensor types (shape, dtype, device, tape) are long by nature.
#![allow(clippy::type_complexity)]

pub mod allocator;
pub mod data;
pub mod error;
pub mod eval;
pub mod index;
pub mod miners;
pub mod sampler;

pub use error::MetricLossError;
pub mod device;
pub mod distance;
pub mod formulas;
mod fused;
pub mod labels;
pub mod loss;
pub mod losses;
pub mod nets;
pub mod xbm;

pub use metric_loss_macros::metric_loss;

/// What a user needs in scope: the macro, the loss traits, the built-in
/// losses, labels, miners, nets, and dfdx's own prelude.
pub mod prelude {
    pub use crate::device::MetricDevice;
    pub use crate::error::MetricLossError;
    pub use crate::labels::{Pair, PairLabels};
    pub use crate::loss::{
        BatchCriterion, Margined, MetricLoss, MetricSpace, PairCriterion, TripletCriterion,
    };
    pub use crate::losses::*;
    pub use crate::metric_loss;
    pub use crate::miners::{
        AllPairs, BatchAll, BatchHard, DistanceMatrix, DistanceWeightedMiner, HardPairs,
        MinerStats, MultiSimilarityMiner, PairMiner, SemiHard, SemiHardFallback, TripletMiner,
    };
    pub use crate::nets::{
        AvgPool2D, Flatten, MaxPool2D, Siamese, TripletNet, Unflatten,
        builder::{Conv2D, ConvReLUPool, FusedLinear, InputConv2D, InputLinear},
    };
    pub use crate::sampler::PkSampler;
    pub use crate::xbm::CrossBatchMemory;
    pub use dfdx::optim::{Adam, AdamConfig, Sgd, SgdConfig};
    pub use dfdx::prelude::*;
}

#[doc(hidden)]
pub mod __private {
    /// The project's GEMM, reached by its benches (`benches/gemm.rs`).
    pub use crate::fused::gemm::{Operand, cut_in, gemm};
    pub use dfdx;
}
