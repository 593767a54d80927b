//! Loss forward + backward timings, matching `../shared/bench/reference.py
//! losses` (N in {64, 256, 1024}, D = 128, P x K labels with K = 4).
//!
//! `cargo bench --bench losses` ; set `RAYON_NUM_THREADS` / `OMP_NUM_THREADS`
//! alike when comparing with the reference.

use criterion::{BenchmarkId, Criterion, criterion_group};
use metric_loss::distance::euclidean_matrix;
use metric_loss::miners::{BatchAll, BatchHard, SemiHard};
use metric_loss::prelude::*;

const D: usize = 128;
type Emb<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn losses(c: &mut Criterion) {
    let dev = Cpu::seed_from_u64(0);
    for n in [64usize, 256, 1024] {
        let x: Emb = dev.sample_normal_like(&(n, Const));
        let labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
        let mut g = c.benchmark_group("losses");
        g.sample_size(20);
        g.bench_with_input(BenchmarkId::new("distance_matrix", n), &n, |b, _| {
            b.iter(|| euclidean_matrix(x.clone()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("batch_hard", n), &n, |b, _| {
            b.iter(|| {
                TripletLoss
                    .mined(&BatchHard, x.leaky_trace(), &labels)
                    .loss
                    .backward()
            })
        });
        {
            g.bench_with_input(BenchmarkId::new("batch_all", n), &n, |b, _| {
                b.iter(|| {
                    TripletLoss
                        .mined(&BatchAll::default(), x.leaky_trace(), &labels)
                        .loss
                        .backward()
                })
            });
            g.bench_with_input(BenchmarkId::new("semi_hard", n), &n, |b, _| {
                b.iter(|| {
                    TripletLoss
                        .mined(&SemiHard::default(), x.leaky_trace(), &labels)
                        .loss
                        .backward()
                })
            });
        }
        let a: Emb = dev.sample_normal_like(&(n, Const));
        let p: Emb = dev.sample_normal_like(&(n, Const));
        let q: Emb = dev.sample_normal_like(&(n, Const));
        let y = PairLabels::from_dissimilar(&(0..n).map(|i| i % 2 == 0).collect::<Vec<_>>());
        g.bench_with_input(BenchmarkId::new("triplet_explicit", n), &n, |b, _| {
            b.iter(|| {
                TripletLoss
                    .forward(a.leaky_trace(), p.clone(), q.clone())
                    .backward()
            })
        });
        g.bench_with_input(BenchmarkId::new("contrastive_pairs", n), &n, |b, _| {
            b.iter(|| {
                ContrastiveLoss
                    .forward(a.leaky_trace(), p.clone(), &y)
                    .backward()
            })
        });
        g.finish();
    }
}

/// One training step of the MNIST protocol: 784-256-ReLU-128 encoder on a
/// batch of 80 (5 classes x 16), L2-normalized batch-hard triplet loss
/// (margin 0.2), backward, Adam update. `train_step` is dfdx's `Linear`
/// throughout; `train_step_input_linear` has [`InputLinear`] first (no
/// gradient for the input pixels, as in PyTorch); `train_step_fused` is the
/// examples' encoder, [`InputLinear`] then [`FusedLinear`] (one op each way
/// on the project's GEMM). `reference.py steps` times the same step in
/// PyTorch (`train_step_torch encoder=mlp`).
struct Step<M: Encoder> {
    net: M::Net,
    opt: Adam<M::Net, f32, Cpu>,
    grads: Option<Gradients<f32, Cpu>>,
    x: Tensor<(usize, Const<784>), f32, Cpu>,
    labels: Vec<usize>,
}

#[metric_loss(triplet, normalize, margin = 0.2)]
struct NormalizedTriplet;

/// A 784 → 128 encoder the step trains.
trait Encoder: BuildOnDevice<Cpu, f32, Built = Self::Net> {
    type Net: TensorCollection<f32, Cpu>
        + ModuleMut<
            Tensor<(usize, Const<784>), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<128>), f32, Cpu, OwnedTape<f32, Cpu>>,
        >;
}

impl<M> Encoder for M
where
    M: BuildOnDevice<Cpu, f32>,
    M::Built: TensorCollection<f32, Cpu>
        + ModuleMut<
            Tensor<(usize, Const<784>), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<128>), f32, Cpu, OwnedTape<f32, Cpu>>,
        >,
{
    type Net = M::Built;
}

impl<M: Encoder> Step<M> {
    fn new() -> Self {
        let dev = Cpu::seed_from_u64(0);
        let net = dev.build_module::<M, f32>();
        let opt = Adam::new(&net, AdamConfig::default());
        let grads = Some(net.alloc_grads());
        Step {
            net,
            opt,
            grads,
            x: dev.sample_uniform_like(&(80, Const)),
            labels: (0..80).map(|i| i / 16).collect(),
        }
    }

    fn step(&mut self) {
        let grads = self.grads.take().expect("gradients");
        let e = self.net.forward_mut(self.x.clone().traced(grads));
        let loss = NormalizedTriplet.mined(&BatchHard, e, &self.labels).loss;
        let mut grads = loss.backward();
        self.opt.update(&mut self.net, &grads).unwrap();
        self.net.zero_grads(&mut grads);
        self.grads = Some(grads);
    }
}

type DfdxMlp = (Linear<784, 256>, ReLU, Linear<256, 128>);
type InputMlp = (InputLinear<784, 256>, ReLU, Linear<256, 128>);
type FusedMlp = (InputLinear<784, 256>, ReLU, FusedLinear<256, 128>);

fn train_step(c: &mut Criterion) {
    fn bench<M: Encoder>(c: &mut Criterion, name: &str) {
        let mut step = Step::<M>::new();
        c.bench_function(name, |b| b.iter(|| step.step()));
    }
    bench::<DfdxMlp>(c, "train_step/80");
    bench::<InputMlp>(c, "train_step_input_linear/80");
    bench::<FusedMlp>(c, "train_step_fused/80");
    bench::<Cnn>(c, "train_step_cnn/80");
}

/// `STEP_TABLE=1 cargo bench --bench losses` (`STEP_TABLE=CNN`: the CNN
/// alone): each step timed alone, 300
/// times after 20 to warm up, the best and the first quartile printed (on a
/// machine shared with other work, what the code can do; criterion's
/// median measures the neighbours too). `STEP_TABLE=FusedLinear` runs only
/// the rows whose name holds that text; `STEP_RUNS=<n>` times `n` steps
/// instead of 300 (a profiler's run). `benches/step_torch.py` prints the
/// same for PyTorch. Both keep freed memory for the next step
/// ([`metric_loss::allocator::keep_freed_memory`]; `DEFAULT_MALLOC=1` here,
/// `--default-malloc` there, to leave glibc's settings).
fn step_table() {
    fn row<M: Encoder>(name: &str) {
        // STEP_TABLE=<text>: only the rows whose name holds it
        let only = std::env::var("STEP_TABLE").unwrap_or_default();
        if only != "1" && !name.contains(&only) {
            return;
        }
        let mut step = Step::<M>::new();
        // STEP_RUNS=<n>: n timed steps instead of 300 (a profiler's run)
        let runs: usize = std::env::var("STEP_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(300);
        let mut ms: Vec<f64> = (0..20 + runs.max(1))
            .map(|_| {
                let start = std::time::Instant::now();
                step.step();
                start.elapsed().as_secs_f64() * 1e3
            })
            .skip(20)
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("| {name} | {:.2} | {:.2} |", ms[0], ms[ms.len() / 4]);
    }
    println!(
        "MLP training step, batch 80, {} rayon threads",
        rayon::current_num_threads()
    );
    println!("| encoder | best (ms) | first quartile (ms) |");
    println!("|---|---:|---:|");
    row::<DfdxMlp>("dfdx `Linear`s");
    row::<InputMlp>("`InputLinear`, dfdx `Linear`");
    row::<FusedMlp>("`InputLinear`, `FusedLinear`");
    println!();
    println!(
        "CNN training step (reference.py's CNN), batch 80, {} rayon threads",
        rayon::current_num_threads()
    );
    println!("| encoder | best (ms) | first quartile (ms) |");
    println!("|---|---:|---:|");
    row::<Cnn>("CNN, `FusedLinear` last");
    row::<CnnLayers>("CNN, layer by layer");
}

/// `reference.py`'s CNN on rows of 784 pixels: conv 1→32 3×3, ReLU,
/// max-pool 2, conv 32→64 3×3, ReLU, max-pool 2, flatten 1600, linear 128;
/// each conv → ReLU → pool block one [`ConvReLUPool`] (one op each way on
/// the CPU), the first convolution an [`InputConv2D`] (no gradient for the
/// pixels), as the examples' `CnnTrunk`.
type Cnn = (
    (Unflatten<1, 28, 28>, ConvReLUPool<InputConv2D<1, 32, 3>, 2>),
    ConvReLUPool<Conv2D<32, 64, 3>, 2>,
    (Flatten<1600>, FusedLinear<1600, 128>),
);

/// [`Cnn`] with each block as three layers (each ReLU after its pool: the
/// same function and gradients), for comparison: `STEP_TABLE=CNN` prints
/// both rows.
type CnnLayers = (
    (
        Unflatten<1, 28, 28>,
        InputConv2D<1, 32, 3>,
        MaxPool2D<2>,
        ReLU,
    ),
    (Conv2D<32, 64, 3>, MaxPool2D<2>, ReLU),
    (Flatten<1600>, FusedLinear<1600, 128>),
);

criterion_group!(benches, losses, train_step);

fn main() {
    // Freed memory kept for the next step, as `benches/step_torch.py` does
    // for PyTorch (see `metric_loss::allocator`); `DEFAULT_MALLOC=1` leaves
    // glibc's own settings, to see the difference.
    if std::env::var_os("DEFAULT_MALLOC").is_none() {
        metric_loss::allocator::keep_freed_memory();
    }
    if std::env::var_os("STEP_TABLE").is_some() {
        step_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
