//! Search with what you trained: the triplet encoder of `triplet_mnist`
//! (trained here, or loaded with `--load PATH` from a `--save` of any
//! example with the same encoder), an exact [`EmbeddingIndex`] of the 8,000
//! reference digits ranked by cosine distance, and a grid of 8 held-out
//! digits with their 8 nearest references (green: same digit, red:
//! another). Also saves the index (safetensors) and exports it as `.npy`
//! files for numpy, faiss or a vector database (see `docs/search.md`).
//!
//! ```text
//! cargo run --release --example triplet_mnist -- --save out/encoder.safetensors
//! cargo run --release --example search_mnist -- --load out/encoder.safetensors
//! ```
//!
//! [`EmbeddingIndex`]: metric_loss::index::EmbeddingIndex

use clap::Parser;

fn main() -> common::Result<()> {
    let args = common::Args::parse();
    let s = common::search::run_search(&args)?;
    match &args.load {
        Some(path) => println!("encoder: loaded from {}", path.display()),
        None => println!("encoder: trained, {} steps", s.training.steps),
    }
    println!("neighbours: {}", s.png.display());
    println!("index: {}", s.index.display());
    println!(
        "npy: {}, {}, {} (queries: {}, {})",
        s.npy.embeddings.display(),
        s.npy.labels.display(),
        s.npy.ids.display(),
        s.queries_npy.0.display(),
        s.queries_npy.1.display()
    );
    println!(
        "result p_at_1={:.4} map_at_r={:.4} r_precision={:.4} search_ms={:.1} ms_per_step={:.2} steps={}",
        s.retrieval.precision_at_1,
        s.retrieval.map_at_r,
        s.retrieval.r_precision,
        s.search_ms,
        s.training.ms_per_step,
        s.training.steps
    );
    Ok(())
}
