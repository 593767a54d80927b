use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2, pos_margin = 0.1)]
pub struct PosMarginTriplet;

fn main() {}
