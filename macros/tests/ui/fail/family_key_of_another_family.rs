use metric_loss::prelude::*;

#[metric_loss(circle, temperature = 0.1)]
pub struct Mixed;

fn main() {}
