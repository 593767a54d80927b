//! The `#[metric_loss(...)]` attribute macro.
