#![doc = include_str!("../README.md")]

pub use metric_loss_core::*;
