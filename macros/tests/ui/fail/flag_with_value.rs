use metric_loss::prelude::*;

#[metric_loss(triplet, squared = true, margin = 0.2)]
pub struct FlagValue;

fn main() {}
