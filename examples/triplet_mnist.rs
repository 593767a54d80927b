//! Triplet network on MNIST: a triplet loss on L2-normalized embeddings
//! (margin 0.2) on 5 x 16 P x K batches, mined batch-hard after a 300-step
//! batch-all warm-up, Adam's learning rate along a cosine from 1e-3 (on
//! the MLP; `--loss normalized` for batch-hard from the first step,
//! `--lr-schedule constant` for the protocol's constant rate), retrieval
//! on held-out digits. With `--encoder cnn` the defaults are margin 0.5,
//! a 500-step warm-up, 10 x 8 batches and the training digits shifted by
//! up to 1 px for the first 500 of the 1,150 steps (`--classes-per-batch 5
//! --per-class 16 --augment 0` for the protocol's batches, unshifted).
//!
//! ```text
//! cargo run --release --example triplet_mnist -- --epochs 10 --seed 0
//! cargo run --release --example triplet_mnist -- --encoder cnn
//! ```

use clap::Parser;

fn main() -> common::Result<()> {
    let args = common::Args::parse();
    let s = common::run_triplet(&args)?;
    if let Some(stats) = s.training.last_stats {
        println!("last batch: {stats}");
    }
    println!(
        "loss curve: {}",
        args.out
            .join(match args.encoder {
                common::EncoderChoice::Mlp => "triplet_mnist_loss.png",
                common::EncoderChoice::Cnn => "triplet_mnist_cnn_loss.png",
            })
            .display()
    );
    let n = s
        .retrieval_normalized
        .as_ref()
        .expect("triplet run evaluates unit-length embeddings");
    // Raw encoder outputs first (the protocol), then the unit-length
    // embeddings the `normalize` loss actually compares.
    println!(
        "result encoder={} p_at_1={:.4} map_at_r={:.4} r_precision={:.4} unit_p_at_1={:.4} unit_map_at_r={:.4} unit_r_precision={:.4} ms_per_step={:.2} steps={}",
        args.encoder,
        s.retrieval.precision_at_1,
        s.retrieval.map_at_r,
        s.retrieval.r_precision,
        n.precision_at_1,
        n.map_at_r,
        n.r_precision,
        s.training.ms_per_step,
        s.training.steps
    );
    Ok(())
}
