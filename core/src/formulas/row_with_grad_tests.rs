//! The one-sweep [`BatchFormula::row_with_grad`] overrides against the
//! default body ([`row_and_grad_by_parts`]: `row`, then `row_backward`) and
//! against each formula written out in `f64`, its gradient by central
//! differences, on the AVX2 and the portable sums, at PML's numbers and at
//! the extremes (temperature 0.01, gamma 256).

use super::exp_sum::tests::PORTABLE;
use super::{
    BatchFormula, Circle, GeneralizedLiftedStructure, MultiSimilarity, Row, RowValue, SupCon,
    row_and_grad_by_parts,
};

/// A row of `c` scores in `lo..hi`, with disjoint masks: column 0 (the
/// anchor itself) in neither, every fourth a positive, the rest negatives.
fn row_data(c: usize, (lo, hi): (f32, f32), seed: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let s = (0..c)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            lo + (hi - lo) * (state % 10_000) as f32 / 10_000.0
        })
        .collect();
    let pos = (0..c)
        .map(|j| f32::from(u8::from(j > 0 && j % 4 == 1)))
        .collect();
    let neg = (0..c)
        .map(|j| f32::from(u8::from(j > 0 && j % 4 != 1)))
        .collect();
    (s, pos, neg)
}

/// `row_with_grad` against the default body (the value bit for bit, the
/// gradient to `f32` rounding) and against `value64` (the row's value in
/// `f64` from the scores, the masks and the detached scores) and its
/// central differences; `nonzero` asks for rows with a gradient.
fn check<F: BatchFormula>(
    f: F,
    range: (f32, f32),
    value64: impl Fn(&[f64], &[f64], &[f32], &[f32]) -> f64,
) {
    let mut counted = 0;
    for c in [2usize, 9, 37, 256] {
        for seed in 0..4 {
            let (s, pos, neg) = row_data(c, range, seed);
            let row = Row {
                index: 0,
                s: &s,
                pos: &pos,
                neg: &neg,
            };
            for portable in [false, true] {
                PORTABLE.set(portable);
                let mut want = vec![f32::NAN; c];
                let by_parts: RowValue = row_and_grad_by_parts(&f, &row, 0.75, &mut want);
                let mut got = vec![f32::NAN; c];
                let v = f.row_with_grad(&row, 0.75, &mut got);
                PORTABLE.set(false);
                let what = format!("{} c={c} seed={seed} portable={portable}", F::NAME);
                assert_eq!(v.value.to_bits(), by_parts.value.to_bits(), "{what}");
                assert_eq!(v.count, by_parts.count, "{what}");
                let s64: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
                let at = |t: &[f64]| value64(t, &s64, &pos, &neg);
                let exact = at(&s64);
                assert!(
                    (f64::from(v.value) - exact).abs() <= 2e-5 * exact.abs().max(1.0),
                    "{what}: value {} vs f64 {exact}",
                    v.value
                );
                let scale = want.iter().fold(0.0f32, |m, &g| m.max(g.abs()));
                assert!(scale.is_finite() && v.value.is_finite(), "{what}");
                for j in 0..c {
                    assert!(got[j].is_finite(), "{what}, entry {j}: {}", got[j]);
                    assert!(
                        (got[j] - want[j]).abs() <= 2e-5 * scale + 1e-30,
                        "{what}, entry {j}: {} vs by parts {}",
                        got[j],
                        want[j]
                    );
                    if v.count == 0.0 {
                        assert_eq!(got[j], 0.0, "{what}, entry {j}");
                        continue;
                    }
                    // central differences of the f64 value, the weights held
                    let h = 1e-6 * s64[j].abs().max(1e-2);
                    let mut t = s64.clone();
                    t[j] += h;
                    let up = at(&t);
                    t[j] -= 2.0 * h;
                    let fd = 0.75 * (up - at(&t)) / (2.0 * h);
                    assert!(
                        (f64::from(got[j]) - fd).abs() <= 1e-4 * f64::from(scale).max(1e-6),
                        "{what}, entry {j}: {} vs f64 differences {fd}",
                        got[j]
                    );
                }
                counted += usize::from(v.count > 0.0);
            }
        }
    }
    assert!(counted > 0, "{}: no row had a gradient", F::NAME);
}

