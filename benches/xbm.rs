//! Cross-batch memory, the loss part of a training step: a batch of 80
//! (5 classes × 16) against a memory of 1024, D = 128, forward + backward,
//! matching `../shared/bench/reference.py family`'s
//! `xbm_multi_similarity_pml` (PML's `CrossBatchMemory(MultiSimilarityLoss())`,
//! no miner, i.e. every pair). The memory is full before timing starts, as
//! in `reference.py` (20 warm-up steps of the same batch).
//!
//! `multi_similarity_80x1024_generic` runs the same loss on the generic
//! mined path (what the fused CPU pass replaced), for a before/after in
//! one sitting.
//!
//! `cargo bench --bench xbm` ; set `RAYON_NUM_THREADS` / `OMP_NUM_THREADS`
//! alike when comparing with the reference.

use criterion::{Criterion, criterion_group};
use metric_loss::loss::{Family, MetricLoss};
use metric_loss::miners::Miner;
use metric_loss::prelude::*;

const D: usize = 128;
const BATCH: usize = 80;
const MEMORY: usize = 1024;

fn bench_xbm<L, M>(c: &mut Criterion, name: &str, loss: L, miner: M)
where
    L: MetricLoss,
    L::Family: Family<L, Output = ()>,
    M: Miner<<L::Family as Family<L>>::Tuples>,
{
    let dev = Cpu::seed_from_u64(0);
    let x: Tensor<(usize, Const<D>), f32, Cpu> = dev.sample_normal_like(&(BATCH, Const));
    let labels: Vec<usize> = (0..BATCH).map(|i| i / 16).collect();
    let mut xbm = CrossBatchMemory::<L, D>::new(loss, MEMORY);
    // fill the memory (13 batches of 80 > 1024)
    for _ in 0..20 {
        let _ = xbm.mined(&miner, x.leaky_trace(), &labels).loss.backward();
    }
    assert_eq!(xbm.len(), MEMORY);
    let mut g = c.benchmark_group("xbm");
    g.sample_size(20);
    g.bench_function(name, |b| {
        b.iter(|| xbm.mined(&miner, x.leaky_trace(), &labels).loss.backward())
    });
    g.finish();
}

/// Every pair, through a miner no fused kernel recognises: the generic
/// mined path (the `B × M` matrix on the tape, a host copy, the pair list),
/// which the fused CPU pass replaced; for a before/after in one run.
struct Listed;

impl PairMiner for Listed {
    fn try_mine_pairs(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<Vec<metric_loss::miners::IndexPair>, MetricLossError> {
        AllPairs.try_mine_pairs(dist, labels, pos_margin, neg_margin)
    }
    fn try_mine_tuples(
        &self,
        dist: &DistanceMatrix,
        labels: &[usize],
        pos_margin: f32,
        neg_margin: f32,
    ) -> Result<metric_loss::miners::Tuples, MetricLossError> {
        AllPairs.try_mine_tuples(dist, labels, pos_margin, neg_margin)
    }
    fn name(&self) -> &'static str {
        "listed all-pairs"
    }
}

fn xbm(c: &mut Criterion) {
    bench_xbm(c, "multi_similarity_80x1024", MultiSimilarityLoss, AllPairs);
    bench_xbm(
        c,
        "multi_similarity_80x1024_generic",
        MultiSimilarityLoss,
        Listed,
    );
    bench_xbm(
        c,
        "multi_similarity_miner_80x1024",
        MultiSimilarityLoss,
        MultiSimilarityMiner::default(),
    );
    bench_xbm(c, "triplet_batch_hard_80x1024", TripletLoss, BatchHard);
}

criterion_group!(benches, xbm);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
