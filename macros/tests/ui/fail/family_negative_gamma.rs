use metric_loss::prelude::*;

#[metric_loss(circle, gamma = -80)]
pub struct Inverted;

fn main() {}
