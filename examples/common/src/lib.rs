//! Code shared by the examples (and by `tests/it/examples.rs`, which runs a few
//! steps of each so they cannot rot): arguments, the MNIST split, the
//! encoder, the training loops and evaluation; `plot` draws the PNGs.
//!
//! A crate of its own (`metric-loss-examples`, not published), which the
//! root crate's examples and tests read as `common` (a renamed
//! dev-dependency): compiled once, rather than into each of the six example
//! binaries and the test binary as a `mod common;` would be.
//!
//! Protocol: encoder MLP 784-256-ReLU-128 (or with `--encoder cnn` the CNN of
//! `reference.py`), Adam lr 1e-3, P x K = 5 x 16
//! batches drawn by a `PkSampler` over the first 8,000 digits; evaluation
//! embeds digits 8,000..10,000 as queries against 0..8,000 as references,
//! Euclidean distance.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dfdx::nn::{BuildOnDevice, Module, TensorCollection, ZeroGrads};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use indicatif::{ProgressBar, ProgressStyle};
use metric_loss::data::idx::Mnist;
use metric_loss::eval::{
    ReferenceSet, RetrievalMetrics, RetrievalOptions, eer, kfold_accuracy, retrieval_metrics,
    roc_auc,
};
use metric_loss::loss::Family;
use metric_loss::miners::{Miner, MinerStats};
use metric_loss::prelude::*;
use metric_loss::sampler::PkSampler;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod args;
mod augment;
mod benchmark;
mod checkpoint;
mod data;
mod eval;
pub mod plot;
mod recipes;
pub mod search;
mod train;

pub use args::*;
pub use augment::*;
// only `benchmark_losses` (and the tests) read it
#[allow(unused_imports)]
pub use benchmark::*;
pub use checkpoint::*;
pub use data::*;
pub use eval::*;
pub use recipes::*;
pub use train::*;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The bundled MNIST digits: the repository's `data/` (this crate lives in
/// `examples/common/`).
pub const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data");

/// Training images: 0..TRAIN; queries: TRAIN..len.
pub const TRAIN: usize = 8_000;
/// With `--validation`: training images 0..VALIDATION_TRAIN, queries
/// VALIDATION_TRAIN..TRAIN (the protocol's queries unread).
pub const VALIDATION_TRAIN: usize = 6_000;
/// Classes per batch.
pub const P: usize = 5;
/// Samples per class per batch.
pub const K: usize = 16;
/// Image width.
pub const PIXELS: usize = 784;

/// The encoder of every example but `embed_2d`: dfdx's `Linear`s as one op
/// each way on the project's GEMM. The first layer is an [`InputLinear`]
/// (no gradient for the pixels, which nothing reads: the largest product of
/// the backward otherwise), the second a [`FusedLinear`].
pub type Encoder = (InputLinear<784, 256>, ReLU, FusedLinear<256, 128>);
/// The DrLIM encoder: straight to the plane.
pub type Encoder2d = (InputLinear<784, 256>, ReLU, FusedLinear<256, 2>);

/// The convolutional trunk of `reference.py`'s CNN on rows of 784 pixels:
/// each row seen as a 1 × 28 × 28 image, conv 1→32 3×3 (26 × 26), ReLU,
/// max-pool 2 (13 × 13), conv 32→64 3×3 (11 × 11), ReLU, max-pool 2
/// (5 × 5), flattened to 64·5·5 = 1600 values.
///
/// Each conv → ReLU → max-pool block is one [`ConvReLUPool`]: the same
/// function and gradients as the three layers, bit for bit
/// (`tests/it/conv_relu_pool.rs`), but on the CPU one op each way, so the
/// full-size convolution outputs (80 × 32 × 26 × 26 and 80 × 64 × 11 × 11
/// values a batch) and their gradients are never stored, copied or
/// zeroed. The first convolution is an `InputConv2D`: the images get no
/// gradient (as in PyTorch, where they do not require one).
pub type CnnTrunk = (
    Unflatten<1, 28, 28>,
    ConvReLUPool<InputConv2D<1, 32, 3>, 2>,
    ConvReLUPool<Conv2D<32, 64, 3>, 2>,
    Flatten<1600>,
);
/// `--encoder cnn`: the CNN of `reference.py`, the trunk then linear 1600 → 128.
pub type CnnEncoder = (CnnTrunk, FusedLinear<1600, 128>);
/// `--encoder cnn` for `embed_2d`: the trunk then linear 1600 → 2.
pub type CnnEncoder2d = (CnnTrunk, FusedLinear<1600, 2>);
