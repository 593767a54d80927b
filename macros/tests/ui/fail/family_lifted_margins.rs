use metric_loss::prelude::*;

#[metric_loss(lifted_structure, pos_margin = 1.5)]
pub struct Overlapping;

fn main() {}
