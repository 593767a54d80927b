use metric_loss::prelude::*;

#[metric_loss(circle, m = 0.6)]
pub struct Crossed;

fn main() {}
