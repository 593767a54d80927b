//! Code shared by the examples (and by `tests/examples.rs`, which runs a few
//! steps of each so they cannot rot): arguments, the MNIST split, the
//! encoder, the training loops, evaluation and plotting.
//!
//! Protocol: encoder MLP 784-256-ReLU-128, Adam lr 1e-3, P x K = 5 x 16
//! batches drawn by a `PkSampler` over the first 8,000 digits; evaluation
//! embeds digits 8,000..10,000 as queries against 0..8,000 as references,
//! Euclidean distance.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dfdx::nn::{BuildOnDevice, Module, TensorCollection, ZeroGrads};
use dfdx::optim::{Adam, AdamConfig, Optimizer};
use indicatif::{ProgressBar, ProgressStyle};
use metric_loss::data::idx::Mnist;
use metric_loss::eval::{
    eer, kfold_accuracy, retrieval_metrics, roc_auc, ReferenceSet, RetrievalMetrics,
    RetrievalOptions,
};
use metric_loss::miners::{MinerStats, PairMiner, TripletMiner};
use metric_loss::prelude::*;
use metric_loss::sampler::PkSampler;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Training images: 0..TRAIN; queries: TRAIN..len.
pub const TRAIN: usize = 8_000;
/// Classes per batch.
pub const P: usize = 5;
/// Samples per class per batch.
pub const K: usize = 16;
/// Image width.
pub const PIXELS: usize = 784;

/// The encoder of every example but `embed_2d`. The first layer is an
/// [`InputLinear`]: dfdx's `Linear` without the gradient for the pixels,
/// which nothing reads (the largest product of the backward otherwise).
pub type Encoder = (InputLinear<784, 256>, ReLU, Linear<256, 128>);
/// The DrLIM encoder: straight to the plane.
pub type Encoder2d = (InputLinear<784, 256>, ReLU, Linear<256, 2>);

/// The command line shared by the examples.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Passes over the 8,000 training digits.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Seed of the weight initialisation, the sampler and the pairs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The loss margin (default: the loss's declared one).
    #[arg(long)]
    pub margin: Option<f32>,
    /// Folder with `images-idx3-ubyte.gz` and `labels-idx1-ubyte.gz`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    pub data: PathBuf,
    /// Where PNGs go.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The triplet loss of `triplet_mnist` (the other examples ignore it).
    #[arg(long, value_enum, default_value_t = TripletChoice::Warmup)]
    pub loss: TripletChoice,
    /// Stop after this many optimiser steps (for smoke tests).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Defaults, for tests.
    pub fn smoke(max_steps: usize) -> Self {
        Args {
            epochs: 1,
            seed: 0,
            margin: None,
            data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")),
            out: std::env::temp_dir().join("metric-loss-examples-test"),
            loss: TripletChoice::Normalized,
            max_steps: Some(max_steps),
            quiet: true,
        }
    }
}

/// What a training run returns.
#[derive(Debug, Clone)]
pub struct Training {
    /// Mean loss of each step.
    pub losses: Vec<f32>,
    /// The last step's miner statistics.
    pub last_stats: Option<MinerStats>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall-clock milliseconds per step (forward, mining, backward, update).
    pub ms_per_step: f64,
}

/// Loads the digits.
pub fn load(args: &Args) -> Result<Mnist> {
    let mnist = Mnist::load(&args.data)?;
    if mnist.len() <= TRAIN {
        return Err(format!("need more than {TRAIN} digits, found {}", mnist.len()).into());
    }
    Ok(mnist)
}

/// The pixels of the listed images, as a `(n, 784)` tensor.
pub fn batch_tensor(
    dev: &Cpu,
    mnist: &Mnist,
    idx: &[usize],
) -> Tensor<(usize, Const<PIXELS>), f32, Cpu> {
    let mut pixels = Vec::with_capacity(idx.len() * PIXELS);
    for &i in idx {
        pixels.extend_from_slice(mnist.image(i).expect("index in range"));
    }
    dev.tensor_from_vec(pixels, (idx.len(), Const::<PIXELS>))
}

fn progress(args: &Args, total: usize) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// The number of steps a run will take.
fn planned_steps(args: &Args, per_epoch: usize) -> usize {
    let all = args.epochs * per_epoch;
    args.max_steps.map_or(all, |m| m.min(all))
}

/// How one step turns a batch of embeddings into a loss: mining included.
pub trait StepLoss<const D: usize> {
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats);
}

