//! Mined losses on the tape: the mined loss equals the explicit loss on the
//! mined triplets, the fused CPU batch-hard path equals the generic one (value
//! and gradient, 1e-5), finite-difference checks, and the edge cases.

use metric_loss::miners::{Triplet, TripletMiner};
use metric_loss::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

const D: usize = 4;
type Rows<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn rows(dev: &Cpu, data: &[f32]) -> Rows {
    dev.tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

/// BatchHard's choices without its fused fast path: forces the generic tape path.
struct Unfused<M>(M);
impl<M: TripletMiner> TripletMiner for Unfused<M> {
    fn try_mine(
        &self,
        d: &DistanceMatrix,
        l: &[usize],
        m: f32,
    ) -> Result<Vec<Triplet>, MetricLossError> {
        self.0.try_mine(d, l, m)
    }
    fn name(&self) -> &'static str {
        "unfused"
    }
}

fn batch(seed: u64, n: usize, classes: usize) -> (Vec<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = (0..n * D).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let labels = (0..n).map(|i| i % classes).collect();
    (x, labels)
}

fn grad_of<L: TripletCriterion<Output<usize> = ()>, M: TripletMiner>(
    loss: &L,
    miner: &M,
    x: &[f32],
    labels: &[usize],
) -> (f32, Vec<f32>) {
    let dev = Cpu::default();
    let t = rows(&dev, x);
    let l = loss.mined(miner, t.leaky_trace(), labels).loss;
    let v = l.array();
    let g = l.backward();
    (v, g.get(&t).as_vec())
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[metric_loss(triplet, squared, margin = 0.3)]
#[derive(Clone, Copy)]
struct SquaredTriplet;

#[metric_loss(triplet, normalize, soft, reduction = sum)]
#[derive(Clone, Copy)]
struct NormSoft;

#[test]
fn fused_batch_hard_equals_generic_path() {
    for seed in 0..5 {
        let (mut x, labels) = batch(seed, 24, 4);
        // a duplicated row: a zero distance inside the batch
        for c in 0..D {
            x[5 * D + c] = x[D + c];
        }
        let (v1, g1) = grad_of(&TripletLoss, &BatchHard, &x, &labels);
        let (v2, g2) = grad_of(&TripletLoss, &Unfused(BatchHard), &x, &labels);
        assert!((v1 - v2).abs() < 1e-5, "{v1} vs {v2}");
        assert_close(&g1, &g2, "TripletLoss grad");
        let (v1, g1) = grad_of(&SquaredTriplet, &BatchHard, &x, &labels);
        let (v2, g2) = grad_of(&SquaredTriplet, &Unfused(BatchHard), &x, &labels);
        assert!((v1 - v2).abs() < 1e-5);
        assert_close(&g1, &g2, "squared grad");
        let (v1, g1) = grad_of(&NormSoft, &BatchHard, &x, &labels);
        let (v2, g2) = grad_of(&NormSoft, &Unfused(BatchHard), &x, &labels);
        assert!((v1 - v2).abs() < 1e-5);
        assert_close(&g1, &g2, "normalized soft grad");
    }
}

#[test]
fn mined_equals_explicit_on_the_mined_triplets() {
    let dev = Cpu::default();
    let (x, labels) = batch(11, 16, 3);
    let miners: Vec<(&str, Box<dyn Fn(&DistanceMatrix) -> Vec<Triplet>>)> = vec![
        (
            "batch_all",
            Box::new(|d| BatchAll::default().mine(d, &labels, 0.2)),
        ),
        (
            "semi_hard",
            Box::new(|d| SemiHard::default().mine(d, &labels, 0.2)),
        ),
    ];
    let host = DistanceMatrix::euclidean(&x, D, false).unwrap();
    for (name, mine) in miners {
        let triplets = mine(&host);
        assert!(!triplets.is_empty(), "{name}");
        let pick = |f: fn(&Triplet) -> usize| {
            let v: Vec<f32> = triplets
                .iter()
                .flat_map(|t| x[f(t) * D..f(t) * D + D].to_vec())
                .collect();
            rows(&dev, &v)
        };
        let explicit = TripletLoss.forward(
            pick(|t| t.anchor),
            pick(|t| t.positive),
            pick(|t| t.negative),
        );
        let mined = match name {
            "batch_all" => TripletLoss.mined(&BatchAll::default(), rows(&dev, &x), &labels),
            _ => TripletLoss.mined(&SemiHard::default(), rows(&dev, &x), &labels),
        };
        assert!(
            (explicit.array() - mined.loss.array()).abs() < 1e-5,
            "{name}"
        );
        assert_eq!(mined.stats.triplets, triplets.len());
    }
}

#[test]
fn mined_gradients_match_finite_differences() {
    #[metric_loss(triplet, distance = manhattan, margin = 0.5)]
    struct Man;
    #[metric_loss(triplet, distance = cosine, margin = 0.5)]
    struct Cos;
    let (x, labels) = batch(21, 12, 3);
    let h = 1e-3;
    let check = |name: &str, f: &dyn Fn(&[f32]) -> (f32, Vec<f32>)| {
        let (_, g) = f(&x);
        for i in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            let num = (f(&p).0 - f(&m).0) / (2.0 * h);
            assert!(
                (num - g[i]).abs() <= 4e-3 + 2e-2 * g[i].abs(),
                "{name}[{i}]: {num} vs {}",
                g[i]
            );
        }
    };
    check("batch_hard fused", &|v| {
        grad_of(&TripletLoss, &BatchHard, v, &labels)
    });
    check("batch_all", &|v| {
        grad_of(&TripletLoss, &BatchAll::default(), v, &labels)
    });
    check("manhattan batch_hard", &|v| {
        grad_of(&Man, &BatchHard, v, &labels)
    });
    check("cosine batch_all", &|v| {
        grad_of(&Cos, &BatchAll::default(), v, &labels)
    });
    check("contrastive all pairs", &|v| {
        let dev = Cpu::default();
        let t = rows(&dev, v);
        let l = ContrastiveLoss
            .mined(&AllPairs, t.leaky_trace(), &labels)
            .loss;
        let val = l.array();
        (val, l.backward().get(&t).as_vec())
    });
}

