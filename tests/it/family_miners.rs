//! The family's miners: `MultiSimilarityMiner` against PML on its fixture,
//! `DistanceWeightedMiner`'s weights against PML's and its sampling
//! distribution (it draws at random, seeded); `MultiSimilarityMiner` fused
//! into the family's pass against its listed path.

use crate::family_support::{assert_close, floats, pairs, read};
use metric_loss::formulas::BatchFormula;
use metric_loss::miners::{DistanceMatrix, IndexPair, MinerStats, Triplet, Tuples, Units};
use metric_loss::prelude::*;
use std::collections::HashMap;

/// The host matrix the miners see for a cosine loss of these rows: `1 − cos`.
fn cosine_host(x: &[f32], dim: usize) -> DistanceMatrix {
    let unit: Vec<Vec<f64>> = x
        .chunks(dim)
        .map(|r| {
            let n = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|v| f64::from(*v) / n).collect()
        })
        .collect();
    let n = unit.len();
    let mut d = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let s: f64 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
                d[i * n + j] = (1.0 - s).clamp(0.0, 2.0) as f32;
            }
        }
    }
    DistanceMatrix::new(n, d)
        .unwrap()
        .with_units(Units::Cosine { dim })
}

fn labels_of(c: &serde_json::Value) -> Vec<usize> {
    c["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn multi_similarity_miner_matches_pml() {
    let cases = read("multi_similarity_miner");
    assert!(cases.len() >= 15);
    let mut nonempty = 0;
    for c in &cases {
        let dim = c["dim"].as_u64().unwrap() as usize;
        let host = cosine_host(&floats(&c["embeddings"]), dim);
        let labels = labels_of(c);
        let miner = MultiSimilarityMiner::new(c["epsilon"].as_f64().unwrap() as f32);
        let Tuples::Pairs {
            mut positive,
            mut negative,
        } = miner.try_mine_tuples(&host, &labels, 0.0, 1.0).unwrap()
        else {
            panic!("pairs expected");
        };
        let (mut want_pos, mut want_neg) = (pairs(&c["pos"]), pairs(&c["neg"]));
        for v in [&mut positive, &mut negative, &mut want_pos, &mut want_neg] {
            v.sort_unstable();
        }
        let name = c["name"].as_str().unwrap();
        assert_eq!(positive, want_pos, "{name}: positive pairs");
        assert_eq!(negative, want_neg, "{name}: negative pairs");
        nonempty += usize::from(!positive.is_empty());
    }
    assert!(nonempty >= 10, "{nonempty} cases with pairs");
}

#[test]
fn distance_weighted_weights_match_pml() {
    for c in read("distance_weighted_miner") {
        let dim = c["dim"].as_u64().unwrap() as usize;
        let host = cosine_host(&floats(&c["embeddings"]), dim);
        let labels = labels_of(&c);
        let got = DistanceWeightedMiner::default()
            .try_weights(&host, &labels)
            .unwrap();
        let want: Vec<Option<f64>> = c["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64())
            .collect();
        let n = labels.len();
        for i in 0..n {
            let row = &want[i * n..(i + 1) * n];
            let name = c["name"].as_str().unwrap();
            if row.iter().any(Option::is_none) {
                // PML's NaN row (no negative of nonzero weight): dropped, all 0 here
                assert!(
                    got[i * n..(i + 1) * n].iter().all(|w| *w == 0.0),
                    "{name} row {i}"
                );
                continue;
            }
            for j in 0..n {
                let w = row[j].unwrap() as f32;
                let g = got[i * n + j];
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w),
                    "{name} ({i}, {j}): {g} vs {w}"
                );
            }
        }
    }
}

