use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub struct MyTriplet;

fn main() {
    let dev = Cpu::default();
    let a: Tensor<(usize, Const<4>), f32, Cpu> = dev.zeros_like(&(2, Const));
    let p: Tensor<(usize, Const<8>), f32, Cpu> = dev.zeros_like(&(2, Const));
    let n: Tensor<(usize, Const<4>), f32, Cpu> = dev.zeros_like(&(2, Const));
    let _ = MyTriplet.forward(a, p, n);
}
