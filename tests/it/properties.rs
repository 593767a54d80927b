//! Property tests over random batches: `B` in `1..8` rows (`2..8` where a
//! batch needs two classes), `D = 4`, values in `-3..3`, random labels, 256
//! cases per property.
//!
//! References are computed independently here, in `f64`, from the raw rows;
//! the per-anchor batch-hard/batch-all comparison uses losses declared with
//! `reduction = none` and the miners' own triplet lists (see
//! `batch_hard_dominates_batch_all_per_anchor`).

use metric_loss::miners::Triplet;
use metric_loss::prelude::*;
use proptest::prelude::*;

const D: usize = 4;
const CASES: u32 = 256;
type Rows<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn rows(dev: &Cpu, data: &[f32]) -> Rows {
    dev.tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

#[metric_loss(triplet, distance = cosine, margin = 0.3)]
#[derive(Clone, Copy)]
struct CosineTriplet;
#[metric_loss(triplet, distance = manhattan, margin = 0.5)]
#[derive(Clone, Copy)]
struct ManhattanTriplet;
#[metric_loss(triplet, distance = euclidean, normalize, margin = 0.2)]
#[derive(Clone, Copy)]
struct NormTriplet;
#[metric_loss(triplet, distance = euclidean, squared, margin = 0.2)]
#[derive(Clone, Copy)]
struct SquaredTriplet;
#[metric_loss(triplet, distance = euclidean, swap, margin = 0.2)]
#[derive(Clone, Copy)]
struct SwapTriplet;
/// `TripletLoss` without the reduction: one hinge per triplet.
#[metric_loss(triplet, distance = euclidean, margin = 0.2, reduction = none)]
#[derive(Clone, Copy)]
struct PerTriplet;
/// `ManhattanTriplet` without the reduction.
#[metric_loss(triplet, distance = manhattan, margin = 0.5, reduction = none)]
#[derive(Clone, Copy)]
struct PerTripletL1;

// ------------------------------------------------------------- helpers

/// `(anchor, positive, negative)` rows of one explicit batch.
#[derive(Debug, Clone)]
struct Apn {
    a: Vec<f32>,
    p: Vec<f32>,
    n: Vec<f32>,
}

fn apn() -> impl Strategy<Value = Apn> {
    (1usize..8).prop_flat_map(|b| {
        let v = || prop::collection::vec(-3.0f32..3.0, b * D);
        (v(), v(), v()).prop_map(|(a, p, n)| Apn { a, p, n })
    })
}

/// One batch for mining: rows and labels with at least two classes.
fn labelled() -> impl Strategy<Value = (Vec<f32>, Vec<usize>)> {
    (2usize..8).prop_flat_map(|b| {
        (
            prop::collection::vec(-3.0f32..3.0, b * D),
            prop::collection::vec(0usize..3, b)
                .prop_filter("two classes", |l| l.iter().any(|&c| c != l[0])),
        )
    })
}

fn value<L: TripletCriterion<Output<usize> = ()>>(l: &L, x: &Apn) -> f32 {
    let dev = Cpu::default();
    l.try_forward(rows(&dev, &x.a), rows(&dev, &x.p), rows(&dev, &x.n))
        .unwrap()
        .array()
}

fn mined<L: TripletCriterion<Output<usize> = ()>, M: TripletMiner>(
    l: &L,
    m: &M,
    x: &[f32],
    labels: &[usize],
) -> f32 {
    let dev = Cpu::default();
    l.try_mined(m, rows(&dev, x), labels).unwrap().loss.array()
}

fn pair_value(x: &Apn, similar: &[bool]) -> f32 {
    let dev = Cpu::default();
    let y = PairLabels::from_similar(&similar[..x.a.len() / D]);
    ContrastiveLoss
        .try_forward(rows(&dev, &x.a), rows(&dev, &x.p), &y)
        .unwrap()
        .array()
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// The explicit losses, by name, as values of one batch.
fn explicit_values(x: &Apn, similar: &[bool]) -> Vec<(&'static str, f32)> {
    vec![
        ("triplet", value(&TripletLoss, x)),
        ("facenet", value(&FaceNet, x)),
        ("soft", value(&SoftMarginTriplet, x)),
        ("cosine", value(&CosineTriplet, x)),
        ("manhattan", value(&ManhattanTriplet, x)),
        ("contrastive", pair_value(x, similar)),
    ]
}

/// The mined losses (`reduction = mean`), by name.
fn mined_values(x: &[f32], labels: &[usize]) -> Vec<(&'static str, f32)> {
    let dev = Cpu::default();
    vec![
        ("triplet/hard", mined(&TripletLoss, &BatchHard, x, labels)),
        (
            "triplet/all",
            mined(&TripletLoss, &BatchAll::default(), x, labels),
        ),
        ("facenet/hard", mined(&FaceNet, &BatchHard, x, labels)),
        (
            "cosine/all",
            mined(&CosineTriplet, &BatchAll::default(), x, labels),
        ),
        (
            "manhattan/hard",
            mined(&ManhattanTriplet, &BatchHard, x, labels),
        ),
        (
            "soft/hard",
            mined(&SoftMarginTriplet, &BatchHard, x, labels),
        ),
        (
            "contrastive/all",
            ContrastiveLoss
                .try_mined(&AllPairs, rows(&dev, x), labels)
                .unwrap()
                .loss
                .array(),
        ),
    ]
}

fn row(x: &[f32], i: usize) -> &[f32] {
    &x[i * D..(i + 1) * D]
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn l1(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum()
}

fn permute(x: &[f32], perm: &[usize]) -> Vec<f32> {
    perm.iter().flat_map(|&i| row(x, i).to_vec()).collect()
}

fn permutation(b: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..b).collect::<Vec<usize>>()).prop_shuffle()
}

/// `as_vec`, also for an empty tensor (dfdx's `as_vec` indexes out of
/// bounds on one: a `reduction = none` mined loss with nothing mined is one).
fn host(t: &Tensor<(usize,), f32, Cpu>) -> Vec<f32> {
    if t.shape().0 == 0 {
        Vec::new()
    } else {
        t.as_vec()
    }
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|g| g.is_finite())
}

