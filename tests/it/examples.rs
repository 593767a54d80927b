//! Runs a few training steps of every example (and its evaluation and
//! plotting), so that none of them can rot.

const STEPS: usize = 3;

#[test]
fn triplet_mnist_runs() {
    let s = common::run_triplet(&common::Args::smoke(STEPS)).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!(s.training.losses.iter().all(|l| l.is_finite()));
    assert!((0.0..=1.0).contains(&s.retrieval.map_at_r));
    assert!(
        common::Args::smoke(STEPS)
            .out
            .join("triplet_mnist_loss.png")
            .is_file()
    );
}

/// `--encoder cnn`: reference.py's CNN through the same training loop,
/// evaluation and result.
#[test]
fn triplet_mnist_runs_on_the_cnn() {
    let args = common::Args {
        encoder: common::EncoderChoice::Cnn,
        loss: common::TripletChoice::Warmup,
        warmup_steps: Some(1),
        lr_schedule: Some(common::LrSchedule::Cosine),
        ..common::Args::smoke(STEPS)
    };
    let s = common::run_triplet(&args).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!(s.training.losses.iter().all(|l| l.is_finite()));
    assert!((0.0..=1.0).contains(&s.retrieval.map_at_r));
    assert!(args.out.join("triplet_mnist_cnn_loss.png").is_file());
    assert_eq!(common::EncoderChoice::Cnn.to_string(), "cnn");
    assert_eq!((args.warmup(), args.unit_margin()), (1, 0.5));
    let mlp = common::Args::smoke(STEPS);
    assert_eq!((mlp.warmup(), mlp.unit_margin()), (300, 0.2));
    assert_eq!(mlp.schedule(), common::LrSchedule::Constant);
    assert_eq!(mlp.triplet_args().schedule(), common::LrSchedule::Cosine);
    assert_eq!(args.triplet_args().schedule(), common::LrSchedule::Cosine);
    let cnn = common::Args {
        encoder: common::EncoderChoice::Cnn,
        ..common::Args::smoke(STEPS)
    };
    assert_eq!(cnn.triplet_args().schedule(), common::LrSchedule::Cosine);
    let cosine = common::LrSchedule::Cosine;
    assert_eq!(cosine.at(1e-3, 0, 10), 1e-3);
    assert!((cosine.at(1e-3, 5, 10) - 5e-4).abs() < 1e-12 && cosine.at(1e-3, 10, 10).abs() < 1e-12);
    assert_eq!(common::LrSchedule::Constant.at(2e-3, 7, 10), 2e-3);
}

/// `triplet_mnist --encoder cnn`'s own defaults (10 × 8 batches, ±1 px
/// for the first 500 steps) fill only what the command line left unset,
/// and leave the MLP's recipe and the other examples' batches alone.
#[test]
fn triplet_cnn_defaults_keep_the_flags_given() {
    let cnn = common::Args {
        encoder: common::EncoderChoice::Cnn,
        ..common::Args::smoke(STEPS)
    };
    let t = cnn.triplet_args();
    assert_eq!((t.classes_per_batch(), t.per_class()), (10, 8));
    assert_eq!((t.augment, t.augment_steps), (Some(1), Some(500)));
    assert_eq!(common::CNN_TRIPLET_BATCH, (10, 8));
    assert_eq!(common::CNN_TRIPLET_SHIFT, (1, 500));
    // the other examples keep the protocol's 5 × 16 and no shift
    assert_eq!((cnn.classes_per_batch(), cnn.per_class()), (5, 16));
    assert_eq!((cnn.augment(), cnn.augment_steps), (0, None));
    let mlp = common::Args::smoke(STEPS).triplet_args();
    assert_eq!((mlp.classes_per_batch, mlp.per_class), (None, None));
    assert_eq!((mlp.augment, mlp.augment_steps), (None, None));
    let given = common::Args {
        classes_per_batch: Some(5),
        per_class: Some(16),
        augment_steps: Some(300),
        ..cnn.clone()
    }
    .triplet_args();
    assert_eq!((given.classes_per_batch(), given.per_class()), (5, 16));
    assert_eq!((given.augment, given.augment_steps), (Some(1), Some(300)));
    // `--augment PX` alone shifts every step, `--augment 0` not at all
    for px in [0, 2] {
        let a = common::Args {
            augment: Some(px),
            ..cnn.clone()
        }
        .triplet_args();
        assert_eq!((a.augment(), a.augment_steps), (px, None));
    }
}

