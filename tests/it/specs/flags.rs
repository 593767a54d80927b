//! `squared`, `normalize`, `swap`, `soft` (with and without a margin) and
//! `pos_margin`, each forwarded on small `Cpu` tensors.
use metric_loss::prelude::*;

#[metric_loss(triplet, squared, margin = 3.5)]
pub struct SquaredEuclidean;
#[metric_loss(triplet, distance = manhattan, squared, margin = 5.5)]
pub struct SquaredManhattan;
#[metric_loss(triplet, distance = cosine, squared, margin = 3.5)]
pub struct SquaredCosine;
#[metric_loss(triplet, normalize, margin = 1.0)]
pub struct Normalized;
#[metric_loss(squared, normalize, triplet, margin = 0.2, distance = euclidean)]
pub struct FaceNetLike;
#[metric_loss(triplet, swap, margin = 0.2)]
pub struct Swapped;
#[metric_loss(triplet, margin = 0.2)]
pub struct NotSwapped;
#[metric_loss(triplet, soft)]
pub struct SoftNoMargin;
#[metric_loss(triplet, soft, margin = 0.5)]
pub struct SoftWithMargin;
#[metric_loss(triplet, soft, swap, normalize, distance = cosine, margin = 0)]
pub struct Everything;
#[metric_loss(pair, squared, margin = 1.0)]
pub struct Contrastive;
#[metric_loss(pair, margin = 2, pos_margin = 0.5)]
pub struct PosMargin;
#[metric_loss(pair, squared, normalize, margin = 2.0, pos_margin = 0.5)]
pub struct PosMarginSquaredNormalized;

fn close(got: f32, want: f32) {
    assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
}

#[test]
fn flags() {
    let dev = Cpu::default();
    let o = dev.tensor([[0.0f32, 0.0]]);

    // squared: 1 - 4 + 3.5
    let l = SquaredEuclidean.forward(
        o.clone(),
        dev.tensor([[1.0f32, 0.0]]),
        dev.tensor([[0.0f32, 2.0]]),
    );
    close(l.array(), 0.5);
    // squared Manhattan: 2^2 - 3^2 + 5.5
    let l = SquaredManhattan.forward(
        o.clone(),
        dev.tensor([[1.0f32, 1.0]]),
        dev.tensor([[3.0f32, 0.0]]),
    );
    close(l.array(), 0.5);
    // squared cosine: 1^2 - 2^2 + 3.5
    let x = dev.tensor([[1.0f32, 0.0]]);
    let l = SquaredCosine.forward(x, dev.tensor([[0.0f32, 1.0]]), dev.tensor([[-1.0f32, 0.0]]));
    close(l.array(), 0.5);
    // normalize: (2,0) -> (1,0), (0,5) -> (0,1), (-3,0) -> (-1,0): sqrt 2 - 2 + 1
    let (a, p, n) = (
        dev.tensor([[2.0f32, 0.0]]),
        dev.tensor([[0.0f32, 5.0]]),
        dev.tensor([[-3.0f32, 0.0]]),
    );
    close(
        Normalized.forward(a.clone(), p.clone(), n.clone()).array(),
        2f32.sqrt() - 1.0,
    );
    // FaceNet: 2 - 4 + 0.2 < 0
    close(FaceNetLike.forward(a, p, n).array(), 0.0);
    const { assert!(FaceNetLike::SPEC.squared && FaceNetLike::SPEC.normalize) };

    // swap: d(A,N) = 1.5 but d(P,N) = 0.5, so 1 - 0.5 + 0.2
    let (p, n) = (dev.tensor([[1.0f32, 0.0]]), dev.tensor([[1.5f32, 0.0]]));
    close(
        Swapped.forward(o.clone(), p.clone(), n.clone()).array(),
        0.7,
    );
    close(NotSwapped.forward(o.clone(), p, n).array(), 0.0);

    // soft: softplus(0 - 0 + m)
    close(
        SoftNoMargin
            .forward(o.clone(), o.clone(), o.clone())
            .array(),
        2f32.ln(),
    );
    assert_eq!(SoftNoMargin::SPEC.margin, 0.0);
    close(
        SoftWithMargin
            .forward(o.clone(), o.clone(), o.clone())
            .array(),
        (1.0 + 0.5f32.exp()).ln(),
    );
    let x = dev.tensor([[1.0f32, 0.0]]);
    close(
        Everything.forward(x.clone(), x.clone(), x).array(),
        2f32.ln(),
    );

    // Pairs with a runtime batch: similar, dissimilar, both at distance 1.
    let y = PairLabels::from_similar(&[true, false]);
    let a = dev.tensor_from_vec(vec![0.0f32, 0.0, 0.0, 0.0], (2, Const::<2>));
    let b = dev.tensor_from_vec(vec![0.0f32, 1.0, 1.0, 0.0], (2, Const::<2>));
    // 1^2 and [1 - 1]+^2
    close(Contrastive.forward(a.clone(), b.clone(), &y).array(), 0.5);
    // [1 - 0.5]+ and [2 - 1]+
    close(PosMargin.forward(a, b, &y).array(), 0.75);
    // normalized (1,0) vs (0,1): D = sqrt 2; [sqrt2 - 0.5]^2 and [2 - sqrt2]^2
    let a = dev.tensor([[3.0f32, 0.0], [3.0, 0.0]]);
    let b = dev.tensor([[0.0f32, 2.0], [0.0, 2.0]]);
    let s = 2f32.sqrt();
    let want = ((s - 0.5).powi(2) + (2.0 - s).powi(2)) / 2.0;
    close(PosMarginSquaredNormalized.forward(a, b, &y).array(), want);
    assert_eq!(PosMargin::SPEC.pos_margin, 0.5);
}
