use metric_loss::prelude::*;

#[metric_loss(supcon, temprature = 0.1)]
pub struct Typo;

fn main() {}
