//! The inner products `X·Yᵀ` of a batch with a constant set of rows (a
//! cross-batch memory), as one op each way on the project's GEMM.

use super::gemm::{Operand, gemm};
use super::{Scratch, with_upstream};
use dfdx::prelude::*;

/// `X·Yᵀ` (`B × M`) on the tape of `x`; `y` is a constant (no gradient).
/// Forward one GEMM; backward `∂X += G·Y`, one GEMM, where `G` is the
/// upstream gradient. The generic twin is dfdx's matmul
/// ([`MetricDevice::try_cross_gram`](crate::device::MetricDevice::try_cross_gram)).
pub(crate) fn cross_gram_cpu<B: Dim, M: Dim, const D: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(B, Const<D>), f32, Cpu, T>,
    y: &Tensor<(M, Const<D>), f32, Cpu>,
) -> Result<Tensor<(B, M), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let (rows, cols) = (x.shape().0, y.shape().0);
    let (b, m) = (rows.size(), cols.size());
    let xs = Scratch::copy_of(&x);
    let ys = Scratch::copy_of(&y.clone().try_contiguous()?);
    let mut out = vec![0.0f32; b * m];
    if b > 0 && m > 0 && D > 0 {
        // X (b × D) times Yᵀ: Y stored row-major m × D is op(B) transposed
        gemm(
            b,
            m,
            D,
            1.0,
            Operand::plain(&xs, D),
            Operand::transposed(&ys, D),
            0.0,
            &mut out,
            m,
        );
    }
    let out = dev.try_tensor_from_vec(out, (rows, cols))?;
    if T::OWNS_TAPE {
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            with_upstream(grads, &out_ghost, |grads, g| {
                let gx = grads.get_or_alloc_mut(&x)?;
                if b > 0 && m > 0 && D > 0 {
                    // ∂X += G·Y: G is b × m, Y is m × D
                    gemm(
                        b,
                        D,
                        m,
                        1.0,
                        Operand::plain(g, m),
                        Operand::plain(&ys, D),
                        1.0,
                        gx,
                        D,
                    );
                }
                Ok(())
            })
        });
    }
    Ok(out.put_tape(tape))
}