fn explicit_grads<L: TripletCriterion<Output<usize> = ()>>(l: &L, x: &Apn) -> Vec<f32> {
    let dev = Cpu::default();
    let (a, p, n) = (rows(&dev, &x.a), rows(&dev, &x.p), rows(&dev, &x.n));
    let loss = l.forward(a.leaky_trace(), p.leaky_trace(), n.leaky_trace());
    let g = loss.backward();
    [g.get(&a).as_vec(), g.get(&p).as_vec(), g.get(&n).as_vec()].concat()
}

fn mined_grads<L: TripletCriterion<Output<usize> = ()>, M: TripletMiner>(
    l: &L,
    m: &M,
    x: &[f32],
    labels: &[usize],
) -> Vec<f32> {
    let dev = Cpu::default();
    let t = rows(&dev, x);
    l.mined(m, t.leaky_trace(), labels)
        .loss
        .backward()
        .get(&t)
        .as_vec()
}

// ----------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // no source-file persistence for integration tests (proptest cannot
        // find lib.rs from here); failures print the minimal input instead
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every loss is >= 0; the soft-margin loss is > 0.
    #[test]
    fn losses_are_non_negative(
        x in apn(),
        similar in prop::collection::vec(any::<bool>(), 8),
        (m, labels) in labelled(),
    ) {
        for (name, v) in explicit_values(&x, &similar).into_iter().chain(mined_values(&m, &labels)) {
            prop_assert!(v.is_finite(), "{name}: {v}");
            // A mined soft loss is the documented zero loss when nothing can
            // be mined (e.g. no class with two rows), so only explicit is > 0.
            if name == "soft" {
                prop_assert!(v > 0.0, "{name}: {v}");
            } else {
                prop_assert!(v >= 0.0, "{name}: {v}");
            }
        }
    }

    /// A hinge triplet loss is zero exactly when `d(A,P) + m <= d(A,N)` for
    /// every row, per row and for the mean (Euclidean and Manhattan,
    /// references in f64, cases within 1e-4 of the boundary skipped).
    #[test]
    fn hinge_is_zero_exactly_when_every_row_satisfies_the_margin(x in apn()) {
        let dev = Cpu::default();
        let b = x.a.len() / D;
        for (name, margin, dist) in [
            ("euclidean", 0.2f64, l2 as fn(&[f32], &[f32]) -> f64),
            ("manhattan", 0.5, l1),
        ] {
            let slack: Vec<f64> = (0..b)
                .map(|i| dist(row(&x.a, i), row(&x.p, i)) + margin - dist(row(&x.a, i), row(&x.n, i)))
                .collect();
            prop_assume!(slack.iter().all(|s| s.abs() > 1e-4));
            let (per_row, mean) = if name == "euclidean" {
                let t = PerTriplet.forward(rows(&dev, &x.a), rows(&dev, &x.p), rows(&dev, &x.n));
                (t.as_vec(), value(&TripletLoss, &x))
            } else {
                let t = PerTripletL1.forward(rows(&dev, &x.a), rows(&dev, &x.p), rows(&dev, &x.n));
                (t.as_vec(), value(&ManhattanTriplet, &x))
            };
            for (i, (&l, &s)) in per_row.iter().zip(&slack).enumerate() {
                prop_assert_eq!(l == 0.0, s < 0.0, "{} row {}: loss {} slack {}", name, i, l, s);
                if s > 0.0 {
                    prop_assert!((l as f64 - s).abs() < 1e-4 * (1.0 + s), "{name} row {i}: {l} vs {s}");
                }
            }
            prop_assert_eq!(mean == 0.0, slack.iter().all(|&s| s < 0.0), "{}: mean {}", name, mean);
        }
    }

    /// Explicit losses are invariant under a permutation of the rows of
    /// `a`, `p`, `n` (and the pair labels) together.
    #[test]
    fn explicit_losses_are_permutation_invariant(
        (x, perm) in apn().prop_flat_map(|x| { let b = x.a.len() / D; (Just(x), permutation(b)) }),
        similar in prop::collection::vec(any::<bool>(), 8),
    ) {
        let px = Apn { a: permute(&x.a, &perm), p: permute(&x.p, &perm), n: permute(&x.n, &perm) };
        let mut psim = similar.clone();
        for (k, &i) in perm.iter().enumerate() {
            psim[k] = similar[i];
        }
        for ((name, v), (_, w)) in explicit_values(&x, &similar).into_iter().zip(explicit_values(&px, &psim)) {
            prop_assert!(close(v, w, 1e-5), "{name}: {v} vs {w}");
        }
    }

    /// Mined losses (`reduction = mean`) are invariant under a permutation
    /// of the embeddings and labels together.
    #[test]
    fn mined_losses_are_permutation_invariant(
        ((x, labels), perm) in labelled().prop_flat_map(|(x, l)| { let b = l.len(); (Just((x, l)), permutation(b)) }),
    ) {
        let px = permute(&x, &perm);
        let pl: Vec<usize> = perm.iter().map(|&i| labels[i]).collect();
        for ((name, v), (_, w)) in mined_values(&x, &labels).into_iter().zip(mined_values(&px, &pl)) {
            prop_assert!(close(v, w, 1e-5), "{name}: {v} vs {w}");
        }
    }

    /// Euclidean losses do not change when every embedding moves by the
    /// same vector (explicit: 1e-4 relative; mined: see the tolerance below).
    #[test]
    fn euclidean_losses_are_translation_invariant(
        x in apn(),
        (m, labels) in labelled(),
        shift in prop::collection::vec(-3.0f32..3.0, D),
        similar in prop::collection::vec(any::<bool>(), 8),
    ) {
        let mv = |v: &[f32]| -> Vec<f32> { v.iter().enumerate().map(|(i, &x)| x + shift[i % D]).collect() };
        let tx = Apn { a: mv(&x.a), p: mv(&x.p), n: mv(&x.n) };
        for (name, v, w) in [
            ("triplet", value(&TripletLoss, &x), value(&TripletLoss, &tx)),
            ("squared", value(&SquaredTriplet, &x), value(&SquaredTriplet, &tx)),
            ("swap", value(&SwapTriplet, &x), value(&SwapTriplet, &tx)),
            ("soft", value(&SoftMarginTriplet, &x), value(&SoftMarginTriplet, &tx)),
            ("contrastive", pair_value(&x, &similar), pair_value(&tx, &similar)),
        ] {
            prop_assert!(close(v, w, 1e-4), "{name}: {v} vs {w}");
        }
        let tm = mv(&m);
        for (name, v, w) in [
            ("triplet/hard", mined(&TripletLoss, &BatchHard, &m, &labels), mined(&TripletLoss, &BatchHard, &tm, &labels)),
            ("triplet/all", mined(&TripletLoss, &BatchAll::default(), &m, &labels), mined(&TripletLoss, &BatchAll::default(), &tm, &labels)),
        ] {
            prop_assert!(close(v, w, 1e-4), "{name}: {v} vs {w}");
        }
    }

    /// Losses with `normalize` (and the cosine distance) do not change when
    /// each row is scaled by its own positive factor.
    #[test]
    fn normalized_losses_are_scale_invariant(
        x in apn(),
        (m, labels) in labelled(),
        factors in prop::collection::vec(0.1f32..10.0, 3 * 8),
    ) {
        let sc = |v: &[f32], off: usize| -> Vec<f32> { v.iter().enumerate().map(|(i, &x)| x * factors[off + i / D]).collect() };
        let sx = Apn { a: sc(&x.a, 0), p: sc(&x.p, 8), n: sc(&x.n, 16) };
        let sm = sc(&m, 0);
        for (name, v, w) in [
            ("facenet", value(&FaceNet, &x), value(&FaceNet, &sx)),
            ("normalized", value(&NormTriplet, &x), value(&NormTriplet, &sx)),
            ("cosine", value(&CosineTriplet, &x), value(&CosineTriplet, &sx)),
            ("facenet/hard", mined(&FaceNet, &BatchHard, &m, &labels), mined(&FaceNet, &BatchHard, &sm, &labels)),
            ("normalized/all", mined(&NormTriplet, &BatchAll::default(), &m, &labels), mined(&NormTriplet, &BatchAll::default(), &sm, &labels)),
        ] {
            prop_assert!(close(v, w, 1e-4), "{name}: {v} vs {w}");
        }
    }

    /// Gradients are finite everywhere, also with a row copied onto another
    /// (zero distances, and duplicate rows in the mined batch).
    #[test]
    fn gradients_are_finite_with_planted_duplicates(
        mut x in apn(),
        (mut m, labels) in labelled(),
        dup in (0usize..3, 0usize..8, 0usize..3, 0usize..8, 0usize..8, 0usize..8),
    ) {
        let b = x.a.len() / D;
        let (from_t, from_r, to_t, to_r, mfrom, mto) = dup;
        let src: Vec<f32> = row([&x.a, &x.p, &x.n][from_t], from_r % b).to_vec();
        [&mut x.a, &mut x.p, &mut x.n][to_t][(to_r % b) * D..(to_r % b + 1) * D].copy_from_slice(&src);
        let mb = labels.len();
        let msrc = row(&m, mfrom % mb).to_vec();
        m[(mto % mb) * D..(mto % mb + 1) * D].copy_from_slice(&msrc);
        for (name, g) in [
            ("triplet", explicit_grads(&TripletLoss, &x)),
            ("facenet", explicit_grads(&FaceNet, &x)),
            ("soft", explicit_grads(&SoftMarginTriplet, &x)),
            ("cosine", explicit_grads(&CosineTriplet, &x)),
            ("manhattan", explicit_grads(&ManhattanTriplet, &x)),
            ("normalized", explicit_grads(&NormTriplet, &x)),
            ("swap", explicit_grads(&SwapTriplet, &x)),
            ("triplet/hard", mined_grads(&TripletLoss, &BatchHard, &m, &labels)),
            ("triplet/all", mined_grads(&TripletLoss, &BatchAll::default(), &m, &labels)),
            ("triplet/semi", mined_grads(&TripletLoss, &SemiHard::default(), &m, &labels)),
            ("facenet/hard", mined_grads(&FaceNet, &BatchHard, &m, &labels)),
            ("cosine/all", mined_grads(&CosineTriplet, &BatchAll::default(), &m, &labels)),
            ("manhattan/hard", mined_grads(&ManhattanTriplet, &BatchHard, &m, &labels)),
            ("swap/hard", mined_grads(&SwapTriplet, &BatchHard, &m, &labels)),
        ] {
            prop_assert!(all_finite(&g), "{name}: {g:?}");
        }
        let dev = Cpu::default();
        let (a, p) = (rows(&dev, &x.a), rows(&dev, &x.p));
        let y = PairLabels::from_similar(&labels.iter().cycle().take(b).map(|&l| l == 0).collect::<Vec<_>>());
        let g = ContrastiveLoss.forward(a.leaky_trace(), p.leaky_trace(), &y).backward();
        prop_assert!(all_finite(&g.get(&a).as_vec()) && all_finite(&g.get(&p).as_vec()));
        let t = rows(&dev, &m);
        let g = ContrastiveLoss.mined(&HardPairs, t.leaky_trace(), &labels).loss.backward();
        prop_assert!(all_finite(&g.get(&t).as_vec()));
    }

    /// Per anchor, the batch-hard hinge is >= the mean of that anchor's
    /// batch-all hinges (in fact it equals their maximum, since the hinge is
    /// monotone).
    ///
    /// How: `PerTriplet`/`PerTripletL1` are the losses with
    /// `reduction = none`, so `mined` returns one hinge per mined triplet, in
    /// the miner's order. Which anchor each item belongs to is read from the
    /// miners' own output on an f64-free reference matrix
    /// (`DistanceMatrix::euclidean`): for `BatchHard` and for `BatchAll`
    /// without `positive_loss_only`, which triplets exist (and in which order)
    /// depends on the labels only; the test checks the counts match.
    #[test]
    fn batch_hard_dominates_batch_all_per_anchor((x, labels) in labelled()) {
        let dev = Cpu::default();
        let reference = DistanceMatrix::euclidean(&x, D, false).unwrap();
        let hard_t: Vec<Triplet> = BatchHard.try_mine(&reference, &labels, 0.2).unwrap();
        let all_t: Vec<Triplet> = BatchAll::default().try_mine(&reference, &labels, 0.2).unwrap();
        for l1_distance in [false, true] {
            let (hard, all) = if l1_distance {
                (
                    host(&PerTripletL1.mined(&BatchHard, rows(&dev, &x), &labels).loss),
                    host(&PerTripletL1.mined(&BatchAll::default(), rows(&dev, &x), &labels).loss),
                )
            } else {
                (
                    host(&PerTriplet.mined(&BatchHard, rows(&dev, &x), &labels).loss),
                    host(&PerTriplet.mined(&BatchAll::default(), rows(&dev, &x), &labels).loss),
                )
            };
            prop_assert_eq!(hard.len(), hard_t.len());
            prop_assert_eq!(all.len(), all_t.len());
            for (h, t) in hard.iter().zip(&hard_t) {
                let mine: Vec<f32> = all_t.iter().zip(&all)
                    .filter(|(u, _)| u.anchor == t.anchor)
                    .map(|(_, &l)| l)
                    .collect();
                prop_assert!(!mine.is_empty());
                let mean = mine.iter().sum::<f32>() / mine.len() as f32;
                let max = mine.iter().copied().fold(f32::MIN, f32::max);
                prop_assert!(*h >= mean - 1e-5, "anchor {}: hard {} < mean {}", t.anchor, h, mean);
                prop_assert!(close(*h, max, 1e-5), "anchor {}: hard {} vs max {}", t.anchor, h, max);
            }
        }
    }
}
