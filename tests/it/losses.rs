//! Every loss formula against hand-computed values, and finite-difference
//! gradient checks over the spec space, with zero distances in the batch and
//! one tape threaded through three branches.

use metric_loss::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

const D: usize = 3;
type Rows<T = NoneTape> = Tensor<(usize, Const<D>), f32, Cpu, T>;

fn rows(dev: &Cpu, data: &[f32]) -> Rows {
    dev.tensor_from_vec(data.to_vec(), (data.len() / D, Const))
}

fn close(a: f32, b: f32) {
    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} != {b}");
}

// ---------------------------------------------------------------- values

#[test]
fn contrastive_walkthrough() {
    let dev = Cpu::default();
    let a = rows(&dev, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // distances 5, 5 and 0.5
    let b = rows(&dev, &[3.0, 4.0, 0.0, 3.0, 4.0, 0.0, 0.3, 0.4, 0.0]);
    let y = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar, Pair::Dissimilar]);
    // similar: D^2 = 25; dissimilar beyond the margin: 0; inside: (1 - 0.5)^2
    let per_item = [25.0, 0.0, 0.25];
    let loss = ContrastiveLoss.forward(a.clone(), b.clone(), &y);
    close(loss.array(), per_item.iter().sum::<f32>() / 3.0);

    #[metric_loss(pair, squared, margin = 1.0, reduction = none)]
    struct PerPair;
    let l = PerPair.forward(a.clone(), b.clone(), &y).as_vec();
    for (l, e) in l.iter().zip(per_item) {
        close(*l, e);
    }

    // PML's form: un-squared hinges, pos_margin.
    #[metric_loss(pair, margin = 1.0, pos_margin = 0.2, reduction = sum)]
    struct Hinged;
    // similar: [5 - 0.2]+ = 4.8; dissimilar 0; [1 - 0.5]+ = 0.5
    close(Hinged.forward(a, b, &y).array(), 4.8 + 0.5);
}

#[test]
fn triplet_walkthrough() {
    let dev = Cpu::default();
    let a = rows(&dev, &[0.0; 6]);
    let p = rows(&dev, &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]); // d(A,P) = 1
    let n = rows(&dev, &[0.0, 1.5, 0.0, 0.0, 1.1, 0.0]); // d(A,N) = 1.5, 1.1
    // row 0: d(A,N) > d(A,P) + m -> 0; row 1: 1 - 1.1 + 0.2 = 0.1
    close(
        TripletLoss.forward(a.clone(), p.clone(), n.clone()).array(),
        0.05,
    );
    close(
        TripletLoss
            .with_margin(1.0)
            .unwrap()
            .forward(a.clone(), p.clone(), n.clone())
            .array(),
        (0.5 + 0.9) / 2.0,
    );

    #[metric_loss(triplet, margin = 0.2, reduction = mean_nonzero)]
    struct NonZero;
    close(
        NonZero.forward(a.clone(), p.clone(), n.clone()).array(),
        0.1,
    );

    #[metric_loss(triplet, squared, margin = 0.2, reduction = sum)]
    struct Squared;
    // 1 - 2.25 + 0.2 < 0 -> 0; 1 - 1.21 + 0.2 = -0.01 -> 0
    close(
        Squared.forward(a.clone(), p.clone(), n.clone()).array(),
        0.0,
    );

    #[metric_loss(triplet, soft, reduction = none)]
    struct Soft;
    let s = Soft.forward(a.clone(), p.clone(), n.clone()).as_vec();
    close(s[0], (1.0f32 + (-0.5f32).exp()).ln());
    close(s[1], (1.0f32 + (-0.1f32).exp()).ln());

    // swap: d(P,N) = sqrt(1 + 1.21) = 1.4866 < 1.1? no; with N close to P it is.
    #[metric_loss(triplet, swap, margin = 0.2, reduction = none)]
    struct Swap;
    let n2 = rows(&dev, &[1.0, 0.5, 0.0, 0.0, 1.1, 0.0]); // d(A,N)=1.118, d(P,N)=0.5
    let s = Swap.forward(a, p, n2).as_vec();
    close(s[0], 1.0 - 0.5 + 0.2);
    close(s[1], 0.1);
}

