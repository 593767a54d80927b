use metric_loss::prelude::*;

#[metric_loss(triplet, margin = abc)]
pub struct NotANumber;

fn main() {}
