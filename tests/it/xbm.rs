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
    let dev = Cpu::default();
    let mut xbm = CrossBatchMemory::<_, DIM>::new(ContrastiveLoss, 20);
    // fill and wrap: 12 + 12 rows into 20
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
    let want = contrastive_reference(&x64, &labels, &memory, memory_labels, &slots);
    assert!((f64::from(value) - want).abs() < 1e-5, "{value} vs {want}");
    let h = 1e-4;
    let mut fixed = vec![0.0f32; grad.len()];
    for (k, g) in fixed.iter_mut().enumerate() {
        let mut up = x64.clone();
        let mut down = x64.clone();
        up[k] += h;
        down[k] -= h;
        let f = |v: &[f64]| contrastive_reference(v, &labels, &memory, memory_labels, &slots);
        *g = ((f(&up) - f(&down)) / (2.0 * h)) as f32;
    }
    assert_close(&grad, &fixed, 1e-3, "batch gradient vs finite differences");
    // the full derivative: the enqueued copies move with the batch
    let xs = x.as_vec();
    let mut moving = vec![0.0f32; grad.len()];
    let hf = 1e-2f32;
    for (k, g) in moving.iter_mut().enumerate() {
        let run = |delta: f32| {
            let mut v = xs.clone();
            v[k] += delta;
            let t = dev.tensor_from_vec(v, (12, Const::<DIM>));
            let mut m = before.clone();
            m.mined(&AllPairs, t, &labels).loss.as_vec()[0]
        };
        *g = (run(hf) - run(-hf)) / (2.0 * hf);
    }
    let gap = grad
        .iter()
        .zip(&moving)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        gap > 1e-2,
        "the memory side would change the gradient by {gap}"
    );
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
