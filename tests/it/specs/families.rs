//! Every family of the ranking losses declared with the macro, with PML's
//! defaults and with every key written, on one batch: each gives a finite
//! loss and gradient, equal to the built-in's where the numbers are the same.
use metric_loss::prelude::*;

#[metric_loss(multi_similarity, alpha = 2, beta = 50, base = 0.5)]
pub struct Ms;
#[metric_loss(ntxent, temperature = 0.07)]
pub struct Nt;
#[metric_loss(supcon, temperature = 0.1)]
pub struct Sc;
#[metric_loss(circle, m = 0.4, gamma = 80)]
pub struct Ci;
#[metric_loss(lifted_structure, neg_margin = 1, pos_margin = 0)]
pub struct Li;
#[metric_loss(generalized_lifted_structure, pos_margin = 0.1, neg_margin = 1.2)]
pub struct Gl;
#[metric_loss(npairs)]
pub struct Np;
#[metric_loss(margin_loss, margin = 0.2, nu = 0, beta = 1.2)]
pub struct Ma;
#[metric_loss(crate = ::metric_loss, multi_similarity, base = -0.25)]
pub struct NegativeBase;

fn check<L: BatchCriterion, B: BatchCriterion>(loss: L, builtin: Option<B>) {
    let dev = Cpu::default();
    let x = dev.tensor([
        [1.0f32, 0.2, 0.0],
        [0.8, 0.6, 0.1],
        [0.0, 1.0, 0.3],
        [-0.6, 0.8, 0.0],
        [0.1, -1.0, 0.5],
        [0.0, -0.9, 0.7],
    ]);
    let labels = [0, 0, 1, 1, 2, 2];
    let l = loss.forward(x.leaky_trace(), &labels);
    let v = l.array();
    let g = l.backward().get(&x).as_vec();
    assert!(v.is_finite() && g.iter().all(|g| g.is_finite()));
    if let Some(b) = builtin {
        assert_eq!(b.forward(x, &labels).array(), v);
    }
}

#[test]
fn families() {
    check(Ms, Some(MultiSimilarityLoss));
    check(Nt, Some(NtXentLoss));
    check(Sc, Some(SupConLoss));
    check(Ci, Some(CircleLoss));
    check(Li, Some(LiftedStructureLoss));
    check(Gl, None::<MultiSimilarityLoss>);
    check(Np, Some(NPairsLoss));
    check(Ma, Some(MarginLoss));
    check(NegativeBase, None::<MultiSimilarityLoss>);
    assert_eq!(Ms.formula().beta, 50.0);
}
