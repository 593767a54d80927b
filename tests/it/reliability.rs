//! Every bad input a user can hand the library, each with its outcome: a
//! typed error, or a documented zero loss — never a panic from inside dfdx,
//! never a NaN, never a silently wrong value. Plus determinism of training.
//!
//! `losses.rs` and `mined.rs` (beside this file) already cover: an empty explicit
//! triplet batch, anchor/positive size mismatch, a short pair-label list,
//! `with_margin(NaN)` and `with_margin(-0.1)`, the panic message of a size
//! mismatch, BatchHard/HardPairs on one class, identical embeddings under
//! the Euclidean BatchHard loss, short mined labels and an empty mined batch.
//! This file covers the rest (the count is in the final report).

use metric_loss::data::idx::{IdxArray, IdxError, Mnist};
use metric_loss::loss::check_finite;
use metric_loss::miners::Triplet;
use metric_loss::prelude::*;
use std::path::PathBuf;

const D: usize = 4;
type Rows<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn rows(dev: &Cpu, data: &[f32]) -> Rows {
    dev.tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

/// A fixed, non-degenerate batch of `n` rows.
fn batch(n: usize) -> Vec<f32> {
    (0..n * D)
        .map(|i| ((i * 37 + 11) % 17) as f32 / 5.0 - 1.6)
        .collect()
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

#[metric_loss(triplet, distance = cosine, margin = 0.3)]
struct CosineTriplet;
#[metric_loss(triplet, distance = cosine, normalize, margin = 0.3)]
struct CosineNormTriplet;
#[metric_loss(triplet, distance = manhattan, margin = 0.5)]
struct ManhattanTriplet;
#[metric_loss(triplet, distance = manhattan, normalize, margin = 0.5)]
struct ManhattanNormTriplet;
#[metric_loss(triplet, distance = dot, margin = 0.5)]
struct DotTriplet;
#[metric_loss(triplet, distance = dot, normalize, margin = 0.5)]
struct DotNormTriplet;
#[metric_loss(triplet, distance = euclidean, squared, margin = 0.2)]
struct SquaredTriplet;
#[metric_loss(triplet, distance = euclidean, normalize, margin = 0.2)]
struct NormTriplet;
#[metric_loss(triplet, distance = euclidean, swap, margin = 0.2)]
struct SwapTriplet;
#[metric_loss(pair, distance = cosine, margin = 0.5)]
struct CosinePair;
#[metric_loss(pair, distance = euclidean, margin = 1.0, pos_margin = 0.2)]
struct PosMarginPair;
#[metric_loss(triplet, distance = manhattan, margin = 0.5, reduction = sum)]
struct SumManhattanTriplet;

// ------------------------------------------------------------ empty batches

#[test]
fn empty_batches_are_typed_errors() {
    let dev = Cpu::default();
    let empty = rows(&dev, &[]);
    let y = PairLabels::from_similar(&[]);
    // 1: explicit pair loss
    assert_eq!(
        ContrastiveLoss
            .try_forward(empty.clone(), empty.clone(), &y)
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "a" }
    );
    // 2: checked triplet path (the empty check wins, no scan of nothing)
    assert_eq!(
        TripletLoss
            .try_forward_checked(empty.clone(), empty.clone(), empty.clone())
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "anchor" }
    );
    // 3: anchor fine, positive empty
    let two = rows(&dev, &batch(2));
    assert_eq!(
        TripletLoss
            .try_forward(two.clone(), empty.clone(), two.clone())
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "positive" }
    );
    // 4, 5, 6: mined triplet losses with other miners than BatchHard, mined pairs
    let none: &[usize] = &[];
    assert_eq!(
        FaceNet
            .try_mined(&BatchAll::default(), empty.clone(), none)
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "embeddings" }
    );
    assert_eq!(
        CosineTriplet
            .try_mined(&SemiHard::default(), empty.clone(), none)
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "embeddings" }
    );
    assert_eq!(
        ContrastiveLoss
            .try_mined(&AllPairs, empty, none)
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "embeddings" }
    );
}

