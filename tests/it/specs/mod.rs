//! Valid `#[metric_loss(...)]` specs: each must compile and behave. They
//! were trybuild "pass" cases; as ordinary tests they compile once with the
//! rest of this binary, and trybuild (`macros/tests/ui.rs`) only has to
//! type-check its compile-fail cases (`cargo check`, no code generation).

mod crate_path;
mod distances;
mod families;
mod flags;
mod reductions;
