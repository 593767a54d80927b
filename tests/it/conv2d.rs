//! `Conv2D`: the CPU op and its generic twin against a naive convolution
//! (values and gradients) on random shapes, the edge shapes, finite
//! differences, and the layer's shape errors.

use super::naive_image::{Conv, close, random};
use metric_loss::device::{MetricDevice, generic_conv2d};
use metric_loss::nets::Window;
use metric_loss::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Image<const C: usize, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu, T>;

/// Output and gradients of `L = Σ r·y` through one path.
#[derive(Debug)]
struct Run {
    y: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

/// The CPU op and the generic twin on one problem.
fn both<const C: usize, const O: usize, const K: usize>(
    conv: &Conv,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    r: &[f32],
) -> [Run; 2] {
    let dev = Cpu::default();
    let (bn, _, h, wd) = conv.dims;
    let x: Image<C> = dev.tensor_from_vec(x.to_vec(), (bn, Const, h, wd));
    let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> =
        dev.tensor_from_vec(w.to_vec(), Default::default());
    let bt: Tensor<Rank1<O>, f32, Cpu> = dev.tensor_from_vec(b.to_vec(), Default::default());
    let win = Window::try_new("Conv2D", K, conv.s, conv.p, h, wd).unwrap();
    let run = |fused: bool| {
        let y = if fused {
            Cpu::try_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        } else {
            generic_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        };
        let (bo, _, oh, ow) = conv.out_dims();
        assert_eq!(y.shape(), &(bo, Const::<O>, oh, ow));
        let yv = y.as_vec();
        let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
        let g = (y * rt).sum().backward();
        Run {
            y: yv,
            gx: g.get(&x).as_vec(),
            gw: g.get(&wt).as_vec(),
            gb: g.get(&bt).as_vec(),
        }
    };
    [run(true), run(false)]
}

/// Random shapes for channels `C → O` and kernel `K`: batch 1 to 3,
/// height and width apart, stride 1 to 3, padding 0 to `K/2` and beyond.
fn random_shapes<const C: usize, const O: usize, const K: usize>(rng: &mut StdRng, trials: usize) {
    for _ in 0..trials {
        let (s, p) = (rng.gen_range(1..=3), rng.gen_range(0..=K / 2 + 1));
        let need = K.saturating_sub(2 * p).max(1);
        let dims = (
            rng.gen_range(1..=3),
            C,
            rng.gen_range(need..need + 7),
            rng.gen_range(need..need + 7),
        );
        check::<C, O, K>(
            rng,
            Conv {
                dims,
                out_channels: O,
                k: K,
                s,
                p,
            },
        );
    }
}

fn check<const C: usize, const O: usize, const K: usize>(rng: &mut StdRng, conv: Conv) {
    check_within::<C, O, K>(rng, conv, 1e-5)
}

/// [`check`] to a relative tolerance `tol` (f32 sums of many terms drift
/// from the f64 reference).
fn check_within<const C: usize, const O: usize, const K: usize>(
    rng: &mut StdRng,
    conv: Conv,
    tol: f32,
) {
    let (b, c, h, w) = conv.dims;
    let x = random(rng, b * c * h * w);
    let wt = random(rng, O * C * K * K);
    let bias = random(rng, O);
    let (bo, o, oh, ow) = conv.out_dims();
    let r = random(rng, bo * o * oh * ow);
    let want_y = conv.forward(&x, &wt, &bias);
    let (gx, gw, gb) = conv.grads(&x, &wt, &r);
    let what = format!(
        "C={C} O={O} K={K} dims={:?} s={} p={}",
        conv.dims, conv.s, conv.p
    );
    for (run, path) in both::<C, O, K>(&conv, &x, &wt, &bias, &r)
        .iter()
        .zip(["cpu", "generic"])
    {
        close(&run.y, &want_y, tol, &format!("{path} y {what}"));
        close(&run.gx, &gx, tol, &format!("{path} gx {what}"));
        close(&run.gw, &gw, tol, &format!("{path} gw {what}"));
        close(&run.gb, &gb, tol, &format!("{path} gb {what}"));
    }
}

#[test]
fn equals_the_naive_convolution_on_random_shapes() {
    let mut rng = StdRng::seed_from_u64(11);
    random_shapes::<1, 1, 1>(&mut rng, 4);
    random_shapes::<2, 3, 1>(&mut rng, 4);
    random_shapes::<1, 4, 2>(&mut rng, 6);
    random_shapes::<3, 2, 3>(&mut rng, 8);
    random_shapes::<2, 5, 4>(&mut rng, 5);
    random_shapes::<4, 3, 5>(&mut rng, 5);
}

/// The edge shapes one by one: 1×1 kernels, stride larger than the kernel,
/// padding of half the kernel, H ≠ W, batch 1, an image exactly the
/// kernel's size, a window reaching past the image into the padding only.
#[test]
fn edge_shapes() {
    let mut rng = StdRng::seed_from_u64(5);
    let conv = |dims, o, k, s, p| Conv {
        dims,
        out_channels: o,
        k,
        s,
        p,
    };
    check::<3, 2, 1>(&mut rng, conv((2, 3, 4, 6), 2, 1, 1, 0)); // 1×1
    check::<3, 2, 1>(&mut rng, conv((1, 3, 7, 5), 2, 1, 3, 0)); // 1×1, stride 3
    check::<2, 3, 2>(&mut rng, conv((2, 2, 9, 8), 3, 2, 3, 0)); // stride > kernel
    check::<2, 3, 3>(&mut rng, conv((1, 2, 6, 11), 3, 3, 1, 1)); // same padding, H ≠ W
    check::<1, 2, 5>(&mut rng, conv((3, 1, 5, 7), 2, 5, 1, 2)); // same padding, K = 5
    check::<2, 2, 3>(&mut rng, conv((1, 2, 3, 3), 2, 3, 1, 0)); // image = kernel: 1×1 out
    check::<1, 1, 3>(&mut rng, conv((1, 1, 1, 1), 1, 3, 1, 1)); // one pixel, padded
    check::<1, 2, 2>(&mut rng, conv((2, 1, 2, 2), 2, 2, 1, 3)); // windows in the padding only
}

/// The gradients against central differences of a nonlinear loss, for the
/// input, the weight and the bias (the CPU op; the generic twin equals it).
#[test]
fn finite_differences() {
    const C: usize = 2;
    const O: usize = 3;
    const K: usize = 3;
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(3);
    let (b, h, w) = (2, 5, 4);
    let win = Window::try_new("Conv2D", K, 2, 1, h, w).unwrap();
    let mut xv = random(&mut rng, b * C * h * w);
    let mut wv = random(&mut rng, O * C * K * K);
    let mut bv = random(&mut rng, O);
    let loss = |xv: &[f32], wv: &[f32], bv: &[f32], trace: bool| {
        let x: Image<C> = dev.tensor_from_vec(xv.to_vec(), (b, Const, h, w));
        let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> =
            dev.tensor_from_vec(wv.to_vec(), Default::default());
        let bt: Tensor<Rank1<O>, f32, Cpu> = dev.tensor_from_vec(bv.to_vec(), Default::default());
        let y = Cpu::try_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap();
        let l = y.sin().sum();
        let value = l.array();
        let grads = trace.then(|| {
            let g = l.backward();
            (g.get(&x).as_vec(), g.get(&wt).as_vec(), g.get(&bt).as_vec())
        });
        (value, grads)
    };
    let (_, grads) = loss(&xv, &wv, &bv, true);
    let (gx, gw, gb) = grads.unwrap();
    let h_ = 1e-2f32;
    let numeric =
        |which: usize, i: usize, xv: &mut Vec<f32>, wv: &mut Vec<f32>, bv: &mut Vec<f32>| {
            let slot = |xv: &mut Vec<f32>, wv: &mut Vec<f32>, bv: &mut Vec<f32>, d: f32| match which
            {
                0 => xv[i] += d,
                1 => wv[i] += d,
                _ => bv[i] += d,
            };
            slot(xv, wv, bv, h_);
            let up = loss(xv, wv, bv, false).0;
            slot(xv, wv, bv, -2.0 * h_);
            let down = loss(xv, wv, bv, false).0;
            slot(xv, wv, bv, h_);
            (up - down) / (2.0 * h_)
        };
    for (which, analytic) in [(0, &gx), (1, &gw), (2, &gb)] {
        for (i, &an) in analytic.iter().enumerate() {
            let num = numeric(which, i, &mut xv, &mut wv, &mut bv);
            assert!(
                (num - an).abs() < 2e-2 * an.abs().max(1.0),
                "{} [{i}]: numeric {num} vs analytic {an}",
                ["x", "weight", "bias"][which]
            );
        }
    }
}

/// An empty batch gives an empty output, on both paths.
#[test]
fn empty_batch() {
    let dev = Cpu::default();
    let conv = dev.build_module::<Conv2D<2, 3, 3>, f32>();
    let x: Image<2> = dev.zeros_like(&(0, Const, 6, 6));
    let y = conv.try_conv2d(x.clone()).unwrap();
    assert_eq!(y.shape(), &(0, Const::<3>, 4, 4));
    let win = Window::try_new("Conv2D", 3, 1, 0, 6, 6).unwrap();
    let y = generic_conv2d(x, &conv.weight, &conv.bias, &win).unwrap();
    assert_eq!(y.shape(), &(0, Const::<3>, 4, 4));
}

/// Const and `usize` dimensions mix; stride and padding come from the type.
#[test]
fn layer_shapes_and_typed_errors() {
    let dev = Cpu::seed_from_u64(1);
    let conv = dev.build_module::<Conv2D<3, 4, 3, 2, 1>, f32>();
    let x: Tensor<Rank4<2, 3, 9, 6>, f32, _> = dev.sample_normal();
    let y = conv.forward(x.clone());
    assert_eq!(y.shape(), &(Const::<2>, Const::<4>, 5, 3));
    let win = Window::try_new("Conv2D", 3, 2, 1, 9, 6).unwrap();
    let want = generic_conv2d(x, &conv.weight, &conv.bias, &win).unwrap();
    close(&y.as_vec(), &want.as_vec(), 1e-5, "layer");

    let small: Tensor<(usize, Const<3>, usize, usize), f32, _> = dev.zeros_like(&(1, Const, 0, 6));
    let err = conv.try_conv2d(small.clone()).unwrap_err();
    assert_eq!(
        err,
        MetricLossError::ImageTooSmall {
            layer: "Conv2D",
            kernel: 3,
            padding: 1,
            height: 0,
            width: 6
        }
    );
    let panic = std::panic::catch_unwind(|| conv.forward(small)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert_eq!(msg, &format!("metric-loss: {err}"));
}

/// PyTorch's initialisation: uniform in ±1/√(IN·K²) for weight and bias,
/// and `reset_params` draws again.
#[test]
fn initialisation_bounds() {
    let dev = Cpu::seed_from_u64(2);
    let mut conv = dev.build_module::<Conv2D<8, 16, 3>, f32>();
    let bound = 1.0 / (8.0f32 * 9.0).sqrt();
    let w = conv.weight.as_vec();
    assert!(
        w.iter()
            .chain(&conv.bias.as_vec())
            .all(|v| v.abs() <= bound)
    );
    // spread over the whole range, not a constant
    let max = w.iter().cloned().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(max > 0.9 * bound, "{max} vs {bound}");
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    assert!(mean.abs() < 0.1 * bound);
    conv.reset_params();
    assert_ne!(conv.weight.as_vec(), w);
    assert_eq!(conv.num_trainable_params(), 16 * 8 * 9 + 16);
}

/// A batch whose columns exceed the CPU op's budget (its backward builds
/// each image's columns again) and is shared among threads: still exact.
#[test]
fn large_batch_rebuilds_columns() {
    let mut rng = StdRng::seed_from_u64(9);
    // 8·3·3 taps × 30·30 pixels × 80 images = 5.2 M column values
    let conv = Conv {
        dims: (80, 8, 30, 30),
        out_channels: 4,
        k: 3,
        s: 1,
        p: 1,
    };
    // ∂W and ∂bias sum 72,000 products each
    check_within::<8, 4, 3>(&mut rng, conv, 1e-4);
}

/// More taps than output pixels an image (conv2 of the MNIST CNN: 288
/// against 121): the CPU op puts images' columns side by side, four to a
/// product; a batch that is not a multiple of four, with the columns kept
/// and with them built again (beyond the budget), is still exact.
#[test]
fn images_side_by_side() {
    let mut rng = StdRng::seed_from_u64(12);
    // 72 taps × 4·5 pixels, 11 images: two groups of four and one of three
    let conv = Conv {
        dims: (11, 8, 6, 7),
        out_channels: 5,
        k: 3,
        s: 1,
        p: 0,
    };
    check::<8, 5, 3>(&mut rng, conv);
    // 288 taps × 11·11 pixels × 123 images = 4.3 M column values: rebuilt
    let conv = Conv {
        dims: (123, 32, 13, 13),
        out_channels: 2,
        k: 3,
        s: 1,
        p: 0,
    };
    check_within::<32, 2, 3>(&mut rng, conv, 1e-4);
}

/// `InputConv2D`'s op on one problem: its output and the gradients of
/// `L = Σ r·y` for the weight and the bias equal the naive loops and the
/// CPU `Conv2D` op's bit for bit, and the input gets no gradient.
fn check_input<const C: usize, const O: usize, const K: usize>(
    rng: &mut StdRng,
    conv: Conv,
    tol: f32,
) {
    let dev = Cpu::default();
    let (b, c, h, w) = conv.dims;
    let xv = random(rng, b * c * h * w);
    let wv = random(rng, O * C * K * K);
    let bv = random(rng, O);
    let (bo, o, oh, ow) = conv.out_dims();
    let r = random(rng, bo * o * oh * ow);
    let want_y = conv.forward(&xv, &wv, &bv);
    let (_, want_gw, want_gb) = conv.grads(&xv, &wv, &r);
    let x: Image<C> = dev.tensor_from_vec(xv, (b, Const, h, w));
    let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> = dev.tensor_from_vec(wv, Default::default());
    let bt: Tensor<Rank1<O>, f32, Cpu> = dev.tensor_from_vec(bv, Default::default());
    let win = Window::try_new("Conv2D", K, conv.s, conv.p, h, w).unwrap();
    let what = format!(
        "C={C} O={O} K={K} dims={:?} s={} p={}",
        conv.dims, conv.s, conv.p
    );
    let run = |input: bool| {
        let y = if input {
            Cpu::try_input_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        } else {
            Cpu::try_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        };
        let yv = y.as_vec();
        let rt = dev.tensor_from_vec(r.clone(), *y.shape());
        let g = (y * rt).sum().backward();
        let gx = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.get(&x).as_vec()));
        (yv, g.get(&wt).as_vec(), g.get(&bt).as_vec(), gx.ok())
    };
    let (y, gw, gb, gx) = run(true);
    close(&y, &want_y, tol, &format!("y {what}"));
    close(&gw, &want_gw, tol, &format!("gw {what}"));
    close(&gb, &want_gb, tol, &format!("gb {what}"));
    assert!(gx.is_none(), "the input got a gradient, {what}");
    let (y2, gw2, gb2, gx2) = run(false);
    assert_eq!((y, gw, gb), (y2, gw2, gb2), "InputConv2D vs Conv2D, {what}");
    assert!(gx2.is_some(), "Conv2D's input has its gradient, {what}");
}

