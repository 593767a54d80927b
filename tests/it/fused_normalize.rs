//! The ranking family's fused CPU pass normalizing the raw embeddings itself
//! (`Prepare::L2Normalize`) against the previous composition: the
//! normalize op (`l2_normalize`) on the tape, then the fused pass on its
//! rows (`Prepare::AsGiven`). Values, statistics and gradients bit for bit,
//! on the rows where normalizing is delicate (a zero row under the
//! `NORM_EPS` floor, a tiny one, one whose squares overflow, a duplicate),
//! a class of one, a single-class batch, N-pairs' view, a batch large enough
//! for the threaded parts; the gradient by finite differences; the tape
//! shared with another branch; a NaN row's typed error.

use crate::family_support::{FORMULAS, Visit, assert_close, with_formula};
use metric_loss::MetricLossError;
use metric_loss::device::{FusedFormula, Prepare};
use metric_loss::distance::l2_normalize;
use metric_loss::formulas::{BatchFormula, PairWeights};
use metric_loss::miners::{MinerStats, Tuples};
use metric_loss::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

type Rows<const D: usize, T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;
type Traced<const D: usize> = Rows<D, OwnedTape<f32, Cpu>>;

fn rows<const D: usize>(data: &[f32]) -> Rows<D> {
    Cpu::default().tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// What one run gave: the kernel's verdict, with the loss's bits, the
/// statistics and the gradient's bits, or the rows it gave back.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done {
        loss: u32,
        stats: MinerStats,
        grad: Vec<u32>,
    },
    /// `Unavailable`: the rows given back, as bits.
    Unavailable(Vec<u32>),
    /// The typed error, its value as bits (a NaN compares by its bits).
    Failed(String, Option<u32>),
}

fn outcome<const D: usize>(
    t: &Rows<D>,
    run: impl FnOnce(
        Traced<D>,
    ) -> Result<FusedFormula<usize, D, Cpu, OwnedTape<f32, Cpu>>, MetricLossError>,
) -> Outcome {
    match run(t.leaky_trace()) {
        Ok(FusedFormula::Done { loss, stats }) => {
            let v = loss.array();
            let g = loss.backward();
            Outcome::Done {
                loss: v.to_bits(),
                stats,
                grad: bits(&g.get(t).as_vec()),
            }
        }
        Ok(FusedFormula::Unavailable(x)) => Outcome::Unavailable(bits(&x.as_vec())),
        Err(e) => {
            let value = match &e {
                MetricLossError::NonFinite { value, .. } => Some(value.to_bits()),
                _ => None,
            };
            let shown = match e {
                MetricLossError::NonFinite {
                    what, row, column, ..
                } => format!("NonFinite {what} row {row} column {column}"),
                other => other.to_string(),
            };
            Outcome::Failed(shown, value)
        }
    }
}

/// The two ways through the kernel for one batch, compared for every formula.
struct Compare<'a, const D: usize> {
    x: &'a [f32],
    labels: &'a [usize],
    what: &'a str,
    /// Whether the kernel is expected to run (`Some(false)`: to give the
    /// rows back), or either (`None`).
    done: Option<bool>,
}

impl<const D: usize> Visit for Compare<'_, D> {
    fn visit<F: BatchFormula>(&mut self, f: F) {
        let t = rows::<D>(self.x);
        let w = PairWeights::try_new(F::WEIGHTING, &Tuples::All, self.labels).unwrap();
        let fused = outcome(&t, |x| {
            Cpu::try_fused_batch_formula(x, self.labels, &w, &f, Prepare::L2Normalize)
        });
        let composed = outcome(&t, |x| {
            let y = l2_normalize(x).map_err(MetricLossError::device)?;
            Cpu::try_fused_batch_formula(y, self.labels, &w, &f, Prepare::AsGiven)
        });
        let what = format!("{} on {}", F::NAME, self.what);
        match (&fused, &composed) {
            (Outcome::Unavailable(raw), Outcome::Unavailable(_)) => {
                // given back as it came: the raw rows, not normalized
                assert_ne!(self.done, Some(true), "{what}: the kernel declined");
                assert_eq!(raw, &bits(self.x), "{what}: the rows given back");
            }
            (Outcome::Done { .. }, _) => {
                assert_ne!(self.done, Some(false), "{what}: the kernel ran");
                assert_eq!(fused, composed, "{what}");
            }
            _ => assert_eq!(fused, composed, "{what}"),
        }
    }
}

