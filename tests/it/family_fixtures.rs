//! The ranking family against pytorch-metric-learning 2.9: value and
//! gradient with respect to the embeddings, to 1e-4, on the batches of
//! `tests/fixtures/family.py` (a duplicated embedding, a class of one, a
//! single class, miner pairs, triplets with repeats, temperature 0.01,
//! gamma 256), through both paths (the generic tape ops and the CPU's row
//! form), and for the built-ins through `mined` itself.
//!
//! Each case must match PML evaluated in float64 (its definitions, exactly)
//! or, where PML's float32 arithmetic departs from it by more than 1e-4 (at
//! temperature 0.01 and gamma 256 only; see the script), PML in float32 —
//! value and gradient of the same evaluation. At the ordinary settings the
//! two agree and both are checked.

use crate::family_support::{Case, Fixed, Path, Visit, cases, close, run_dim, with_formula};
use metric_loss::formulas::BatchFormula;
use metric_loss::miners::Tuples;
use metric_loss::prelude::*;

const TOL: f32 = 1e-4;

/// Which of PML's evaluations `(value, gradient)` matches: "float64",
/// "float32", or a panic naming the case and both differences.
fn matches(case: &Case, v: f32, g: &[f32], what: &str) -> &'static str {
    let exact = close(&[v], &[case.loss], TOL) && close(g, &case.grad, TOL);
    let single = close(&[v], &[case.loss_f32], TOL) && close(g, &case.grad_f32, TOL);
    let worst = |want: &[f32]| {
        g.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max)
    };
    match (exact, single) {
        (true, _) => "float64",
        (false, true) => "float32",
        _ => panic!(
            "{what} {}: loss {v} vs PML {} (float64) / {} (float32); worst gradient error {} / {}",
            case.name,
            case.loss,
            case.loss_f32,
            worst(&case.grad),
            worst(&case.grad_f32)
        ),
    }
}

/// Where PML's two evaluations differ, which one each case matched.
struct Check<'a> {
    case: &'a Case,
    only_f32: Vec<String>,
}

impl Visit for Check<'_> {
    fn visit<F: BatchFormula>(&mut self, f: F) {
        let c = self.case;
        for path in [Path::Device, Path::Generic, Path::Fused] {
            let (v, g) = run_dim(&f, c.dim, &c.x, &c.labels, &c.tuples, path);
            let what = format!("{} {:?}", F::NAME, path);
            if matches(c, v, &g, &what) == "float32" {
                self.only_f32.push(format!("{what} {}", c.name));
            }
        }
    }
}

fn against_pml(name: &str) {
    let all = cases(name);
    assert!(all.len() >= 10, "{name}: {} cases", all.len());
    let mut only_f32 = Vec::new();
    for case in &all {
        let mut c = Check {
            case,
            only_f32: Vec::new(),
        };
        with_formula(name, &case.params, &mut c);
        only_f32.extend(c.only_f32);
    }
    // PML's float32 departs from its float64 only at the extreme settings
    for what in &only_f32 {
        assert!(
            what.contains("0.01") || what.contains("256"),
            "{what}: only PML's float32 matches, at an ordinary setting"
        );
    }
    eprintln!("{name}: {} cases; float32 only: {only_f32:?}", all.len());
}

/// The built-in `L` through `mined` on every default-parameter case of `name`.
fn builtin_against_pml<L: BatchCriterion>(name: &str, loss: L) {
    let mut seen = 0;
    let defaults = cases(name);
    for c in defaults
        .iter()
        .filter(|c| c.params.as_object().is_none_or(|o| o.is_empty()))
    {
        let (v, g) = match c.dim {
            4 => mined::<L, 4>(&loss, c),
            8 => mined::<L, 8>(&loss, c),
            16 => mined::<L, 16>(&loss, c),
            d => panic!("width {d}"),
        };
        assert_eq!(matches(c, v, &g, &format!("{name} mined")), "float64");
        seen += 1;
    }
    assert!(seen >= 5, "{name}: {seen} default cases");
}

fn mined<L: BatchCriterion, const D: usize>(loss: &L, c: &Case) -> (f32, Vec<f32>) {
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

#[test]
fn supcon_matches_pml() {
    against_pml("supcon");
    builtin_against_pml("supcon", SupConLoss);
}

#[test]
fn circle_matches_pml() {
    against_pml("circle");
    builtin_against_pml("circle", CircleLoss);
}

#[test]
fn lifted_structure_matches_pml() {
    against_pml("lifted_structure");
    builtin_against_pml("lifted_structure", LiftedStructureLoss);
}

#[test]
fn generalized_lifted_structure_matches_pml() {
    against_pml("generalized_lifted_structure");
    builtin_against_pml(
        "generalized_lifted_structure",
        GeneralizedLiftedStructureLoss,
    );
}

#[test]
fn npairs_matches_pml() {
    against_pml("npairs");
    builtin_against_pml("npairs", NPairsLoss);
}

#[test]
fn margin_matches_pml() {
    against_pml("margin");
    builtin_against_pml("margin", MarginLoss);
}
