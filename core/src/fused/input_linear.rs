//! The first layer of a network, `y = x·Wᵀ + b`, with a backward for the
//! parameters only.

use super::gemm::{Operand, gemm};
use super::{Scratch, upstream};
use dfdx::prelude::*;

/// `x·Wᵀ + b` on the tape of `x`, whose backward adds `gᵀ·x` to `W`'s
/// gradient and the column sums of `g` to `b`'s, and does **not** compute
/// the gradient with respect to `x` (`g·W`, a GEMM as large as the forward
/// one), which nothing reads when `x` is the network's input.
///
/// The forward is dfdx's own matmul; the backward accumulates straight into
/// the gradient buffer with the project's GEMM, so no `O × I` temporary is made.
pub(crate) fn input_linear_cpu<B: Dim, const I: usize, const O: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(B, Const<I>), f32, Cpu, T>,
    weight: &Tensor<Rank2<O, I>, f32, Cpu>,
    bias: &Tensor<Rank1<O>, f32, Cpu>,
) -> Result<Tensor<(B, Const<O>), f32, Cpu, T>, CpuError> {
    let (x, mut tape) = x.split_tape();
    let shape = (x.shape().0, Const::<O>);
    let y = x
        .clone()
        .try_matmul(weight.clone().try_permute::<_, Axes2<1, 0>>()?)?
        .try_add(bias.clone().try_broadcast_like(&shape)?)?;
    if T::OWNS_TAPE {
        let (w, b, out) = (weight.clone(), bias.clone(), y.clone());
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out)?;
            let xs = Scratch::copy_of(&x.try_contiguous()?);
            let rows = shape.0.size();
            let gb = grads.get_or_alloc_mut(&b)?;
            for row in g.chunks_exact(O.max(1)).take(rows) {
                for (gb, &v) in gb.iter_mut().zip(row) {
                    *gb += v;
                }
            }
            let gw = grads.get_or_alloc_mut(&w)?;
            if rows > 0 && O > 0 && I > 0 {
                assert!(gw.len() == O * I && g.len() == rows * O && xs.len() == rows * I);
                // gW += gᵀ·x: gᵀ is O x rows (g stored rows x O), x is rows x I.
                gemm(
                    O,
                    I,
                    rows,
                    1.0,
                    Operand::transposed(&g[..rows * O], O),
                    Operand::plain(&xs, I),
                    1.0,
                    gw,
                    I,
                );
            }
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
