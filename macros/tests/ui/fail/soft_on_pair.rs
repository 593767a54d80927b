use metric_loss::prelude::*;

#[metric_loss(pair, soft, margin = 1.0)]
pub struct SoftPair;

fn main() {}
