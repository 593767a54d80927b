//! CPU kernels with a hand-written backward registered on the dfdx tape.
//!
//! Each function here has a generic twin built from ordinary dfdx operations
//! (in `device.rs` or the module that uses it); the tests check that both give
//! the same values and gradients. Inputs are made contiguous first (a no-op
//! for the output of an op, a copy recorded on the tape for a strided view),
//! so that storage order is row-major order, forward and backward.

use dfdx::prelude::*;

/// The elements of a contiguous CPU tensor, copied out with one `memcpy`.
pub(crate) fn read<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut buf = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut buf);
    buf
}

/// `safe_sqrt` on the CPU: one pass forward, one pass backward.
pub(crate) fn safe_sqrt_cpu<S: Shape, T: Tape<f32, Cpu>>(
    x: Tensor<S, f32, Cpu, T>,
) -> Result<Tensor<S, f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let mut out = read(&x);
    for v in out.iter_mut() {
        *v = if *v > 0.0 { v.sqrt() } else { 0.0 };
    }
    let y = out.clone();
    let out = dev.try_tensor_from_vec(out, *x.shape())?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let g = read(&grads.get(&out_ghost));
            let gx = grads.get_or_alloc_mut(&x)?;
            for ((gx, &g), &y) in gx.iter_mut().zip(&g).zip(&y) {
                if y > 0.0 {
                    *gx += g * 0.5 / y;
                }
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
