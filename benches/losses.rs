//! Loss forward + backward timings, matching `../shared/bench/reference.py
//! losses` (N in {64, 256, 1024}, D = 128, P x K labels with K = 4).
//!
//! `cargo bench --bench losses` ; set `RAYON_NUM_THREADS` / `OMP_NUM_THREADS`
//! alike when comparing with the reference.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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
/// (margin 0.2), backward, Adam update. `train_step` has dfdx's `Linear` as
/// the first layer, `train_step_input_linear` [`InputLinear`] (no gradient
/// for the input pixels, as in PyTorch); `train_step_cnn` the CNN encoder of
/// `reference.py steps` instead of the MLP.
fn train_step(c: &mut Criterion) {
    fn bench<M>(c: &mut Criterion, name: &str)
    where
        M: BuildOnDevice<Cpu, f32>,
        M::Built: TensorCollection<f32, Cpu>
            + ModuleMut<
                Tensor<(usize, Const<784>), f32, Cpu, OwnedTape<f32, Cpu>>,
                Output = Tensor<(usize, Const<128>), f32, Cpu, OwnedTape<f32, Cpu>>,
            >,
    {
        #[metric_loss(triplet, normalize, margin = 0.2)]
        struct NormalizedTriplet;

        let dev = Cpu::seed_from_u64(0);
        let mut net = dev.build_module::<M, f32>();
        let mut opt = Adam::new(&net, AdamConfig::default());
        let x: Tensor<(usize, Const<784>), f32, _> = dev.sample_uniform_like(&(80, Const));
        let labels: Vec<usize> = (0..80).map(|i| i / 16).collect();
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut grads = net.alloc_grads();
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let e = net.forward_mut(x.clone().traced(grads));
                    let loss = NormalizedTriplet.mined(&BatchHard, e, &labels).loss;
                    grads = loss.backward();
                    opt.update(&mut net, &grads).unwrap();
                    net.zero_grads(&mut grads);
                }
                start.elapsed()
            })
        });
    }
    bench::<(Linear<784, 256>, ReLU, Linear<256, 128>)>(c, "train_step/80");
    bench::<(InputLinear<784, 256>, ReLU, Linear<256, 128>)>(c, "train_step_input_linear/80");
    bench::<Cnn>(c, "train_step_cnn/80");
}

/// `reference.py`'s CNN on rows of 784 pixels: conv 1→32 3×3, ReLU,
/// max-pool 2, conv 32→64 3×3, ReLU, max-pool 2, flatten 1600, linear 128.
type Cnn = (
    (Unflatten<1, 28, 28>, Conv2D<1, 32, 3>, ReLU, MaxPool2D<2>),
    (Conv2D<32, 64, 3>, ReLU, MaxPool2D<2>),
    (Flatten<1600>, Linear<1600, 128>),
);

criterion_group!(benches, losses, train_step);
criterion_main!(benches);
