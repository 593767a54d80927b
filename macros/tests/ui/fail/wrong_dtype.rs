use metric_loss::prelude::*;

#[metric_loss(triplet, margin = 0.2)]
pub struct MyTriplet;

fn main() {
    let dev = Cpu::default();
    let a: Tensor<Rank2<2, 3>, f64, Cpu> = dev.zeros();
    let p: Tensor<Rank2<2, 3>, f64, Cpu> = dev.zeros();
    let n: Tensor<Rank2<2, 3>, f64, Cpu> = dev.zeros();
    let _ = MyTriplet.forward(a, p, n);
}