/// Semi-hard mining is discontinuous (a small move changes which negative is
/// "just farther than the positive"), so finite differences across it are
/// meaningless; with the triplets held fixed, its gradient must equal the
/// explicit loss's on those triplets, scattered back to the batch.
#[test]
fn semi_hard_gradient_equals_explicit_gradient() {
    let dev = Cpu::default();
    let (x, labels) = batch(21, 12, 3);
    let host = DistanceMatrix::euclidean(&x, D, false).unwrap();
    let triplets = SemiHard::default().mine(&host, &labels, 0.2);
    assert!(!triplets.is_empty());
    let t = rows(&dev, &x);
    let mined = TripletLoss
        .mined(&SemiHard::default(), t.leaky_trace(), &labels)
        .loss;
    let g_mined = mined.backward().get(&t).as_vec();
    let pick = |f: fn(&Triplet) -> usize| {
        let v: Vec<f32> = triplets
            .iter()
            .flat_map(|t| x[f(t) * D..f(t) * D + D].to_vec())
            .collect();
        rows(&dev, &v)
    };
    let (a, p, n) = (
        pick(|t| t.anchor),
        pick(|t| t.positive),
        pick(|t| t.negative),
    );
    let g = TripletLoss
        .forward(a.leaky_trace(), p.clone(), n.clone())
        .backward();
    let mut expected = vec![0.0f32; x.len()];
    for (which, tensor) in [(0, &a), (1, &p), (2, &n)] {
        let gv = g.get(tensor).as_vec();
        for (k, t) in triplets.iter().enumerate() {
            let row = [t.anchor, t.positive, t.negative][which];
            for c in 0..D {
                expected[row * D + c] += gv[k * D + c];
            }
        }
    }
    assert_close(&g_mined, &expected, "semi-hard grad");
}

#[test]
fn nothing_to_mine_gives_zero_loss_with_zero_gradient() {
    let (x, _) = batch(3, 8, 1);
    let one_class = vec![7; 8];
    for fused in [true, false] {
        let (v, g) = if fused {
            grad_of(&TripletLoss, &BatchHard, &x, &one_class)
        } else {
            grad_of(&TripletLoss, &Unfused(BatchHard), &x, &one_class)
        };
        assert_eq!(v, 0.0);
        assert!(g.iter().all(|&g| g == 0.0), "{g:?}");
    }
    let dev = Cpu::default();
    let t = rows(&dev, &x);
    let m = ContrastiveLoss.mined(&HardPairs, t.leaky_trace(), &one_class);
    assert_eq!(m.loss.array(), 0.0);
    assert!(m.loss.backward().get(&t).as_vec().iter().all(|&g| g == 0.0));
}

#[test]
fn identical_embeddings_give_finite_gradients_and_raise_the_collapse_alarm() {
    let x = vec![0.25f32; 8 * D];
    let labels: Vec<usize> = (0..8).map(|i| i % 2).collect();
    for fused in [true, false] {
        let dev = Cpu::default();
        let t = rows(&dev, &x);
        let m = if fused {
            TripletLoss.mined(&BatchHard, t.leaky_trace(), &labels)
        } else {
            TripletLoss.mined(&Unfused(BatchHard), t.leaky_trace(), &labels)
        };
        assert!(
            (m.loss.array() - 0.2).abs() < 1e-6,
            "collapsed: every triplet costs the margin"
        );
        assert!(m.stats.collapsed);
        assert!(
            m.loss
                .backward()
                .get(&t)
                .as_vec()
                .iter()
                .all(|g| g.is_finite())
        );
    }
}

#[test]
fn mined_bad_inputs_are_typed_errors() {
    let dev = Cpu::default();
    let (x, labels) = batch(1, 6, 2);
    assert_eq!(
        TripletLoss
            .try_mined(&BatchHard, rows(&dev, &x), &labels[..5])
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 5,
            batch: 6
        }
    );
    assert!(matches!(
        TripletLoss.try_mined(&BatchHard, rows(&dev, &[]), &[]),
        Err(MetricLossError::EmptyBatch { .. })
    ));
}

#[test]
fn batch_hard_at_n4096_d128_runs() {
    // Memory: the fused path holds one N x N matrix (64 MiB here) and no
    // N x N x D intermediate; peak RSS is reported by the bench script.
    let dev = Cpu::default();
    let n = 4096;
    let x: Tensor<(usize, Const<128>), f32, _> = dev.sample_normal_like(&(n, Const));
    let labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
    let m = TripletLoss.mined(&BatchHard, x.leaky_trace(), &labels);
    assert_eq!(m.stats.triplets, n);
    let g = m.loss.backward();
    assert!(g.get(&x).as_vec().iter().all(|v| v.is_finite()));
}