// ------------------------------------------------------- mismatched sizes

#[test]
fn batch_sizes_that_differ_are_typed_errors() {
    let dev = Cpu::default();
    let two = rows(&dev, &batch(2));
    let three = rows(&dev, &batch(3));
    // 7: anchor vs negative
    assert_eq!(
        TripletLoss
            .try_forward(two.clone(), two.clone(), three.clone())
            .unwrap_err(),
        MetricLossError::BatchMismatch {
            left_name: "anchor",
            left: 2,
            right_name: "negative",
            right: 3
        }
    );
    // 8: pair a vs b
    let y = PairLabels::from_similar(&[true, false]);
    assert_eq!(
        ContrastiveLoss
            .try_forward(two.clone(), three.clone(), &y)
            .unwrap_err(),
        MetricLossError::BatchMismatch {
            left_name: "a",
            left: 2,
            right_name: "b",
            right: 3
        }
    );
    // 9: the checked path reports the size mismatch too
    assert!(matches!(
        SwapTriplet.try_forward_checked(three, two.clone(), two),
        Err(MetricLossError::BatchMismatch {
            left: 3,
            right: 2,
            ..
        })
    ));
}

#[test]
fn label_counts_that_are_not_the_batch_size_are_typed_errors() {
    let dev = Cpu::default();
    let three = rows(&dev, &batch(3));
    // 10: too many pair labels
    let y = PairLabels::from_similar(&[true, false, true, false]);
    assert_eq!(
        CosinePair
            .try_forward(three.clone(), three.clone(), &y)
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 4,
            batch: 3
        }
    );
    // 11: too many mined labels (triplet)
    assert_eq!(
        TripletLoss
            .try_mined(&BatchAll::default(), three.clone(), &[0, 0, 1, 1])
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 4,
            batch: 3
        }
    );
    // 12: too few mined labels (pair)
    assert_eq!(
        ContrastiveLoss
            .try_mined(&HardPairs, three, &[0, 1])
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 2,
            batch: 3
        }
    );
    // 13: PairLabels from classes of different lengths
    assert!(PairLabels::from_classes(&[0, 1], &[0]).is_err());
}

// ------------------------------------------------------------- one class

fn zero_loss_zero_grad<L: TripletCriterion<Output<usize> = ()>, M: TripletMiner>(
    loss: &L,
    miner: &M,
    what: &str,
) {
    let dev = Cpu::default();
    let x = rows(&dev, &batch(6));
    let m = loss
        .try_mined(miner, x.leaky_trace(), &[3; 6])
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(m.loss.array(), 0.0, "{what}");
    assert_eq!(m.stats.triplets, 0, "{what}");
    let g = m.loss.backward().get(&x).as_vec();
    assert!(g.iter().all(|&g| g == 0.0), "{what}: {g:?}");
}

#[test]
fn a_single_class_gives_zero_loss_and_zero_gradient() {
    // 14-18: the miners and losses not covered by mined.rs
    zero_loss_zero_grad(&TripletLoss, &BatchAll::default(), "euclidean batch-all");
    zero_loss_zero_grad(&FaceNet, &BatchHard, "facenet batch-hard");
    zero_loss_zero_grad(&CosineTriplet, &SemiHard::default(), "cosine semi-hard");
    zero_loss_zero_grad(&ManhattanTriplet, &BatchHard, "manhattan batch-hard");
    zero_loss_zero_grad(&SoftMarginTriplet, &BatchAll::default(), "soft batch-all");
    // 19: the sampler refuses a data set with a single class
    assert!(matches!(
        PkSampler::try_new(&[5; 10], 2, 2, 0),
        Err(MetricLossError::InvalidConfig(_))
    ));
}

// ------------------------------------------------ small classes, PkSampler