/// A triplet loss with a triplet miner.
pub struct TripletStep<L, M>(pub L, pub M);
/// A pair loss with a pair miner.
pub struct PairStep<L, M>(pub L, pub M);

/// A triplet loss mined with `W` for the first `warmup` steps, then with `M`.
pub struct WarmupStep<L, W, M> {
    pub loss: L,
    pub warm: W,
    pub main: M,
    pub warmup: usize,
    pub taken: std::cell::Cell<usize>,
}

impl<const D: usize, L, W, M> StepLoss<D> for WarmupStep<L, W, M>
where
    L: TripletCriterion<Output<usize> = ()>,
    W: TripletMiner,
    M: TripletMiner,
{
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let t = self.taken.get();
        self.taken.set(t + 1);
        let mined = if t < self.warmup {
            self.loss.mined(&self.warm, e, labels)
        } else {
            self.loss.mined(&self.main, e, labels)
        };
        (mined.loss, mined.stats)
    }
}

impl<const D: usize, L, M> StepLoss<D> for TripletStep<L, M>
where
    L: TripletCriterion<Output<usize> = ()>,
    M: TripletMiner,
{
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let mined = self.0.mined(&self.1, e, labels);
        (mined.loss, mined.stats)
    }
}

impl<const D: usize, L, M> StepLoss<D> for PairStep<L, M>
where
    L: PairCriterion<Output<usize> = ()>,
    M: PairMiner,
{
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let mined = self.0.mined(&self.1, e, labels);
        (mined.loss, mined.stats)
    }
}

/// Trains `model` (any module from `(n, 784)` rows to `(n, D)` embeddings)
/// on P x K batches of the training digits with Adam (lr 1e-3).
pub fn train<const D: usize, Net, L>(
    args: &Args,
    dev: &Cpu,
    mnist: &Mnist,
    model: &mut Net,
    loss: &L,
) -> Result<Training>
where
    Net: TensorCollection<f32, Cpu>
        + Module<
            Tensor<(usize, Const<PIXELS>), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        >,
    L: StepLoss<D>,
{
    let train_labels = &mnist.labels[..TRAIN];
    let mut sampler = PkSampler::try_new(train_labels, P, K, args.seed)?;
    let total = planned_steps(args, sampler.batches_per_epoch());
    let mut opt: Adam<Net, f32, Cpu> = Adam::new(
        model,
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    let mut grads = model.alloc_grads();
    let bar = progress(args, total);
    let mut losses = Vec::with_capacity(total);
    let mut last_stats = None;
    let mut collapse_warned = false;
    let start = Instant::now();
    'epochs: for _ in 0..args.epochs {
        for batch in sampler.epoch() {
            if losses.len() >= total {
                break 'epochs;
            }
            let labels: Vec<usize> = batch.iter().map(|&i| train_labels[i]).collect();
            let x = batch_tensor(dev, mnist, &batch);
            let e = model.forward(x.traced(grads));
            let (l, stats) = loss.step(e, &labels);
            let value = l.array();
            grads = l.backward();
            opt.update(model, &grads)
                .map_err(|e| format!("optimiser: {e:?}"))?;
            model.zero_grads(&mut grads);
            if !value.is_finite() {
                return Err(format!("non-finite loss at step {}", losses.len()).into());
            }
            if stats.collapsed && !collapse_warned {
                bar.println(format!(
                    "warning: embedding collapsed at step {} ({stats})",
                    losses.len()
                ));
                collapse_warned = true;
            }
            losses.push(value);
            last_stats = Some(stats);
            bar.set_message(format!("loss={value:.4} {stats}"));
            bar.inc(1);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish();
    let steps = losses.len();
    Ok(Training {
        losses,
        last_stats,
        steps,
        ms_per_step: if steps == 0 {
            0.0
        } else {
            1e3 * elapsed / steps as f64
        },
    })
}

/// Embeds every digit, without a tape, in chunks of 500: `len * D` values.
pub fn embed_all<const D: usize, Net>(dev: &Cpu, mnist: &Mnist, model: &Net) -> Vec<f32>
where
    Net: Module<
        Tensor<(usize, Const<PIXELS>), f32, Cpu>,
        Output = Tensor<(usize, Const<D>), f32, Cpu>,
    >,
{
    let mut out = Vec::with_capacity(mnist.len() * D);
    let idx: Vec<usize> = (0..mnist.len()).collect();
    for chunk in idx.chunks(500) {
        let x = batch_tensor(dev, mnist, chunk);
        out.extend(model.forward(x).as_vec());
    }
    out
}

/// Queries `TRAIN..` against references `..TRAIN`, Euclidean.
pub fn evaluate_retrieval<const D: usize>(
    embeddings: &[f32],
    labels: &[usize],
) -> Result<RetrievalMetrics> {
    let (refs, queries) = embeddings.split_at(TRAIN * D);
    let (ref_labels, query_labels) = labels.split_at(TRAIN);
    Ok(retrieval_metrics(
        queries,
        query_labels,
        ReferenceSet::Separate {
            embeddings: refs,
            labels: ref_labels,
        },
        D,
        &RetrievalOptions::default(),
    )?)
}

/// `count` pairs of held-out digits (`TRAIN..`), the first half of the same
/// class, the second half of different classes, seeded.
pub fn verification_pairs(labels: &[usize], count: usize, seed: u64) -> Vec<(usize, usize, bool)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05ee_d0f9_a125);
    let held_out: Vec<usize> = (TRAIN..labels.len()).collect();
    let mut pairs = Vec::with_capacity(count);
    while pairs.len() < count {
        let want_same = pairs.len() < count / 2;
        let a = held_out[rng.gen_range(0..held_out.len())];
        let b = held_out[rng.gen_range(0..held_out.len())];
        if a != b && (labels[a] == labels[b]) == want_same {
            pairs.push((a, b, want_same));
        }
    }
    pairs
}

