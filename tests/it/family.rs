//! The ranking family beyond the PML fixtures: values by hand, finite
//! differences, the two paths against each other, numerics at the extremes
//! (temperature 0.01, gamma 256), PML's rules for degenerate batches,
//! statistics and the collapse alarm, and typed errors.

use crate::family_support::{FORMULAS, Fixed, Path, Visit, assert_close, run_dim, with_formula};
use metric_loss::formulas::BatchFormula;
use metric_loss::miners::{Triplet, Tuples};
use metric_loss::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

type Rows<const D: usize, T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn rows<const D: usize>(data: &[f32]) -> Rows<D> {
    Cpu::default().tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

/// Three unit vectors: x0 = (1, 0), x1 = (0.6, 0.8) of class 0, x2 = (0, 1) of
/// class 1. Cosines: s01 = 0.6, s02 = 0, s12 = 0.8; distances d = √(2 − 2s).
const THREE: [f32; 6] = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
const THREE_LABELS: [usize; 3] = [0, 0, 1];

fn value<L: BatchCriterion>(loss: L) -> f64 {
    f64::from(loss.forward(rows::<2>(&THREE), &THREE_LABELS).array())
}

fn ln1pexp(x: f64) -> f64 {
    (1.0 + x.exp()).ln()
}

#[metric_loss(ntxent, temperature = 0.5)]
struct NtXentHalf;

#[metric_loss(supcon, temperature = 1)]
struct SupConOne;

#[metric_loss(circle, m = 0.25, gamma = 1)]
struct CircleMild;

#[metric_loss(margin_loss)]
#[derive(Clone, Copy)]
struct MarginDefault;

#[test]
fn values_by_hand() {
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{what}: {got} vs {want}"
        );
    };
    // multi-similarity (α 2, β 50, λ 0.5), mean over the 3 rows:
    // rows 0 and 1: ½ ln(1 + e^{−2(0.6 − 0.5)}); negatives: row 0 s = 0, row 1 s = 0.8,
    // row 2 (no positive) s = 0 and 0.8
    let pos = 0.5 * ln1pexp(-0.2);
    let ms = (2.0 * pos
        + 0.02 * ln1pexp(-25.0)
        + 0.02 * ln1pexp(15.0)
        + 0.02 * (1.0 + (-25f64).exp() + 15f64.exp()).ln())
        / 3.0;
    close(value(MultiSimilarityLoss), ms, "multi-similarity");
    // NT-Xent, τ 0.5: pair (0,1): x = 1.2, anchor 0's negative x = 0; pair (1,0): negative x = 1.6
    close(
        value(NtXentHalf),
        (ln1pexp(-1.2) + ln1pexp(0.4)) / 2.0,
        "NT-Xent",
    );
    // SupCon, τ 1: rows 0, 1: ln(e^{0.6} + e^{s_neg}) − 0.6; row 2 has no positive (left out)
    let sc = ((0.6f64.exp() + 1.0).ln() - 0.6 + (0.6f64.exp() + 0.8f64.exp()).ln() - 0.6) / 2.0;
    close(value(SupConOne), sc, "SupCon");
    // circle, m 0.25, γ 1: positive logit −(1.25 − 0.6)(0.6 − 0.75) = 0.0975;
    // negative logits (0 + 0.25)(0 − 0.25) = −0.0625 (row 0), 1.05 · 0.55 = 0.5775 (row 1)
    let circle = (ln1pexp(0.0975 - 0.0625) + ln1pexp(0.0975 + 0.5775)) / 2.0;
    close(value(CircleMild), circle, "circle");
    // lifted structure (m_n 1, m_p 0): both positive pairs see the negatives of rows 0 and 1
    let (d01, d02, d12) = (0.8f64.sqrt(), 2f64.sqrt(), 0.4f64.sqrt());
    let both = ((1.0 - d02).exp() + (1.0 - d12).exp()).ln();
    close(
        value(LiftedStructureLoss),
        0.5 * (both + d01).powi(2),
        "lifted",
    );
    // generalized lifted structure: row 2 has no positive and still counts
    let gl = ((d01 + 1.0 - d02).max(0.0) + (d01 + 1.0 - d12).max(0.0) + both.max(0.0)) / 3.0;
    close(
        value(GeneralizedLiftedStructureLoss),
        gl,
        "generalized lifted",
    );
    // margin (α 0.2, β 1.2): triplets (0,1,2), (1,0,2); positives [0.894 − 1]+ = 0;
    // negatives [1.4 − √2]+ = 0 and [1.4 − √0.4]+: one active hinge
    close(value(MarginDefault), 1.4 - d12, "margin");
    // N-pairs: labels 0, 0, 1, 1 → pairs (0, 1) and (2, 3); cross entropy over the positives
    let x4 = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0, -0.6, 0.8];
    let got = NPairsLoss.forward(rows::<2>(&x4), &[0, 0, 1, 1]).array();
    // s(0,1) = 0.6, s(0,3) = −0.6; s(2,1) = 0.8, s(2,3) = 0.8
    let want =
        ((0.6f64.exp() + (-0.6f64).exp()).ln() - 0.6 + (2.0 * 0.8f64.exp()).ln() - 0.8) / 2.0;
    close(f64::from(got), want, "N-pairs");
}