/// `ln Σ_j e^{x_j}` over the entries with `w_j > 0`, in `f64`; `None`
/// without one.
fn lse64(x: impl Iterator<Item = (f64, f32)>) -> Option<f64> {
    let x: Vec<f64> = x.filter(|&(_, w)| w > 0.0).map(|(x, _)| x).collect();
    let m = x.iter().copied().reduce(f64::max)?;
    Some(m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
}

fn supcon64(t: f64) -> impl Fn(&[f64], &[f64], &[f32], &[f32]) -> f64 {
    move |s, _, pos, neg| {
        let any = pos.iter().zip(neg).map(|(&p, &q)| p.max(q));
        let Some(d) = lse64(s.iter().map(|v| v / t).zip(any)) else {
            return 0.0;
        };
        let size: f64 = pos.iter().map(|&p| f64::from(p)).sum();
        let sum: f64 = s.iter().zip(pos).map(|(v, &p)| f64::from(p) * v / t).sum();
        (size * d - sum) / size
    }
}

#[test]
fn supcon_in_one_sweep() {
    for t in [0.1f32, 0.07, 0.01] {
        check(
            SupCon { temperature: t },
            (-1.0, 1.0),
            supcon64(f64::from(t)),
        );
    }
}

fn circle64(m: f64, g: f64) -> impl Fn(&[f64], &[f64], &[f32], &[f32]) -> f64 {
    move |s, held, pos, neg| {
        let zp = s
            .iter()
            .zip(held)
            .map(|(v, h)| -g * (1.0 + m - h).max(0.0) * (v - (1.0 - m)));
        let zn = s
            .iter()
            .zip(held)
            .map(|(v, h)| g * (h + m).max(0.0) * (v - m));
        match (
            lse64(zp.zip(pos.iter().copied())),
            lse64(zn.zip(neg.iter().copied())),
        ) {
            (Some(p), Some(n)) => {
                let x = p + n;
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
            _ => 0.0,
        }
    }
}

#[test]
fn circle_in_one_sweep() {
    for (m, g) in [(0.4f32, 80.0f32), (0.25, 256.0), (0.4, 1.0)] {
        check(
            Circle { m, gamma: g },
            (-1.0, 1.0),
            circle64(f64::from(m), f64::from(g)),
        );
    }
}

fn lifted64(mp: f64, mn: f64) -> impl Fn(&[f64], &[f64], &[f32], &[f32]) -> f64 {
    move |d, _, pos, neg| {
        let p = lse64(d.iter().map(|v| v - mp).zip(pos.iter().copied()));
        let n = lse64(d.iter().map(|v| mn - v).zip(neg.iter().copied()));
        (p.unwrap_or(0.0) + n.unwrap_or(0.0)).max(0.0)
    }
}

#[test]
fn generalized_lifted_structure_in_one_sweep() {
    for (mp, mn) in [(0.0f32, 1.0f32), (0.5, 1.5), (0.0, 0.2)] {
        check(
            GeneralizedLiftedStructure {
                pos_margin: mp,
                neg_margin: mn,
            },
            (0.0, 2.0),
            lifted64(f64::from(mp), f64::from(mn)),
        );
    }
}

#[test]
fn multi_similarity_in_one_sweep() {
    let f = MultiSimilarity {
        alpha: 2.0,
        beta: 50.0,
        base: 0.5,
    };
    check(f, (-1.0, 1.0), |s, _, pos, neg| {
        let one = |x: Vec<(f64, f32)>| {
            let x = x.into_iter().chain([(0.0, 1.0)]);
            lse64(x).expect("the 1")
        };
        let p = one(s
            .iter()
            .map(|v| -2.0 * (v - 0.5))
            .zip(pos.iter().copied())
            .collect());
        let n = one(s
            .iter()
            .map(|v| 50.0 * (v - 0.5))
            .zip(neg.iter().copied())
            .collect());
        p / 2.0 + n / 50.0
    });
}
