//! `ConvReLUPool` and `MetricDevice::try_conv2d_relu_max_pool2d`: the CPU's
//! one op against the three layers in a row (bit for bit), against a naive
//! convolution, ReLU and pooling (values and gradients), and finite
//! differences.

use super::naive_image::{Conv, close, pool, random};
use metric_loss::device::MetricDevice;
use metric_loss::nets::Window;
use metric_loss::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

type Image<const C: usize, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu, T>;

/// Output and gradients of `L = Σ r·y` through one path.
#[derive(Debug, PartialEq)]
struct Run {
    y: Vec<f32>,
    gx: Option<Vec<f32>>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

/// One problem: convolution `conv` (`C → O`, kernel `K`), then ReLU and
/// max pooling with kernel `pk` and stride `ps`; biases shifted by `shift`
/// (negative: many windows all below 0, which the ReLU zeroes).
struct Problem {
    conv: Conv,
    pk: usize,
    ps: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Problem {
    fn new<const C: usize, const O: usize, const K: usize>(
        rng: &mut StdRng,
        dims: (usize, usize, usize),
        (s, p): (usize, usize),
        (pk, ps): (usize, usize),
        shift: f32,
    ) -> Self {
        let (b, h, w) = dims;
        let conv = Conv {
            dims: (b, C, h, w),
            out_channels: O,
            k: K,
            s,
            p,
        };
        Problem {
            x: random(rng, b * C * h * w),
            w: random(rng, O * C * K * K),
            b: random(rng, O).into_iter().map(|v| v + shift).collect(),
            conv,
            pk,
            ps,
        }
    }

    fn windows(&self) -> (Window, Window) {
        let (_, _, h, w) = self.conv.dims;
        let conv = Window::try_new("Conv2D", self.conv.k, self.conv.s, self.conv.p, h, w).unwrap();
        let (oh, ow) = conv.output_size();
        let pool = Window::try_new("MaxPool2D", self.pk, self.ps, 0, oh, ow).unwrap();
        (conv, pool)
    }

    /// The fused op (`fused`) or the three CPU ops in a row, with or
    /// without the input's gradient, `L = Σ r·y` for `r = sin(index)`.
    fn run<const C: usize, const O: usize, const K: usize>(
        &self,
        fused: bool,
        input_grad: bool,
    ) -> Run {
        let dev = Cpu::default();
        let (b, _, h, w) = self.conv.dims;
        let x: Image<C> = dev.tensor_from_vec(self.x.clone(), (b, Const, h, w));
        let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> =
            dev.tensor_from_vec(self.w.clone(), Default::default());
        let bt: Tensor<Rank1<O>, f32, Cpu> =
            dev.tensor_from_vec(self.b.clone(), Default::default());
        let (conv, pool) = self.windows();
        let y = if fused {
            Cpu::try_conv2d_relu_max_pool2d(x.leaky_trace(), &wt, &bt, &conv, &pool, input_grad)
                .unwrap()
        } else {
            let c = if input_grad {
                Cpu::try_conv2d(x.leaky_trace(), &wt, &bt, &conv)
            } else {
                Cpu::try_input_conv2d(x.leaky_trace(), &wt, &bt, &conv)
            };
            Cpu::try_max_pool2d(c.unwrap(), &pool).unwrap().relu()
        };
        let (ph, pw) = pool.output_size();
        assert_eq!(y.shape(), &(b, Const::<O>, ph, pw));
        let yv = y.as_vec();
        let r: Vec<f32> = (0..yv.len()).map(|i| (i as f32 * 0.7).sin()).collect();
        let rt = dev.tensor_from_vec(r, *y.shape());
        let g = (y * rt).sum().backward();
        Run {
            y: yv,
            gx: input_grad.then(|| g.get(&x).as_vec()),
            gw: g.get(&wt).as_vec(),
            gb: g.get(&bt).as_vec(),
        }
    }

    /// The naive answer (f64 sums): `y`, and `(∂x, ∂w, ∂b)` of `Σ r·y`.
    fn naive(&self, r: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let c = self.conv.forward(&self.x, &self.w, &self.b);
        let relu: Vec<f32> = c.iter().map(|&v| v.max(0.0)).collect();
        let (y, g_relu) = pool(&relu, self.conv.out_dims(), self.pk, self.ps, true, r);
        let g_conv: Vec<f32> = g_relu
            .iter()
            .zip(&c)
            .map(|(&g, &v)| if v > 0.0 { g } else { 0.0 })
            .collect();
        let (gx, gw, gb) = self.conv.grads(&self.x, &self.w, &g_conv);
        (y, gx, gw, gb)
    }

    /// The fused op equals the three ops bit for bit, with and without the
    /// input's gradient, and the naive loops to `1e-5`.
    fn check<const C: usize, const O: usize, const K: usize>(&self) {
        let what = format!(
            "C={C} O={O} K={K} dims={:?} s={} p={} pool {}/{}",
            self.conv.dims, self.conv.s, self.conv.p, self.pk, self.ps
        );
        for input_grad in [true, false] {
            let fused = self.run::<C, O, K>(true, input_grad);
            let layers = self.run::<C, O, K>(false, input_grad);
            assert_eq!(fused, layers, "fused vs layers, {what}");
        }
        let run = self.run::<C, O, K>(true, true);
        let r: Vec<f32> = (0..run.y.len()).map(|i| (i as f32 * 0.7).sin()).collect();
        let (y, gx, gw, gb) = self.naive(&r);
        close(&run.y, &y, 1e-5, &format!("y {what}"));
        close(run.gx.as_ref().unwrap(), &gx, 1e-5, &format!("gx {what}"));
        close(&run.gw, &gw, 1e-5, &format!("gw {what}"));
        close(&run.gb, &gb, 1e-5, &format!("gb {what}"));
        assert!(run.y.contains(&0.0), "some windows rectified: {what}");
        assert!(run.y.iter().any(|&v| v > 0.0), "some windows pass: {what}");
    }
}

/// One image at a time (fewer taps than output pixels) and images side by
/// side (more), batches across a group of 4, stride and padding, windows
/// side by side and overlapping, odd sizes that drop a row and a column.
#[test]
fn equals_the_layers_and_the_naive_loops() {
    let mut rng = StdRng::seed_from_u64(11);
    // 18 taps, 12 × 11 → 10 × 9 pixels: one image a product
    Problem::new::<2, 5, 3>(&mut rng, (7, 12, 11), (1, 0), (2, 2), -0.4).check::<2, 5, 3>();
    // 72 taps, 8 × 9 → 6 × 7 = 42 pixels: side by side, batch 6 = 4 + 2
    Problem::new::<8, 6, 3>(&mut rng, (6, 8, 9), (1, 0), (2, 2), -0.3).check::<8, 6, 3>();
    // stride 2 and padding 1, pool 3 of 3
    Problem::new::<3, 4, 3>(&mut rng, (5, 13, 10), (2, 1), (3, 3), -1.5).check::<3, 4, 3>();
    // overlapping windows (3 every 2): a pixel wins in two windows
    Problem::new::<2, 3, 3>(&mut rng, (3, 11, 12), (1, 1), (3, 2), -0.3).check::<2, 3, 3>();
    // a 1 × 1 kernel and a pool of 1 (ReLU only), batch 1
    Problem::new::<4, 3, 1>(&mut rng, (1, 5, 6), (1, 0), (1, 1), -0.2).check::<4, 3, 1>();
}

/// Ties: on a blank image every window's pixels equal the bias, the first
/// wins (and gets the whole gradient) where the bias is positive, none
/// where it is not; the same as the layers.
#[test]
fn ties_go_to_the_first_pixel_or_nowhere() {
    let dev = Cpu::default();
    let x: Image<1> = dev.zeros_like(&(2, Const, 6, 6));
    let w: Tensor<Rank4<2, 1, 3, 3>, f32, Cpu> = dev.ones();
    let b = dev.tensor([0.5f32, -0.5]);
    let conv = Window::try_new("Conv2D", 3, 1, 1, 6, 6).unwrap();
    let pool = Window::try_new("MaxPool2D", 2, 2, 0, 6, 6).unwrap();
    let y = Cpu::try_conv2d_relu_max_pool2d(x.leaky_trace(), &w, &b, &conv, &pool, true).unwrap();
    let yv = y.as_vec();
    assert_eq!(&yv[..9], &[0.5; 9]);
    assert_eq!(&yv[9..18], &[0.0; 9]);
    let g = y.sum().backward();
    assert_eq!(g.get(&b).as_vec(), [18.0, 0.0]);
    let layers = Cpu::try_max_pool2d(
        Cpu::try_conv2d(x.leaky_trace(), &w, &b, &conv).unwrap(),
        &pool,
    )
    .unwrap()
    .relu();
    assert_eq!(layers.as_vec(), yv);
    let gl = layers.sum().backward();
    assert_eq!(gl.get(&x).as_vec(), g.get(&x).as_vec());
    assert_eq!(gl.get(&w).as_vec(), g.get(&w).as_vec());
}

/// Central differences of `Σ sin(y)` for the input, the weight and the
/// bias. A step that moves a window's winner or crosses the ReLU's kink
/// has no derivative to compare with: those entries (the two one-sided
/// differences disagree) are skipped, and most entries must be checked.
#[test]
fn finite_differences() {
    const C: usize = 2;
    const O: usize = 3;
    const K: usize = 3;
    let mut rng = StdRng::seed_from_u64(5);
    let mut p = Problem::new::<C, O, K>(&mut rng, (2, 9, 8), (1, 1), (2, 2), -0.2);
    let dev = Cpu::default();
    let (conv, pool) = p.windows();
    let (b, _, h, w) = p.conv.dims;
    let loss = |p: &Problem, trace: bool| {
        let x: Image<C> = dev.tensor_from_vec(p.x.clone(), (b, Const, h, w));
        let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> =
            dev.tensor_from_vec(p.w.clone(), Default::default());
        let bt: Tensor<Rank1<O>, f32, Cpu> = dev.tensor_from_vec(p.b.clone(), Default::default());
        let y =
            Cpu::try_conv2d_relu_max_pool2d(x.leaky_trace(), &wt, &bt, &conv, &pool, true).unwrap();
        let l = y.sin().sum();
        let value = l.array() as f64;
        let grads = trace.then(|| {
            let g = l.backward();
            [g.get(&x).as_vec(), g.get(&wt).as_vec(), g.get(&bt).as_vec()]
        });
        (value, grads)
    };
    let analytic = loss(&p, true).1.unwrap();
    let step = 1e-3f32;
    let (mut checked, mut total) = (0, 0);
    for (which, grads) in analytic.iter().enumerate() {
        for (i, &an) in grads.iter().enumerate() {
            let slot = |p: &mut Problem, d: f32| match which {
                0 => p.x[i] += d,
                1 => p.w[i] += d,
                _ => p.b[i] += d,
            };
            let centre = loss(&p, false).0;
            slot(&mut p, step);
            let up = loss(&p, false).0;
            slot(&mut p, -2.0 * step);
            let down = loss(&p, false).0;
            slot(&mut p, step);
            let (right, left) = ((up - centre) / step as f64, (centre - down) / step as f64);
            total += 1;
            if (right - left).abs() > 1e-2 * right.abs().max(left.abs()).max(1.0) {
                continue; // a kink between the two steps
            }
            checked += 1;
            let num = (up - down) / (2.0 * step as f64);
            assert!(
                (num - an as f64).abs() < 2e-2 * (an as f64).abs().max(1.0),
                "{} [{i}]: numeric {num} vs analytic {an}",
                ["x", "weight", "bias"][which]
            );
        }
    }
    assert!(checked * 10 >= total * 8, "{checked} of {total} checked");
}

/// The layer: the shapes, the same output and gradients as the tuple of
/// three layers, the typed errors, and `InputConv2D` inside.
#[test]
fn layer_matches_the_three_layers() {
    let dev = Cpu::seed_from_u64(2);
    let block = dev.build_module::<ConvReLUPool<Conv2D<3, 4, 3>, 2>, f32>();
    let layers = (block.conv.clone(), MaxPool2D::<2, 2>, ReLU);
    let x: Tensor<Rank4<5, 3, 11, 9>, f32, _> = dev.sample_normal();
    let y = block.forward(x.leaky_trace());
    assert_eq!(y.shape(), &(Const::<5>, Const::<4>, 4, 3));
    let yl = layers.forward(x.leaky_trace());
    assert_eq!(y.as_vec(), yl.as_vec());
    let (g, gl) = (y.sin().sum().backward(), yl.sin().sum().backward());
    assert_eq!(g.get(&x).as_vec(), gl.get(&x).as_vec());
    assert_eq!(
        g.get(&block.conv.weight).as_vec(),
        gl.get(&layers.0.weight).as_vec()
    );
    assert_eq!(
        g.get(&block.conv.bias).as_vec(),
        gl.get(&layers.0.bias).as_vec()
    );
    // too small for the pool after the convolution: 4 × 3 → 2 × 1
    let tiny: Tensor<Rank4<1, 3, 4, 3>, f32, _> = dev.zeros();
    assert!(matches!(
        block.try_conv_relu_pool(tiny),
        Err(MetricLossError::ImageTooSmall {
            layer: "MaxPool2D",
            ..
        })
    ));
    let tinier: Tensor<Rank4<1, 3, 2, 9>, f32, _> = dev.zeros();
    assert!(matches!(
        block.try_conv_relu_pool(tinier),
        Err(MetricLossError::ImageTooSmall {
            layer: "Conv2D",
            ..
        })
    ));
    // the first layer of a network: InputConv2D, no gradient for the pixels
    let input = dev.build_module::<ConvReLUPool<InputConv2D<3, 4, 3>, 2>, f32>();
    let layers = (input.conv.clone(), MaxPool2D::<2, 2>, ReLU);
    let y = input.forward(x.leaky_trace());
    let yl = layers.forward(x.leaky_trace());
    assert_eq!(y.as_vec(), yl.as_vec());
    let (g, gl) = (y.sin().sum().backward(), yl.sin().sum().backward());
    assert_eq!(
        g.get(&input.conv.weight).as_vec(),
        gl.get(&layers.0.weight).as_vec()
    );
    assert_eq!(
        g.get(&input.conv.bias).as_vec(),
        gl.get(&layers.0.bias).as_vec()
    );
    assert_eq!(input.num_trainable_params(), 4 * 3 * 9 + 4);
}
