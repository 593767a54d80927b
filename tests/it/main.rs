//! Every integration test in one binary (one link, one run): each module is
//! one area, as the separate test files were before.

#![allow(clippy::type_complexity)]

mod augment;
mod cnn;
mod conv2d;
mod conv_parity;
mod conv_relu_pool;
#[cfg(feature = "cuda")]
mod cuda;
mod examples;
mod family;
mod family_fixtures;
mod family_miners;
mod family_support;
mod fused_normalize;
mod index;
mod losses;
mod mined;
mod naive_image;
mod pool2d;
mod properties;
mod reliability;
mod specs;
mod xbm;
