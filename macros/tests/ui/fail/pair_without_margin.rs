use metric_loss::prelude::*;

#[metric_loss(pair, distance = euclidean)]
pub struct NoMargin;

fn main() {}