#[test]
fn a_class_smaller_than_k_is_topped_up_with_replacement() {
    // 20: class 0 has 3 samples, K = 4; class 2 is a singleton (skipped).
    let labels = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2];
    let mut sampler = PkSampler::try_new(&labels, 2, 4, 9).unwrap();
    assert_eq!(sampler.num_skipped_samples(), 1);
    for _ in 0..5 {
        let epoch = sampler.epoch();
        assert_eq!(epoch.len(), sampler.batches_per_epoch());
        let mut seen_class0 = std::collections::BTreeSet::new();
        for b in &epoch {
            assert_eq!(b.len(), 8);
            for block in b.chunks(4) {
                let c = labels[block[0]];
                assert!(block.iter().all(|&i| labels[i] == c), "{block:?}");
                assert_ne!(c, 2, "the singleton class is never sampled");
                if c == 0 {
                    seen_class0.extend(block.iter().copied());
                    // 3 distinct samples in a block of 4: exactly one repeat
                    let distinct: std::collections::BTreeSet<_> = block.iter().collect();
                    assert_eq!(distinct.len(), 3, "{block:?}");
                }
            }
        }
        assert_eq!(seen_class0.len(), 3, "every sample of class 0 appears");
    }
}

#[test]
fn a_k_far_beyond_every_class_is_a_typed_error_when_the_sampler_is_made() {
    // 20a: K = 10^8 used to be accepted, and epoch() then aborted the
    // process on its allocation. The bound: one epoch holds at most
    // MAX_DRAWS_PER_SAMPLE indices per sample drawn from.
    let labels: Vec<usize> = (0..40).map(|i| i % 10).collect();
    for k in [100_000_000, usize::MAX / 2] {
        let e = PkSampler::try_new(&labels, 2, k, 0).unwrap_err();
        assert!(
            matches!(&e, MetricLossError::InvalidConfig(m) if m.contains("far beyond")),
            "{e}"
        );
    }
    let r = std::panic::catch_unwind(|| PkSampler::new(&labels, 2, 100_000_000, 0));
    assert!(r.is_err(), "new() panics with the message");
    // At the bound: two classes of 2, one batch of 2K indices for 4 samples.
    let pairs = [0, 0, 1, 1];
    let at = PkSampler::MAX_DRAWS_PER_SAMPLE * 4 / 2;
    let mut sampler = PkSampler::try_new(&pairs, 2, at, 0).unwrap();
    let epoch = sampler.epoch();
    assert_eq!(epoch.concat().len(), PkSampler::MAX_DRAWS_PER_SAMPLE * 4);
    assert!(PkSampler::try_new(&pairs, 2, at + 1, 0).is_err());
}

// -------------------------------------------- anchors without positives

#[test]
fn anchors_without_positives_are_dropped() {
    // 21: rows 2 and 3 are the only members of their classes.
    let dev = Cpu::default();
    let data = batch(5);
    let labels = [0, 0, 1, 2, 0];
    for (name, m) in [
        (
            "batch-hard",
            TripletLoss.mined(&BatchHard, rows(&dev, &data), &labels),
        ),
        (
            "batch-all",
            TripletLoss.mined(&BatchAll::default(), rows(&dev, &data), &labels),
        ),
    ] {
        let expected = if name == "batch-hard" { 3 } else { 3 * 2 * 2 };
        assert_eq!(m.stats.triplets, expected, "{name}");
        assert!(m.loss.array().is_finite());
    }
    // The miner itself: no triplet is anchored at a lonely row.
    let dist = DistanceMatrix::euclidean(&data, D, false).unwrap();
    let t: Vec<Triplet> = BatchHard.try_mine(&dist, &labels, 0.2).unwrap();
    assert!(t.iter().all(|t| t.anchor != 2 && t.anchor != 3));
}

// ------------------------------------------------------ non-finite values

