use metric_loss::prelude::*;

#[metric_loss(multi_similarity, alpha = "2")]
pub struct Worded;

fn main() {}
