//! # metric-loss-core
//!
//! Distances, metric losses, miners, shared-weight networks, samplers,
//! retrieval and verification metrics, and an IDX reader, on dfdx.
//! Users depend on the `metric-loss` crate, which re-exports this one and the
//! `#[metric_loss]` macro.

#![warn(missing_docs)]

pub mod data;
pub mod error;
pub mod eval;
pub mod miners;
pub mod sampler;

pub use error::MetricLossError;