/// `benchmark_losses --losses ...`: a subset of the losses, each from the
/// same initial weights, its row, table line and the chart.
#[test]
fn benchmark_losses_runs_a_subset() {
    use common::BenchLoss;
    let args = common::Args::smoke(STEPS);
    let losses = [
        BenchLoss::MultiSimilarity,
        BenchLoss::Margin,
        BenchLoss::Contrastive,
    ];
    let rows = common::run_benchmark(&args, &losses).unwrap();
    assert_eq!(rows.iter().map(|r| r.loss).collect::<Vec<_>>(), losses);
    for r in &rows {
        assert_eq!(r.training.steps, STEPS);
        assert!(r.training.losses.iter().all(|l| l.is_finite()));
        assert!((0.0..=1.0).contains(&r.unit.map_at_r));
        let line = r.result_line(args.encoder);
        assert!(
            line.starts_with(&format!("result loss={} ", r.loss.name())),
            "{line}"
        );
        assert!(
            line.contains(" unit_map_at_r=") && line.contains(" ms_per_step="),
            "{line}"
        );
    }
    let table = common::markdown_table(&rows);
    assert_eq!(table.lines().count(), 2 + losses.len());
    assert!(table.contains("| `margin` |"));
    let png = common::out_file(&args.out, common::chart_file(args.encoder)).unwrap();
    common::map_chart(&png, &rows, args.encoder).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // every name parses back (the `--losses` values)
    for loss in BenchLoss::ALL {
        assert_eq!(
            <BenchLoss as clap::ValueEnum>::from_str(loss.name(), false),
            Ok(loss)
        );
    }
}

#[test]
fn siamese_mnist_runs() {
    let s = common::run_siamese(&common::Args::smoke(STEPS)).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!((0.0..=1.0).contains(&s.roc_auc));
    assert!((0.0..=1.0).contains(&s.eer));
}

