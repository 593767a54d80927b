use metric_loss::prelude::*;

#[metric_loss(triplet, distance = dot, squared, margin = 0.2)]
pub struct SquaredDot;

fn main() {}