/// ROC AUC, EER and 10-fold accuracy of `pairs`, score = −Euclidean distance.
pub fn verification<const D: usize>(
    embeddings: &[f32],
    pairs: &[(usize, usize, bool)],
) -> Result<(f64, f64, f64)> {
    let scores: Vec<f32> = pairs
        .iter()
        .map(|&(a, b, _)| {
            -euclid(
                &embeddings[a * D..(a + 1) * D],
                &embeddings[b * D..(b + 1) * D],
            )
        })
        .collect();
    let same: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    Ok((
        roc_auc(&scores, &same)?,
        eer(&scores, &same)?,
        kfold_accuracy(&scores, &same, 10)?.mean,
    ))
}

/// Each row of width `D` scaled to unit length (a zero row stays zero).
pub fn l2_normalized<const D: usize>(e: &[f32]) -> Vec<f32> {
    let mut out = e.to_vec();
    for row in out.chunks_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

fn euclid(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// A seeded CPU device.
pub fn device(seed: u64) -> Cpu {
    Cpu::seed_from_u64(seed)
}

/// Builds a module on the device.
pub fn build<M: BuildOnDevice<Cpu, f32>>(dev: &Cpu) -> M::Built {
    dev.build_module::<M, f32>()
}

/// Makes sure `out` exists and returns `out/name`.
pub fn out_file(out: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    Ok(out.join(name))
}

/// The loss curve (per-step loss, light, and its 20-step moving average,
/// dark) as a PNG, without text (no fonts needed).
pub fn plot_losses(path: &Path, losses: &[f32]) -> Result<()> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = losses.len().max(2);
    let max = losses.iter().cloned().fold(1e-6f32, f32::max);
    let area = root.margin(20, 20, 20, 20);
    let mut chart = ChartBuilder::on(&area).build_cartesian_2d(0f32..n as f32, 0f32..max * 1.05)?;
    // a few horizontal guides at quarters of the range
    for q in 1..4 {
        let y = max * 1.05 * q as f32 / 4.0;
        chart.draw_series(LineSeries::new(
            [(0.0, y), (n as f32, y)],
            RGBColor(225, 225, 225),
        ))?;
    }
    chart.draw_series(LineSeries::new(
        losses.iter().enumerate().map(|(i, &l)| (i as f32, l)),
        RGBColor(160, 190, 230),
    ))?;
    let window = 20usize;
    let smooth: Vec<(f32, f32)> = (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(window - 1);
            let s = &losses[lo..=i];
            (i as f32, s.iter().sum::<f32>() / s.len() as f32)
        })
        .collect();
    chart.draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))?;
    area.draw(&Rectangle::new([(0, 0), (759, 459)], BLACK))?;
    root.present()?;
    Ok(())
}

