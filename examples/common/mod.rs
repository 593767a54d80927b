//! Code shared by the examples (and by `tests/it/examples.rs`, which runs a few
//! steps of each so they cannot rot): arguments, the MNIST split, the
//! encoder, the training loops and evaluation; `plot` draws the PNGs.
//!
//! Protocol: encoder MLP 784-256-ReLU-128, Adam lr 1e-3, P x K = 5 x 16
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
use metric_loss::miners::{MinerStats, PairMiner, TripletMiner};
use metric_loss::prelude::*;
use metric_loss::sampler::PkSampler;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod args;
mod checkpoint;
mod data;
mod eval;
pub mod plot;
mod recipes;
pub mod search;
mod train;

pub use args::*;
pub use checkpoint::*;
pub use data::*;
pub use eval::*;
pub use recipes::*;
pub use train::*;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Training images: 0..TRAIN; queries: TRAIN..len.
pub const TRAIN: usize = 8_000;
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
