use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2, temperature = 0.1)]
pub struct Tempered;

fn main() {}
