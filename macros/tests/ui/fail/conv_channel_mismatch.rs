// A convolution built for 3 input channels given 1-channel images: the
// channel count is a `Const` in both types, so this does not compile.
use metric_loss::prelude::*;

fn main() {
    let dev = Cpu::default();
    let conv = dev.build_module::<Conv2D<3, 8, 3>, f32>();
    let grey: Tensor<(usize, Const<1>, usize, usize), f32, _> = dev.zeros_like(&(2, Const, 28, 28));
    let _ = conv.forward(grey);
}