/// Ten distinguishable colours (Tableau 10), one per digit.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A scatter of 2-D points coloured by label, without text.
pub fn plot_scatter(path: &Path, points: &[f32], labels: &[usize]) -> Result<()> {
    use plotters::prelude::*;
    let xs = points.iter().step_by(2);
    let ys = points.iter().skip(1).step_by(2);
    let (x0, x1) = xs.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (y0, y1) = ys.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let pad_x = (x1 - x0).max(1e-6) * 0.03;
    let pad_y = (y1 - y0).max(1e-6) * 0.03;
    let root = BitMapBackend::new(path, (800, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let area = root.margin(10, 10, 10, 10);
    let mut chart = ChartBuilder::on(&area)
        .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y)..(y1 + pad_y))?;
    chart.draw_series(points.chunks(2).zip(labels).map(|(p, &l)| {
        let (r, g, b) = PALETTE[l % 10];
        Circle::new((p[0], p[1]), 2, RGBColor(r, g, b).filled())
    }))?;
    root.present()?;
    Ok(())
}

// ----- the examples' training functions -----

/// The loss of `triplet_mnist`: FaceNet-style normalization inside the
/// loss, plain (not squared) Euclidean distance, margin 0.2 — the
/// pytorch-metric-learning `TripletMarginLoss` defaults.
#[metric_loss(triplet, normalize, margin = 0.2)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalizedTriplet;

/// Hermans et al.'s soft margin on unit-length embeddings.
#[metric_loss(triplet, normalize, soft)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalizedSoftTriplet;

/// pytorch-metric-learning's default reduction: the mean over active triplets.
#[metric_loss(triplet, normalize, margin = 0.2, reduction = mean_nonzero)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NormalizedNonzeroTriplet;

/// Which triplet loss `triplet_mnist` trains with batch-hard mining.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TripletChoice {
    /// `[d(A,P) - d(A,N) + m]+` on L2-normalized embeddings, m = 0.2,
    /// batch-hard from the first step.
    Normalized,
    /// The default: as `normalized`, but mined batch-all for the first 100
    /// steps (one epoch) before batch-hard, which skips batch-hard's early
    /// plateau at the margin.
    #[default]
    Warmup,
    /// `TripletLoss`: raw embeddings, m = 0.2 (collapses easily under batch-hard).
    Plain,
    /// `SoftMarginTriplet` (Hermans et al. 2017): softplus, raw embeddings.
    Soft,
    /// Softplus on L2-normalized embeddings.
    SoftNormalized,
    /// Every valid triplet (batch-all), mean over the active ones, normalized, m = 0.2.
    AllNonzero,
}

/// Result of `triplet_mnist`.
#[derive(Debug, Clone)]
pub struct TripletSummary {
    pub training: Training,
    pub retrieval: RetrievalMetrics,
    /// The same on unit-length embeddings (what a `normalize` loss compares).
    pub retrieval_normalized: Option<RetrievalMetrics>,
}

pub fn run_triplet(args: &Args) -> Result<TripletSummary> {
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<TripletNet<Encoder>>(&dev);
    let hard = metric_loss::miners::BatchHard;
    let training = match args.loss {
        TripletChoice::Normalized => {
            let loss = NormalizedTriplet.with_margin(args.margin.unwrap_or(0.2))?;
            train::<128, _, _>(args, &dev, &mnist, &mut net, &TripletStep(loss, hard))?
        }
        TripletChoice::Warmup => {
            let loss = NormalizedTriplet.with_margin(args.margin.unwrap_or(0.2))?;
            let step = WarmupStep {
                loss,
                warm: metric_loss::miners::BatchAll::default(),
                main: hard,
                warmup: 100,
                taken: std::cell::Cell::new(0),
            };
            train::<128, _, _>(args, &dev, &mnist, &mut net, &step)?
        }
        TripletChoice::Plain => {
            let loss = TripletLoss.with_margin(args.margin.unwrap_or(0.2))?;
            train::<128, _, _>(args, &dev, &mnist, &mut net, &TripletStep(loss, hard))?
        }
        TripletChoice::Soft => {
            let loss = SoftMarginTriplet.with_margin(args.margin.unwrap_or(0.0))?;
            train::<128, _, _>(args, &dev, &mnist, &mut net, &TripletStep(loss, hard))?
        }
        TripletChoice::AllNonzero => {
            let loss = NormalizedNonzeroTriplet.with_margin(args.margin.unwrap_or(0.2))?;
            let all = metric_loss::miners::BatchAll::default();
            train::<128, _, _>(args, &dev, &mnist, &mut net, &TripletStep(loss, all))?
        }
        TripletChoice::SoftNormalized => {
            let loss = NormalizedSoftTriplet.with_margin(args.margin.unwrap_or(0.0))?;
            train::<128, _, _>(args, &dev, &mnist, &mut net, &TripletStep(loss, hard))?
        }
    };
    let e = embed_all::<128, _>(&dev, &mnist, net.encoder());
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels)?;
    let retrieval_normalized = evaluate_retrieval::<128>(&l2_normalized::<128>(&e), &mnist.labels)?;
    plot_losses(
        &out_file(&args.out, "triplet_mnist_loss.png")?,
        &training.losses,
    )?;
    Ok(TripletSummary {
        training,
        retrieval,
        retrieval_normalized: Some(retrieval_normalized),
    })
}

