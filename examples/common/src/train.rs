//! The training loop and the per-step loss adapters (mining included).

use super::*;

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

impl Training {
    /// No training: the encoder was loaded (`--load`).
    pub fn loaded() -> Self {
        Training {
            losses: Vec::new(),
            last_stats: None,
            steps: 0,
            ms_per_step: 0.0,
        }
    }
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

/// What the training loop and the evaluation need of an encoder (or of a
/// network around one): rows of 784 pixels in, `D`-wide embeddings out, on
/// a tape or without. Both [`Encoder`] and [`CnnEncoder`] are.
pub trait Embedder<const D: usize>: TensorCollection<f32, Cpu>
    + Module<
        Tensor<(usize, Const<PIXELS>), f32, Cpu, OwnedTape<f32, Cpu>>,
        Output = Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
    > + Module<Tensor<(usize, Const<PIXELS>), f32, Cpu>, Output = Tensor<(usize, Const<D>), f32, Cpu>>
{
}

impl<const D: usize, N> Embedder<D> for N where
    N: TensorCollection<f32, Cpu>
        + Module<
            Tensor<(usize, Const<PIXELS>), f32, Cpu, OwnedTape<f32, Cpu>>,
            Output = Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        > + Module<
            Tensor<(usize, Const<PIXELS>), f32, Cpu>,
            Output = Tensor<(usize, Const<D>), f32, Cpu>,
        >
{
}

/// How one step turns a batch of embeddings into a loss: mining included.
pub trait StepLoss<const D: usize> {
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats);
}

/// Any declared loss mined within the batch by a miner of its family
/// (triplet miners for triplet losses, pair miners for pair losses and the
/// ranking family; `AllPairs` is PML's no-miner call): one step for every
/// family, through the library's one mined path.
pub struct WithinBatch<L, M>(pub L, pub M);

impl<const D: usize, L, M> StepLoss<D> for WithinBatch<L, M>
where
    L: MetricLoss,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples>,
{
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let mined = metric_loss::loss::try_mined(&self.0, &self.1, e, labels);
        let mined = metric_loss::error::unwrap_or_panic(mined);
        (mined.loss, mined.stats)
    }
}

/// `loss` mined by `miner` within the batch, or with `memory: Some(M)`
/// against a cross-batch memory of `M` embeddings as well. The memory
/// refuses, with a typed error, a loss or miner that does not read a batch
/// against a reference set (lifted structure, N-pairs, the
/// distance-weighted miner of the margin loss).
pub fn within_or_memory<L, M>(
    memory: Option<usize>,
    loss: L,
    miner: M,
) -> Result<Box<dyn StepLoss<128>>>
where
    L: MetricLoss + 'static,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples> + 'static,
{
    Ok(match memory {
        Some(m) => Box::new(MemoryStep::<L, M, 128>::new(loss, miner, m)?),
        None => Box::new(WithinBatch(loss, miner)),
    })
}

/// Any mined loss through a cross-batch memory (`--memory M`): each batch
/// is mined with `miner` against the last `M` embeddings as well.
pub struct MemoryStep<L, M, const D: usize> {
    pub xbm: std::cell::RefCell<CrossBatchMemory<L, D>>,
    pub miner: M,
}

impl<L, M, const D: usize> MemoryStep<L, M, D> {
    pub fn new(loss: L, miner: M, memory: usize) -> Result<Self> {
        Ok(Self {
            xbm: std::cell::RefCell::new(CrossBatchMemory::try_new(loss, memory)?),
            miner,
        })
    }
}

impl<const D: usize, L, M> StepLoss<D> for MemoryStep<L, M, D>
where
    L: MetricLoss,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples>,
{
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let mined = self.xbm.borrow_mut().mined(&self.miner, e, labels);
        (mined.loss, mined.stats)
    }
}

/// A step behind a `dyn` reference (for choosing a step at run time).
pub struct DynStep<'a, const D: usize>(pub &'a dyn StepLoss<D>);

impl<const D: usize> StepLoss<D> for DynStep<'_, D> {
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        self.0.step(e, labels)
    }
}

/// The steps of `first` for `warmup` steps, then those of `then`.
pub struct Phased<A, B> {
    pub first: A,
    pub then: B,
    pub warmup: usize,
    pub taken: std::cell::Cell<usize>,
}

impl<const D: usize, A: StepLoss<D>, B: StepLoss<D>> StepLoss<D> for Phased<A, B> {
    fn step(
        &self,
        e: Tensor<(usize, Const<D>), f32, Cpu, OwnedTape<f32, Cpu>>,
        labels: &[usize],
    ) -> (Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>, MinerStats) {
        let t = self.taken.get();
        self.taken.set(t + 1);
        if t < self.warmup {
            self.first.step(e, labels)
        } else {
            self.then.step(e, labels)
        }
    }
}

/// Trains `model` (any module from `(n, 784)` rows to `(n, D)` embeddings)
/// on P x K batches of the training digits (shifted at random with
/// `--augment`, for the first `--augment-steps`) with Adam (`--lr`, 1e-3 by default, along `--lr-schedule`).
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
    let train_labels = &mnist.labels[..args.train_count()];
    let mut sampler = PkSampler::try_new(
        train_labels,
        args.classes_per_batch(),
        args.per_class(),
        args.seed,
    )?;
    let total = planned_steps(args, sampler.batches_per_epoch());
    let mut opt: Adam<Net, f32, Cpu> = Adam::new(
        model,
        AdamConfig {
            lr: args.lr,
            ..Default::default()
        },
    );
    let mut grads = model.alloc_grads();
    let bar = progress(args, total);
    let mut losses = Vec::with_capacity(total);
    let mut last_stats = None;
    let mut collapse_warned = false;
    let mut augment = Translate::new(args.augment(), args.seed);
    let start = Instant::now();
    'epochs: for _ in 0..args.epochs {
        for batch in sampler.epoch() {
            if losses.len() >= total {
                break 'epochs;
            }
            opt.cfg.lr = args.schedule().at(args.lr, losses.len(), total);
            let labels: Vec<usize> = batch.iter().map(|&i| train_labels[i]).collect();
            let x = if losses.len() < args.augment_steps.unwrap_or(usize::MAX) {
                augment.batch(dev, mnist, &batch)
            } else {
                batch_tensor(dev, mnist, &batch)
            };
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
