//! The examples' training functions: one per example, with its losses.

use super::*;

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

/// Result of `triplet_mnist`.
#[derive(Debug, Clone)]
pub struct TripletSummary {
    pub training: Training,
    pub retrieval: RetrievalMetrics,
    /// The same on unit-length embeddings (what a `normalize` loss compares).
    pub retrieval_normalized: Option<RetrievalMetrics>,
}

/// The loss curve's title for a `--loss` choice other than the warm-up.
fn loss_curve_title(choice: TripletChoice) -> &'static str {
    match choice {
        TripletChoice::Normalized | TripletChoice::Warmup => {
            "triplet_mnist: loss per step (batch-hard, unit-length, m = 0.2)"
        }
        TripletChoice::Plain => {
            "triplet_mnist: loss per step (batch-hard, raw embeddings, m = 0.2)"
        }
        TripletChoice::Soft => "triplet_mnist: loss per step (batch-hard, soft margin)",
        TripletChoice::SoftNormalized => {
            "triplet_mnist: loss per step (batch-hard, soft margin, unit-length)"
        }
        TripletChoice::AllNonzero => "triplet_mnist: loss per step (batch-all, mean over active)",
    }
}

/// Trains `net` (a `TripletNet` around the `--encoder`) with the triplet
/// loss `args.loss` picks (the training of `triplet_mnist`, which
/// `search_mnist` runs too).
pub fn train_triplet<N: Embedder<128>>(
    args: &Args,
    dev: &Cpu,
    mnist: &Mnist,
    net: &mut N,
) -> Result<Training> {
    let args = &args.triplet_args();
    let hard = metric_loss::miners::BatchHard;
    let all = metric_loss::miners::BatchAll::default();
    let mut run =
        |step: &dyn StepLoss<128>| train::<128, _, _>(args, dev, mnist, net, &DynStep(step));
    Ok(match args.loss {
        TripletChoice::Normalized => {
            let loss = NormalizedTriplet.with_margin(args.unit_margin())?;
            mined_step(args, loss, hard, run)?
        }
        TripletChoice::Warmup => {
            let loss = NormalizedTriplet.with_margin(args.unit_margin())?;
            // the warm-up stays within the batch; batch-hard reads the memory
            mined_step(args, loss, hard, |then| {
                run(&Phased {
                    first: WithinBatch(loss, all),
                    then: DynStep(then),
                    warmup: args.warmup(),
                    taken: std::cell::Cell::new(0),
                })
            })?
        }
        TripletChoice::Plain => {
            let loss = TripletLoss.with_margin(args.margin.unwrap_or(0.2))?;
            mined_step(args, loss, hard, run)?
        }
        TripletChoice::Soft => {
            let loss = SoftMarginTriplet.with_margin(args.margin.unwrap_or(0.0))?;
            mined_step(args, loss, hard, run)?
        }
        TripletChoice::AllNonzero => {
            let loss = NormalizedNonzeroTriplet.with_margin(args.unit_margin())?;
            mined_step(args, loss, all, run)?
        }
        TripletChoice::SoftNormalized => {
            let loss = NormalizedSoftTriplet.with_margin(args.margin.unwrap_or(0.0))?;
            mined_step(args, loss, hard, run)?
        }
    })
}

/// Runs `train` with `loss` mined by `miner`: within the batch, or with
/// `--memory M` against a cross-batch memory of `M` embeddings.
pub fn mined_step<L, M>(
    args: &Args,
    loss: L,
    miner: M,
    train: impl FnOnce(&dyn StepLoss<128>) -> Result<Training>,
) -> Result<Training>
where
    L: MetricLoss + 'static,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples> + 'static,
{
    train(&*within_or_memory(args.memory, loss, miner)?)
}

/// What `triplet_mnist` and `search_mnist` start from: the digits, the
/// device, and the triplet net around the `--encoder` trained with
/// [`train_triplet`] (or its encoder loaded with `--load`; saved with
/// `--save`), with every digit embedded.
pub struct TripletRun {
    pub mnist: Mnist,
    pub dev: Cpu,
    pub training: Training,
    embeddings: Vec<f32>,
}

impl TripletRun {
    pub fn new(args: &Args) -> Result<Self> {
        match args.encoder {
            EncoderChoice::Mlp => Self::with::<Encoder>(args),
            EncoderChoice::Cnn => Self::with::<CnnEncoder>(args),
        }
    }

    fn with<E: BuildOnDevice<Cpu, f32>>(args: &Args) -> Result<Self>
    where
        E::Built: Embedder<128>,
    {
        let mnist = load(args)?;
        let dev = device(args.seed);
        let mut net = build::<TripletNet<E>>(&dev);
        let training = train_or_load(args, &mut net, TripletNet::encoder_mut, |net| {
            train_triplet(args, &dev, &mnist, net)
        })?;
        let embeddings = embed_all::<128, _>(&dev, &mnist, net.encoder());
        Ok(TripletRun {
            mnist,
            dev,
            training,
            embeddings,
        })
    }