/// `InputConv2D` is `Conv2D` without the input's gradient, on random
/// shapes (strides, padding), one image a product and images side by side,
/// batches of several groups (threads) and one beyond the columns' budget.
#[test]
fn input_conv2d_is_conv2d_without_the_input_gradient() {
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..6 {
        let (s, p) = (rng.gen_range(1..=3), rng.gen_range(0..=2));
        let dims = (
            rng.gen_range(1..=9),
            2,
            rng.gen_range(3..12),
            rng.gen_range(3..12),
        );
        let conv = Conv {
            dims,
            out_channels: 3,
            k: 3,
            s,
            p,
        };
        check_input::<2, 3, 3>(&mut rng, conv, 1e-5);
    }
    // the MNIST CNN's first layer on a batch of 13 images: ∂W sums 8,788
    // products in f32 against the f64 loops, and some sums cancel to near 0
    // (an absolute error of about 1e-4 on terms of order 1); the bitwise
    // equality with Conv2D is the exact check
    let conv = |dims, o, p| Conv {
        dims,
        out_channels: o,
        k: 3,
        s: 1,
        p,
    };
    check_input::<1, 32, 3>(&mut rng, conv((13, 1, 28, 28), 32, 0), 1e-3);
    // more taps than pixels: images side by side, 11 = 4 + 4 + 3
    check_input::<8, 5, 3>(&mut rng, conv((11, 8, 6, 7), 5, 0), 1e-5);
    // beyond the budget: columns built again in the backward (∂W sums
    // 72,000 products in f32: the same tolerance as above)
    check_input::<8, 4, 3>(&mut rng, conv((80, 8, 30, 30), 4, 1), 1e-3);
}

