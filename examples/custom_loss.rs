//! A loss declared the way a user's crate would: `#[metric_loss]` with a
//! distance function of one's own (`common::my_distance`, a Euclidean
//! distance smoothed at 0), trained end to end with semi-hard mining.
//!
//! ```text
//! cargo run --release --example custom_loss -- --epochs 3
//! ```

use clap::Parser;
use metric_loss::prelude::*;

fn main() -> common::Result<()> {
    let args = common::Args::parse();
    println!(
        "loss spec: {:?}",
        <common::SmoothTriplet as TripletCriterion>::SPEC
    );
    let s = common::run_custom(&args)?;
    if let Some(stats) = s.training.last_stats {
        println!("last batch: {stats}");
    }
    println!(
        "result encoder={} p_at_1={:.4} map_at_r={:.4} r_precision={:.4} final_loss={:.4} ms_per_step={:.2} steps={}",
        args.encoder,
        s.retrieval.precision_at_1,
        s.retrieval.map_at_r,
        s.retrieval.r_precision,
        s.training.losses.last().copied().unwrap_or(f32::NAN),
        s.training.ms_per_step,
        s.training.steps
    );
    Ok(())
}
