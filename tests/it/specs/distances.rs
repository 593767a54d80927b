//! Every distance (the four built-in ones and a user function given by path),
//! on triplet and pair losses, forwarded on small `Cpu` tensors.
use metric_loss::prelude::*;

/// Squared Euclidean distance divided by the width: the signature the macro docs show.
pub fn mean_squared<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Tensor<(B, Const<D>), f32, Dev, T>,
    b: Tensor<(B, Const<D>), f32, Dev, T>,
) -> Result<Tensor<(B,), f32, Dev, T>, Dev::Err> {
    a.try_sub(b)?.try_square()?.try_mean::<(B,), Axis<1>>()
}

mod user {
    pub mod distances {
        pub use super::super::mean_squared as nested;
    }
}

#[metric_loss(triplet, distance = euclidean, margin = 1.5)]
pub struct TEuclidean;
#[metric_loss(triplet, distance = cosine, margin = 1.0)]
pub struct TCosine;
#[metric_loss(triplet, distance = manhattan, margin = 1.5)]
pub struct TManhattan;
#[metric_loss(triplet, distance = dot, margin = 1.5)]
pub struct TDot;
#[metric_loss(triplet, distance = self::mean_squared, margin = 1.5)]
pub struct TCustom;
#[metric_loss(triplet, distance = crate::specs::distances::user::distances::nested, margin = 1.5)]
pub struct TCustomNested;

#[metric_loss(pair, distance = euclidean, margin = 2.0)]
pub struct PEuclidean;
#[metric_loss(pair, distance = cosine, margin = 0.5)]
pub struct PCosine;
#[metric_loss(pair, distance = manhattan, margin = 4.0)]
pub struct PManhattan;
#[metric_loss(pair, distance = dot, margin = 1.0)]
pub struct PDot;
#[metric_loss(pair, distance = self::mean_squared, margin = 3.0)]
pub struct PCustom;

fn close(got: f32, want: f32) {
    assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
}

#[test]
fn distances() {
    let dev = Cpu::default();

    // Const batch dims.
    let a = dev.tensor([[0.0f32, 0.0]]);
    // d(A,P) = 1, d(A,N) = 2: [1 - 2 + 1.5]+ = 0.5
    let l = TEuclidean.forward(
        a.clone(),
        dev.tensor([[1.0f32, 0.0]]),
        dev.tensor([[0.0f32, 2.0]]),
    );
    close(l.array(), 0.5);
    // d(A,P) = 2, d(A,N) = 3
    let l = TManhattan.forward(
        a.clone(),
        dev.tensor([[1.0f32, 1.0]]),
        dev.tensor([[3.0f32, 0.0]]),
    );
    close(l.array(), 0.5);
    // mean squared: d(A,P) = 1, d(A,N) = 2
    let l = TCustom.forward(
        a.clone(),
        dev.tensor([[1.0f32, 1.0]]),
        dev.tensor([[2.0f32, 0.0]]),
    );
    close(l.array(), 0.5);
    let l = TCustomNested.forward(a, dev.tensor([[1.0f32, 1.0]]), dev.tensor([[2.0f32, 0.0]]));
    close(l.array(), 0.5);
    // cosine: d(A,P) = 1 - 1/sqrt(2), d(A,N) = 1
    let x = dev.tensor([[1.0f32, 0.0]]);
    let l = TCosine.forward(
        x.clone(),
        dev.tensor([[1.0f32, 1.0]]),
        dev.tensor([[0.0f32, 1.0]]),
    );
    close(l.array(), 1.0 - 0.5f32.sqrt());
    // dot: d(A,P) = -2, d(A,N) = -1: [-2 + 1 + 1.5]+ = 0.5
    let l = TDot.forward(x, dev.tensor([[2.0f32, 0.0]]), dev.tensor([[1.0f32, 0.0]]));
    close(l.array(), 0.5);

    // Runtime (usize) batch dims, two pairs: similar, dissimilar.
    let rows = |v: Vec<f32>| dev.tensor_from_vec(v, (2, Const::<2>));
    let y = PairLabels::from_pairs(&[Pair::Similar, Pair::Dissimilar]);
    let a = rows(vec![0.0, 0.0, 0.0, 0.0]);
    let b = rows(vec![1.0, 0.0, 1.0, 0.0]);
    // D = 1 for both: similar 1, dissimilar [2 - 1]+ = 1
    close(PEuclidean.forward(a.clone(), b.clone(), &y).array(), 1.0);
    // D = 1 for both: similar 1, dissimilar [4 - 1]+ = 3
    close(PManhattan.forward(a.clone(), b.clone(), &y).array(), 2.0);
    // D = 0.5 for both: similar 0.5, dissimilar [3 - 0.5]+ = 2.5
    close(PCustom.forward(a, b, &y).array(), 1.5);
    let a = rows(vec![1.0, 0.0, 1.0, 0.0]);
    let b = rows(vec![0.0, 1.0, 1.0, 1.0]);
    // cosine D = 1, 1 - 1/sqrt(2): similar 1, dissimilar [0.5 - 0.2929]+
    let want = (1.0 + (0.5 - (1.0 - 0.5f32.sqrt()))) / 2.0;
    close(PCosine.forward(a.clone(), b.clone(), &y).array(), want);
    // dot D = 0, -1: similar [0]+ = 0, dissimilar [1 + 1]+ = 2
    close(PDot.forward(a, b, &y).array(), 1.0);

    assert_eq!(TCustom::SPEC.distance, "self::mean_squared");
    assert_eq!(TCosine::SPEC.distance, "cosine");
}
