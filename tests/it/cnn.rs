//! A small CNN encoder built from the layers: `Flatten`/`Unflatten`, the
//! parameters seen by optimisers and safetensors, a save/load round trip,
//! and the tape shared across Siamese branches.

use super::naive_image::close;
use metric_loss::prelude::*;

/// 14 → conv 3 → 12 → pool 2 → 6 → conv 3 → 4 → pool 2 → 2: 6·2·2 = 24.
type Cnn = (
    (Unflatten<1, 14, 14>, Conv2D<1, 4, 3>, ReLU, MaxPool2D<2>),
    (Conv2D<4, 6, 3>, ReLU, MaxPool2D<2>),
    (Flatten<24>, Linear<24, 8>),
);
type Built = <Cnn as BuildOnDevice<Cpu, f32>>::Built;
type Rows<T = NoneTape> = Tensor<(usize, Const<196>), f32, Cpu, T>;

fn rows(dev: &Cpu, n: usize) -> Rows {
    dev.sample_uniform_like(&(n, Const))
}

#[test]
fn flatten_checks_the_width_and_keeps_pytorch_order() {
    let dev = Cpu::default();
    let x = dev.tensor([[[[1.0f32, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]]);
    assert_eq!(
        Flatten::<8>.forward(x.clone()).array(),
        [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]]
    );
    // a strided view is read in logical order
    let t = x.clone().permute::<Rank4<1, 2, 2, 2>, Axes4<0, 1, 3, 2>>(); // (b, c, w, h)
    assert_eq!(
        Flatten::<8>.forward(t).array(),
        [[1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 6.0, 8.0]]
    );
    let err = Flatten::<6>.try_flatten(x.clone()).unwrap_err();
    assert_eq!(
        err,
        MetricLossError::FlattenWidth {
            expected: 6,
            actual: 8,
            channels: 2,
            height: 2,
            width: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "flatten width mismatch: Flatten<6> expects 6 values per image, but got 2x2x2 = 8"
    );
    let panic = std::panic::catch_unwind(|| Flatten::<6>.forward(x)).unwrap_err();
    assert_eq!(
        panic.downcast_ref::<String>().unwrap(),
        &format!("metric-loss: {err}")
    );
}

#[test]
fn unflatten_then_flatten_is_the_identity_with_gradient() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<3, 12>, f32, _> = dev.sample_normal();
    let y = Flatten::<12>.forward(Unflatten::<3, 2, 2>.forward(x.leaky_trace()));
    assert_eq!(y.as_vec(), x.as_vec());
    let g = (y * 2.0).sum().backward();
    assert_eq!(g.get(&x).as_vec(), vec![2.0; 36]);
}

#[test]
fn encoder_runs_on_rows_and_trains() {
    let dev = Cpu::seed_from_u64(0);
    let mut net = dev.build_module::<Cnn, f32>();
    // weights: 4·1·9 + 4, 6·4·9 + 6, 8·24 + 8
    assert_eq!(net.num_trainable_params(), 40 + 222 + 200);
    let x = rows(&dev, 6);
    let labels = [0, 0, 1, 1, 2, 2];
    let mut opt = Adam::new(
        &net,
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut grads = net.alloc_grads();
    let mut losses = vec![];
    for _ in 0..15 {
        let e = net.forward_mut(x.clone().traced(grads));
        let loss = TripletLoss.mined(&BatchAll::default(), e, &labels).loss;
        losses.push(loss.array());
        grads = loss.backward();
        opt.update(&mut net, &grads).unwrap();
        net.zero_grads(&mut grads);
    }
    assert!(losses[14] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn save_then_load_gives_bit_identical_embeddings() {
    let dev = Cpu::seed_from_u64(3);
    let net = dev.build_module::<TripletNet<Cnn>, f32>();
    let path = std::env::temp_dir().join(format!(
        "metric-loss-cnn-{}.safetensors",
        std::process::id()
    ));
    net.save_safetensors(&path).unwrap();
    let mut other = dev.build_module::<TripletNet<Cnn>, f32>();
    let x = rows(&dev, 5);
    assert_ne!(
        other.forward(x.clone()).as_vec(),
        net.forward(x.clone()).as_vec()
    );
    other.load_safetensors(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        other.forward(x.clone()).as_vec(),
        net.forward(x.clone()).as_vec()
    );
    let flat = x.as_vec();
    assert_eq!(
        other.embed_rows::<196, 8, _>(&dev, &flat, 2),
        net.embed_rows::<196, 8, _>(&dev, &flat, 2)
    );
    assert_eq!(
        other.encoder().0.1.weight.as_vec(),
        net.encoder().0.1.weight.as_vec()
    );
}

fn conv_grads(net: &Built, g: &Gradients<f32, Cpu>) -> Vec<Vec<f32>> {
    vec![
        g.get(&net.0.1.weight).as_vec(),
        g.get(&net.0.1.bias).as_vec(),
        g.get(&net.1.0.weight).as_vec(),
        g.get(&net.1.0.bias).as_vec(),
        g.get(&net.2.1.weight).as_vec(),
    ]
}

/// Both branches of a Siamese CNN record on one tape: every shared weight's
/// gradient is the sum of the two branches'.
#[test]
fn siamese_branches_share_the_tape() {
    let dev = Cpu::seed_from_u64(5);
    let net = dev.build_module::<Siamese<Cnn>, f32>();
    let (a, b) = (rows(&dev, 4), rows(&dev, 4));
    let (ea, eb) = net.forward_pair(a.leaky_trace(), b.clone());
    let joint = (ea.square().sum() + eb.sin().sum()).backward();
    let enc = net.encoder();
    let ga = enc.forward(a.leaky_trace()).square().sum().backward();
    let gb = enc.forward(b.leaky_trace()).sin().sum().backward();
    let (joint, ga, gb) = (
        conv_grads(enc, &joint),
        conv_grads(enc, &ga),
        conv_grads(enc, &gb),
    );
    for ((j, a), b) in joint.iter().zip(&ga).zip(&gb) {
        let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
        close(j, &sum, 1e-5, "shared gradient");
        assert!(
            j.iter().zip(a).any(|(x, y)| (x - y).abs() > 1e-6),
            "both branches count"
        );
    }
    // and the contrastive loss trains through it
    let labels = PairLabels::from_similar(&[true, false, true, false]);
    let (ea, eb) = net.forward_pair(a.leaky_trace(), b);
    let g = ContrastiveLoss.forward(ea, eb, &labels).backward();
    assert!(g.get(&enc.0.1.weight).as_vec().iter().any(|&v| v != 0.0));
}

/// ReLU after each max-pool (the examples' `CnnTrunk`) is the same network
/// as ReLU before it: the same embeddings and the same gradients for every
/// parameter and the pixels, bit for bit, including windows whose pixels are
/// all negative (biases shifted down so that many are).
#[test]
fn relu_after_the_pool_is_the_same_network() {
    type PoolFirst = (
        (Unflatten<1, 14, 14>, Conv2D<1, 4, 3>, MaxPool2D<2>, ReLU),
        (Conv2D<4, 6, 3>, MaxPool2D<2>, ReLU),
        (Flatten<24>, Linear<24, 8>),
    );
    // the same seed draws the same parameters: neither ReLU nor MaxPool2D has any
    let mut relu_first = Cpu::seed_from_u64(3).build_module::<Cnn, f32>();
    let mut pool_first = Cpu::seed_from_u64(3).build_module::<PoolFirst, f32>();
    relu_first.0.1.bias = relu_first.0.1.bias.clone() - 0.3;
    pool_first.0.1.bias = pool_first.0.1.bias.clone() - 0.3;
    relu_first.1.0.bias = relu_first.1.0.bias.clone() - 0.1;
    pool_first.1.0.bias = pool_first.1.0.bias.clone() - 0.1;
    assert_eq!(
        relu_first.2.1.weight.as_vec(),
        pool_first.2.1.weight.as_vec()
    );
    let dev = Cpu::seed_from_u64(4);
    let x: Rows = dev.sample_normal_like(&(5, Const));
    let y1 = relu_first.forward_mut(x.leaky_trace());
    let y2 = pool_first.forward_mut(x.leaky_trace());
    assert_eq!(y1.as_vec(), y2.as_vec());
    let g1 = y1.sin().sum().backward();
    let g2 = y2.sin().sum().backward();
    assert_eq!(g1.get(&x).as_vec(), g2.get(&x).as_vec());
    let (c1, c2) = (&relu_first.0.1, &pool_first.0.1);
    assert_eq!(g1.get(&c1.weight).as_vec(), g2.get(&c2.weight).as_vec());
    assert_eq!(g1.get(&c1.bias).as_vec(), g2.get(&c2.bias).as_vec());
    let (c1, c2) = (&relu_first.1.0, &pool_first.1.0);
    assert_eq!(g1.get(&c1.weight).as_vec(), g2.get(&c2.weight).as_vec());
    assert_eq!(g1.get(&c1.bias).as_vec(), g2.get(&c2.bias).as_vec());
    let (l1, l2) = (&relu_first.2.1, &pool_first.2.1);
    assert_eq!(g1.get(&l1.weight).as_vec(), g2.get(&l2.weight).as_vec());
    // some pooled windows were all negative: the ReLU had zeros to make
    let h = (relu_first.0).forward(x.clone());
    assert!(h.as_vec().contains(&0.0));
}