#[test]
fn non_finite_embeddings_on_the_checked_path_are_typed_errors() {
    let dev = Cpu::default();
    let good = batch(3);
    let mut bad = good.clone();
    // 22: NaN in the negative, row 2 column 1
    bad[2 * D + 1] = f32::NAN;
    let e = TripletLoss
        .try_forward_checked(rows(&dev, &good), rows(&dev, &good), rows(&dev, &bad))
        .unwrap_err();
    assert!(
        matches!(e, MetricLossError::NonFinite { what: "negative", row: 2, column: 1, value } if value.is_nan()),
        "{e:?}"
    );
    // 23: +inf in the anchor, traced
    let mut inf = good.clone();
    inf[D + 3] = f32::INFINITY;
    assert_eq!(
        FaceNet
            .try_forward_checked(
                rows(&dev, &inf).leaky_traced(),
                rows(&dev, &good),
                rows(&dev, &good)
            )
            .unwrap_err(),
        MetricLossError::NonFinite {
            what: "anchor",
            row: 1,
            column: 3,
            value: f32::INFINITY
        }
    );
    // 24: -inf in b of a pair loss
    let mut ninf = good.clone();
    ninf[0] = f32::NEG_INFINITY;
    let y = PairLabels::from_similar(&[true, false, true]);
    assert_eq!(
        ContrastiveLoss
            .try_forward_checked(rows(&dev, &good), rows(&dev, &ninf), &y)
            .unwrap_err(),
        MetricLossError::NonFinite {
            what: "b",
            row: 0,
            column: 0,
            value: f32::NEG_INFINITY
        }
    );
    // The unchecked path is documented to give a NaN loss, not a finite
    // one (the CPU `safe_sqrt` mapped NaN to a distance of 0, and dfdx's
    // `relu` in the hinge maps NaN to 0: both fixed).
    for loss_value in [
        TripletLoss
            .forward(rows(&dev, &good), rows(&dev, &good), rows(&dev, &bad))
            .array(),
        SquaredTriplet
            .forward(rows(&dev, &bad), rows(&dev, &good), rows(&dev, &good))
            .array(),
        ContrastiveLoss
            .forward(rows(&dev, &good), rows(&dev, &bad), &y)
            .array(),
        PosMarginPair
            .forward(rows(&dev, &good), rows(&dev, &bad), &y)
            .array(),
        SwapTriplet
            .forward(rows(&dev, &good), rows(&dev, &bad), rows(&dev, &good))
            .array(),
        CosineTriplet
            .forward(rows(&dev, &good), rows(&dev, &good), rows(&dev, &bad))
            .array(),
    ] {
        assert!(loss_value.is_nan(), "{loss_value}");
    }
    // The checked path computes the same loss as the unchecked one otherwise.
    let x = rows(&dev, &good);
    assert_eq!(
        SoftMarginTriplet
            .try_forward_checked(x.clone(), x.clone(), x.clone())
            .unwrap()
            .array(),
        SoftMarginTriplet.forward(x.clone(), x.clone(), x).array()
    );
    // check_finite on other ranks
    assert!(check_finite("v", &dev.tensor([1.0f32, f32::NAN])).is_err());
    assert!(check_finite("s", &dev.tensor(f32::INFINITY)).is_err());
    assert!(check_finite("ok", &rows(&dev, &good)).is_ok());
}

fn mined_rejects<L: TripletCriterion, M: TripletMiner>(loss: &L, miner: &M, x: &[f32], what: &str) {
    let dev = Cpu::default();
    let labels: Vec<usize> = (0..x.len() / D).map(|i| i % 2).collect();
    let r = loss.try_mined(miner, rows(&dev, x).leaky_trace(), &labels);
    assert!(
        matches!(r, Err(MetricLossError::NonFinite { .. })),
        "{what}: {:?}",
        r.map(|m| m.stats)
    );
}

