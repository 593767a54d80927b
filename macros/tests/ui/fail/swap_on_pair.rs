use metric_loss::prelude::*;

#[metric_loss(pair, swap, margin = 1.0)]
pub struct SwapPair;

fn main() {}