/// Unit vectors of width `dim` at random, `k` per class.
fn sphere(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[test]
fn distance_weighted_sampling_follows_its_weights() {
    let (n, dim) = (12, 8);
    let x = sphere(3, n, dim);
    let host = cosine_host(&x, dim);
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let miner = DistanceWeightedMiner::default().with_seed(11);
    let weights = miner.try_weights(&host, &labels).unwrap();
    let mut neg: HashMap<(usize, usize), usize> = HashMap::new();
    let mut pos: HashMap<(usize, usize), usize> = HashMap::new();
    let mut per_anchor: HashMap<usize, usize> = HashMap::new();
    let draws = 4000;
    let mut previous: Option<Vec<Triplet>> = None;
    for _ in 0..draws {
        let t = miner.try_mine(&host, &labels, 0.2).unwrap();
        // 4 per class member, each anchor with its class's size in triplets, in order
        assert!(
            t.windows(2)
                .all(|w| (labels[w[0].anchor], w[0].anchor) <= (labels[w[1].anchor], w[1].anchor))
        );
        for t in &t {
            assert!(t.anchor != t.positive && labels[t.anchor] == labels[t.positive]);
            assert!(labels[t.negative] != labels[t.anchor]);
            assert!(
                weights[t.anchor * n + t.negative] > 0.0,
                "a negative of weight 0 was drawn"
            );
            *neg.entry((t.anchor, t.negative)).or_default() += 1;
            *pos.entry((t.anchor, t.positive)).or_default() += 1;
            *per_anchor.entry(t.anchor).or_default() += 1;
        }
        assert_ne!(previous.as_ref(), Some(&t), "successive calls draw afresh");
        previous = Some(t);
    }
    for a in 0..n {
        let row = &weights[a * n..(a + 1) * n];
        let count = per_anchor.get(&a).copied().unwrap_or(0);
        if row.iter().all(|w| *w == 0.0) {
            assert_eq!(
                count, 0,
                "anchor {a} has no negative of nonzero weight: dropped"
            );
            continue;
        }
        assert_eq!(count, draws * 4, "anchor {a}: k = 4 triplets per draw");
        for j in 0..n {
            // the frequency of each negative: within 5 standard deviations of its weight
            let p = f64::from(row[j]);
            let got = neg.get(&(a, j)).copied().unwrap_or(0) as f64 / count as f64;
            let sd = (p * (1.0 - p) / count as f64).sqrt();
            assert!(
                (got - p).abs() <= 5.0 * sd + 1e-9,
                "anchor {a}, negative {j}: {got} vs {p}"
            );
            // positives: uniform over the 3 others of the class
            if j != a && labels[j] == labels[a] {
                let f = pos.get(&(a, j)).copied().unwrap_or(0) as f64 / count as f64;
                let sd = (1.0 / 3.0 * 2.0 / 3.0 / count as f64).sqrt();
                assert!(
                    (f - 1.0 / 3.0).abs() < 5.0 * sd,
                    "anchor {a}, positive {j}: {f}"
                );
            }
        }
    }
}

#[test]
fn distance_weighted_is_seeded_and_cuts_off() {
    let (n, dim) = (12, 8);
    let host = cosine_host(&sphere(4, n, dim), dim);
    let labels: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let draw = |seed| {
        DistanceWeightedMiner::default()
            .with_seed(seed)
            .try_mine(&host, &labels, 0.2)
            .unwrap()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
    // a clone continues from the same call count
    let m = DistanceWeightedMiner::default().with_seed(5);
    let _ = m.try_mine(&host, &labels, 0.2).unwrap();
    assert_eq!(
        m.clone().try_mine(&host, &labels, 0.2).unwrap(),
        m.try_mine(&host, &labels, 0.2).unwrap()
    );
    // weights: rows sum to 1, 0 for same-class pairs and at or beyond the cut-off
    let w = DistanceWeightedMiner::default()
        .try_weights(&host, &labels)
        .unwrap();
    for i in 0..n {
        let row = &w[i * n..(i + 1) * n];
        let sum: f32 = row.iter().sum();
        assert!(sum == 0.0 || (sum - 1.0).abs() < 1e-5);
        for j in 0..n {
            let d = host.unit_euclidean(i, j).unwrap();
            if labels[i] == labels[j] || d >= 1.4 {
                assert_eq!(row[j], 0.0);
            }
        }
    }
    // a cut-off of 0 weighs only the negatives closer than 0: none
    let none = DistanceWeightedMiner::new(0.0, 1e-6)
        .try_mine(&host, &labels, 0.2)
        .unwrap();
    assert!(none.is_empty());
    assert!(
        DistanceWeightedMiner::new(1.5, 1.4)
            .try_weights(&host, &labels)
            .is_err()
    );
    // as pairs: (a, p) and (a, n) of each triplet
    // (anchors whose negatives are all at 1.4 or farther are dropped)
    let kept = (0..n)
        .filter(|&i| w[i * n..(i + 1) * n].iter().any(|w| *w > 0.0))
        .count();
    assert!(kept >= n / 2, "{kept} anchors kept");
    let t = DistanceWeightedMiner::default().with_seed(1);
    match t.try_mine_tuples(&host, &labels, 0.0, 1.0).unwrap() {
        Tuples::Triplets(t) => assert_eq!(t.len(), kept * 3),
        other => panic!("{other:?}"),
    }
}

/// `MultiSimilarityMiner` without its fused form: the listed path (mine the
/// host matrix, list the pairs, weights from the lists).
struct Listed(MultiSimilarityMiner);

impl PairMiner for Listed {
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        self.0.try_mine_pairs(dist, labels, pos_margin, neg_margin)
    }
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Tuples, MetricLossError> {
        self.0.try_mine_tuples(dist, labels, pos_margin, neg_margin)
    }
    fn name(&self) -> &'static str {
        "listed multi-similarity"
    }
}