fn compare_all<const D: usize>(x: &[f32], labels: &[usize], what: &str, done: Option<bool>) {
    for name in FORMULAS {
        // N-pairs reads one positive per anchor: its view is the same pass
        let mut c = Compare::<D> {
            x,
            labels,
            what,
            done,
        };
        with_formula(name, &Value::Null, &mut c);
    }
}

/// Twelve rows of eight, four classes, and the delicate rows put in.
fn delicate_batch(seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..12 * 8).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let labels = vec![0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 3];
    let row = |x: &mut Vec<f32>, r: usize, v: &dyn Fn(usize) -> f32| {
        for k in 0..8 {
            x[r * 8 + k] = v(k);
        }
    };
    // a zero row (the NORM_EPS floor) and a tiny one under it
    row(&mut x, 1, &|_| 0.0);
    row(&mut x, 3, &|k| if k % 2 == 0 { 2e-9 } else { -1e-9 });
    // tiny but above the floor
    row(&mut x, 4, &|k| (k as f32 - 3.5) * 1e-6);
    // finite values whose squares overflow f32
    row(&mut x, 6, &|k| (k as f32 - 3.5) * 3e19);
    // a duplicate of row 0 (same class) and of row 2 (another class)
    x.copy_within(0..8, 8 * 9);
    x.copy_within(16..24, 8 * 5);
    (x, labels)
}

#[test]
fn fused_normalization_equals_the_normalize_op_then_the_pass() {
    for seed in [1, 2] {
        let (x, labels) = delicate_batch(seed);
        // row 11 is a class of one
        compare_all::<8>(&x, &labels, "the delicate rows", Some(true));
    }
}

#[test]
fn a_single_class_batch_as_before() {
    let (x, _) = delicate_batch(3);
    // no negative pair: PML's zero for most formulas (the kernel gives the
    // raw rows back), lifted structure's and margin's positive terms
    let labels = vec![5; 12];
    compare_all::<8>(&x, &labels, "one class", None);
    // the loss API on it: as through the normalize op and the generic path
    let t = rows::<8>(&x);
    let all = crate::family_support::Fixed(Tuples::All);
    for (fused, generic) in [
        (
            SupConLoss.forward(t.leaky_trace(), &labels),
            SupConLoss.mined(&all, t.leaky_trace(), &labels).loss,
        ),
        (
            MarginLoss.forward(t.leaky_trace(), &labels),
            MarginLoss.mined(&all, t.leaky_trace(), &labels).loss,
        ),
    ] {
        assert_eq!(fused.array().to_bits(), generic.array().to_bits());
        let (gf, gg) = (fused.backward(), generic.backward());
        assert_close(
            &gf.get(&t).as_vec(),
            &gg.get(&t).as_vec(),
            1e-5,
            "one class",
        );
    }
}

/// Enough rows for the pass's threaded blocks and the row parts of the
/// normalization and of the backward (N·D ≥ 2¹⁵), with delicate rows.
#[test]
fn fused_normalization_equals_the_composition_on_a_large_batch() {
    let mut rng = StdRng::seed_from_u64(11);
    let n = 300;
    let mut x: Vec<f32> = (0..n * 128).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let labels: Vec<usize> = (0..n).map(|i| (i * 7) % 23).collect();
    x[128 * 5..128 * 6].fill(0.0);
    x[128 * 200..128 * 201].fill(4e19);
    x.copy_within(0..128, 128 * 299);
    compare_all::<128>(&x, &labels, "300 rows", Some(true));
}

/// The loss API (`forward`, i.e. `try_mined` with `AllPairs`) now hands the
/// raw rows to the kernel: the same bits as the normalize op then the pass.
#[test]
fn the_loss_api_takes_the_fused_normalization() {
    let (x, labels) = delicate_batch(4);
    let t = rows::<8>(&x);
    let loss = SupConLoss.forward(t.leaky_trace(), &labels);
    let w = PairWeights::try_new(
        <SupConLoss as BatchCriterion>::Formula::WEIGHTING,
        &Tuples::All,
        &labels,
    )
    .unwrap();
    let composed = outcome(&t, |x| {
        let y = l2_normalize(x).map_err(MetricLossError::device)?;
        Cpu::try_fused_batch_formula(y, &labels, &w, &SupConLoss.formula(), Prepare::AsGiven)
    });
    let Outcome::Done {
        loss: want, grad, ..
    } = composed
    else {
        panic!("the kernel ran");
    };
    assert_eq!(loss.array().to_bits(), want);
    assert_eq!(bits(&loss.backward().get(&t).as_vec()), grad);
}

#[metric_loss(supcon, temperature = 1)]
#[derive(Clone, Copy)]
struct SupConOne;

#[metric_loss(multi_similarity, alpha = 1, beta = 2, base = 0.5)]
#[derive(Clone, Copy)]
struct MsMild;

