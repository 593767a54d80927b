use metric_loss::prelude::*;

#[metric_loss(npairs = 1)]
pub struct Valued;

fn main() {}
