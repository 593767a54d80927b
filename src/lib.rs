#![doc = include_str!("../README.md")]

pub use metric_loss_core::*;

/// `docs/image-encoders.md`'s example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../docs/image-encoders.md")]
pub struct ImageEncodersDoc;
