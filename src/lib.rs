pub use metric_loss_core::*;
