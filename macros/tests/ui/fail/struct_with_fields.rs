use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub struct WithFields {
    pub margin: f32,
}

fn main() {}
