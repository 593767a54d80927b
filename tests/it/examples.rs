//! Runs a few training steps of every example (and its evaluation and
//! plotting), so that none of them can rot.

use crate::common;

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
fn verification_pairs_are_half_same_and_held_out() {
    let labels: Vec<usize> = (0..10_000).map(|i| i % 10).collect();
    let pairs = common::verification_pairs(&labels, 200, 7);
    assert_eq!(pairs.len(), 200);
    assert_eq!(pairs.iter().filter(|p| p.2).count(), 100);
    for &(a, b, same) in &pairs {
        assert!(a >= common::TRAIN && b >= common::TRAIN && a != b);
        assert_eq!(labels[a] == labels[b], same);
    }
    assert_eq!(pairs, common::verification_pairs(&labels, 200, 7));
}