#[metric_loss(multi_similarity, alpha = 2, beta = 4, base = 0.5)]
#[derive(Clone, Copy)]
struct MsMild;

#[metric_loss(circle, m = 0.25, gamma = 4)]
#[derive(Clone, Copy)]
struct CircleFd;

#[metric_loss(ntxent, temperature = 0.5)]
#[derive(Clone, Copy)]
struct NtXentFd;

#[metric_loss(supcon, temperature = 0.5)]
#[derive(Clone, Copy)]
struct SupConFd;

/// 10 rows of width 4: classes of 3, 3, 3 and 1; row 7 repeats row 1 (a
/// positive pair at distance 0) when `duplicate`.
fn batch(seed: u64, duplicate: bool) -> (Vec<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..40).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let labels = vec![0, 0, 1, 1, 2, 2, 3, 0, 1, 2];
    if duplicate {
        for c in 0..4 {
            x[28 + c] = x[4 + c];
        }
    }
    (x, labels)
}

fn finite_differences<L: BatchCriterion + Copy>(loss: L, name: &str) {
    for (seed, duplicate) in [(1, false), (2, true)] {
        let (x, labels) = batch(seed, duplicate);
        let f = |x: &[f32]| loss.forward(rows::<4>(x), &labels).array();
        let t = rows::<4>(&x);
        let l = loss.forward(t.leaky_trace(), &labels);
        let analytic = l.backward().get(&t).as_vec();
        // h = 1e-2: a duplicated row sits at distance 0, and below that the
        // Gram trick's rounding of tiny distances (a few % at 1e-3) swamps the
        // difference quotient
        let h = 1e-2f32;
        for i in 0..x.len() {
            let mut up = x.clone();
            let mut down = x.clone();
            up[i] += h;
            down[i] -= h;
            let numeric = (f(&up) - f(&down)) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() < 2e-3 + 2e-2 * analytic[i].abs(),
                "{name} seed {seed}, x[{i}]: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    finite_differences(MsMild, "multi-similarity");
    finite_differences(NtXentFd, "NT-Xent");
    finite_differences(SupConFd, "SupCon");
    finite_differences(LiftedStructureLoss, "lifted structure");
    finite_differences(
        GeneralizedLiftedStructureLoss,
        "generalized lifted structure",
    );
    finite_differences(NPairsLoss, "N-pairs");
    finite_differences(MarginDefault, "margin");
}

/// Circle loss in `f64` from raw embeddings, its weights `αp = [1 + m − s]+`,
/// `αn = [s + m]+` taken from the cosines of `frozen` (PML detaches them):
/// the function whose derivative the loss's gradient is.
fn circle_with_frozen_weights(x: &[f64], frozen: &[f64], labels: &[usize], m: f64, g: f64) -> f64 {
    let cos = |v: &[f64], i: usize, j: usize| {
        let (a, b) = (&v[4 * i..4 * i + 4], &v[4 * j..4 * j + 4]);
        let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
        let n = |r: &[f64]| r.iter().map(|p| p * p).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    let lse = |v: &[f64]| {
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let n = labels.len();
    let mut losses = Vec::new();
    for i in 0..n {
        let (mut zp, mut zn) = (Vec::new(), Vec::new());
        for j in (0..n).filter(|&j| j != i) {
            let (s, s0) = (cos(x, i, j), cos(frozen, i, j));
            if labels[i] == labels[j] {
                zp.push(-g * (1.0 + m - s0).max(0.0) * (s - (1.0 - m)));
            } else {
                zn.push(g * (s0 + m).max(0.0) * (s - m));
            }
        }
        if !zp.is_empty() && !zn.is_empty() {
            let z = lse(&zp) + lse(&zn);
            losses.push(z.max(0.0) + (-z.abs()).exp().ln_1p());
        }
    }
    let kept: Vec<f64> = losses.into_iter().filter(|l| *l > 0.0).collect();
    kept.iter().sum::<f64>() / kept.len() as f64
}

#[test]
fn circle_gradient_holds_its_weights_constant() {
    for (seed, duplicate) in [(1, false), (2, true)] {
        let (x, labels) = batch(seed, duplicate);
        let t = rows::<4>(&x);
        let analytic = CircleFd
            .forward(t.leaky_trace(), &labels)
            .backward()
            .get(&t)
            .as_vec();
        let x0: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let h = 1e-4;
        for i in 0..x.len() {
            let mut up = x0.clone();
            let mut down = x0.clone();
            up[i] += h;
            down[i] -= h;
            let f = |v: &[f64]| circle_with_frozen_weights(v, &x0, &labels, 0.25, 4.0);
            let numeric = ((f(&up) - f(&down)) / (2.0 * h)) as f32;
            assert!(
                (numeric - analytic[i]).abs() < 1e-3 + 1e-2 * analytic[i].abs(),
                "seed {seed}, x[{i}]: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
    }
}

struct BothPaths<'a> {
    x: &'a [f32],
    labels: &'a [usize],
    tuples: &'a Tuples,
}

impl Visit for BothPaths<'_> {
    fn visit<F: BatchFormula>(&mut self, f: F) {
        let (vd, gd) = run_dim(&f, 8, self.x, self.labels, self.tuples, Path::Device);
        let (vg, gg) = run_dim(&f, 8, self.x, self.labels, self.tuples, Path::Generic);
        let (vf, gf) = run_dim(&f, 8, self.x, self.labels, self.tuples, Path::Fused);
        let what = format!("{} {:?}", F::NAME, self.tuples);
        assert_close(&[vd], &[vg], 1e-5, &format!("{what}: value"));
        assert_close(&gd, &gg, 1e-5, &format!("{what}: grad"));
        assert_close(&[vf], &[vg], 1e-5, &format!("{what}: fused value"));
        assert_close(&gf, &gg, 1e-5, &format!("{what}: fused grad"));
    }
}

#[test]
fn the_row_form_equals_the_tape_ops() {
    let mut rng = StdRng::seed_from_u64(9);
    for round in 0..4 {
        let n = 30;
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..6)).collect();
        let mut x: Vec<f32> = (0..n * 8).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        x.copy_within(0..8, 8 * 5); // a duplicate
        let mut triplets = Vec::new();
        while triplets.len() < 50 {
            let (a, p, q) = (
                rng.gen_range(0..n),
                rng.gen_range(0..n),
                rng.gen_range(0..n),
            );
            if a != p && labels[a] == labels[p] && labels[q] != labels[a] {
                triplets.push(Triplet {
                    anchor: a,
                    positive: p,
                    negative: q,
                });
            }
        }
        let (pos, neg) = Tuples::All.to_pairs(&labels);
        let picked = Tuples::Pairs {
            positive: pos.iter().copied().step_by(2 + round).collect(),
            negative: neg
                .iter()
                .copied()
                .step_by(3 + round)
                .chain(neg.iter().copied().take(9))
                .collect(),
        };
        for tuples in [Tuples::All, picked, Tuples::Triplets(triplets)] {
            for name in FORMULAS {
                let mut v = BothPaths {
                    x: &x,
                    labels: &labels,
                    tuples: &tuples,
                };
                with_formula(name, &serde_json::Value::Null, &mut v);
            }
        }
    }
}

#[metric_loss(ntxent, temperature = 0.01)]
#[derive(Clone, Copy)]
struct NtXentCold;

#[metric_loss(supcon, temperature = 0.01)]
#[derive(Clone, Copy)]
struct SupConCold;

#[metric_loss(circle, m = 0.25, gamma = 256)]
#[derive(Clone, Copy)]
struct CircleSharp;

fn finite_everywhere<L: BatchCriterion + Copy>(loss: L, name: &str) {
    // antipodal, duplicated and nearly equal rows, at scales 1e-3 to 1e3
    let mut x = vec![
        1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
    ];
    x.extend([0.0, 1.0, 1e-4, 0.0, 0.0, -1.0, 0.0, 0.0]);
    let (mut more, _) = batch(5, true);
    x.extend(more.drain(..24));
    for scale in [1e-3f32, 1.0, 1e3] {
        let xs: Vec<f32> = x.iter().map(|v| v * scale).collect();
        let t = rows::<4>(&xs);
        let labels = [0, 0, 1, 1, 0, 1, 2, 2, 3, 3, 2, 0];
        let l = loss.forward(t.leaky_trace(), &labels);
        let v = l.array();
        let g = l.backward().get(&t).as_vec();
        assert!(v.is_finite(), "{name} at scale {scale}: loss {v}");
        assert!(
            g.iter().all(|g| g.is_finite()),
            "{name} at scale {scale}: {g:?}"
        );
    }
}

#[test]
fn no_nan_or_inf_at_the_extremes() {
    finite_everywhere(NtXentCold, "NT-Xent at τ 0.01");
    finite_everywhere(SupConCold, "SupCon at τ 0.01");
    finite_everywhere(CircleSharp, "circle at γ 256");
    finite_everywhere(MultiSimilarityLoss, "multi-similarity");
    finite_everywhere(LiftedStructureLoss, "lifted structure");
    finite_everywhere(
        GeneralizedLiftedStructureLoss,
        "generalized lifted structure",
    );
    finite_everywhere(NPairsLoss, "N-pairs");
    finite_everywhere(MarginDefault, "margin");
}

#[test]
fn ntxent_keeps_pmls_cap_at_low_temperature() {
    // the positive is opposite its anchor, the negative equal to it: ℓ = 2/τ = 200,
    // PML caps −ln(e^{−ℓ} + 1.2e-38) at −ln(1.2e-38) ≈ 87.34
    let x = [1.0, 0.0, -1.0, 0.0, 1.0, 0.0];
    let t = rows::<2>(&x);
    let tuples = Tuples::Pairs {
        positive: vec![(0, 1), (0, 1)],
        negative: vec![(0, 2), (0, 2)],
    };
    let l = NtXentCold
        .mined(&Fixed(tuples), t.leaky_trace(), &[0, 0, 1])
        .loss;
    assert!((l.array() - 87.336_55).abs() < 1e-3, "{}", l.array());
    assert!(
        l.backward()
            .get(&t)
            .as_vec()
            .iter()
            .all(|g| g.is_finite() && g.abs() < 1e-6)
    );
}

/// PML's rules for batches without positive or negative pairs: each loss's
/// value, and a zero gradient wherever the value is 0.
#[test]
fn degenerate_batches_follow_pml() {
    fn check<L: BatchCriterion>(loss: L, x: &[f32], labels: &[usize], zero: bool, name: &str) {
        let t = rows::<4>(x);
        let l = loss.forward(t.leaky_trace(), labels);
        let v = l.array();
        let g = l.backward().get(&t).as_vec();
        if zero {
            assert_eq!(v, 0.0, "{name}");
            assert!(g.iter().all(|g| *g == 0.0), "{name}: {g:?}");
        } else {
            assert!(v > 0.0 && g.iter().any(|g| *g != 0.0), "{name}: {v}");
        }
    }
    let (x, _) = batch(3, false);
    let one_class = [7; 10];
    // a single class: PML's multi-similarity and generalized lifted structure still pull it
    // together; the others give 0
    check(
        MultiSimilarityLoss,
        &x,
        &one_class,
        false,
        "multi-similarity",
    );
    check(
        GeneralizedLiftedStructureLoss,
        &x,
        &one_class,
        false,
        "generalized lifted",
    );
    check(NtXentLoss, &x, &one_class, true, "NT-Xent");
    check(SupConLoss, &x, &one_class, true, "SupCon");
    check(CircleLoss, &x, &one_class, true, "circle");
    check(LiftedStructureLoss, &x, &one_class, true, "lifted");
    check(NPairsLoss, &x, &one_class, true, "N-pairs");
    check(MarginDefault, &x, &one_class, true, "margin");
    // every row its own class: no positive pair
    let distinct: Vec<usize> = (0..10).collect();
    for (zero, name) in [
        (false, "multi-similarity"),
        (true, "NT-Xent"),
        (true, "N-pairs"),
    ] {
        match name {
            "multi-similarity" => check(MultiSimilarityLoss, &x, &distinct, zero, name),
            "NT-Xent" => check(NtXentLoss, &x, &distinct, zero, name),
            _ => check(NPairsLoss, &x, &distinct, zero, name),
        }
    }
    // one positive and one negative pair: PML's GenericPairLoss gives exactly 0
    let t = rows::<4>(&x);
    let tuples = Tuples::Pairs {
        positive: vec![(0, 1)],
        negative: vec![(0, 2)],
    };
    let m = MultiSimilarityLoss.mined(
        &Fixed(tuples),
        t.leaky_trace(),
        &[0, 0, 1, 1, 2, 2, 3, 0, 1, 2],
    );
    assert_eq!(m.loss.array(), 0.0);
}

#[test]
fn statistics_and_the_collapse_alarm() {
    let (x, labels) = batch(4, false);
    let m = MultiSimilarityLoss.mined(&AllPairs, rows::<4>(&x).leaky_trace(), &labels);
    assert_eq!(m.stats.pairs, 90); // every directed pair of 10 rows
    assert!(!m.stats.collapsed && m.stats.spread > 0.5, "{}", m.stats);
    let m = MultiSimilarityLoss.mined(
        &MultiSimilarityMiner::default(),
        rows::<4>(&x).leaky_trace(),
        &labels,
    );
    assert!(
        m.stats.pairs < 90 && m.stats.active_fraction > 0.0,
        "{}",
        m.stats
    );
    // every embedding pointing the same way: cosine distances 0, the alarm goes off
    let same: Vec<f32> = (0..10)
        .flat_map(|i| [1.0 + i as f32, 0.0, 0.0, 0.0])
        .collect();
    for stats in [
        SupConLoss
            .mined(&AllPairs, rows::<4>(&same).leaky_trace(), &labels)
            .stats,
        LiftedStructureLoss
            .mined(&AllPairs, rows::<4>(&same).leaky_trace(), &labels)
            .stats,
    ] {
        assert!(stats.collapsed, "{stats}");
        assert!(stats.to_string().ends_with("COLLAPSE"));
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (x, labels) = batch(6, false);
    let t = rows::<4>(&x);
    assert_eq!(
        SupConLoss.try_forward(t.clone(), &labels[..9]).unwrap_err(),
        MetricLossError::LabelCount {
            labels: 9,
            batch: 10
        }
    );
    let empty: Rows<4> = Cpu::default().zeros_like(&(0, Const));
    assert!(matches!(
        NtXentLoss.try_forward(empty, &[]),
        Err(MetricLossError::EmptyBatch { .. })
    ));
    let mut bad = x.clone();
    bad[13] = f32::NAN;
    assert!(matches!(
        CircleLoss.try_forward(rows::<4>(&bad).leaky_trace(), &labels),
        Err(MetricLossError::NonFinite {
            what: "embeddings",
            row: 3,
            ..
        })
    ));
    // a miner other than AllPairs takes the matrix on the tape: its host copy finds it
    assert!(matches!(
        CircleLoss.try_mined(&Fixed(Tuples::All), rows::<4>(&bad).leaky_trace(), &labels),
        Err(MetricLossError::NonFinite {
            what: "distances",
            ..
        })
    ));
    let out_of_range = Fixed(Tuples::Pairs {
        positive: vec![(0, 12)],
        negative: vec![],
    });
    assert_eq!(
        MultiSimilarityLoss
            .try_mined(&out_of_range, t.clone(), &labels)
            .unwrap_err(),
        MetricLossError::IndexOutOfRange {
            index: 12,
            batch: 10
        }
    );
    // the distance-weighted miner needs unit-length embeddings
    assert!(matches!(
        TripletLoss.try_mined(&DistanceWeightedMiner::default(), t.clone(), &labels),
        Err(MetricLossError::InvalidConfig(_))
    ));
    assert!(
        FaceNet
            .try_mined(&DistanceWeightedMiner::default(), t.clone(), &labels)
            .is_ok()
    );
    assert!(
        MarginLoss
            .try_mined(&DistanceWeightedMiner::default(), t, &labels)
            .is_ok()
    );
}

#[test]
fn one_tape_across_losses_and_branches() {
    // two losses on one traced batch: the gradients add up
    let (x, labels) = batch(8, true);
    let t = rows::<4>(&x);
    let grad =
        |f: &dyn Fn(Rows<4, OwnedTape<f32, Cpu>>) -> Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>| {
            f(t.leaky_trace()).backward().get(&t).as_vec()
        };
    let a = grad(&|e| MultiSimilarityLoss.forward(e, &labels));
    let b = grad(&|e| NtXentLoss.forward(e, &labels));
    let both = grad(&|e| {
        let (e, tape) = e.split_tape();
        let ms = MultiSimilarityLoss.forward(e.clone().put_tape(tape), &labels);
        let (ms, tape) = ms.split_tape();
        let nt = NtXentLoss.forward(e.put_tape(tape), &labels);
        nt + ms.retaped::<OwnedTape<f32, Cpu>>()
    });
    let sum: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
    assert_close(&both, &sum, 1e-5, "MS + NT-Xent on one tape");
}

/// The fused pass on a batch large enough to share its blocks among
/// threads (several blocks of rows, duplicates, a class of one): value and
/// gradient against the row form on the materialized matrix, and the
/// statistics against those of the generic path (`Fixed(Tuples::All)` is
/// not fused).
#[test]
fn the_fused_pass_equals_the_row_form_on_large_batches() {
    struct Large<'a> {
        x: &'a [f32],
        labels: &'a [usize],
    }
    impl Visit for Large<'_> {
        fn visit<F: BatchFormula>(&mut self, f: F) {
            let t = &Tuples::All;
            let (vd, gd) = run_dim(&f, 8, self.x, self.labels, t, Path::Device);
            let (vf, gf) = run_dim(&f, 8, self.x, self.labels, t, Path::Fused);
            assert_close(&[vf], &[vd], 1e-5, &format!("{}: value", F::NAME));
            assert_close(&gf, &gd, 1e-5, &format!("{}: grad", F::NAME));
        }
    }
    let mut rng = StdRng::seed_from_u64(21);
    let n = 301;
    let mut labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
    labels[n - 1] = 10_000; // a class of one
    let mut x: Vec<f32> = (0..n * 8).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    x.copy_within(0..8, 8 * 150); // a duplicate in another block
    x.copy_within(8..16, 8 * 2); // and one in the same block
    for name in FORMULAS {
        with_formula(
            name,
            &serde_json::Value::Null,
            &mut Large {
                x: &x,
                labels: &labels,
            },
        );
    }
    let fused = SupConLoss
        .mined(&AllPairs, rows::<8>(&x).leaky_trace(), &labels)
        .stats;
    let listed = SupConLoss
        .mined(&Fixed(Tuples::All), rows::<8>(&x).leaky_trace(), &labels)
        .stats;
    assert_eq!(
        (fused.pairs, fused.triplets),
        (listed.pairs, listed.triplets)
    );
    let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
    assert!(
        near(fused.active_fraction, listed.active_fraction),
        "{fused} vs {listed}"
    );
    assert!(near(fused.spread, listed.spread), "{fused} vs {listed}");
    assert!(near(
        fused.mean_hardest_positive.unwrap(),
        listed.mean_hardest_positive.unwrap()
    ));
    assert!(near(
        fused.mean_hardest_negative.unwrap(),
        listed.mean_hardest_negative.unwrap()
    ));
    let fused = LiftedStructureLoss
        .mined(&AllPairs, rows::<8>(&x).leaky_trace(), &labels)
        .stats;
    let listed = LiftedStructureLoss
        .mined(&Fixed(Tuples::All), rows::<8>(&x).leaky_trace(), &labels)
        .stats;
    assert!(near(fused.spread, listed.spread), "{fused} vs {listed}");
    assert!(
        near(fused.active_fraction, listed.active_fraction),
        "{fused} vs {listed}"
    );
}

/// Every loss of the family at N = 4096, D = 128, forward + backward with
/// every pair of the batch: the fused pass, which holds one `N × N` `f32`
/// matrix and no `N × N × D` buffer (its peak RSS is measured with
/// `FAMILY_RSS=<loss>` on
/// `benches/family.rs`; see docs/performance.md). Finite values and
/// gradients, statistics over every pair.
#[test]
fn every_loss_at_n_4096() {
    fn check<L: BatchCriterion>(loss: L, x: &Rows<128>, labels: &[usize]) {
        let m = loss.mined(&AllPairs, x.leaky_trace(), labels);
        let n = labels.len();
        assert_eq!(m.stats.pairs, n * (n - 1));
        let v = m.loss.array();
        assert!(
            v.is_finite() && v > 0.0,
            "{}: {v}",
            std::any::type_name::<L>()
        );
        let g = m.loss.backward().get(x).as_vec();
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|&v| v != 0.0));
    }
    let n = 4096;
    let dev = Cpu::seed_from_u64(3);
    let x: Rows<128> = dev.sample_normal_like(&(n, Const));
    let labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
    check(MultiSimilarityLoss, &x, &labels);
    check(NtXentLoss, &x, &labels);
    check(SupConLoss, &x, &labels);
    check(CircleLoss, &x, &labels);
    check(LiftedStructureLoss, &x, &labels);
    check(GeneralizedLiftedStructureLoss, &x, &labels);
    check(NPairsLoss, &x, &labels);
    check(MarginLoss, &x, &labels);
}