#[test]
fn non_finite_embeddings_on_the_mined_path_are_typed_errors() {
    // 25-27: NaN, +inf, -inf, each under every distance and miner family.
    for (row, n) in [(0, 4), (3, 4), (0, 2), (0, 1)] {
        for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = batch(n);
            x[row * D + 2] = value;
            let w = format!("{value} in row {row} of {n}");
            mined_rejects(&TripletLoss, &BatchHard, &x, &format!("fused {w}"));
            mined_rejects(&SwapTriplet, &BatchHard, &x, &format!("swap {w}"));
            mined_rejects(
                &SquaredTriplet,
                &BatchAll::default(),
                &x,
                &format!("sq {w}"),
            );
            mined_rejects(&FaceNet, &BatchHard, &x, &format!("facenet {w}"));
            mined_rejects(
                &CosineTriplet,
                &SemiHard::default(),
                &x,
                &format!("cos {w}"),
            );
            mined_rejects(&ManhattanTriplet, &BatchHard, &x, &format!("l1 {w}"));
            mined_rejects(&DotTriplet, &BatchAll::default(), &x, &format!("dot {w}"));
            let dev = Cpu::default();
            let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
            assert!(
                matches!(
                    ContrastiveLoss.try_mined(&AllPairs, rows(&dev, &x), &labels),
                    Err(MetricLossError::NonFinite { .. })
                ),
                "pairs {w}"
            );
        }
    }
}

// ------------------------------------- finite values whose squares overflow

#[test]
fn distances_that_overflow_on_the_checked_path_are_typed_errors() {
    // 27a: finite embeddings near 1e20, whose squares pass f32::MAX: the
    // checked path returns a finite loss or an error, never an infinity.
    let dev = Cpu::default();
    let good = batch(3);
    let mut far = good.clone();
    far[D + 2] = 1e20;
    let r = |x: &[f32]| rows(&dev, x);
    let inf_at = |what, row, column| MetricLossError::NonFinite {
        what,
        row,
        column,
        value: f32::INFINITY,
    };
    // explicit triplets: row = the triplet, column 0 = d(A,P), 1 = d(A,N)
    assert_eq!(
        TripletLoss
            .try_forward_checked(r(&good).leaky_traced(), r(&far), r(&good))
            .unwrap_err(),
        inf_at("distances", 1, 0)
    );
    assert_eq!(
        SquaredTriplet
            .try_forward_checked(r(&good), r(&good), r(&far))
            .unwrap_err(),
        inf_at("distances", 1, 1)
    );
    assert_eq!(
        SwapTriplet
            .try_forward_checked(r(&good), r(&good), r(&far))
            .unwrap_err(),
        inf_at("distances", 1, 1)
    );
    // pairs: row = the pair, column 0
    let y = PairLabels::from_similar(&[true, false, true]);
    for e in [
        ContrastiveLoss
            .try_forward_checked(r(&good), r(&far), &y)
            .unwrap_err(),
        PosMarginPair
            .try_forward_checked(r(&far), r(&good), &y)
            .unwrap_err(),
    ] {
        assert_eq!(e, inf_at("distances", 1, 0));
    }
    // The unchecked path does not look (documented): not a finite loss.
    assert!(
        !TripletLoss
            .forward(r(&good), r(&far), r(&good))
            .array()
            .is_finite()
    );
    // Just below the overflow the checked path gives the unchecked loss.
    let mut big = good.clone();
    big[D + 2] = 1e18;
    let checked = TripletLoss
        .try_forward_checked(r(&good), r(&big), r(&good))
        .unwrap()
        .array();
    assert!(checked.is_finite() && checked > 1e17, "{checked}");
    assert_eq!(
        checked,
        TripletLoss.forward(r(&good), r(&big), r(&good)).array()
    );
    // Finite distances whose reduction overflows: what = "loss".
    let huge = [1e38f32, 1e38, 1e38, 0.0, 1e38, 1e38, 1e38, 0.0];
    let zeros = [0.0f32; 8];
    assert_eq!(
        SumManhattanTriplet
            .try_forward_checked(r(&huge), r(&zeros), r(&huge))
            .unwrap_err(),
        inf_at("loss", 0, 0)
    );
    // Normalisation is scale-free: a row near 1e20 is normalised right (the
    // norm from the rescaled row), not to zeros, on every path.
    let mut scaled = far.clone();
    scaled[D..2 * D].iter_mut().for_each(|v| *v *= 1e-19);
    for (name, huge_loss, tame_loss) in [
        (
            "facenet",
            FaceNet
                .try_forward_checked(r(&good), r(&far), r(&good))
                .unwrap()
                .array(),
            FaceNet.forward(r(&good), r(&scaled), r(&good)).array(),
        ),
        (
            "cosine",
            CosineTriplet
                .try_forward_checked(r(&good), r(&far), r(&good))
                .unwrap()
                .array(),
            CosineTriplet
                .forward(r(&good), r(&scaled), r(&good))
                .array(),
        ),
    ] {
        assert!(
            (huge_loss - tame_loss).abs() < 1e-6,
            "{name}: {huge_loss} vs {tame_loss}"
        );
    }
}

