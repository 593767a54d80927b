//! Every `reduction`, with const and runtime batch dims; `none` returns one
//! loss per item, shaped `(B,)`.
use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.5, reduction = mean)]
pub struct TMean;
#[metric_loss(triplet, margin = 0.5, reduction = sum)]
pub struct TSum;
#[metric_loss(triplet, margin = 0.5, reduction = none)]
pub struct TNone;
#[metric_loss(triplet, margin = 0.5, reduction = mean_nonzero)]
pub struct TMeanNonzero;
#[metric_loss(pair, margin = 2.0, reduction = none)]
pub struct PNone;
#[metric_loss(reduction = sum, margin = 2.0, pair)]
pub struct PSum;

fn close(got: f32, want: f32) {
    assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
}

#[test]
fn reductions() {
    let dev = Cpu::default();
    // Item 0: d(A,P) = 1, d(A,N) = 0.5: [1 - 0.5 + 0.5]+ = 1; item 1: d(A,N) = 3: 0.
    let a = dev.tensor([[0.0f32, 0.0], [0.0, 0.0]]);
    let p = dev.tensor([[1.0f32, 0.0], [1.0, 0.0]]);
    let n = dev.tensor([[0.5f32, 0.0], [0.0, 3.0]]);

    let l: Tensor<(), f32, Cpu> = TMean.forward(a.clone(), p.clone(), n.clone());
    close(l.array(), 0.5);
    close(TSum.forward(a.clone(), p.clone(), n.clone()).array(), 1.0);
    close(
        TMeanNonzero
            .forward(a.clone(), p.clone(), n.clone())
            .array(),
        1.0,
    );
    let per_item: Tensor<Rank1<2>, f32, Cpu> = TNone.forward(a.clone(), p.clone(), n.clone());
    assert_eq!(per_item.array(), [1.0, 0.0]);

    // Runtime batch: the output is (usize,).
    let dynamic = |t: Tensor<Rank2<2, 2>, f32, Cpu>| t.reshape_like(&(2usize, Const::<2>));
    let per_item: Tensor<(usize,), f32, Cpu> = TNone.forward(dynamic(a), dynamic(p), dynamic(n));
    assert_eq!(per_item.shape().0, 2);
    assert_eq!(per_item.as_vec(), vec![1.0, 0.0]);

    // Pairs at distance 1: similar 1, dissimilar [2 - 1]+ = 1, dissimilar at 5: 0.
    let y = PairLabels::from_dissimilar(&[false, true, true]);
    let a = dev.tensor([[0.0f32, 0.0], [0.0, 0.0], [0.0, 0.0]]);
    let b = dev.tensor([[1.0f32, 0.0], [0.0, 1.0], [3.0, 4.0]]);
    let per_pair: Tensor<Rank1<3>, f32, Cpu> = PNone.forward(a.clone(), b.clone(), &y);
    assert_eq!(per_pair.array(), [1.0, 1.0, 0.0]);
    close(PSum.forward(a, b, &y).array(), 2.0);
}
