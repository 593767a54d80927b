use metric_loss::prelude::*;

#[metric_loss(triplet, margin = "a")]
pub struct NotANumber;

fn main() {}