// ---------------------------------------------------- degenerate geometry

#[test]
fn zero_vectors_under_the_cosine_distance_are_at_distance_one() {
    // 28: zero anchor, zero positive, zero rows in a mined batch
    let dev = Cpu::default();
    let zero = rows(&dev, &[0.0; 2 * D]);
    let other = rows(&dev, &batch(2));
    let d = metric_loss::distance::cosine(zero.clone(), other.clone()).unwrap();
    assert_eq!(d.as_vec(), vec![1.0, 1.0]);
    let d = metric_loss::distance::cosine(zero.clone(), zero.clone()).unwrap();
    assert_eq!(d.as_vec(), vec![1.0, 1.0]);
    for normalize in [false, true] {
        let (l, g) = if normalize {
            let l = CosineNormTriplet.forward(zero.leaky_trace(), zero.clone(), other.clone());
            let v = l.array();
            (v, l.backward().get(&zero).as_vec())
        } else {
            let l = CosineTriplet.forward(zero.leaky_trace(), zero.clone(), other.clone());
            let v = l.array();
            (v, l.backward().get(&zero).as_vec())
        };
        assert!(l.is_finite() && l >= 0.0, "{l}");
        assert!(all_finite(&g), "{g:?}");
    }
    let mut x = batch(4);
    x[..D].fill(0.0);
    x[2 * D..3 * D].fill(0.0);
    let t = rows(&dev, &x);
    let m = CosineTriplet.mined(&BatchHard, t.leaky_trace(), &[0, 0, 1, 1]);
    assert!(m.loss.array().is_finite());
    assert!(all_finite(&m.loss.backward().get(&t).as_vec()));
    let y = PairLabels::from_similar(&[true, false]);
    let l = CosinePair.forward(zero.leaky_trace(), other, &y);
    assert!(l.array().is_finite());
    assert!(all_finite(&l.backward().get(&zero).as_vec()));
}

fn identical_case<L: TripletCriterion<Output<usize> = ()>>(loss: &L, name: &str) {
    let dev = Cpu::default();
    for value in [0.0f32, 0.7] {
        let x = rows(&dev, &[value; 3 * D]);
        // explicit: one tensor three times, traced once
        let l = loss.forward(x.leaky_trace(), x.clone(), x.clone());
        assert!(l.array().is_finite(), "{name} at {value}");
        let g = l.backward().get(&x).as_vec();
        assert!(all_finite(&g), "{name} at {value}: {g:?}");
        // mined: every miner
        let labels = [0, 0, 1];
        for which in 0..3 {
            let m = match which {
                0 => loss.mined(&BatchHard, x.leaky_trace(), &labels),
                1 => loss.mined(&BatchAll::default(), x.leaky_trace(), &labels),
                _ => loss.mined(&SemiHard::default(), x.leaky_trace(), &labels),
            };
            assert!(
                m.loss.array().is_finite(),
                "{name} miner {which} at {value}"
            );
            let g = m.loss.backward().get(&x).as_vec();
            assert!(all_finite(&g), "{name} miner {which} at {value}: {g:?}");
        }
    }
}

