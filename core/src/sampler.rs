//! Batch samplers.