#[test]
fn distances_by_hand() {
    let dev = Cpu::default();
    let a = rows(&dev, &[1.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
    let b = rows(&dev, &[2.0, 0.0, 2.0, 1.0, 1.0, 0.0]);
    use metric_loss::distance::*;
    assert_eq!(
        squared_euclidean(a.clone(), b.clone()).unwrap().as_vec(),
        [5.0, 2.0]
    );
    close(
        euclidean(a.clone(), b.clone()).unwrap().as_vec()[0],
        5f32.sqrt(),
    );
    assert_eq!(
        manhattan(a.clone(), b.clone()).unwrap().as_vec(),
        [3.0, 2.0]
    );
    assert_eq!(dot(a.clone(), b.clone()).unwrap().as_vec(), [-6.0, 0.0]);
    let c = cosine(a.clone(), b.clone()).unwrap().as_vec();
    close(c[0], 1.0 - 6.0 / (3.0 * 8f32.sqrt()));
    assert_eq!(c[1], 1.0, "a zero vector is orthogonal to everything");
    // d(x, x) is exactly zero, for every distance.
    assert_eq!(
        euclidean(a.clone(), a.clone()).unwrap().as_vec(),
        [0.0, 0.0]
    );
    assert_eq!(cosine(a.clone(), a.clone()).unwrap().as_vec()[0], 0.0);
    let m = euclidean_matrix(a.clone()).unwrap().as_vec();
    assert_eq!((m[0], m[3]), (0.0, 0.0));
    close(m[1], 3.0);
}

#[test]
fn matrices_agree_with_rows() {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(7);
    let data: Vec<f32> = (0..5 * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x = rows(&dev, &data);
    use metric_loss::distance::*;
    let check = |m: Vec<f32>, f: &dyn Fn(Rows, Rows) -> Vec<f32>| {
        for i in 0..5 {
            let xi: Vec<f32> = (0..5)
                .flat_map(|_| data[i * D..(i + 1) * D].to_vec())
                .collect();
            let row = f(rows(&dev, &xi), x.clone());
            for j in 0..5 {
                assert!(
                    (m[i * 5 + j] - row[j]).abs() < 1e-5,
                    "({i},{j}) {} vs {}",
                    m[i * 5 + j],
                    row[j]
                );
            }
        }
    };
    check(
        squared_euclidean_matrix(x.clone()).unwrap().as_vec(),
        &|a, b| squared_euclidean(a, b).unwrap().as_vec(),
    );
    check(euclidean_matrix(x.clone()).unwrap().as_vec(), &|a, b| {
        euclidean(a, b).unwrap().as_vec()
    });
    check(cosine_matrix(x.clone()).unwrap().as_vec(), &|a, b| {
        cosine(a, b).unwrap().as_vec()
    });
    check(dot_matrix(x.clone()).unwrap().as_vec(), &|a, b| {
        dot(a, b).unwrap().as_vec()
    });
    check(
        matrix_by_rows(x.clone(), manhattan).unwrap().as_vec(),
        &|a, b| manhattan(a, b).unwrap().as_vec(),
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Cpu::default();
    let empty = rows(&dev, &[]);
    let two = rows(&dev, &[0.0; 6]);
    let three = rows(&dev, &[0.0; 9]);
    assert_eq!(
        TripletLoss
            .try_forward(empty.clone(), empty.clone(), empty)
            .unwrap_err(),
        MetricLossError::EmptyBatch { what: "anchor" }
    );
    assert!(matches!(
        TripletLoss.try_forward(two.clone(), three.clone(), two.clone()),
        Err(MetricLossError::BatchMismatch {
            left: 2,
            right: 3,
            ..
        })
    ));
    let y = PairLabels::from_similar(&[true]);
    assert_eq!(
        ContrastiveLoss
            .try_forward(two.clone(), two.clone(), &y)
            .unwrap_err(),
        MetricLossError::LabelCount {
            labels: 1,
            batch: 2
        }
    );
    assert!(TripletLoss.with_margin(f32::NAN).is_err());
    assert!(TripletLoss.with_margin(-0.1).is_err());
    let msg =
        std::panic::catch_unwind(|| TripletLoss.forward(two.clone(), three.clone(), two.clone()))
            .unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("batch sizes differ"), "{msg}");
}

// ------------------------------------------------------ gradient checks

/// Central finite differences of `f` at `x`, against the tape's gradient.
fn fd_check(
    name: &str,
    inputs: [Vec<f32>; 3],
    eval: &dyn Fn([Rows; 3]) -> f32,
    grads: &dyn Fn([Rows; 3]) -> [Vec<f32>; 3],
) {
    let dev = Cpu::default();
    let mk = |v: &[Vec<f32>; 3]| [rows(&dev, &v[0]), rows(&dev, &v[1]), rows(&dev, &v[2])];
    let analytic = grads(mk(&inputs));
    let h = 1e-3f32;
    for k in 0..3 {
        for i in 0..inputs[k].len() {
            let mut plus = inputs.clone();
            plus[k][i] += h;
            let mut minus = inputs.clone();
            minus[k][i] -= h;
            let numeric = (eval(mk(&plus)) - eval(mk(&minus))) / (2.0 * h);
            let g = analytic[k][i];
            assert!(
                g.is_finite(),
                "{name}: non-finite gradient at input {k}[{i}]"
            );
            assert!(
                (numeric - g).abs() <= 4e-3 + 2e-2 * g.abs(),
                "{name}: input {k}[{i}]: finite difference {numeric} vs tape {g}"
            );
        }
    }
}

/// Random inputs with zero distances planted: A = P in row 0, P = N in row 1.
fn planted(seed: u64) -> [Vec<f32>; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = [0; 3].map(|_| {
        (0..4 * D)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    });
    for j in 0..D {
        v[1][j] = v[0][j];
        v[2][D + j] = v[1][D + j];
    }
    v
}

fn check_triplet<L: TripletCriterion<Output<usize> = ()> + Copy>(name: &str, loss: L) {
    for seed in [1, 2] {
        fd_check(
            name,
            planted(seed),
            &|[a, p, n]| loss.forward(a, p, n).array(),
            &|[a, p, n]| {
                // One tape threaded through the three branches.
                let (a_t, tape) = a.clone().leaky_traced().split_tape();
                let p_t = p.clone().put_tape(tape);
                let (p_t, tape) = p_t.split_tape();
                let n_t = n.clone().put_tape(tape);
                let (n_t, tape) = n_t.split_tape();
                let l = loss.forward(a_t.put_tape(tape), p_t, n_t);
                let g = l.backward();
                [g.get(&a).as_vec(), g.get(&p).as_vec(), g.get(&n).as_vec()]
            },
        );
    }
}

fn check_pair<L: PairCriterion<Output<usize> = ()> + Copy>(name: &str, loss: L) {
    let y = PairLabels::from_pairs(&[
        Pair::Similar,
        Pair::Dissimilar,
        Pair::Similar,
        Pair::Dissimilar,
    ]);
    for seed in [3, 4] {
        let mut inputs = planted(seed);
        // a zero-distance dissimilar pair too
        for j in 0..D {
            inputs[1][D + j] = inputs[0][D + j];
        }
        fd_check(
            name,
            inputs,
            &|[a, b, _]| loss.forward(a, b, &y).array(),
            &|[a, b, c]| {
                let l = loss.forward(a.clone().leaky_traced(), b.clone().leaky_traced(), &y);
                let g = l.backward();
                [
                    g.get(&a).as_vec(),
                    g.get(&b).as_vec(),
                    vec![0.0; c.as_vec().len()],
                ]
            },
        );
    }
}

macro_rules! losses {
    ($check:ident: $($name:ident [$($spec:tt)*])*) => {$(
        #[metric_loss($($spec)*)]
        #[derive(Clone, Copy)]
        struct $name;
        $check(stringify!($name), $name);
    )*};
}

#[test]
fn triplet_gradients() {
    losses!(check_triplet:
        TEu [triplet, margin = 0.7]
        TEuSq [triplet, squared, margin = 0.7]
        TEuN [triplet, normalize, margin = 0.7]
        TEuSqN [triplet, squared, normalize, margin = 0.7]
        TCos [triplet, distance = cosine, margin = 0.7]
        TCosSq [triplet, distance = cosine, squared, margin = 0.7]
        TCosN [triplet, distance = cosine, normalize, margin = 0.7]
        TMan [triplet, distance = manhattan, margin = 0.7]
        TManSq [triplet, distance = manhattan, squared, margin = 0.7]
        TManN [triplet, distance = manhattan, normalize, margin = 0.7]
        TDot [triplet, distance = dot, margin = 0.7]
        TDotN [triplet, distance = dot, normalize, margin = 0.7]
        TSum [triplet, margin = 0.7, reduction = sum]
        TNonZero [triplet, margin = 0.7, reduction = mean_nonzero]
        TSwap [triplet, swap, margin = 0.7]
        TSwapCos [triplet, swap, distance = cosine, margin = 0.7]
        TSoft [triplet, soft]
        TSoftSqN [triplet, soft, squared, normalize, margin = 0.1]
    );
}

#[test]
fn pair_gradients() {
    losses!(check_pair:
        PEu [pair, margin = 1.3]
        PEuSq [pair, squared, margin = 1.3]
        PEuN [pair, normalize, margin = 1.3]
        PEuSqN [pair, squared, normalize, margin = 1.3]
        PCos [pair, distance = cosine, margin = 1.3]
        PCosSq [pair, distance = cosine, squared, margin = 1.3]
        PMan [pair, distance = manhattan, margin = 1.3]
        PManSqN [pair, distance = manhattan, squared, normalize, margin = 1.3]
        PDot [pair, distance = dot, margin = 1.3]
        PPos [pair, margin = 1.3, pos_margin = 0.05]
        PSum [pair, squared, margin = 1.3, reduction = sum]
        PNonZero [pair, squared, margin = 1.3, reduction = mean_nonzero]
    );
}

#[test]
fn gradient_at_zero_distance_is_zero_not_nan() {
    let dev = Cpu::default();
    let x = rows(&dev, &[0.5, -0.5, 1.0]);
    // All three identical: every distance is 0.
    let l = TripletLoss.forward(x.clone().leaky_traced(), x.clone(), x.clone());
    close(l.array(), 0.2);
    let g = l.backward();
    assert_eq!(g.get(&x).as_vec(), vec![0.0; 3]);
    let l = SoftMarginTriplet.forward(x.clone().leaky_traced(), x.clone(), x.clone());
    assert!(g.get(&x).as_vec().iter().all(|v| v.is_finite()));
    let _ = l.backward();
}

#[test]
fn fused_cpu_kernels_equal_the_generic_tape_ops() {
    use metric_loss::device::{generic_euclidean_rows, generic_safe_sqrt};
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(5);
    let mut av: Vec<f32> = (0..6 * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let bv: Vec<f32> = (0..6 * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
    av[..D].copy_from_slice(&bv[..D]); // a zero distance in row 0
    for squared in [false, true] {
        let (a, b) = (rows(&dev, &av), rows(&dev, &bv));
        let fused = Cpu::try_euclidean_rows(a.leaky_trace(), b.leaky_trace(), squared).unwrap();
        let generic = generic_euclidean_rows(a.leaky_trace(), b.leaky_trace(), squared).unwrap();
        let (fv, gv) = (fused.as_vec(), generic.as_vec());
        for (f, g) in fv.iter().zip(&gv) {
            assert!((f - g).abs() < 1e-6, "{f} vs {g}");
        }
        let gf = fused.sum().backward();
        let gg = generic.sum().backward();
        for (what, t) in [("a", &a), ("b", &b)] {
            for (f, g) in gf.get(t).as_vec().iter().zip(gg.get(t).as_vec()) {
                assert!((f - g).abs() < 1e-5, "{what}: {f} vs {g}");
            }
        }
    }
    // L2 normalisation: ordinary rows, a zero row, a row below the floor
    // and one just above it (the two branches of the backward)
    let mut xv: Vec<f32> = (0..5 * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
    xv[D..2 * D].fill(0.0);
    xv[2 * D..3 * D].fill(1e-10);
    xv[3 * D..4 * D].fill(0.0);
    xv[3 * D] = 2e-8;
    let x = rows(&dev, &xv);
    let weights = dev.tensor_from_vec(
        (0..5 * D).map(|i| (i % 7) as f32 - 3.0).collect(),
        (5, Const::<D>),
    );
    let f = Cpu::try_l2_normalize(x.leaky_trace()).unwrap();
    let g = metric_loss::distance::generic_l2_normalize(x.leaky_trace()).unwrap();
    for (a, b) in f.as_vec().iter().zip(g.as_vec()) {
        assert!(
            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
            "normalize: {a} vs {b}"
        );
    }
    let gf = (f * weights.clone()).sum().backward();
    let gg = (g * weights).sum().backward();
    for (a, b) in gf.get(&x).as_vec().iter().zip(gg.get(&x).as_vec()) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "normalize grad: {a} vs {b}"
        );
    }
    // a NaN stays in its row
    xv[4 * D] = f32::NAN;
    let y = Cpu::try_l2_normalize(rows(&dev, &xv)).unwrap().as_vec();
    assert!(y[4 * D..].iter().all(|v| v.is_nan()) && y[..4 * D].iter().all(|v| !v.is_nan()));

    let x = dev.tensor([0.0f32, 0.25, 4.0]);
    let f = Cpu::try_safe_sqrt(x.leaky_trace()).unwrap();
    let g = generic_safe_sqrt(x.leaky_trace()).unwrap();
    assert_eq!(f.as_vec(), g.as_vec());
    assert_eq!(
        f.sum().backward().get(&x).as_vec(),
        g.sum().backward().get(&x).as_vec()
    );
}

#[test]
fn fused_distance_matrix_equals_the_generic_one() {
    use metric_loss::distance::generic_squared_euclidean_matrix;
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(21);
    // one block, several, and enough rows for the parallel path
    for n in [1usize, 5, 50, 333] {
        let mut xv: Vec<f32> = (0..n * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let dup = (n > 3).then(|| {
            // an equal pair of rows: exactly 0 apart on the fused path
            let (i, j) = (1, n - 2);
            let row = xv[i * D..(i + 1) * D].to_vec();
            xv[j * D..(j + 1) * D].copy_from_slice(&row);
            (i, j)
        });
        let x = rows(&dev, &xv);
        let mut w: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        if let Some((i, j)) = dup {
            // The generic path's gradient at an equal pair is noise: a huge
            // 1/d (d a rounding residue) times a difference of terms that
            // should cancel. The fused path's is an exact 0 (the zero
            // subgradient); compare everything else.
            w[i * n + j] = 0.0;
            w[j * n + i] = 0.0;
        }
        let w = dev.tensor_from_vec(w, (n, n));
        for squared in [false, true] {
            let fused = Cpu::try_euclidean_matrix(x.leaky_trace(), squared).unwrap();
            let d2 = generic_squared_euclidean_matrix(x.leaky_trace()).unwrap();
            let generic = if squared {
                d2
            } else {
                Cpu::try_safe_sqrt(d2).unwrap()
            };
            let (fv, gv) = (fused.as_vec(), generic.as_vec());
            for (k, (f, g)) in fv.iter().zip(&gv).enumerate() {
                let (i, j) = (k / n, k % n);
                if dup.is_some_and(|(a, b)| (i, j) == (a, b) || (i, j) == (b, a)) {
                    assert_eq!(*f, 0.0, "equal rows");
                    assert!(*g < 1e-2, "generic: {g}");
                } else {
                    assert!(
                        (f - g).abs() <= 1e-4 * (1.0 + g.abs()),
                        "n={n} ({i},{j}): {f} vs {g}"
                    );
                }
            }
            let gf = (fused * w.clone()).sum().backward();
            let gg = (generic * w.clone()).sum().backward();
            for (f, g) in gf.get(&x).as_vec().iter().zip(gg.get(&x).as_vec()) {
                assert!(
                    (f - g).abs() <= 1e-3 * (1.0 + g.abs()),
                    "n={n} squared={squared} grad: {f} vs {g}"
                );
            }
        }
    }
}
