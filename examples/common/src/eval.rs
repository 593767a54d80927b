//! Evaluation: embedding every digit, retrieval and verification.

use super::*;

/// Embeds every digit, without a tape, in chunks of 500: `len * D` values.
pub fn embed_all<const D: usize, Net>(dev: &Cpu, mnist: &Mnist, model: &Net) -> Vec<f32>
where
    Net: Module<
            Tensor<(usize, Const<PIXELS>), f32, Cpu>,
            Output = Tensor<(usize, Const<D>), f32, Cpu>,
        >,
{
    let mut out = Vec::with_capacity(mnist.len() * D);
    let idx: Vec<usize> = (0..mnist.len()).collect();
    for chunk in idx.chunks(500) {
        let x = batch_tensor(dev, mnist, chunk);
        out.extend(model.forward(x).as_vec());
    }
    out
}

/// Queries `train..` against references `..train`, Euclidean (`train`:
/// [`Args::train_count`]).
pub fn evaluate_retrieval<const D: usize>(
    embeddings: &[f32],
    labels: &[usize],
    train: usize,
) -> Result<RetrievalMetrics> {
    let (refs, queries) = embeddings.split_at(train * D);
    let (ref_labels, query_labels) = labels.split_at(train);
    Ok(retrieval_metrics(
        queries,
        query_labels,
        ReferenceSet::Separate {
            embeddings: refs,
            labels: ref_labels,
        },
        D,
        &RetrievalOptions::default(),
    )?)
}

/// `count` pairs of held-out digits (`train..`), the first half of the same
/// class, the second half of different classes, seeded.
pub fn verification_pairs(
    labels: &[usize],
    train: usize,
    count: usize,
    seed: u64,
) -> Vec<(usize, usize, bool)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05ee_d0f9_a125);
    let held_out: Vec<usize> = (train..labels.len()).collect();
    let mut pairs = Vec::with_capacity(count);
    while pairs.len() < count {
        let want_same = pairs.len() < count / 2;
        let a = held_out[rng.gen_range(0..held_out.len())];
        let b = held_out[rng.gen_range(0..held_out.len())];
        if a != b && (labels[a] == labels[b]) == want_same {
            pairs.push((a, b, want_same));
        }
    }
    pairs
}

/// ROC AUC, EER and 10-fold accuracy of `pairs`, score = −Euclidean distance.
pub fn verification<const D: usize>(
    embeddings: &[f32],
    pairs: &[(usize, usize, bool)],
) -> Result<(f64, f64, f64)> {
    let scores: Vec<f32> = pairs
        .iter()
        .map(|&(a, b, _)| {
            -euclid(
                &embeddings[a * D..(a + 1) * D],
                &embeddings[b * D..(b + 1) * D],
            )
        })
        .collect();
    let same: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    Ok((
        roc_auc(&scores, &same)?,
        eer(&scores, &same)?,
        kfold_accuracy(&scores, &same, 10)?.mean,
    ))
}

/// Each row of width `D` scaled to unit length (a zero row stays zero).
pub fn l2_normalized<const D: usize>(e: &[f32]) -> Vec<f32> {
    let mut out = e.to_vec();
    for row in out.chunks_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

fn euclid(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}
