//! The DrLIM picture (Hadsell, Chopra & LeCun 2006): an encoder straight to
//! the plane, trained with the contrastive `DrLim` loss on every pair of each
//! batch; the held-out digits drawn coloured by class to `out/embed_2d.png`.
//!
//! ```text
//! cargo run --release --example embed_2d -- --epochs 10
//! ```

use clap::Parser;

fn main() -> common::Result<()> {
    let args = common::Args::parse();
    let s = common::run_embed_2d(&args)?;
    println!("scatter: {}", s.png.display());
    println!(
        "result encoder={} p_at_1={:.4} map_at_r={:.4} ms_per_step={:.2} steps={}",
        args.encoder,
        s.retrieval.precision_at_1,
        s.retrieval.map_at_r,
        s.training.ms_per_step,
        s.training.steps
    );
    Ok(())
}
