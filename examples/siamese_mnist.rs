//! Siamese network on MNIST: the contrastive loss (squared, margin 1) on
//! every pair of each 5 x 16 batch; verification on 2,000 held-out pairs and
//! retrieval on held-out digits.
//!
//! ```text
//! cargo run --release --example siamese_mnist -- --epochs 10 --seed 0
//! ```

use clap::Parser;

fn main() -> common::Result<()> {
    let args = common::Args::parse();
    let s = common::run_siamese(&args)?;
    if let Some(stats) = s.training.last_stats {
        println!("last batch: {stats}");
    }
    println!(
        "result encoder={} roc_auc={:.4} eer={:.4} accuracy={:.4} p_at_1={:.4} map_at_r={:.4} ms_per_step={:.2} steps={}",
        args.encoder,
        s.roc_auc,
        s.eer,
        s.accuracy,
        s.retrieval.precision_at_1,
        s.retrieval.map_at_r,
        s.training.ms_per_step,
        s.training.steps
    );
    Ok(())
}
