use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub struct Generic<const N: usize>;

fn main() {}
