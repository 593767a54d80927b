use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub enum NotAStruct {
    A,
}

fn main() {}