#[test]
fn identical_embeddings_give_finite_gradients_for_every_distance() {
    // 29: all rows equal (and all zero), 12 distance/normalize combinations
    identical_case(&TripletLoss, "euclidean");
    identical_case(&NormTriplet, "euclidean normalize");
    identical_case(&SquaredTriplet, "squared");
    identical_case(&FaceNet, "squared normalize");
    identical_case(&SwapTriplet, "swap");
    identical_case(&SoftMarginTriplet, "soft");
    identical_case(&CosineTriplet, "cosine");
    identical_case(&CosineNormTriplet, "cosine normalize");
    identical_case(&ManhattanTriplet, "manhattan");
    identical_case(&ManhattanNormTriplet, "manhattan normalize");
    identical_case(&DotTriplet, "dot");
    identical_case(&DotNormTriplet, "dot normalize");
}

// ---------------------------------------------------------------- margins

#[test]
fn bad_run_time_margins_are_typed_errors() {
    // 30-33: negative (twice), NaN, infinite (both signs); each on a triplet
    // loss, a pair loss and an already margined loss
    for m in [-1.0f32, -0.0001, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let e = TripletLoss.with_margin(m).unwrap_err();
        assert!(
            matches!(e, MetricLossError::InvalidMargin { value } if value.to_bits() == m.to_bits()),
            "{e:?}"
        );
        assert!(matches!(
            ContrastiveLoss.with_margin(m),
            Err(MetricLossError::InvalidMargin { .. })
        ));
        assert!(matches!(
            FaceNet.with_margin(0.5).unwrap().with_margin(m),
            Err(MetricLossError::InvalidMargin { .. })
        ));
    }
    // 34: a margin not above pos_margin (0.2)
    assert!(matches!(
        PosMarginPair.with_margin(0.2),
        Err(MetricLossError::InvalidMargin { .. })
    ));
    assert!(PosMarginPair.with_margin(0.3).is_ok());
    // 35: an already margined pair loss re-margined below pos_margin
    assert!(matches!(
        PosMarginPair.with_margin(0.5).unwrap().with_margin(0.1),
        Err(MetricLossError::InvalidMargin { .. })
    ));
    // 0 is a valid margin
    assert_eq!(TripletLoss.with_margin(0.0).unwrap().margin(), 0.0);
}