/// Loss, gradient and statistics of `loss` mined with `miner`.
fn mined_run<L: BatchCriterion, M: PairMiner>(
    loss: L,
    miner: &M,
    x: &[f32],
    labels: &[usize],
) -> (f32, Vec<f32>, MinerStats) {
    let t: Tensor<(usize, Const<8>), f32, Cpu> =
        Cpu::default().tensor_from_vec(x.to_vec(), (x.len() / 8, Const));
    let m = loss.mined(miner, t.leaky_trace(), labels);
    let v = m.loss.array();
    let g = m.loss.backward().get(&t).as_vec();
    (v, g, m.stats)
}

/// The miner applied inside the fused pass over the rows (the CPU's path
/// for `MultiSimilarityMiner` with a loss on pair masks or counts) against
/// the listed path: the same loss, gradient and statistics, on batches of
/// several blocks of rows (duplicates, a class of one), for several `ε`,
/// and PML's zero when the miner keeps at most one pair of each kind.
#[test]
fn the_fused_miner_equals_the_listed_one() {
    fn check<L: BatchCriterion + Copy>(loss: L, x: &[f32], labels: &[usize], eps: f32) {
        let what = format!("{} ε {eps}", L::Formula::NAME);
        let miner = MultiSimilarityMiner::new(eps);
        let (vf, gf, sf) = mined_run(loss, &miner, x, labels);
        let (vl, gl, sl) = mined_run(loss, &Listed(miner), x, labels);
        assert_close(&[vf], &[vl], 1e-5, &format!("{what}: value"));
        assert_close(&gf, &gl, 1e-5, &format!("{what}: grad"));
        assert_eq!((sf.pairs, sf.triplets), (sl.pairs, sl.triplets), "{what}");
        let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        assert!(
            near(sf.active_fraction, sl.active_fraction),
            "{what}: {sf} vs {sl}"
        );
        assert!(near(sf.spread, sl.spread), "{what}: {sf} vs {sl}");
        assert_eq!(sf.collapsed, sl.collapsed, "{what}");
        for (a, b) in [
            (sf.mean_hardest_positive, sl.mean_hardest_positive),
            (sf.mean_hardest_negative, sl.mean_hardest_negative),
        ] {
            assert!(near(a.unwrap(), b.unwrap()), "{what}: {sf} vs {sl}");
        }
    }
    let n = 301;
    let mut labels: Vec<usize> = (0..n).map(|i| i / 4).collect();
    labels[n - 1] = 10_000; // a class of one
    let mut x = sphere(5, n, 8);
    x.copy_within(0..8, 8 * 150); // a duplicate in another block
    x.copy_within(8..16, 8 * 2); // and one in the same block
    for eps in [0.0, 0.1, 0.5] {
        check(MultiSimilarityLoss, &x, &labels, eps);
        check(SupConLoss, &x, &labels, eps);
        check(CircleLoss, &x, &labels, eps);
        check(GeneralizedLiftedStructureLoss, &x, &labels, eps);
        check(NtXentLoss, &x, &labels, eps);
    }
    // the miner keeps nothing (well separated classes, ε = 0): PML's zero, no gradient
    let apart = [
        1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
        0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
        0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
        0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0,
    ];
    let (v, g, s) = mined_run(
        MultiSimilarityLoss,
        &MultiSimilarityMiner::new(0.0),
        &apart,
        &[0, 0, 1, 1],
    );
    assert_eq!(v, 0.0);
    assert!(g.iter().all(|&g| g == 0.0));
    assert_eq!(s.pairs, 0);
    check(MultiSimilarityLoss, &apart, &[0, 0, 1, 1], 0.0);
    check(MultiSimilarityLoss, &apart, &[0, 0, 1, 1], 1.5);
}
