//! The project's GEMM (`core/src/fused/gemm.rs`) on the shapes its callers
//! run, beside the `gemm` crate (the GEMM dfdx runs) on the same buffers.
//! Throughput is in elements of `2·m·n·k`, so criterion's `Gelem/s` reads
//! as GFLOP/s.
//!
//! `cargo bench --bench gemm` (set `RAYON_NUM_THREADS` to compare with
//! `OMP_NUM_THREADS` of `benches/gemm_torch.py`). The `gemm_cut` group runs
//! small products serially and cut for 2 threads (`cut_in`), whatever their size: where
//! the cut starts to pay is the GEMM's `PARALLEL_MIN_MADDS`.
//!
//! `GEMM_TABLE=1 cargo bench --bench gemm` prints a markdown table instead
//! (`GEMM_TABLE=conv2`: only the shapes whose name holds `conv2`):
//! the best of 15 rounds of each shape, ours and the crate's interleaved —
//! on a machine shared with other work the best round is what the code can
//! do, where criterion's median measures the neighbours too.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use metric_loss::__private::{Operand, cut_in, gemm};
use std::time::Duration;

/// A product `C (m × n) = op(A)·op(B)` as a caller stores it.
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// `A` stored `k × m` (`Aᵀ·…`).
    ta: bool,
    /// `B` stored `n × k` (`…·Bᵀ`).
    tb: bool,
    /// `B`'s row stride when wider than it (0: as wide as it is).
    ldb: usize,
}

const fn shape(name: &'static str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Shape {
    Shape {
        name,
        m,
        n,
        k,
        ta,
        tb,
        ldb: 0,
    }
}

/// `shape` with `B` a block of a wider matrix (row stride `ldb`).
const fn strided(mut s: Shape, ldb: usize) -> Shape {
    s.ldb = ldb;
    s
}

/// The products of the MLP step at batch 80, the CNN of the image-encoder
/// issue through im2col (batch 80), exact search and the loss family.
const SHAPES: &[Shape] = &[
    // 784 → 256 → 128 at batch 80: x·W1ᵀ, g1ᵀ·x, h·W2ᵀ, g2ᵀ·h, g2·W2
    shape("mlp_l1_fwd", 80, 256, 784, false, true),
    shape("mlp_l1_wgrad", 256, 784, 80, true, false),
    shape("mlp_l2_fwd", 80, 128, 256, false, true),
    shape("mlp_l2_wgrad", 128, 256, 80, true, false),
    shape("mlp_l2_igrad", 80, 256, 128, false, false),
    // conv 1 → 32, 3×3 on 28×28: columns·Wᵀ, gᵀ·columns
    shape("conv1_fwd", 80 * 26 * 26, 32, 9, false, true),
    shape("conv1_wgrad", 32, 9, 80 * 26 * 26, true, false),
    // conv 32 → 64, 3×3 on 13×13: columns·Wᵀ, gᵀ·columns, g·W
    shape("conv2_fwd", 80 * 11 * 11, 64, 288, false, true),
    shape("conv2_wgrad", 64, 288, 80 * 11 * 11, true, false),
    shape("conv2_igrad", 80 * 11 * 11, 288, 64, false, false),
    // the same, one image at a time (as `fused/conv2d.rs` on the conv
    // branch runs them): W·cols, g·colsᵀ, Wᵀ·g
    shape("conv1_img_fwd", 32, 26 * 26, 9, false, false),
    shape("conv1_img_wgrad", 32, 9, 26 * 26, false, true),
    shape("conv2_img_fwd", 64, 11 * 11, 288, false, false),
    shape("conv2_img_wgrad", 64, 288, 11 * 11, false, true),
    shape("conv2_img_igrad", 288, 11 * 11, 64, true, false),
    // as the CNN's conv2 runs them: four images side by side (columns
    // `288 × 484`), the weight gradient over the four, each image's
    // forward from its columns inside the group's
    shape("conv2_grp_wgrad", 64, 288, 4 * 11 * 11, false, true),
    strided(
        shape("conv2_grp_fwd", 64, 11 * 11, 288, false, false),
        4 * 11 * 11,
    ),
    // the CNN's linear 1600 → 128: x·Wᵀ, gᵀ·x, g·W
    shape("linear_1600", 80, 128, 1600, false, true),
    shape("linear_1600_wgrad", 128, 1600, 80, true, false),
    shape("linear_1600_igrad", 80, 1600, 128, false, false),
    // exact search, 2000 queries against 8000 references
    shape("search", 2000, 8000, 128, false, true),
    // the loss family's Gram matrix and its backward S·X
    shape("gram_256", 256, 256, 128, false, true),
    shape("sx_256", 256, 128, 256, false, false),
    shape("gram_1024", 1024, 1024, 128, false, true),
    shape("sx_1024", 1024, 128, 1024, false, false),
];

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

