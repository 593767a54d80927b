use metric_loss::prelude::*;

#[metric_loss(triplet, marign = 0.2)]
pub struct Typo;

fn main() {}
