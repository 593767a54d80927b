use metric_loss::prelude::*;

// Two problems with the item: both are reported.
#[metric_loss(triplet, margin = 0.2)]
pub struct Generic<T>(core::marker::PhantomData<T>);

fn main() {}
