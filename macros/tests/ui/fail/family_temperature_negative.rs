use metric_loss::prelude::*;

#[metric_loss(supcon, temperature = -0.1)]
pub struct Backwards;

fn main() {}
