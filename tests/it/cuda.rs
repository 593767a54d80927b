//! The public API instantiated on dfdx's `Cuda` device, so that
//! device-generic code cannot stop compiling for it unnoticed. Built only
//! with `--features cuda`. CI type-checks it without a CUDA toolkit
//! (`cargo check --workspace --all-targets --features cuda,ci-check`:
//! dfdx's `ci-check` skips nvcc and links nothing, so nothing can run).
//! On a machine with a GPU and the toolkit, run it with
//! `cargo test --features cuda --test it cuda -- --ignored`; that has not
//! been done (no GPU here).

use metric_loss::miners::{AllPairs, BatchAll, BatchHard, SemiHard};
use metric_loss::prelude::*;

type Rows<T = NoneTape> = Tensor<(usize, Const<8>), f32, Cuda, T>;
type Encoder = (InputLinear<8, 16>, ReLU, FusedLinear<16, 4>);

fn rows(dev: &Cuda, n: usize) -> Rows {
    let data: Vec<f32> = (0..n * 8)
        .map(|i| ((i * 7 + 3) % 11) as f32 / 11.0)
        .collect();
    dev.tensor_from_vec(data, (n, Const))
}

#[test]
#[ignore = "needs a CUDA GPU (CI only type-checks this, with ci-check)"]
fn the_api_runs_on_cuda() {
    let dev = Cuda::default();
    let labels = [0usize, 0, 1, 1, 2, 2];
    let x = rows(&dev, 6);

    // Explicit triplets and pairs, checked and not.
    let l = TripletLoss.forward(x.leaky_trace(), x.clone(), x.clone());
    let _ = l.backward();
    let l = FaceNet
        .try_forward_checked(x.leaky_trace(), x.clone(), x.clone())
        .unwrap();
    let _ = l.backward();
    let y = PairLabels::from_classes(&labels, &labels).unwrap();
    let l = ContrastiveLoss.forward(x.leaky_trace(), x.clone(), &y);
    let _ = l.backward();

    // Every miner family (batch-hard Euclidean takes the generic path here).
    for m in [
        TripletLoss.mined(&BatchHard, x.leaky_trace(), &labels),
        TripletLoss.mined(&BatchAll::default(), x.leaky_trace(), &labels),
        FaceNet.mined(&SemiHard::default(), x.leaky_trace(), &labels),
    ] {
        let _ = m.loss.backward();
    }
    let m = ContrastiveLoss.mined(&AllPairs, x.leaky_trace(), &labels);
    let _ = m.loss.backward();

    // The ranking family: every formula's generic (tape-op) path, with its miners.
    let _ = MultiSimilarityLoss
        .forward(x.leaky_trace(), &labels)
        .backward();
    let _ = NtXentLoss.forward(x.leaky_trace(), &labels).backward();
    let _ = SupConLoss.forward(x.leaky_trace(), &labels).backward();
    let _ = CircleLoss.forward(x.leaky_trace(), &labels).backward();
    let _ = LiftedStructureLoss
        .forward(x.leaky_trace(), &labels)
        .backward();
    let _ = GeneralizedLiftedStructureLoss
        .forward(x.leaky_trace(), &labels)
        .backward();
    let _ = NPairsLoss.forward(x.leaky_trace(), &labels).backward();
    let m = MultiSimilarityLoss.mined(&MultiSimilarityMiner::default(), x.leaky_trace(), &labels);
    let _ = m.loss.backward();
    let m = MarginLoss.mined(&DistanceWeightedMiner::default(), x.leaky_trace(), &labels);
    let _ = m.loss.backward();

    // Shared-weight nets with InputLinear and FusedLinear, one Adam step.
    let mut net = dev.build_module::<TripletNet<Encoder>, f32>();
    let mut opt = Adam::new(&net, AdamConfig::default());
    let grads = net.alloc_grads();
    let (a, p, n) = net.forward_triplet(x.clone().traced(grads), x.clone(), x.clone());
    let grads = TripletLoss.forward(a, p, n).backward();
    opt.update(&mut net, &grads).unwrap();
    let siamese = dev.build_module::<Siamese<Encoder>, f32>();
    let (ea, eb) = siamese.forward_pair(x.clone(), x.clone());
    assert_eq!(ea.shape(), eb.shape());

    // Image layers (their generic bodies: im2col gather + matmul, pools).
    type Cnn = (
        (
            Unflatten<1, 6, 6>,
            Conv2D<1, 4, 3, 1, 1>,
            ReLU,
            MaxPool2D<2>,
        ),
        (ConvReLUPool<Conv2D<4, 2, 3>, 1>, AvgPool2D<1>, Flatten<2>),
    );
    let mut cnn = dev.build_module::<TripletNet<Cnn>, f32>();
    let mut opt = Adam::new(&cnn, AdamConfig::default());
    let pixels: Tensor<(usize, Const<36>), f32, Cuda> =
        dev.tensor_from_vec(vec![0.5; 6 * 36], (6, Const));
    let grads = cnn.alloc_grads();
    let e = cnn.forward_mut(pixels.traced(grads));
    let grads = TripletLoss.mined(&BatchHard, e, &labels).loss.backward();
    opt.update(&mut cnn, &grads).unwrap();

    // Distances and the finite check.
    let _ = metric_loss::distance::cosine(x.clone(), x.clone()).unwrap();
    let _ = metric_loss::distance::l2_normalize(x.clone()).unwrap();
    metric_loss::loss::check_finite("x", &x).unwrap();
}
