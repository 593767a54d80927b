//! Data sets on disk: the IDX format of MNIST and Fashion-MNIST.

pub mod idx;

pub use idx::{IdxArray, IdxError, Mnist};
