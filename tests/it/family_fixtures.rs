//! The ranking family against pytorch-metric-learning 2.9: value and
//! gradient with respect to the embeddings, to 1e-4, on the batches of
//! `tests/fixtures/family.py` (a duplicated embedding, a class of one, a
//! single class, miner pairs, triplets with repeats, temperature 0.01,
//! gamma 256), through both paths (the generic tape ops and the CPU's row
//! form), and for the built-ins through `mined` itself.

use crate::family_support::{Fixed, Path, Visit, assert_close, cases, run_dim, with_formula};
use metric_loss::formulas::BatchFormula;
use metric_loss::miners::Tuples;
use metric_loss::prelude::*;

const TOL: f32 = 1e-4;

struct Check<'a> {
    case: &'a crate::family_support::Case,
    checked: usize,
}

impl Visit for Check<'_> {
    fn visit<F: BatchFormula>(&mut self, f: F) {
        let c = self.case;
        for path in [Path::Device, Path::Generic] {
            let (v, g) = run_dim(&f, c.dim, &c.x, &c.labels, &c.tuples, path);
            let what = format!("{} {:?} {}", F::NAME, path, c.name);
            assert_close(&[v], &[c.loss], TOL, &format!("{what}: loss"));
            assert_close(&g, &c.grad, TOL, &format!("{what}: grad"));
        }
        self.checked += 1;
    }
}

fn against_pml(name: &str) {
    let all = cases(name);
    assert!(all.len() >= 10, "{name}: {} cases", all.len());
    let mut checked = 0;
    for case in &all {
        let mut c = Check { case, checked: 0 };
        with_formula(name, &case.params, &mut c);
        checked += c.checked;
    }
    assert_eq!(checked, all.len());
}

/// The built-in `L` through `mined` on every default-parameter case of `name`.
fn builtin_against_pml<L: BatchCriterion>(name: &str, loss: L) {
    let mut seen = 0;
    for c in cases(name)
        .iter()
        .filter(|c| c.params.as_object().is_none_or(|o| o.is_empty()))
    {
        let (v, g) = match c.dim {
            4 => mined::<L, 4>(&loss, c),
            8 => mined::<L, 8>(&loss, c),
            16 => mined::<L, 16>(&loss, c),
            d => panic!("width {d}"),
        };
        assert_close(
            &[v],
            &[c.loss],
            TOL,
            &format!("{name} mined {}: loss", c.name),
        );
        assert_close(&g, &c.grad, TOL, &format!("{name} mined {}: grad", c.name));
        seen += 1;
    }
    assert!(seen >= 5, "{name}: {seen} default cases");
}

fn mined<L: BatchCriterion, const D: usize>(
    loss: &L,
    c: &crate::family_support::Case,
) -> (f32, Vec<f32>) {
    let dev = Cpu::default();
    let x: Tensor<(usize, Const<D>), f32, Cpu> =
        dev.tensor_from_vec(c.x.clone(), (c.labels.len(), Const));
    let l = match &c.tuples {
        Tuples::All => loss.forward(x.leaky_trace(), &c.labels),
        t => {
            loss.mined(&Fixed(t.clone()), x.leaky_trace(), &c.labels)
                .loss
        }
    };
    let v = l.array();
    (v, l.backward().get(&x).as_vec())
}

#[test]
fn multi_similarity_matches_pml() {
    against_pml("multi_similarity");
    builtin_against_pml("multi_similarity", MultiSimilarityLoss);
}

#[test]
fn ntxent_matches_pml() {
    against_pml("ntxent");
    builtin_against_pml("ntxent", NtXentLoss);
}
