use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2, margin = 0.3)]
pub struct Duplicate;

fn main() {}
