//! Exact k-NN search and retrieval metrics at the sizes of
//! `../shared/bench/reference.py search` (2,000 queries, 8,000 references,
//! D = 128, k = 10), for `benches/compare.py`.
//!
//! `cargo bench --bench search` ; set `RAYON_NUM_THREADS` and
//! `OMP_NUM_THREADS` alike when comparing with faiss and torch.

use criterion::{Criterion, criterion_group, criterion_main};
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

/// `retrieval_metrics` on the data of the test that measured 409 ms before
/// it was built on the index: uniform values, 100 classes (R = 80).
fn retrieval(c: &mut Criterion) {
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

criterion_group!(benches, search, retrieval);
criterion_main!(benches);
