use metric_loss::prelude::*;

#[metric_loss(triplet, distance = euclidian, margin = 0.2)]
pub struct Typo;

fn main() {}