    /// Every digit's embedding, `len × 128`.
    pub fn embeddings(&self) -> Vec<f32> {
        self.embeddings.clone()
    }
}

pub fn run_triplet(args: &Args) -> Result<TripletSummary> {
    let run = TripletRun::new(args)?;
    let e = run.embeddings();
    let (mnist, training) = (run.mnist, run.training);
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels, args.train_count())?;
    let retrieval_normalized =
        evaluate_retrieval::<128>(&l2_normalized::<128>(&e), &mnist.labels, args.train_count())?;
    let (title, markers) = match args.loss {
        TripletChoice::Warmup => (
            "triplet_mnist: loss per step (batch-all warm-up, then batch-hard)",
            vec![(args.warmup(), "warm-up ends: batch-hard from here")],
        ),
        choice => (loss_curve_title(choice), vec![]),
    };
    // the CNN's curve beside the MLP's, not over it
    let (file, title) = match args.encoder {
        EncoderChoice::Mlp => ("triplet_mnist_loss.png", title.to_string()),
        EncoderChoice::Cnn => (
            "triplet_mnist_cnn_loss.png",
            title.replacen("triplet_mnist:", "triplet_mnist, CNN:", 1),
        ),
    };
    if training.steps > 0 {
        plot::loss_curve(
            &out_file(&args.out, file)?,
            &title,
            &training.losses,
            20,
            &markers,
        )?;
    }
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
    match args.encoder {
        EncoderChoice::Mlp => run_siamese_with::<Encoder>(args),
        EncoderChoice::Cnn => run_siamese_with::<CnnEncoder>(args),
    }
}

fn run_siamese_with<E: BuildOnDevice<Cpu, f32>>(args: &Args) -> Result<SiameseSummary>
where
    E::Built: Embedder<128>,
{
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<Siamese<E>>(&dev);
    let loss = ContrastiveLoss.with_margin(args.margin.unwrap_or(1.0))?;
    let training = train_or_load(args, &mut net, Siamese::encoder_mut, |net| {
        train::<128, _, _>(
            args,
            &dev,
            &mnist,
            net,
            &WithinBatch(loss, metric_loss::miners::AllPairs),
        )
    })?;
    let e = embed_all::<128, _>(&dev, &mnist, net.encoder());
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels, args.train_count())?;
    let pairs = verification_pairs(&mnist.labels, args.train_count(), 2000, args.seed);
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
    match args.encoder {
        EncoderChoice::Mlp => run_custom_with::<Encoder>(args),
        EncoderChoice::Cnn => run_custom_with::<CnnEncoder>(args),
    }
}

fn run_custom_with<E: BuildOnDevice<Cpu, f32>>(args: &Args) -> Result<TripletSummary>
where
    E::Built: Embedder<128>,
{
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<E>(&dev);
    let loss = SmoothTriplet.with_margin(args.margin.unwrap_or(0.2))?;
    let training = train_or_load(
        args,
        &mut net,
        |n| n,
        |net| {
            train::<128, _, _>(
                args,
                &dev,
                &mnist,
                net,
                &WithinBatch(loss, metric_loss::miners::SemiHard::default()),
            )
        },
    )?;
    let e = embed_all::<128, _>(&dev, &mnist, &net);
    let retrieval = evaluate_retrieval::<128>(&e, &mnist.labels, args.train_count())?;
    let retrieval_normalized =
        evaluate_retrieval::<128>(&l2_normalized::<128>(&e), &mnist.labels, args.train_count())?;
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
    match args.encoder {
        EncoderChoice::Mlp => run_embed_2d_with::<Encoder2d>(args),
        EncoderChoice::Cnn => run_embed_2d_with::<CnnEncoder2d>(args),
    }
}

fn run_embed_2d_with<E: BuildOnDevice<Cpu, f32>>(args: &Args) -> Result<Embed2dSummary>
where
    E::Built: Embedder<2>,
{
    let mnist = load(args)?;
    let dev = device(args.seed);
    let mut net = build::<E>(&dev);
    let loss = DrLim.with_margin(args.margin.unwrap_or(1.0))?;
    let training = train_or_load(
        args,
        &mut net,
        |n| n,
        |net| {
            train::<2, _, _>(
                args,
                &dev,
                &mnist,
                net,
                &WithinBatch(loss, metric_loss::miners::AllPairs),
            )
        },
    )?;
    let e = embed_all::<2, _>(&dev, &mnist, &net);
    let retrieval = evaluate_retrieval::<2>(&e, &mnist.labels, args.train_count())?;
    let png = out_file(&args.out, "embed_2d.png")?;
    plot::scatter_2d(
        &png,
        "embed_2d: DrLIM embedding of the held-out digits",
        &e[args.train_count() * 2..],
        &mnist.labels[args.train_count()..],
        &|digit| format!("digit {digit}"),
    )?;
    Ok(Embed2dSummary {
        training,
        retrieval,
        png,
    })
}
