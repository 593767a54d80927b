// Two convolutions that do not chain (32 channels out, 16 expected in):
// the network does not compile.
use metric_loss::prelude::*;

type Net = (Conv2D<1, 32, 3>, ReLU, Conv2D<16, 64, 3>);

fn main() {
    let dev = Cpu::default();
    let net = dev.build_module::<Net, f32>();
    let x: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.zeros_like(&(2, Const, 28, 28));
    let _ = net.forward(x);
}
