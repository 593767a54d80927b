//! Compile-time behaviour of `#[metric_loss(...)]`: every invalid spec in
//! `tests/ui/fail` must be rejected with the message in its `.stderr`. (The
//! valid specs are ordinary tests, `tests/it/specs/` in the root package:
//! with compile-fail cases only, trybuild type-checks with `cargo check` and
//! generates no code for dfdx and the other dependencies.)
//!
//! It lives in the macro's crate, not in the root package's `tests/it/`,
//! because trybuild builds its cases as a separate project whose
//! dependencies are the test crate's (dev-)dependencies, compiled from
//! scratch in `target/tests/trybuild`: here that is the macro and
//! `metric-loss`, not also the examples' plotters, clap and indicatif. The
//! macro's other dev-dependencies, proptest and trybuild itself, are listed
//! under `cfg(not(trybuild))` in its Cargo.toml, so that project (built with
//! `--cfg trybuild`) leaves them out too.
//!
//! Regenerate the expected messages with
//! `TRYBUILD=overwrite cargo test -p metric-loss-macros --test ui`, then read
//! every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
}
