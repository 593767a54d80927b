//! The affine map of a fully connected layer, `y = x·Wᵀ + b`, as one op on
//! the tape each way, on the project's GEMM.

use super::Scratch;
use super::gemm::{Operand, gemm};
use dfdx::prelude::*;

/// `x·Wᵀ + b` on the tape of `x`, forward and backward on the project's
/// [`gemm`], each one op on the tape (dfdx's `Linear` records a matmul, a
/// broadcast and an add, and its backward makes an `O × I` temporary before
/// adding it to `W`'s gradient).
///
/// Forward: `b` is written to every row of the output and `x·Wᵀ` added to it
/// in the GEMM's store. Backward, from the upstream `g`: the column sums of
/// `g` are added to `b`'s gradient, `gᵀ·x` straight into `W`'s, and — with
/// `input_grad` — `g·W` straight into `x`'s. Without `input_grad`, `x` gets
/// no gradient at all (what [`InputLinear`](crate::nets::InputLinear) wants
/// for a network's input: nothing reads it, and it is as large a product as
/// the forward one).
pub(crate) fn linear_cpu<B: Dim, const I: usize, const O: usize, T: Tape<f32, Cpu>>(
    x: Tensor<(B, Const<I>), f32, Cpu, T>,
    weight: &Tensor<Rank2<O, I>, f32, Cpu>,
    bias: &Tensor<Rank1<O>, f32, Cpu>,
    input_grad: bool,
) -> Result<Tensor<(B, Const<O>), f32, Cpu, T>, CpuError> {
    let dev = x.device().clone();
    let (x, mut tape) = x.try_contiguous()?.split_tape();
    let rows = x.shape().0;
    let batch = rows.size();
    let xs = Scratch::copy_of(&x);
    let ws = Scratch::copy_of(weight);
    let mut out = vec![0.0f32; batch * O];
    if O > 0 {
        let bs = Scratch::copy_of(bias);
        for row in out.chunks_exact_mut(O) {
            row.copy_from_slice(&bs);
        }
        // y = b + x·Wᵀ: W (O × I) stored row-major is op(B) = Wᵀ transposed
        gemm(
            batch,
            O,
            I,
            1.0,
            Operand::plain(&xs, I),
            Operand::transposed(&ws, I),
            1.0,
            &mut out,
            O,
        );
    }
    let out = dev.try_tensor_from_vec(out, (rows, Const::<O>))?;
    if T::OWNS_TAPE {
        let (w, b, out_ghost) = (weight.clone(), bias.clone(), out.clone());
        // W as it was in the forward pass, for g·W (dropped if not needed)
        let ws = input_grad.then_some(ws);
        tape.add_backward_op(move |grads| {
            // the upstream gradient, lent out of `grads` (not copied) and
            // put back below
            let g = std::mem::take(&mut **grads.get_or_alloc_mut(&out_ghost)?);
            assert_eq!(g.len(), batch * O, "linear: upstream gradient size");
            let gb = grads.get_or_alloc_mut(&b)?;
            for row in g.chunks_exact(O.max(1)).take(batch) {
                for (gb, &v) in gb.iter_mut().zip(row) {
                    *gb += v;
                }
            }
            if batch > 0 && O > 0 && I > 0 {
                let gw = grads.get_or_alloc_mut(&w)?;
                // gW += gᵀ·x: gᵀ is O × batch (g stored batch × O)
                gemm(
                    O,
                    I,
                    batch,
                    1.0,
                    Operand::transposed(&g, O),
                    Operand::plain(&xs, I),
                    1.0,
                    gw,
                    I,
                );
                if let Some(ws) = &ws {
                    let gx = grads.get_or_alloc_mut(&x)?;
                    // gx += g·W
                    gemm(
                        batch,
                        I,
                        O,
                        1.0,
                        Operand::plain(&g, O),
                        Operand::plain(ws, I),
                        1.0,
                        gx,
                        I,
                    );
                }
            } else if input_grad {
                // an input with no outputs (O = 0) still gets its (zero) gradient
                grads.try_alloc_for(&x)?;
            }
            **grads.get_or_alloc_mut(&out_ghost)? = g;
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
