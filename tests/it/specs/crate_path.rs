//! `crate = ...`: the generated code reaches the library through the given
//! path, whether the default `::metric_loss` or a re-export.
use metric_loss::prelude::*;

mod reexport {
    pub use metric_loss as ml;
}

#[metric_loss(triplet, margin = 0.2, crate = ::metric_loss)]
pub struct Explicit;

#[metric_loss(crate = crate::specs::crate_path::reexport::ml, pair, margin = 1.0)]
pub struct ThroughReexport;

#[test]
fn crate_path() {
    let dev = Cpu::default();
    let a = dev.tensor([[0.0f32, 0.0]]);
    let p = dev.tensor([[1.0f32, 0.0]]);
    let n = dev.tensor([[0.0f32, 1.1]]);
    assert!((Explicit.forward(a.clone(), p.clone(), n).array() - 0.1).abs() < 1e-6);
    let y = PairLabels::from_pairs(&[Pair::Dissimilar]);
    assert!((ThroughReexport.forward(a, p, &y).array() - 0.0).abs() < 1e-6);
}
