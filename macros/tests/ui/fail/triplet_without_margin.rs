use metric_loss::prelude::*;

#[metric_loss(triplet, distance = cosine)]
pub struct NoMargin;

fn main() {}
