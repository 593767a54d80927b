//! The ranking family, forward + backward, matching `../shared/bench/reference.py
//! family` (N in {256, 1024}, D = 128, P x K labels with K = 4, PML's
//! default numbers, every pair of the batch unless a miner is named).
//!
//! - `cargo bench --bench family`: criterion, group `family/<loss>/<N>`.
//! - `FAMILY_TABLE=1 cargo bench --bench family`: each loss timed alone,
//!   best and first quartile of many calls (on a machine shared with other
//!   work, what the code can do; criterion's median measures the
//!   neighbours too), and the figure `reference.py` gives PML (the median
//!   of three rounds' means of 20 calls): the same statistic on both sides.
//! - `FAMILY_CPU=1 cargo bench --bench family`: the CPU time of the
//!   process per call (user + system, from `/proc/self/stat`, over at least
//!   two seconds of it), which a machine shared with other work disturbs
//!   far less than the wall clock; run it with `RAYON_NUM_THREADS=1`
//!   (a second thread's spinning would count too) beside
//!   `benches/family_pml_cpu.py`, which measures PML the same way.
//! - `FAMILY_RSS=<loss> cargo bench --bench family` (`none` for the bare
//!   process): one forward + backward at N = 4096, D = 128, for
//!   `/usr/bin/time -v` to read the peak RSS of.
//! - `FAMILY_VALUES=1 cargo bench --bench family`: every loss's value and
//!   a hash of its gradient, as bits, to check that a change to the code
//!   left them bit for bit the same (run it before and after).
//! - `FAMILY_PROFILE=<loss>:<N>[:<seconds>] cargo bench --bench family`:
//!   that one loss, forward + backward, called over and over for the given
//!   wall-clock seconds (default 10), then its mean and best time per call:
//!   a steady process for a sampling profiler (`perf record`) to read.
//!
//! Set `RAYON_NUM_THREADS` / `OMP_NUM_THREADS` alike when comparing with
//! the reference. Every mode but `FAMILY_RSS` first has glibc keep freed
//! memory ([`metric_loss::allocator::keep_freed_memory`]; `DEFAULT_MALLOC=1`
//! to leave its settings): run the reference with the same settings,
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2000000000`,
//! as `benches/compare.py` does.

use criterion::{BenchmarkId, Criterion};
use metric_loss::prelude::*;

const D: usize = 128;
type Emb<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

/// The bench names (`reference.py`'s, without `_pml`; its
/// `lifted_structure` is PML's `GeneralizedLiftedStructureLoss`, here
/// `generalized_lifted_structure`).
const LOSSES: [&str; 9] = [
    "multi_similarity",
    "multi_similarity_mined",
    "ntxent",
    "supcon",
    "circle",
    "lifted_structure",
    "generalized_lifted_structure",
    "npairs",
    "margin",
];

/// One forward + backward of loss `name` on `x`: the loss and the
/// gradients (kept, not copied out: PML's step ends at `backward()`).
fn step(name: &str, x: &Emb, labels: &[usize]) -> (f32, Gradients<f32, Cpu>) {
    fn run<L: BatchCriterion>(l: L, x: &Emb, labels: &[usize]) -> (f32, Gradients<f32, Cpu>) {
        let loss = l.forward(x.leaky_trace(), labels);
        let v = loss.array();
        (v, loss.backward())
    }
    match name {
        "multi_similarity" => run(MultiSimilarityLoss, x, labels),
        "multi_similarity_mined" => {
            let m = MultiSimilarityLoss.mined(
                &MultiSimilarityMiner::default(),
                x.leaky_trace(),
                labels,
            );
            let v = m.loss.array();
            (v, m.loss.backward())
        }
        "ntxent" => run(NtXentLoss, x, labels),
        "supcon" => run(SupConLoss, x, labels),
        "circle" => run(CircleLoss, x, labels),
        "lifted_structure" => run(LiftedStructureLoss, x, labels),
        "generalized_lifted_structure" => run(GeneralizedLiftedStructureLoss, x, labels),
        "npairs" => run(NPairsLoss, x, labels),
        "margin" => run(MarginLoss, x, labels),
        other => panic!("unknown loss {other}"),
    }
}

fn batch(n: usize) -> (Emb, Vec<usize>) {
    let dev = Cpu::seed_from_u64(0);
    let x: Emb = dev.sample_normal_like(&(n, Const));
    (x, (0..n).map(|i| i / 4).collect())
}

fn family(c: &mut Criterion) {
    for n in [256usize, 1024] {
        let (x, labels) = batch(n);
        let mut g = c.benchmark_group("family");
        g.sample_size(10);
        for name in LOSSES {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| step(name, &x, &labels))
            });
        }
        g.finish();
    }
}

fn table() {
    println!(
        "ranking family, forward + backward, D = 128, {} rayon threads",
        rayon::current_num_threads()
    );
    println!("| loss | N | best (ms) | first quartile (ms) | as reference.py times (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for n in [256usize, 1024] {
        let (x, labels) = batch(n);
        for name in LOSSES {
            let calls = if n == 256 { 60 } else { 20 };
            let mut ms: Vec<f64> = (0..calls + 3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(step(name, &x, &labels));
                    start.elapsed().as_secs_f64() * 1e3
                })
                .skip(3)
                .collect();
            ms.sort_by(f64::total_cmp);
            println!(
                "| {name} | {n} | {:.3} | {:.3} | {:.3} |",
                ms[0],
                ms[ms.len() / 4],
                as_reference_times(|| {
                    std::hint::black_box(step(name, &x, &labels));
                })
            );
        }
    }
}

/// Milliseconds per call of `f` the way `reference.py`'s `timed` takes
/// PML's: five calls to warm up, then three rounds of 20 calls, the median
/// of the rounds' means (the same statistic on both sides, where the best
/// call of many flatters the side that reports it).
fn as_reference_times(mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut rounds: Vec<f64> = (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                f();
            }
            start.elapsed().as_secs_f64() * 1e3 / 20.0
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[1]
}

/// CPU seconds (user + system) this process has used so far, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // fields after the command name, which is in parentheses
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn cpu_table() {
    println!(
        "ranking family, forward + backward, D = 128, {} rayon threads: CPU time per call",
        rayon::current_num_threads()
    );
    println!("| loss | N | CPU ms per call | calls |");
    println!("|---|---:|---:|---:|");
    for n in [256usize, 1024] {
        let (x, labels) = batch(n);
        for name in LOSSES {
            step(name, &x, &labels);
            let start = cpu_seconds();
            let mut calls = 0usize;
            while cpu_seconds() - start < 2.0 {
                std::hint::black_box(step(name, &x, &labels));
                calls += 1;
            }
            let per = (cpu_seconds() - start) / calls as f64 * 1e3;
            println!("| {name} | {n} | {per:.3} | {calls} |");
        }
    }
}

/// The `FAMILY_VALUES` listing: every loss's value and a hash of its
/// gradient with respect to the batch, as bits, at N = 256 and 1024.
fn values() {
    use std::hash::{Hash, Hasher};
    for n in [256usize, 1024] {
        let (x, labels) = batch(n);
        for name in LOSSES {
            let (v, grads) = step(name, &x, &labels);
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for g in grads.get(&x).as_vec() {
                g.to_bits().hash(&mut h);
            }
            println!(
                "{name} N={n}: loss {v:e} ({:#010x}), gradient hash {:#018x}",
                v.to_bits(),
                h.finish()
            );
        }
    }
}

/// The `FAMILY_PROFILE` loop.
fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let name = parts.next().expect("FAMILY_PROFILE=<loss>:<N>[:<seconds>]");
    let n: usize = parts.next().map_or(1024, |v| v.parse().expect("N"));
    let secs: f64 = parts.next().map_or(10.0, |v| v.parse().expect("seconds"));
    let (x, labels) = batch(n);
    step(name, &x, &labels);
    let start = std::time::Instant::now();
    let (mut calls, mut best) = (0usize, f64::INFINITY);
    while start.elapsed().as_secs_f64() < secs {
        let t = std::time::Instant::now();
        std::hint::black_box(step(name, &x, &labels));
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        calls += 1;
    }
    let mean = start.elapsed().as_secs_f64() * 1e3 / calls as f64;
    println!("{name} N={n}: {calls} calls, mean {mean:.3} ms, best {best:.3} ms");
}

fn main() {
    // Freed memory kept for the next call, as `benches/compare.py` has
    // glibc keep it for PML too (see `metric_loss::allocator`);
    // `DEFAULT_MALLOC=1` leaves glibc's settings; the peak-RSS run keeps
    // them too.
    if std::env::var_os("DEFAULT_MALLOC").is_none() && std::env::var_os("FAMILY_RSS").is_none() {
        metric_loss::allocator::keep_freed_memory();
    }
    if let Some(spec) = std::env::var_os("FAMILY_PROFILE") {
        profile(&spec.to_string_lossy());
        return;
    }
    if std::env::var_os("FAMILY_CPU").is_some() {
        cpu_table();
        return;
    }
    if let Some(name) = std::env::var_os("FAMILY_RSS") {
        let name = name.to_string_lossy();
        let (x, labels) = batch(4096);
        if name != "none" {
            println!("{name} N=4096 loss={}", step(&name, &x, &labels).0);
        }
        return;
    }
    if std::env::var_os("FAMILY_VALUES").is_some() {
        values();
        return;
    }
    if std::env::var_os("FAMILY_TABLE").is_some() {
        table();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    family(&mut c);
    c.final_summary();
}