/// Result of `siamese_mnist`.
#[derive(Debug, Clone)]
pub struct SiameseSummary {
    pub training: Training,
    pub retrieval: RetrievalMetrics,
    pub roc_auc: f64,
    pub eer: f64,
    pub accuracy: f64,
}

pub fn run_siamese(args: &Args) -> Result<SiameseSummary> {
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<Siamese<Encoder>>(&dev);
    let loss = ContrastiveLoss.with_margin(args.margin.unwrap_or(1.0))?;
    let training = train::<128, _, _>(
        args,
        &dev,
        &mnist,
        &mut net,
        &PairStep(loss, metric_loss::miners::AllPairs),
    )?;
    let e = embed_all::<128, _>(&dev, &mnist, net.encoder());
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels)?;
    let pairs = verification_pairs(&mnist.labels, 2000, args.seed);
    let (roc_auc, eer, accuracy) = verification::<128>(&e, &pairs)?;
    Ok(SiameseSummary {
        training,
        retrieval,
        roc_auc,
        eer,
        accuracy,
    })
}

/// The user distance of `custom_loss`: Euclidean distance with a small
/// floor inside the root, `sqrt(‖a − b‖² + ε)`, smooth at 0 where the plain
/// root's derivative is not.
pub fn my_distance<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Tensor<(B, Const<D>), f32, Dev, T>,
    b: Tensor<(B, Const<D>), f32, Dev, T>,
) -> std::result::Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    a.try_sub(b)?
        .try_square()?
        .try_sum::<(B,), Axis<1>>()?
        .try_add(1e-6)?
        .try_sqrt()
}

/// A triplet loss on a user distance, declared as a user's crate would.
#[metric_loss(triplet, distance = self::my_distance, normalize, margin = 0.2)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmoothTriplet;

pub fn run_custom(args: &Args) -> Result<TripletSummary> {
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<Encoder>(&dev);
    let loss = SmoothTriplet.with_margin(args.margin.unwrap_or(0.2))?;
    let training = train::<128, _, _>(
        args,
        &dev,
        &mnist,
        &mut net,
        &TripletStep(loss, metric_loss::miners::SemiHard::default()),
    )?;
    let e = embed_all::<128, _>(&dev, &mnist, &net);
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels)?;
    let retrieval_normalized = evaluate_retrieval::<128>(&l2_normalized::<128>(&e), &mnist.labels)?;
    Ok(TripletSummary {
        training,
        retrieval,
        retrieval_normalized: Some(retrieval_normalized),
    })
}

/// Result of `embed_2d`.
#[derive(Debug, Clone)]
pub struct Embed2dSummary {
    pub training: Training,
    pub retrieval: RetrievalMetrics,
    pub png: PathBuf,
}

pub fn run_embed_2d(args: &Args) -> Result<Embed2dSummary> {
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<Encoder2d>(&dev);
    let loss = DrLim.with_margin(args.margin.unwrap_or(1.0))?;
    let training = train::<2, _, _>(
        args,
        &dev,
        &mnist,
        &mut net,
        &PairStep(loss, metric_loss::miners::AllPairs),
    )?;
    let e = embed_all::<2, _>(&dev, &mnist, &net);
    let retrieval = evaluate_retrieval::<2>(&e, &mnist.labels)?;
    let png = out_file(&args.out, "embed_2d.png")?;
    plot_scatter(&png, &e[TRAIN * 2..], &mnist.labels[TRAIN..])?;
    Ok(Embed2dSummary {
        training,
        retrieval,
        png,
    })
}
