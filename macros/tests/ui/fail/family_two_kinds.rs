use metric_loss::prelude::*;

#[metric_loss(multi_similarity, triplet, margin = 0.2)]
pub struct Both;

fn main() {}