// ------------------------------------------------------------------- IDX

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metric-loss-rel-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn truncated_and_corrupt_idx_files_are_typed_errors_naming_the_file() {
    let dir = temp_dir("idx");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let header = [0u8, 0, 8, 1, 0, 0, 0, 5];
    let cases: Vec<(PathBuf, &str)> = vec![
        // 36: truncated header
        (write("short-header", &header[..6]), "TruncatedHeader"),
        // 37: truncated payload (5 labels announced, 3 present)
        (
            write("short-payload", &[&header[..], &[1, 2, 3]].concat()),
            "PayloadLength",
        ),
        // 38: wrong magic
        (
            write("bad-magic", &[1, 2, 8, 1, 0, 0, 0, 1, 7]),
            "WrongMagic",
        ),
        // 39: gzip magic, garbage after it
        (write("bad.gz", &[0x1f, 0x8b, 8, 0, 1, 2, 3]), "BadGzip"),
        // 40: float element type
        (
            write("float", &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
            "UnsupportedType",
        ),
        // 41: an empty file
        (write("empty", &[]), "TruncatedHeader"),
        // 42: the file does not exist
        (dir.join("no-such-file"), "Io"),
    ];
    for (path, kind) in cases {
        let e = IdxArray::read(&path).unwrap_err();
        let debug = format!("{e:?}");
        assert!(debug.starts_with(kind), "{path:?}: {debug}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    // 43: a truncated copy of the real (gzip) labels file
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/labels-idx1-ubyte.gz"
    ))
    .unwrap();
    let cut = write("cut.gz", &real[..real.len() / 2]);
    let e = IdxArray::read(&cut).unwrap_err();
    assert!(
        matches!(e, IdxError::BadGzip { .. } | IdxError::PayloadLength { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains(&cut.display().to_string()));
    // 44: a folder with an images file but no labels file
    let half = temp_dir("half");
    std::fs::write(half.join("images-idx3-ubyte"), [0u8, 0, 8, 3, 0, 0, 0, 0]).unwrap();
    let e = Mnist::load(&half).unwrap_err();
    assert!(matches!(e, IdxError::MissingFile { .. }), "{e:?}");
    assert!(e.to_string().contains(&half.display().to_string()));
}

#[test]
fn a_missing_data_folder_is_a_typed_error_naming_it() {
    // 45: Mnist::load
    let missing = std::env::temp_dir().join("metric-loss-rel-no-such-folder");
    let e = Mnist::load(&missing).unwrap_err();
    assert!(matches!(e, IdxError::MissingFolder { .. }), "{e:?}");
    assert!(e.to_string().contains(&missing.display().to_string()));
    // 46: --data in the examples
    let mut args = common::Args::smoke(1);
    args.data = missing.clone();
    let e = common::run_triplet(&args).unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    // 47: --data pointing at a file, not a folder
    args.data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    assert!(common::load(&args).is_err());
}

// ------------------------------------------------------------------ panics

fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let p = std::panic::catch_unwind(f).expect_err("should panic");
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}

#[test]
fn the_panicking_variants_panic_with_the_errors_message() {
    let dev = Cpu::default();
    let empty = rows(&dev, &[]);
    let two = rows(&dev, &batch(2));
    // 48: empty explicit triplet batch
    let e = empty.clone();
    let msg = panic_message(move || {
        TripletLoss.forward(e.clone(), e.clone(), e);
    });
    assert_eq!(
        msg,
        format!(
            "metric-loss: {}",
            MetricLossError::EmptyBatch { what: "anchor" }
        )
    );
    // 49: pair labels of the wrong length
    let t = two.clone();
    let msg = panic_message(move || {
        ContrastiveLoss.forward(t.clone(), t, &PairLabels::from_similar(&[true]));
    });
    assert_eq!(
        msg,
        format!(
            "metric-loss: {}",
            MetricLossError::LabelCount {
                labels: 1,
                batch: 2
            }
        )
    );
    // 50: mined with NaN embeddings
    let mut x = batch(4);
    x[5] = f32::NAN;
    let t = rows(&dev, &x);
    let msg = panic_message(move || {
        TripletLoss.mined(&BatchHard, t, &[0, 0, 1, 1]);
    });
    assert!(msg.starts_with("metric-loss: non-finite"), "{msg}");
    // 51: mined on an empty batch with a pair miner
    let msg = panic_message(move || {
        ContrastiveLoss.mined(&HardPairs, empty, &[]);
    });
    assert!(msg.starts_with("metric-loss: empty batch"), "{msg}");
    // 52: a sampler with K = 1
    let msg = panic_message(|| {
        PkSampler::new(&[0, 0, 1, 1], 2, 1, 0);
    });
    assert!(
        msg.starts_with("metric-loss: invalid configuration"),
        "{msg}"
    );
}

// ------------------------------------------------------------- determinism

/// A few training steps with `seed`, then the embeddings of 40 digits.
fn train_and_embed(mnist: &Mnist, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut args = common::Args::smoke(4);
    args.seed = seed;
    let dev = common::device(seed);
    let mut net = common::build::<common::Encoder>(&dev);
    let loss = FaceNet;
    let t = common::train::<128, _, _>(
        &args,
        &dev,
        mnist,
        &mut net,
        &common::WithinBatch(loss, BatchHard),
    )
    .unwrap();
    let idx: Vec<usize> = (common::TRAIN..common::TRAIN + 40).collect();
    let x = common::batch_tensor(&dev, mnist, &idx);
    use dfdx::nn::Module;
    (t.losses, net.forward(x).as_vec())
}

#[test]
fn training_is_bitwise_deterministic_for_a_seed() {
    let mnist = common::load(&common::Args::smoke(1)).unwrap();
    let (losses_a, a) = train_and_embed(&mnist, 7);
    let (losses_b, b) = train_and_embed(&mnist, 7);
    assert_eq!(losses_a, losses_b);
    assert_eq!(a, b);
    let (_, c) = train_and_embed(&mnist, 8);
    assert_ne!(a, c);
    assert!(all_finite(&a));
}
