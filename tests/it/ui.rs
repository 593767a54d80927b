//! Compile-time behaviour of `#[metric_loss(...)]`: every invalid spec in
//! `tests/ui/fail` must be rejected with the message in its `.stderr`, every
//! valid spec in `tests/ui/pass` must compile and run.
//!
//! Regenerate the expected messages with `TRYBUILD=overwrite cargo test --test it ui`,
//! then read every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
