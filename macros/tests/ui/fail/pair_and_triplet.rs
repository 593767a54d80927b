use metric_loss::prelude::*;

#[metric_loss(pair, triplet, margin = 1.0)]
pub struct Both;

fn main() {}
