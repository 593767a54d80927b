//! What the family's tests share: reading the PML fixtures, running a
//! formula through either path, and a miner that hands over fixed tuples.

use metric_loss::device::{FusedFormula, Prepare};
use metric_loss::formulas::{
    BatchFormula, Circle, GeneralizedLiftedStructure, LiftedStructure, Margin, MultiSimilarity,
    NPairs, NtXent, PairWeights, Score, SupCon, generic_batch_formula,
};
use metric_loss::miners::{IndexPair, Triplet, Tuples};
use metric_loss::prelude::*;
use serde_json::Value;

/// Every formula of the family by the name [`with_formula`] reads.
pub const FORMULAS: [&str; 8] = [
    "multi_similarity",
    "ntxent",
    "supcon",
    "circle",
    "lifted_structure",
    "generalized_lifted_structure",
    "npairs",
    "margin",
];

/// One case of a `tests/fixtures/family_*.json` file.
pub struct Case {
    pub name: String,
    pub params: Value,
    pub dim: usize,
    pub x: Vec<f32>,
    pub labels: Vec<usize>,
    pub tuples: Tuples,
    /// PML in float64 (its definitions, computed exactly).
    pub loss: f32,
    pub grad: Vec<f32>,
    /// PML in float32.
    pub loss_f32: f32,
    pub grad_f32: Vec<f32>,
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an index") as usize)
        .collect()
}

pub fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            let p = indices(p);
            (p[0], p[1])
        })
        .collect()
}

fn tuples(v: &Value) -> Tuples {
    if v.is_null() {
        Tuples::All
    } else if let Some(t) = v.get("triplets") {
        Tuples::Triplets(
            t.as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let t = indices(t);
                    Triplet {
                        anchor: t[0],
                        positive: t[1],
                        negative: t[2],
                    }
                })
                .collect(),
        )
    } else {
        Tuples::Pairs {
            positive: pairs(&v["pos"]),
            negative: pairs(&v["neg"]),
        }
    }
}

/// The cases of `tests/fixtures/family_<name>.json`.
pub fn read(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/family_{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    v["cases"].as_array().expect("cases").clone()
}

pub fn cases(name: &str) -> Vec<Case> {
    read(name)
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            params: c["params"].clone(),
            dim: c["dim"].as_u64().unwrap() as usize,
            x: floats(&c["embeddings"]),
            labels: indices(&c["labels"]),
            tuples: tuples(&c["tuples"]),
            loss: c["loss"].as_f64().unwrap() as f32,
            grad: floats(&c["grad"]),
            loss_f32: c["loss_f32"].as_f64().unwrap() as f32,
            grad_f32: floats(&c["grad_f32"]),
        })
        .collect()
}

/// A pair miner that hands over the tuples it holds (PML's `indices_tuple`
/// given to the loss directly).
pub struct Fixed(pub Tuples);

impl PairMiner for Fixed {
    fn try_mine_pairs(
        &self,
        _: &DistanceMatrix,
        labels: &[usize],
        _: f32,
        _: f32,
    ) -> Result<Vec<IndexPair>, MetricLossError> {
        Ok(self.0.to_index_pairs(labels))
    }
    fn try_mine_tuples(
        &self,
        _: &DistanceMatrix,
        _: &[usize],
        _: f32,
        _: f32,
    ) -> Result<Tuples, MetricLossError> {
        Ok(self.0.clone())
    }
    fn name(&self) -> &'static str {
        "fixed"
    }
}

/// Which path runs the formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// dfdx tape ops (any device).
    Generic,
    /// The device's own (the CPU's row form).
    Device,
    /// The CPU's fused pass on Gram tiles (every pair of the batch only;
    /// elsewhere, and where it declines — N-pairs, a zero batch — the
    /// device's row form).
    Fused,
}

