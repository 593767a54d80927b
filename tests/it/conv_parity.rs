//! Parity with PyTorch: `tests/fixtures/conv_parity.json`, made once by
//! `tests/fixtures/conv_parity.py` (conv2d, max_pool2d, avg_pool2d outputs
//! and the gradients of `Σ r·y`), compared on the CPU ops and the generic
//! twins.

use super::naive_image::close;
use metric_loss::device::{MetricDevice, generic_avg_pool2d, generic_conv2d, generic_max_pool2d};
use metric_loss::nets::Window;
use metric_loss::prelude::*;
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("../fixtures/conv_parity.json");
    serde_json::from_str(text).expect("valid JSON")
}

fn floats(case: &Value, key: &str) -> Vec<f32> {
    case[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn size(case: &Value, key: &str) -> usize {
    case[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

fn conv_case<const C: usize, const O: usize, const K: usize>(case: &Value) {
    let dev = Cpu::default();
    let (b, h, w) = (
        size(case, "batch"),
        size(case, "height"),
        size(case, "width"),
    );
    let x: Tensor<(usize, Const<C>, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(floats(case, "x"), (b, Const, h, w));
    let wt: Tensor<Rank4<O, C, K, K>, f32, Cpu> =
        dev.tensor_from_vec(floats(case, "weight"), Default::default());
    let bt: Tensor<Rank1<O>, f32, Cpu> =
        dev.tensor_from_vec(floats(case, "bias"), Default::default());
    let win = Window::try_new(
        "Conv2D",
        K,
        size(case, "stride"),
        size(case, "padding"),
        h,
        w,
    )
    .unwrap();
    assert_eq!(
        win.output_size(),
        (size(case, "out_height"), size(case, "out_width"))
    );
    for fused in [true, false] {
        let y = if fused {
            Cpu::try_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        } else {
            generic_conv2d(x.leaky_trace(), &wt, &bt, &win).unwrap()
        };
        let what = format!("conv C={C} O={O} K={K} cpu={fused}");
        close(&y.as_vec(), &floats(case, "y"), 1e-5, &format!("{what} y"));
        let r = dev.tensor_from_vec(floats(case, "r"), *y.shape());
        let g = (y * r).sum().backward();
        close(
            &g.get(&x).as_vec(),
            &floats(case, "grad_x"),
            1e-5,
            &format!("{what} grad x"),
        );
        close(
            &g.get(&wt).as_vec(),
            &floats(case, "grad_weight"),
            1e-5,
            &format!("{what} grad weight"),
        );
        close(
            &g.get(&bt).as_vec(),
            &floats(case, "grad_bias"),
            1e-5,
            &format!("{what} grad bias"),
        );
    }
}

#[test]
fn conv2d_matches_pytorch() {
    let fx = fixture();
    let cases = fx["conv2d"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        match (size(case, "in"), size(case, "out"), size(case, "kernel")) {
            (3, 4, 3) => conv_case::<3, 4, 3>(case),
            (2, 3, 3) => conv_case::<2, 3, 3>(case),
            (1, 2, 1) => conv_case::<1, 2, 1>(case),
            (2, 2, 5) => conv_case::<2, 2, 5>(case),
            (1, 8, 3) => conv_case::<1, 8, 3>(case),
            other => panic!("no case for {other:?}"),
        }
    }
}

#[test]
fn pools_match_pytorch_ties_included() {
    let fx = fixture();
    let cases = fx["pool2d"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let dev = Cpu::default();
    for case in cases {
        let dims = (
            size(case, "batch"),
            size(case, "channels"),
            size(case, "height"),
            size(case, "width"),
        );
        let x: Tensor<(usize, usize, usize, usize), f32, Cpu> =
            dev.tensor_from_vec(floats(case, "x"), dims);
        let max = case["kind"] == "max";
        let win = Window::try_new(
            "pool",
            size(case, "kernel"),
            size(case, "stride"),
            0,
            dims.2,
            dims.3,
        )
        .unwrap();
        for fused in [true, false] {
            let y = match (max, fused) {
                (true, true) => Cpu::try_max_pool2d(x.leaky_trace(), &win),
                (true, false) => generic_max_pool2d(x.leaky_trace(), &win),
                (false, true) => Cpu::try_avg_pool2d(x.leaky_trace(), &win),
                (false, false) => generic_avg_pool2d(x.leaky_trace(), &win),
            }
            .unwrap();
            let what = format!("{} {dims:?} cpu={fused}", case["kind"]);
            close(&y.as_vec(), &floats(case, "y"), 1e-6, &format!("{what} y"));
            let r = dev.tensor_from_vec(floats(case, "r"), *y.shape());
            let g = (y * r).sum().backward();
            close(
                &g.get(&x).as_vec(),
                &floats(case, "grad_x"),
                1e-6,
                &format!("{what} grad"),
            );
        }
    }
}
