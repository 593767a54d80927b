use metric_loss::prelude::*;

#[metric_loss(pair, margin = 1.0, pos_margin = 1.0)]
pub struct PosMarginTooBig;

fn main() {}