/// The loss of formula `f` and its gradient with respect to the raw
/// embeddings `x` (`dim` wide), by `path`: the mined pipeline with the
/// public pieces (normalize, the formula's matrix, the weights, PML's zero
/// rule, the formula).
pub fn run<F: BatchFormula, const D: usize>(
    f: &F,
    x: &[f32],
    labels: &[usize],
    tuples: &Tuples,
    path: Path,
) -> (f32, Vec<f32>) {
    let dev = Cpu::default();
    let t: Tensor<(usize, Const<D>), f32, Cpu> =
        dev.tensor_from_vec(x.to_vec(), (x.len() / D, Const));
    let e = metric_loss::distance::l2_normalize(t.leaky_trace()).unwrap();
    let n = labels.len();
    let e = if path == Path::Fused && matches!(tuples, Tuples::All) {
        let w = PairWeights::try_new(F::WEIGHTING, tuples, labels).unwrap();
        match Cpu::try_fused_batch_formula(e, labels, &w, f, Prepare::AsGiven).unwrap() {
            FusedFormula::Done { loss, .. } => {
                let v = loss.array();
                let g = loss.backward();
                return (v, g.get(&t).as_vec());
            }
            FusedFormula::Unavailable(e) => e,
        }
    } else {
        e
    };
    let s = match F::SCORE {
        Score::Cosine => metric_loss::distance::gram(e).unwrap(),
        Score::UnitEuclidean => metric_loss::distance::euclidean_matrix(e).unwrap(),
    };
    let s = s.reshape_like(&(n, n));
    let w = PairWeights::try_new(F::WEIGHTING, tuples, labels).unwrap();
    let loss = if f.is_zero(w.sizes()) {
        metric_loss::formulas::tape::zero(s).unwrap()
    } else {
        match path {
            Path::Generic => generic_batch_formula(s, &w, f).unwrap(),
            Path::Device | Path::Fused => Cpu::try_batch_formula(s, &w, f).unwrap(),
        }
    };
    let v = loss.array();
    let g = loss.backward();
    (v, g.get(&t).as_vec())
}

/// Calls `visit` with the formula that a fixture's loss name and params describe.
pub trait Visit {
    fn visit<F: BatchFormula>(&mut self, f: F);
}

fn num(p: &Value, key: &str, default: f32) -> f32 {
    p.get(key)
        .and_then(Value::as_f64)
        .map_or(default, |v| v as f32)
}

pub fn with_formula(name: &str, p: &Value, v: &mut impl Visit) {
    match name {
        "multi_similarity" => v.visit(MultiSimilarity {
            alpha: num(p, "alpha", 2.0),
            beta: num(p, "beta", 50.0),
            base: num(p, "base", 0.5),
        }),
        "ntxent" => v.visit(NtXent {
            temperature: num(p, "temperature", 0.07),
        }),
        "supcon" => v.visit(SupCon {
            temperature: num(p, "temperature", 0.1),
        }),
        "circle" => v.visit(Circle {
            m: num(p, "m", 0.4),
            gamma: num(p, "gamma", 80.0),
        }),
        "lifted_structure" => v.visit(LiftedStructure {
            neg_margin: num(p, "neg_margin", 1.0),
            pos_margin: num(p, "pos_margin", 0.0),
        }),
        "generalized_lifted_structure" => v.visit(GeneralizedLiftedStructure {
            neg_margin: num(p, "neg_margin", 1.0),
            pos_margin: num(p, "pos_margin", 0.0),
        }),
        "npairs" => v.visit(NPairs),
        "margin" => v.visit(Margin {
            margin: num(p, "margin", 0.2),
            nu: num(p, "nu", 0.0),
            beta: num(p, "beta", 1.2),
        }),
        other => panic!("unknown loss {other}"),
    }
}

/// Runs `f` at the width `dim` (the fixtures use 4, 8 and 16).
pub fn run_dim<F: BatchFormula>(
    f: &F,
    dim: usize,
    x: &[f32],
    labels: &[usize],
    tuples: &Tuples,
    path: Path,
) -> (f32, Vec<f32>) {
    match dim {
        4 => run::<F, 4>(f, x, labels, tuples, path),
        8 => run::<F, 8>(f, x, labels, tuples, path),
        16 => run::<F, 16>(f, x, labels, tuples, path),
        d => panic!("no test width {d}"),
    }
}

/// Whether `|a − b| ≤ tol · (1 + |b|)` entry by entry.
pub fn close(got: &[f32], want: &[f32], tol: f32) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a.is_finite() && (a - b).abs() <= tol * (1.0 + b.abs()))
}

/// `|a − b| ≤ tol · (1 + |b|)` entry by entry.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.is_finite() && (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}
