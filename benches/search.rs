//! Exact k-NN search and retrieval metrics at the sizes of
//! `../shared/bench/reference.py search` (2,000 queries, 8,000 references,
//! D = 128, k = 10), for `benches/compare.py`.
//!
//! `cargo bench --bench search` ; set `RAYON_NUM_THREADS` and
//! `OMP_NUM_THREADS` alike when comparing with faiss and torch.

use criterion::{Criterion, criterion_group};
use metric_loss::eval::{ReferenceSet, RetrievalOptions, retrieval_metrics};
use metric_loss::index::{EmbeddingIndex, Metric};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NQ: usize = 2_000;
const NR: usize = 8_000;
const D: usize = 128;
const K: usize = 10;

/// Standard normal values (Box–Muller), as `torch.randn` gives the reference.
fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen_range(0.0..1.0));
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Build + search, what faiss's `IndexFlatL2` row of `reference.py` times
/// (`IndexFlatL2(d); add(r); search(q, 10)`), for every metric.
fn search(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let q = normal(&mut rng, NQ * D);
    let r = normal(&mut rng, NR * D);
    let labels = vec![0usize; NR];
    let mut g = c.benchmark_group("search");
    g.sample_size(20);
    for metric in Metric::ALL {
        g.bench_function(format!("{}/2000x8000x128_k10", metric.name()), |b| {
            b.iter(|| {
                let mut index = EmbeddingIndex::new(metric, D);
                index.add(&r, &labels);
                index.search(&q, K)
            })
        });
    }
    g.finish();
}

/// The data of the test that measured 409 ms before `retrieval_metrics`
/// was built on the index: uniform values, 100 classes (R = 80).
#[allow(clippy::type_complexity)]
fn retrieval_data() -> (Vec<f32>, Vec<usize>, Vec<f32>, Vec<usize>) {
    let mut state = 1u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32) / (1u64 << 24) as f32
    };
    let q: Vec<f32> = (0..NQ * D).map(|_| next()).collect();
    let r: Vec<f32> = (0..NR * D).map(|_| next()).collect();
    let ql: Vec<usize> = (0..NQ).map(|i| i % 100).collect();
    let rl: Vec<usize> = (0..NR).map(|i| i % 100).collect();
    (q, ql, r, rl)
}

/// `retrieval_metrics` on [`retrieval_data`].
fn retrieval(c: &mut Criterion) {
    let (q, ql, r, rl) = retrieval_data();
    let mut g = c.benchmark_group("retrieval_metrics");
    g.sample_size(20);
    g.bench_function("2000x8000x128", |b| {
        b.iter(|| {
            retrieval_metrics(
                &q,
                &ql,
                ReferenceSet::Separate {
                    embeddings: &r,
                    labels: &rl,
                },
                D,
                &RetrievalOptions::default(),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// CPU time of this process so far (every thread), from
/// `/proc/self/task/*/schedstat` (nanoseconds on the CPU); `None` where
/// that is not readable.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// `SEARCH_TABLE=1 cargo bench --bench search`: each call timed alone, 30
/// times after 3 to warm up; the best and first-quartile wall time, and the
/// least CPU time of the process (all threads) per call. On a machine
/// shared with other work the CPU time is the fairer figure: a thread
/// waiting for a core costs wall time, not CPU time.
/// `OMP_NUM_THREADS=1 python benches/search_faiss.py` prints the same for
/// faiss `IndexFlatL2`.
fn search_table() {
    // SEARCH_TABLE=<text>: only the rows whose name holds it
    let only = std::env::var("SEARCH_TABLE").unwrap_or_default();
    let row = |name: &str, call: &mut dyn FnMut()| {
        if only == "1" || name.contains(&only) {
            timed(name, call)
        }
    };
    fn timed(name: &str, call: &mut dyn FnMut()) {
        let mut wall = Vec::new();
        let mut cpu = Vec::new();
        for i in 0..33 {
            let (t, c) = (std::time::Instant::now(), process_cpu_ns());
            call();
            if i >= 3 {
                wall.push(t.elapsed().as_secs_f64() * 1e3);
                if let (Some(c0), Some(c1)) = (c, process_cpu_ns()) {
                    cpu.push((c1 - c0) as f64 / 1e6);
                }
            }
        }
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let cpu = cpu.first().map_or("-".into(), |c| format!("{c:.1}"));
        println!(
            "| {name} | {:.1} | {:.1} | {cpu} |",
            wall[0],
            wall[wall.len() / 4]
        );
    }
    println!(
        "2000 x 8000 x 128, {} rayon threads",
        rayon::current_num_threads()
    );
    println!("| work | best (ms) | first quartile (ms) | CPU, least (ms) |");
    println!("|---|---:|---:|---:|");
    let mut rng = StdRng::seed_from_u64(0);
    let q = normal(&mut rng, NQ * D);
    let r = normal(&mut rng, NR * D);
    let labels = vec![0usize; NR];
    for metric in Metric::ALL {
        row(
            &format!("build + search k = 10 ({})", metric.name()),
            &mut || {
                let mut index = EmbeddingIndex::new(metric, D);
                index.add(&r, &labels);
                std::hint::black_box(index.search(&q, K));
            },
        );
    }
    let (q, ql, r, rl) = retrieval_data();
    row("retrieval_metrics", &mut || {
        std::hint::black_box(
            retrieval_metrics(
                &q,
                &ql,
                ReferenceSet::Separate {
                    embeddings: &r,
                    labels: &rl,
                },
                D,
                &RetrievalOptions::default(),
            )
            .unwrap(),
        );
    });
}

criterion_group!(benches, search, retrieval);

fn main() {
    if std::env::var_os("SEARCH_TABLE").is_some() {
        search_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
