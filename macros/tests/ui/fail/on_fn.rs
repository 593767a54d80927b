use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub fn not_a_struct() {}

fn main() {}