/// Finite differences of the loss from raw rows, through the fused
/// normalization: a duplicated row, a class of one, rows far from unit
/// length (the `1/n` of the normalization's backward), N-pairs' view.
#[test]
fn the_fused_normalization_matches_finite_differences() {
    fn check<L: BatchCriterion + Copy>(loss: L, name: &str) {
        let mut rng = StdRng::seed_from_u64(5);
        let mut x: Vec<f32> = (0..10 * 4).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let labels = vec![0, 0, 1, 1, 2, 2, 3, 0, 1, 2];
        x.copy_within(4..8, 28); // row 7 = row 1, both class 0
        for v in &mut x[8..12] {
            *v *= 30.0; // a long row
        }
        for v in &mut x[16..20] {
            *v *= 0.05; // a short one
        }
        let f = |x: &[f32]| f64::from(loss.forward(rows::<4>(x), &labels).array());
        let t = rows::<4>(&x);
        let analytic = loss
            .forward(t.leaky_trace(), &labels)
            .backward()
            .get(&t)
            .as_vec();
        for i in 0..x.len() {
            // a step relative to the row's length (rows 2 and 4 are scaled)
            let h = 1e-2
                * x[i / 4 * 4..i / 4 * 4 + 4]
                    .iter()
                    .map(|v| v.abs())
                    .fold(0.0, f32::max);
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = ((f(&up) - f(&down)) / (2.0 * f64::from(h))) as f32;
            assert!(
                (numeric - analytic[i]).abs() < 2e-3 + 3e-2 * analytic[i].abs().max(numeric.abs()),
                "{name}, x[{i}]: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
    }
    check(SupConOne, "SupCon");
    check(MsMild, "multi-similarity");
    check(
        GeneralizedLiftedStructureLoss,
        "generalized lifted structure",
    );
    check(NPairsLoss, "N-pairs");
}

/// One traced batch feeding the fused pass and another op: the fused
/// backward adds its `∂L/∂x` into the other branch's, exactly as the
/// normalize op's backward did.
#[test]
fn the_fused_normalization_shares_the_tape_with_other_branches() {
    let (x, labels) = delicate_batch(6);
    let t = rows::<8>(&x);
    // the other branch: Σ x² / 2 (gradient x), and a second loss
    let both = |fused: bool| {
        let (e, tape) = t.leaky_trace().split_tape();
        let other = e.clone().put_tape(tape).square().sum() * 0.5;
        let (other, tape) = other.split_tape();
        let e = e.put_tape(tape);
        let loss = if fused {
            SupConLoss.forward(e, &labels)
        } else {
            let w = PairWeights::try_new(
                <SupConLoss as BatchCriterion>::Formula::WEIGHTING,
                &Tuples::All,
                &labels,
            )
            .unwrap();
            let y = l2_normalize(e).unwrap();
            match Cpu::try_fused_batch_formula(
                y,
                &labels,
                &w,
                &SupConLoss.formula(),
                Prepare::AsGiven,
            )
            .unwrap()
            {
                FusedFormula::Done { loss, .. } => loss,
                FusedFormula::Unavailable(_) => panic!("the kernel ran"),
            }
        };
        let (loss, tape) = loss.split_tape();
        let ms = MultiSimilarityLoss.forward(t.clone().put_tape(tape), &labels);
        let total =
            ms + loss.retaped::<OwnedTape<f32, Cpu>>() + other.retaped::<OwnedTape<f32, Cpu>>();
        bits(&total.backward().get(&t).as_vec())
    };
    assert_eq!(both(true), both(false));
}

/// A NaN row, an infinite one: the same typed error as through the
/// normalize op (the normalized row's first non-finite value).
#[test]
fn a_nan_row_is_the_same_typed_error() {
    for (at, bad) in [(13, f32::NAN), (21, f32::INFINITY), (30, f32::NEG_INFINITY)] {
        let (mut x, labels) = delicate_batch(7);
        x[at] = bad;
        let t = rows::<8>(&x);
        let want = match SupConLoss.try_forward(t.leaky_trace(), &labels) {
            Err(MetricLossError::NonFinite {
                what, row, column, ..
            }) => (what, row, column),
            other => panic!("{bad} at {at}: {other:?}"),
        };
        // a NaN makes the whole row NaN; an infinity, inf/inf at its place
        let column = if bad.is_nan() { 0 } else { at % 8 };
        assert_eq!(want, ("embeddings", at / 8, column), "{bad} at {at}");
        compare_all::<8>(&x, &labels, "a non-finite row", Some(false));
    }
}
