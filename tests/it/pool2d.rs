//! `MaxPool2D` and `AvgPool2D`: the CPU ops and their generic twins against
//! naive pooling (values and gradients) on random shapes, ties, finite
//! differences, and the typed errors.

use super::naive_image::{Dims, close, out_size, pool, random};
use metric_loss::device::{MetricDevice, generic_avg_pool2d, generic_max_pool2d};
use metric_loss::nets::Window;
use metric_loss::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Image<T = NoneTape> = Tensor<(usize, usize, usize, usize), f32, Cpu, T>;

/// `(y, ∂(Σ r·y)/∂x)` through the CPU op (`fused`) or the generic twin.
fn run(
    x: &[f32],
    dims: Dims,
    k: usize,
    s: usize,
    max: bool,
    fused: bool,
    r: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let dev = Cpu::default();
    let x: Image = dev.tensor_from_vec(x.to_vec(), dims);
    let win = Window::try_new("pool", k, s, 0, dims.2, dims.3).unwrap();
    let y = match (max, fused) {
        (true, true) => Cpu::try_max_pool2d(x.leaky_trace(), &win),
        (true, false) => generic_max_pool2d(x.leaky_trace(), &win),
        (false, true) => Cpu::try_avg_pool2d(x.leaky_trace(), &win),
        (false, false) => generic_avg_pool2d(x.leaky_trace(), &win),
    }
    .unwrap();
    let (oh, ow) = (out_size(dims.2, k, s, 0), out_size(dims.3, k, s, 0));
    assert_eq!(y.shape(), &(dims.0, dims.1, oh, ow));
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = (y * rt).sum().backward();
    (yv, g.get(&x).as_vec())
}

fn check(rng: &mut StdRng, x: &[f32], dims: Dims, k: usize, s: usize) {
    let (oh, ow) = (out_size(dims.2, k, s, 0), out_size(dims.3, k, s, 0));
    let r = random(rng, dims.0 * dims.1 * oh * ow);
    for max in [true, false] {
        let (want_y, want_g) = pool(x, dims, k, s, max, &r);
        for fused in [true, false] {
            let what = format!("max={max} cpu={fused} dims={dims:?} k={k} s={s}");
            let (y, g) = run(x, dims, k, s, max, fused, &r);
            // max pooling moves values, it does not compute them
            let tol = if max { 0.0 } else { 1e-6 };
            close(&y, &want_y, tol, &format!("y {what}"));
            close(&g, &want_g, tol, &format!("grad {what}"));
        }
    }
}

#[test]
fn equals_naive_pooling_on_random_shapes() {
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..40 {
        let (k, s) = (rng.gen_range(1..=4), rng.gen_range(1..=5));
        let dims = (
            rng.gen_range(1..=3),
            rng.gen_range(1..=4),
            rng.gen_range(k..k + 8),
            rng.gen_range(k..k + 8),
        );
        let x = random(&mut rng, dims.0 * dims.1 * dims.2 * dims.3);
        check(&mut rng, &x, dims, k, s);
    }
}

/// Large inputs take the multi-threaded paths of the CPU ops.
#[test]
fn large_batch() {
    let mut rng = StdRng::seed_from_u64(4);
    let dims = (40, 32, 26, 26);
    let x = random(&mut rng, dims.0 * dims.1 * dims.2 * dims.3);
    check(&mut rng, &x, dims, 2, 2);
}

/// Ties: the whole gradient goes to the first maximum of the window in
/// row-major order (PyTorch), also across overlapping windows; plateaus of
/// equal values and windows of one value.
#[test]
fn ties_go_to_the_first_maximum() {
    let mut rng = StdRng::seed_from_u64(8);
    for (dims, k, s) in [
        ((2, 3, 6, 7), 2, 2),
        ((1, 2, 5, 5), 3, 1),
        ((1, 1, 4, 9), 2, 3),
        ((3, 1, 4, 4), 4, 1),
    ] {
        // values from {-1, 0, 1}: many ties
        let x: Vec<f32> = (0..dims.0 * dims.1 * dims.2 * dims.3)
            .map(|_| rng.gen_range(-1..=1) as f32)
            .collect();
        check(&mut rng, &x, dims, k, s);
    }
    let dev = Cpu::default();
    let x = dev.tensor([[[[3.0f32, 3.0], [3.0, 3.0]]]]);
    let g = MaxPool2D::<2>.forward(x.leaky_trace()).sum().backward();
    assert_eq!(g.get(&x).array(), [[[[1.0, 0.0], [0.0, 0.0]]]]);
}