/// The layer: the first of a network, trained by a step, has the gradients
/// `Conv2D` has, and the network's input gets none; against central
/// differences of a nonlinear loss for the weight and the bias.
#[test]
fn input_conv2d_layer_and_finite_differences() {
    let dev = Cpu::seed_from_u64(4);
    let first = dev.build_module::<InputConv2D<2, 3, 3, 2, 1>, f32>();
    let as_conv: metric_loss::nets::Conv2D<2, 3, 3, 2, 1, f32, Cpu> = first.clone().into();
    let x: Tensor<Rank4<2, 2, 5, 4>, f32, _> = dev.sample_normal();
    let loss_of = |w: &Tensor<Rank4<3, 2, 3, 3>, f32, Cpu>, b: &Tensor<Rank1<3>, f32, Cpu>| {
        let layer: metric_loss::nets::InputConv2D<2, 3, 3, 2, 1, f32, Cpu> =
            metric_loss::nets::InputConv2D {
                weight: w.clone(),
                bias: b.clone(),
            };
        layer.forward(x.clone()).sin().sum::<Rank0, _>().array()
    };
    let g = first.forward(x.leaky_trace()).sin().sum().backward();
    let g2 = as_conv.forward(x.leaky_trace()).sin().sum().backward();
    assert_eq!(
        g.get(&first.weight).as_vec(),
        g2.get(&as_conv.weight).as_vec()
    );
    assert_eq!(g.get(&first.bias).as_vec(), g2.get(&as_conv.bias).as_vec());
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.get(&x))).is_err());
    let h = 1e-2f32;
    let (gw, gb) = (g.get(&first.weight).as_vec(), g.get(&first.bias).as_vec());
    let (wv, bv) = (first.weight.as_vec(), first.bias.as_vec());
    for i in 0..wv.len() + bv.len() {
        let at = |d: f32| {
            let (mut w2, mut b2) = (wv.clone(), bv.clone());
            if i < wv.len() {
                w2[i] += d;
            } else {
                b2[i - wv.len()] += d;
            }
            loss_of(
                &dev.tensor_from_vec(w2, Default::default()),
                &dev.tensor_from_vec(b2, Default::default()),
            )
        };
        let num = (at(h) - at(-h)) / (2.0 * h);
        let an = if i < wv.len() {
            gw[i]
        } else {
            gb[i - wv.len()]
        };
        assert!(
            (num - an).abs() < 2e-2 * an.abs().max(1.0),
            "[{i}]: numeric {num} vs analytic {an}"
        );
    }
}
