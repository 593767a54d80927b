//! Every loss of the library on the same MNIST-10k protocol: one `result`
//! line per loss, a markdown table and a bar chart of MAP@R per loss
//! (`out/benchmark_losses.png`). Each loss trains from the same initial
//! weights with PML's defaults and its usual miner.
//!
//! ```text
//! cargo run --release --example benchmark_losses
//! cargo run --release --example benchmark_losses -- --losses multi_similarity,supcon --encoder cnn
//! ```

use clap::Parser;

/// `benchmark_losses`' command line: the examples' own, and `--losses`.
#[derive(Parser, Debug)]
struct BenchArgs {
    #[command(flatten)]
    common: common::Args,
    /// The losses to train, comma-separated (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    losses: Vec<common::BenchLoss>,
}

fn main() -> common::Result<()> {
    let BenchArgs {
        common: args,
        losses,
    } = BenchArgs::parse();
    let losses = if losses.is_empty() {
        common::BenchLoss::ALL.to_vec()
    } else {
        losses
    };
    let mut rows = Vec::new();
    for loss in losses {
        let row = common::run_benchmark(&args, &[loss])?.remove(0);
        println!("{}", row.result_line(args.encoder));
        rows.push(row);
    }
    println!();
    print!("{}", common::markdown_table(&rows));
    let png = common::out_file(&args.out, common::chart_file(args.encoder))?;
    common::map_chart(&png, &rows, args.encoder)?;
    println!("chart: {}", png.display());
    Ok(())
}
