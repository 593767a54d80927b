//! Cross-batch memory against pytorch-metric-learning 2.9's
//! `CrossBatchMemory` (`tests/fixtures/xbm.py`: five steps with a memory of
//! 32 — a memory larger than everything seen, a wrap-around, a batch ending
//! at the ring's end, labels shared between the batch and the memory), a
//! finite-difference check of the batch's gradient with the memory held
//! constant, the memory carrying no gradient, and the typed errors.

use crate::family_support::assert_close;
use metric_loss::device::MetricDevice;
use metric_loss::loss::{Family, MetricLoss};
use metric_loss::miners::Miner;
use metric_loss::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

const TOL: f32 = 1e-4;
const DIM: usize = 8;

fn fixture() -> Value {
    let path = format!("{}/tests/fixtures/xbm.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn labels_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("label") as usize)
        .collect()
}

/// Runs PML's five steps through one memory and compares each step's loss,
/// batch gradient and ring position.
fn check_against_pml<L, M>(loss: L, miner: &M, name: &str)
where
    L: MetricLoss,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples>,
{
    let fx = fixture();
    assert_eq!(fx["dim"].as_u64(), Some(DIM as u64));
    let memory = fx["memory_size"].as_u64().unwrap() as usize;
    let mut xbm = CrossBatchMemory::<L, DIM>::new(loss, memory);
    let dev = Cpu::default();
    let steps = fx["steps"].as_array().unwrap();
    let want = fx["losses"][name].as_array().expect(name);
    assert!(steps.len() >= 4);
    for (k, (step, want)) in steps.iter().zip(want).enumerate() {
        let x = floats(&step["embeddings"]);
        let labels = labels_of(&step["labels"]);
        let x = dev.tensor_from_vec(x, (labels.len(), Const::<DIM>));
        let mined = xbm.mined(miner, x.leaky_trace(), &labels);
        let value = mined.loss.as_vec()[0];
        let grads = mined.loss.backward();
        let what = format!("{name} step {k}");
        assert_close(
            &[value],
            &[want["loss"].as_f64().unwrap() as f32],
            TOL,
            &what,
        );
        assert_close(&grads.get(&x).as_vec(), &floats(&want["grad"]), TOL, &what);
        assert_eq!(
            xbm.next_slot() as u64,
            want["queue_idx"].as_u64().unwrap(),
            "{what}: ring position"
        );
        assert_eq!(xbm.len(), xbm.memory().1.len());
    }
    // the memory ran over: full, wrapped twice
    assert_eq!(xbm.len(), memory);
}

#[test]
fn triplet_batch_hard_matches_pml() {
    check_against_pml(TripletLoss, &BatchHard, "triplet_batch_hard");
}

#[test]
fn contrastive_all_pairs_matches_pml() {
    check_against_pml(ContrastiveLoss, &AllPairs, "contrastive_all_pairs");
}

#[test]
fn multi_similarity_with_its_miner_matches_pml() {
    check_against_pml(
        MultiSimilarityLoss,
        &MultiSimilarityMiner::default(),
        "multi_similarity_miner",
    );
}

#[test]
fn multi_similarity_all_pairs_matches_pml() {
    check_against_pml(MultiSimilarityLoss, &AllPairs, "multi_similarity_all_pairs");
    // the generic path (a miner the fused kernel does not know) agrees too
    check_against_pml(
        MultiSimilarityLoss,
        &Unfused(AllPairs),
        "multi_similarity_all_pairs",
    );
}

#[test]
fn family_all_pairs_matches_pml() {
    check_against_pml(NtXentLoss, &AllPairs, "ntxent_all_pairs");
    check_against_pml(SupConLoss, &AllPairs, "supcon_all_pairs");
    check_against_pml(MarginLoss, &AllPairs, "margin_all_pairs");
}

/// A pair miner handing over what `M` mines, which no fused kernel
/// recognises: the generic mined path on the `B × M` matrix.
struct Unfused<M>(M);

impl<M: PairMiner> PairMiner for Unfused<M> {
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<metric_loss::miners::IndexPair>, MetricLossError> {
        self.0.try_mine_pairs(dist, labels, pos_margin, neg_margin)
    }
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<metric_loss::miners::Tuples, MetricLossError> {
        self.0.try_mine_tuples(dist, labels, pos_margin, neg_margin)
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// Batches of `DIM` values in `[-1, 1)` of the given sizes, labels from
/// `classes` classes; with `duplicates`, rows repeated within a batch and
/// across batches (entries equal to rows of the memory).
fn random_steps(
    seed: u64,
    sizes: &[usize],
    classes: usize,
    duplicates: bool,
) -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps: Vec<(Vec<f32>, Vec<usize>)> = Vec::new();
    for &b in sizes {
        let mut x: Vec<f32> = (0..b * DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut labels: Vec<usize> = (0..b).map(|_| rng.gen_range(0..classes)).collect();
        if duplicates {
            // row 1 = row 0 (same label); row 3 = row 2 under another label
            x.copy_within(0..DIM, DIM);
            labels[1] = labels[0];
            x.copy_within(2 * DIM..3 * DIM, 3 * DIM);
            labels[3] = (labels[2] + 1) % classes;
            if let Some((prev, prev_labels)) = steps.last() {
                // row 4 repeats the previous batch's row 5 (now in the memory)
                x[4 * DIM..5 * DIM].copy_from_slice(&prev[5 * DIM..6 * DIM]);
                labels[4] = prev_labels[5];
            }
        }
        steps.push((x, labels));
    }
    steps
}

/// Each step's loss, batch gradient and statistics through one memory.
fn run_steps<L, M>(
    loss: L,
    miner: &M,
    steps: &[(Vec<f32>, Vec<usize>)],
    memory: usize,
) -> Vec<(f32, Vec<f32>, MinerStats)>
where
    L: MetricLoss,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples>,
{
    let dev = Cpu::default();
    let mut xbm = CrossBatchMemory::<L, DIM>::new(loss, memory);
    steps
        .iter()
        .map(|(x, labels)| {
            let x = dev.tensor_from_vec(x.clone(), (labels.len(), Const::<DIM>));
            let mined = xbm.mined(miner, x.leaky_trace(), labels);
            let value = mined.loss.as_vec()[0];
            let stats = mined.stats;
            let grad = mined.loss.backward().get(&x).as_vec();
            (value, grad, stats)
        })
        .collect()
}

/// The fused pass and the generic path give the same loss, gradient and
/// statistics, step after step (the ring filling, then wrapping).
fn fused_equals_generic<L, M>(
    loss: L,
    miner: M,
    steps: &[(Vec<f32>, Vec<usize>)],
    memory: usize,
    what: &str,
) where
    L: MetricLoss + Clone,
    L::Family: Family<L, Output = ()>,
    M: PairMiner,
    M: Miner<<L::Family as Family<L>>::Tuples>,
    Unfused<M>: Miner<<L::Family as Family<L>>::Tuples>,
{
    let fused = run_steps(loss.clone(), &miner, steps, memory);
    let generic = run_steps(loss, &Unfused(miner), steps, memory);
    let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
    for (k, ((vf, gf, sf), (vg, gg, sg))) in fused.iter().zip(&generic).enumerate() {
        let what = format!("{what} step {k}");
        assert_close(&[*vf], &[*vg], 1e-5, &format!("{what}: loss"));
        assert_close(gf, gg, 1e-4, &format!("{what}: gradient"));
        assert_eq!(
            (sf.pairs, sf.triplets),
            (sg.pairs, sg.triplets),
            "{what}: {sf} vs {sg}"
        );
        assert!(
            near(sf.active_fraction, sg.active_fraction),
            "{what}: {sf} vs {sg}"
        );
        assert!(near(sf.spread, sg.spread), "{what}: {sf} vs {sg}");
        let both = |a: Option<f32>, b: Option<f32>| match (a, b) {
            (Some(a), Some(b)) => near(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        assert!(
            both(sf.mean_hardest_positive, sg.mean_hardest_positive),
            "{what}: {sf} vs {sg}"
        );
        assert!(
            both(sf.mean_hardest_negative, sg.mean_hardest_negative),
            "{what}: {sf} vs {sg}"
        );
        assert_eq!(sf.collapsed, sg.collapsed, "{what}");
    }
}

#[test]
fn fused_pass_equals_generic_path() {
    let ms = MultiSimilarityMiner::default();
    let wide = MultiSimilarityMiner::new(0.5);
    // small batches through a memory of 32: filling, wrapping, duplicates
    let small = random_steps(3, &[12, 10, 14, 12, 16, 9], 4, true);
    fused_equals_generic(MultiSimilarityLoss, AllPairs, &small, 32, "MS all pairs");
    fused_equals_generic(MultiSimilarityLoss, ms, &small, 32, "MS miner");
    fused_equals_generic(MultiSimilarityLoss, wide, &small, 32, "MS miner, ε 0.5");
    fused_equals_generic(SupConLoss, AllPairs, &small, 32, "SupCon all pairs");
    fused_equals_generic(NtXentLoss, AllPairs, &small, 32, "NT-Xent all pairs");
    fused_equals_generic(CircleLoss, ms, &small, 32, "circle, MS miner");
    // the Euclidean formulas: without duplicates (the generic path's
    // distance of equal rows is rounding noise, the fused one exactly 0)
    let distinct = random_steps(4, &[12, 10, 14, 12, 16, 9], 4, false);
    fused_equals_generic(MarginLoss, AllPairs, &distinct, 32, "margin all pairs");
    fused_equals_generic(MarginLoss, ms, &distinct, 32, "margin, MS miner");
    fused_equals_generic(
        GeneralizedLiftedStructureLoss,
        AllPairs,
        &distinct,
        32,
        "generalized lifted structure",
    );
    // blocks shared among threads: 80 rows against up to 256 entries
    let large = random_steps(5, &[80, 80, 80, 80], 6, true);
    fused_equals_generic(
        MultiSimilarityLoss,
        AllPairs,
        &large,
        256,
        "MS all pairs, 80 x 256",
    );
    fused_equals_generic(MultiSimilarityLoss, ms, &large, 256, "MS miner, 80 x 256");
    // a batch and memory of one class: PML's miners give nothing
    let one = random_steps(6, &[6, 6], 1, false);
    fused_equals_generic(MultiSimilarityLoss, AllPairs, &one, 8, "one class");
    fused_equals_generic(MultiSimilarityLoss, ms, &one, 8, "one class, MS miner");
}

/// Multi-similarity over every (batch row, memory entry) pair but each
/// row's own copy, in f64, the memory a constant (unit-length entries).
fn multi_similarity_reference(
    x: &[f64],
    labels: &[usize],
    memory: &[f64],
    memory_labels: &[usize],
    slots: &[usize],
) -> f64 {
    let (alpha, beta, base) = (2.0, 50.0, 0.5);
    let mut total = 0.0;
    for (i, &li) in labels.iter().enumerate() {
        let row = &x[i * DIM..(i + 1) * DIM];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let (mut pos, mut neg) = (0.0, 0.0);
        for (j, &lj) in memory_labels.iter().enumerate() {
            let s: f64 = (0..DIM).map(|c| row[c] / norm * memory[j * DIM + c]).sum();
            if li != lj {
                neg += (beta * (s - base)).exp();
            } else if j != slots[i] {
                pos += (-alpha * (s - base)).exp();
            }
        }
        total += (1.0 + pos).ln() / alpha + (1.0 + neg).ln() / beta;
    }
    total / labels.len() as f64
}

/// The fused pass's batch gradient is the derivative with the memory held
/// constant (finite differences of the f64 reference), not the one in which
/// each row's enqueued copy moves with it: the memory carries no gradient.
#[test]
fn fused_batch_gradient_by_finite_differences_and_no_gradient_through_memory() {
    let (value, want) =
        batch_gradient_with_memory_constant(MultiSimilarityLoss, multi_similarity_reference, 1e-5);
    assert!(
        (f64::from(value) - want).abs() < 1e-5 * (1.0 + want.abs()),
        "{value} vs {want}"
    );
}

/// `ContrastiveLoss` over every (batch row, memory entry) pair but each
/// row's own copy, in f64, the memory a constant: `(1−Y)·d² + Y·[1−d]+²`,
/// averaged.
fn contrastive_reference(
    x: &[f64],
    labels: &[usize],
    memory: &[f64],
    memory_labels: &[usize],
    slots: &[usize],
) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for (i, &li) in labels.iter().enumerate() {
        for (j, &lj) in memory_labels.iter().enumerate() {
            if j == slots[i] {
                continue;
            }
            let d = (0..DIM)
                .map(|c| (x[i * DIM + c] - memory[j * DIM + c]).powi(2))
                .sum::<f64>()
                .sqrt();
            sum += if li == lj {
                d * d
            } else {
                (1.0 - d).max(0.0).powi(2)
            };
            count += 1;
        }
    }
    sum / count as f64
}

/// The batch gradient is the derivative with the memory held constant
/// (finite differences of the reference in f64); the full derivative, in
/// which each row's enqueued copy moves with it, is different: the memory
/// carries no gradient.
#[test]
fn batch_gradient_by_finite_differences_and_no_gradient_through_memory() {
    let (value, want) =
        batch_gradient_with_memory_constant(ContrastiveLoss, contrastive_reference, 1e-4);
    assert!((f64::from(value) - want).abs() < 1e-5, "{value} vs {want}");
}

/// The loss of a batch against `x`'s memory in f64, the memory a constant:
/// `(x, labels, memory, memory_labels, each row's own slot)`.
type Reference = fn(&[f64], &[usize], &[f64], &[usize], &[usize]) -> f64;

/// `loss` through a memory of 20 (12 + 12 rows: the ring wraps), every
/// pair: asserts that the batch gradient is `reference`'s derivative with
/// the memory held constant (central differences of step `h`, to 1e-3), and
/// that the full derivative, in which the enqueued copies move with the
/// batch, differs from it by more than 1e-2 (the memory carries no
/// gradient). Returns the loss and `reference`'s value, for the caller's
/// tolerance.
fn batch_gradient_with_memory_constant<L>(loss: L, reference: Reference, h: f64) -> (f32, f64)
where
    L: MetricLoss + Clone,
    L::Family: Family<L, Output = ()>,
    AllPairs: Miner<<L::Family as Family<L>>::Tuples>,
{
    let dev = Cpu::default();
    let mut xbm = CrossBatchMemory::<_, DIM>::new(loss, 20);
    let first: Tensor<(usize, Const<DIM>), f32, _> = dev.sample_normal_like(&(12, Const::<DIM>));
    let labels1 = [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3];
    xbm.mined(&AllPairs, first, &labels1);
    let before = xbm.clone();
    let x: Tensor<(usize, Const<DIM>), f32, _> = dev.sample_normal_like(&(12, Const::<DIM>));
    let labels = [2, 2, 1, 0, 3, 1, 0, 0, 1, 2, 3, 3];
    let mined = xbm.mined(&AllPairs, x.leaky_trace(), &labels);
    let value = mined.loss.as_vec()[0];
    let grad = mined.loss.backward().get(&x).as_vec();
    let slots: Vec<usize> = (0..12).map(|i| (12 + i) % 20).collect();
    let (memory, memory_labels) = xbm.memory();
    let memory: Vec<f64> = memory.iter().map(|&v| f64::from(v)).collect();
    let x64: Vec<f64> = x.as_vec().iter().map(|&v| f64::from(v)).collect();
    let f = |v: &[f64]| reference(v, &labels, &memory, memory_labels, &slots);
    let fixed: Vec<f32> = (0..grad.len())
        .map(|k| {
            let (mut up, mut down) = (x64.clone(), x64.clone());
            up[k] += h;
            down[k] -= h;
            ((f(&up) - f(&down)) / (2.0 * h)) as f32
        })
        .collect();
    assert_close(&grad, &fixed, 1e-3, "batch gradient vs finite differences");
    // the full derivative: the enqueued copies move with the batch
    let xs = x.as_vec();
    let hf = 1e-2f32;
    let moving: Vec<f32> = (0..grad.len())
        .map(|k| {
            let run = |delta: f32| {
                let mut v = xs.clone();
                v[k] += delta;
                let t = dev.tensor_from_vec(v, (12, Const::<DIM>));
                let mut m = before.clone();
                m.mined(&AllPairs, t, &labels).loss.as_vec()[0]
            };
            (run(hf) - run(-hf)) / (2.0 * hf)
        })
        .collect();
    let gap = grad
        .iter()
        .zip(&moving)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        gap > 1e-2,
        "the memory side would change the gradient by {gap}"
    );
    (value, f(&x64))
}

#[test]
fn typed_errors() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<6, DIM>, f32, _> = dev.sample_normal();
    let labels = [0, 0, 1, 1, 2, 2];
    assert!(matches!(
        CrossBatchMemory::<_, DIM>::try_new(TripletLoss, 0),
        Err(MetricLossError::MemorySize { size: 0, dim: DIM })
    ));
    assert!(matches!(
        CrossBatchMemory::<_, DIM>::try_new(TripletLoss, usize::MAX),
        Err(MetricLossError::MemorySize { .. })
    ));
    let mut xbm = CrossBatchMemory::<_, DIM>::new(TripletLoss, 8);
    assert_eq!(
        xbm.try_mined(&BatchHard, x.clone(), &labels[..5])
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 5,
            batch: 6
        }
    );
    let mut small = CrossBatchMemory::<_, DIM>::new(TripletLoss, 5);
    assert_eq!(
        small.try_mined(&BatchHard, x.clone(), &labels).unwrap_err(),
        MetricLossError::MemoryTooSmall {
            batch: 6,
            memory: 5
        }
    );
    // a NaN embedding is refused before it could poison the memory
    let mut bad = x.as_vec();
    bad[2 * DIM + 3] = f32::NAN;
    let bad = dev.tensor_from_vec(bad, (6, Const::<DIM>));
    assert!(matches!(
        xbm.try_mined(&BatchHard, bad, &labels),
        Err(MetricLossError::NonFinite {
            what: "embeddings",
            row: 2,
            column: 3,
            ..
        })
    ));
    assert!(xbm.is_empty());
    // miners and losses that do not read a batch against a memory
    assert!(matches!(
        xbm.try_mined(&SemiHard::default(), x.clone(), &labels),
        Err(MetricLossError::InvalidConfig(_))
    ));
    let mut lifted = CrossBatchMemory::<_, DIM>::new(LiftedStructureLoss, 8);
    assert!(matches!(
        lifted.try_mined(&AllPairs, x.clone(), &labels),
        Err(MetricLossError::InvalidConfig(_))
    ));
    // the plain method panics with the message
    let r = std::panic::catch_unwind(|| CrossBatchMemory::<_, DIM>::new(TripletLoss, 0));
    assert!(r.is_err());
}

/// Every distance a declared loss can use reads the memory; the CPU's
/// fused `X·Yᵀ` gives dfdx's matmul's values and gradient.
#[test]
fn distances_against_memory_and_cross_gram_paths() {
    #[metric_loss(triplet, distance = manhattan, margin = 0.5)]
    struct ManhattanTriplet;
    #[metric_loss(triplet, distance = cosine, margin = 0.1)]
    struct CosineTriplet;
    #[metric_loss(pair, distance = dot, margin = 1.0)]
    struct DotPair;
    let dev = Cpu::default();
    let labels = [0, 0, 1, 1, 2, 2];
    for step in 0..3 {
        let x: Tensor<Rank2<6, DIM>, f32, _> = dev.sample_normal();
        let mut a = CrossBatchMemory::<_, DIM>::new(ManhattanTriplet, 10);
        let mut b = CrossBatchMemory::<_, DIM>::new(CosineTriplet, 10);
        let mut c = CrossBatchMemory::<_, DIM>::new(DotPair, 10);
        for _ in 0..=step {
            for g in [
                a.mined(&BatchAll::default(), x.leaky_trace(), &labels)
                    .loss
                    .backward(),
                b.mined(&BatchHard, x.leaky_trace(), &labels)
                    .loss
                    .backward(),
                c.mined(&HardPairs, x.leaky_trace(), &labels)
                    .loss
                    .backward(),
            ] {
                assert!(g.get(&x).as_vec().iter().all(|v| v.is_finite()));
            }
        }
    }
    let x: Tensor<Rank2<5, DIM>, f32, _> = dev.sample_normal();
    let y: Tensor<Rank2<7, DIM>, f32, _> = dev.sample_normal();
    let fused = Cpu::try_cross_gram(x.leaky_trace(), &y).unwrap();
    let plain = x
        .leaky_trace()
        .matmul(y.clone().permute::<Rank2<DIM, 7>, _>());
    assert_close(&fused.as_vec(), &plain.as_vec(), 1e-5, "X·Yᵀ");
    let w: Tensor<Rank2<5, 7>, f32, _> = dev.sample_normal();
    let gf = (fused * w.clone()).sum().backward().get(&x).as_vec();
    let gp = (plain * w).sum().backward().get(&x).as_vec();
    assert_close(&gf, &gp, 1e-5, "∂X of X·Yᵀ");
}