#[test]
fn custom_loss_runs() {
    let s = common::run_custom(&common::Args::smoke(STEPS)).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!(s.training.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn embed_2d_runs() {
    let s = common::run_embed_2d(&common::Args::smoke(STEPS)).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!(s.png.is_file());
}

#[test]
fn search_mnist_runs() {
    let mut args = common::Args::smoke(STEPS);
    args.out = std::env::temp_dir().join("metric-loss-examples-test-search");
    let s = common::search::run_search(&args).unwrap();
    assert_eq!(s.training.steps, STEPS);
    assert!((0.0..=1.0).contains(&s.retrieval.precision_at_1));
    assert!((0.0..=1.0).contains(&s.retrieval.map_at_r));
    assert_eq!(s.retrieval.queries, 2_000);
    for file in [
        &s.png,
        &s.index,
        &s.npy.embeddings,
        &s.npy.labels,
        &s.queries_npy.0,
    ] {
        assert!(file.is_file(), "{}", file.display());
    }
    let index = metric_loss::index::EmbeddingIndex::load(&s.index);
    assert_eq!(index.len(), common::TRAIN);
}

/// `--save` then `--load`: the loaded encoder embeds every digit to the
/// same bits as the one that was saved, and a run with `--load` (another
/// seed, so another initialisation) reports the same retrieval.
#[test]
fn a_loaded_encoder_gives_bit_identical_embeddings() {
    use metric_loss::prelude::*;
    let dir = std::env::temp_dir().join("metric-loss-checkpoint-test");
    let path = dir.join("encoder.safetensors");
    let mut args = common::Args::smoke(STEPS);
    args.out = dir.clone();
    let mnist = common::load(&args).unwrap();
    let dev = common::device(5);
    let mut net = common::build::<TripletNet<common::Encoder>>(&dev);
    common::train_triplet(&args, &dev, &mnist, &mut net).unwrap();
    let trained = common::embed_all::<128, _>(&dev, &mnist, net.encoder());
    common::save_encoder(&path, net.encoder()).unwrap();

    let mut fresh = common::build::<common::Encoder>(&common::device(6));
    let before = common::embed_all::<128, _>(&dev, &mnist, &fresh);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_ne!(bits(&before), bits(&trained), "a fresh encoder differs");
    common::load_encoder(&path, &mut fresh).unwrap();
    let loaded = common::embed_all::<128, _>(&dev, &mnist, &fresh);
    assert_eq!(bits(&loaded), bits(&trained));

    // the flags, end to end
    args.save = Some(path.clone());
    let saved = common::run_triplet(&args).unwrap();
    let mut load_args = common::Args::smoke(STEPS);
    load_args.out = dir.clone();
    load_args.seed = 9;
    load_args.load = Some(path.clone());
    let loaded = common::run_triplet(&load_args).unwrap();
    assert_eq!(loaded.training.steps, 0);
    assert_eq!(loaded.retrieval, saved.retrieval);
    // a 2-D encoder cannot load a 128-D checkpoint: an error, not a panic
    load_args.load = Some(path);
    assert!(common::run_embed_2d(&load_args).is_err());
}

#[test]
fn verification_pairs_are_half_same_and_held_out() {
    let labels: Vec<usize> = (0..10_000).map(|i| i % 10).collect();
    let pairs = common::verification_pairs(&labels, common::TRAIN, 200, 7);
    assert_eq!(pairs.len(), 200);
    assert_eq!(pairs.iter().filter(|p| p.2).count(), 100);
    for &(a, b, same) in &pairs {
        assert!(a >= common::TRAIN && b >= common::TRAIN && a != b);
        assert_eq!(labels[a] == labels[b], same);
    }
    assert_eq!(
        pairs,
        common::verification_pairs(&labels, common::TRAIN, 200, 7)
    );
}

/// Every plot helper writes a PNG of the size it promises, with the
/// embedded font (text needs it: no system font is read).
#[test]
fn plots_are_written_with_text() {
    use common::plot;
    let dir = std::env::temp_dir().join("metric-loss-plot-test");
    std::fs::create_dir_all(&dir).unwrap();
    let png_size = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    };

    plot::fonts().unwrap();
    let style = plotters::style::IntoFont::into_font(("sans-serif", 20));
    let (w, h) = plotters::style::FontDesc::box_size(&style, "loss").unwrap();
    assert!(w > 20 && h > 10, "the embedded font measures {w} x {h}");

    let losses: Vec<f32> = (0..50).map(|i| 1.0 / (1.0 + i as f32)).collect();
    plot::loss_curve(
        &dir.join("loss.png"),
        "loss",
        &losses,
        5,
        &[(10, "warm-up ends")],
    )
    .unwrap();
    assert_eq!(png_size("loss.png"), (900, 560));

    let points: Vec<f32> = (0..40).map(|i| (i as f32).sin()).collect();
    let labels: Vec<usize> = (0..20).map(|i| i % 3).collect();
    plot::scatter_2d(
        &dir.join("scatter.png"),
        "scatter",
        &points,
        &labels,
        &|c| format!("class {c}"),
    )
    .unwrap();
    assert_eq!(png_size("scatter.png"), (1000, 820));
    assert!(
        plot::scatter_2d(&dir.join("bad.png"), "", &points[1..], &labels, &|c| c
            .to_string())
        .is_err()
    );

    let bars = plot::Bars {
        title: "bars",
        x_desc: "run",
        y_desc: "MAP@R",
        categories: &["a", "b"],
        series: &[("raw", &[0.5, 0.8]), ("unit", &[0.6, 0.9])],
        y_range: Some((0.0, 1.0)),
        values: true,
    };
    plot::bar_chart(&dir.join("bars.png"), &bars).unwrap();
    assert_eq!(png_size("bars.png").1, 560);
    let ragged = plot::Bars {
        series: &[("raw", &[0.5])],
        ..bars
    };
    assert!(plot::bar_chart(&dir.join("bad.png"), &ragged).is_err());

    let digit: Vec<f32> = (0..16).map(|i| (i % 5) as f32 / 4.0).collect();
    let cell = |caption: &str, frame| plot::Cell {
        pixels: &digit,
        caption: caption.to_string(),
        frame,
    };
    let grid = plot::ImageGrid {
        title: "grid",
        width: 4,
        height: 4,
        scale: 8,
        rows: vec![
            vec![cell("query", None), cell("1st", Some(plot::colour(2)))],
            vec![cell("query", None)],
        ],
        row_labels: vec!["one".into(), "two".into()],
        column_labels: vec!["query".into(), "rank 1".into()],
        legend: vec![("same class".into(), plot::colour(2))],
    };
    plot::image_grid(&dir.join("grid.png"), &grid).unwrap();
    let (gw, gh) = png_size("grid.png");
    assert!(gw >= 480 && gh > 2 * 32, "{gw} x {gh}");
}