/// NaN propagates (PyTorch: the NaN wins the window), on both paths.
#[test]
fn nan_propagates() {
    let x = [1.0, f32::NAN, 2.0, 0.0];
    for fused in [true, false] {
        let (y, g) = run(&x, (1, 1, 2, 2), 2, 2, true, fused, &[1.0]);
        assert!(y[0].is_nan());
        assert_eq!(g, [0.0, 1.0, 0.0, 0.0]);
    }
}

/// Central differences of a nonlinear loss, inputs spaced so that no window
/// changes its winner within the step.
#[test]
fn finite_differences() {
    let dev = Cpu::default();
    let dims = (2, 2, 5, 6);
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    // a permutation of 0..n, scaled: every pair of pixels is ≥ 0.1 apart
    let mut xv: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 * 0.1 - 3.0).collect();
    for max in [true, false] {
        let loss = |xv: &[f32], trace: bool| {
            let x: Image = dev.tensor_from_vec(xv.to_vec(), dims);
            let y = if max {
                MaxPool2D::<3, 2>.forward(x.leaky_trace())
            } else {
                AvgPool2D::<3, 2>.forward(x.leaky_trace())
            };
            let l = y.sin().sum();
            let v = l.array();
            (v, trace.then(|| l.backward().get(&x).as_vec()))
        };
        let analytic = loss(&xv, true).1.unwrap();
        let h = 1e-2f32;
        for i in 0..n {
            xv[i] += h;
            let up = loss(&xv, false).0;
            xv[i] -= 2.0 * h;
            let down = loss(&xv, false).0;
            xv[i] += h;
            let num = (up - down) / (2.0 * h);
            assert!(
                (num - analytic[i]).abs() < 1e-2,
                "max={max} [{i}]: {num} vs {}",
                analytic[i]
            );
        }
    }
}

#[test]
fn layers_and_typed_errors() {
    let dev = Cpu::default();
    let x: Tensor<Rank4<2, 3, 7, 6>, f32, _> = dev.sample_normal();
    let y = MaxPool2D::<2>.forward(x.clone());
    assert_eq!(y.shape(), &(Const::<2>, Const::<3>, 3, 3));
    let y = AvgPool2D::<3, 1>.forward(x.clone());
    assert_eq!(y.shape(), &(Const::<2>, Const::<3>, 5, 4));

    let small: Tensor<(usize, Const<3>, usize, usize), f32, _> = dev.zeros_like(&(1, Const, 2, 9));
    let err = MaxPool2D::<3>.try_max_pool2d(small.clone()).unwrap_err();
    assert_eq!(
        err,
        MetricLossError::ImageTooSmall {
            layer: "MaxPool2D",
            kernel: 3,
            padding: 0,
            height: 2,
            width: 9
        }
    );
    let err = AvgPool2D::<3>.try_avg_pool2d(small.clone()).unwrap_err();
    assert!(matches!(
        err,
        MetricLossError::ImageTooSmall {
            layer: "AvgPool2D",
            ..
        }
    ));
    let panic = std::panic::catch_unwind(|| MaxPool2D::<3>.forward(small)).unwrap_err();
    assert!(
        panic
            .downcast_ref::<String>()
            .unwrap()
            .contains("image too small: MaxPool2D has a 3x3 kernel")
    );
}

/// An empty batch gives an empty output, on both paths.
#[test]
fn empty_batch() {
    let dev = Cpu::default();
    let x: Image = dev.zeros_like(&(0, 3, 4, 4));
    let win = Window::try_new("pool", 2, 2, 0, 4, 4).unwrap();
    for y in [
        Cpu::try_max_pool2d(x.leaky_trace(), &win).unwrap(),
        generic_max_pool2d(x.leaky_trace(), &win).unwrap(),
        Cpu::try_avg_pool2d(x.leaky_trace(), &win).unwrap(),
        generic_avg_pool2d(x.leaky_trace(), &win).unwrap(),
    ] {
        assert_eq!(y.shape(), &(0, 3, 2, 2));
    }
}
