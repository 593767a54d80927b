use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2, reduction = avg)]
pub struct BadReduction;

fn main() {}
