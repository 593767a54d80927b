use metric_loss::prelude::*;

#[metric_loss(distance = euclidean, margin = 1.0)]
pub struct Neither;

fn main() {}