/// The operands of `s`, stored as its caller stores them.
fn operands(s: &Shape) -> (Vec<f32>, usize, Vec<f32>, usize) {
    let lda = if s.ta { s.m } else { s.k };
    let ldb = (if s.tb { s.k } else { s.n }).max(s.ldb);
    let stored_b = if s.tb { s.n } else { s.k };
    (values(s.m * s.k, 1), lda, values(stored_b * ldb, 2), ldb)
}

fn op(data: &[f32], ld: usize, trans: bool) -> Operand<'_> {
    if trans {
        Operand::transposed(data, ld)
    } else {
        Operand::plain(data, ld)
    }
}

/// The same product through the `gemm` crate, as dfdx calls it.
fn gemm_crate(s: &Shape, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
    let (a_rs, a_cs) = if s.ta {
        (1, lda as isize)
    } else {
        (lda as isize, 1)
    };
    let (b_rs, b_cs) = if s.tb {
        (1, ldb as isize)
    } else {
        (ldb as isize, 1)
    };
    assert!(a.len() >= s.m * s.k && b.len() >= s.k * s.n && c.len() >= s.m * s.n);
    assert!(s.ldb == 0 || !s.tb, "a strided B is stored k × ldb");
    // SAFETY: the buffers hold the operands with these strides (asserted).
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            1,
            s.n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        )
    }
}

/// The product through the project's GEMM.
fn ours(s: &Shape, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
    gemm(
        s.m,
        s.n,
        s.k,
        1.0,
        op(a, lda, s.ta),
        op(b, ldb, s.tb),
        0.0,
        c,
        s.n,
    );
}

fn shapes(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for s in SHAPES {
        let (a, lda, b, ldb) = operands(s);
        let mut out = vec![0.0f32; s.m * s.n];
        g.throughput(Throughput::Elements((2 * s.m * s.n * s.k) as u64));
        g.bench_function(BenchmarkId::new("ours", s.name), |bench| {
            bench.iter(|| ours(s, &a, lda, &b, ldb, &mut out))
        });
        g.bench_function(BenchmarkId::new("gemm_crate", s.name), |bench| {
            bench.iter(|| gemm_crate(s, &a, lda, &b, ldb, &mut out))
        });
    }
    g.finish();
}

/// Small products serial and cut for 2 threads.
fn cut(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_cut");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (m, n, k) in [
        (32, 32, 64),
        (48, 64, 128),
        (80, 64, 128),
        (80, 128, 128),
        (80, 128, 256),
        (128, 128, 256),
        (80, 256, 784),
    ] {
        let s = shape("", m, n, k, false, true);
        let (a, lda, b, ldb) = operands(&s);
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for threads in [1, 2] {
            let id = BenchmarkId::new(format!("threads_{threads}"), format!("{m}x{n}x{k}"));
            g.bench_function(id, |bench| {
                bench.iter(|| cut_in(threads, || ours(&s, &a, lda, &b, ldb, &mut out)))
            });
        }
    }
    g.finish();
}

/// The best of 15 rounds per shape, ours and the `gemm` crate's
/// interleaved, as a markdown table of GFLOP/s: every shape for
/// `GEMM_TABLE=1`, else the shapes whose name holds its text.
fn table(only: &str) {
    println!("| shape | m × n × k | ours (µs) | ours GFLOP/s | `gemm` crate GFLOP/s | threads |");
    println!("|---|---|---:|---:|---:|---:|");
    for s in SHAPES
        .iter()
        .filter(|s| only == "1" || s.name.contains(only))
    {
        let (a, lda, b, ldb) = operands(s);
        let mut out = vec![0.0f32; s.m * s.n];
        let flop = 2.0 * (s.m * s.n * s.k) as f64;
        let reps = ((2e8 / flop) as usize).clamp(1, 10_000);
        let mut best = [f64::INFINITY; 2];
        for _ in 0..15 {
            for (which, best) in best.iter_mut().enumerate() {
                let start = std::time::Instant::now();
                for _ in 0..reps {
                    if which == 0 {
                        ours(s, &a, lda, &b, ldb, &mut out);
                    } else {
                        gemm_crate(s, &a, lda, &b, ldb, &mut out);
                    }
                }
                *best = best.min(start.elapsed().as_secs_f64() / reps as f64);
            }
        }
        println!(
            "| {} | {} × {} × {} | {:.1} | {:.1} | {:.1} | {} |",
            s.name,
            s.m,
            s.n,
            s.k,
            best[0] * 1e6,
            flop / best[0] / 1e9,
            flop / best[1] / 1e9,
            rayon::current_num_threads()
        );
    }
}

criterion_group!(benches, shapes, cut);

fn main() {
    if let Ok(only) = std::env::var("GEMM_TABLE") {
        table(&only);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
