use metric_loss::prelude::*;

#[metric_loss(multi_similarity, distance = euclidean, reduction = sum)]
pub struct Reconfigured;

fn main() {}
