//! The ranking family's formulas on the CPU in their row form: one pass
//! over the rows of the matrix forward, one backward (two each for lifted
//! structure), no `R × C` temporaries on the tape.

use super::{read, upstream};
use crate::formulas::{BatchFormula, PairWeights, batch_grad_on_rows, batch_loss_on_rows};
use dfdx::prelude::*;

/// `f` on the matrix `s` (`R × C` of the whole batch; `w` may view a part of
/// it), with a backward that writes `∂L/∂s` straight into `s`'s gradient.
pub(crate) fn batch_formula_cpu<F: BatchFormula, T: Tape<f32, Cpu>>(
    s: Tensor<(usize, usize), f32, Cpu, T>,
    w: &PairWeights,
    f: &F,
) -> Result<Tensor<(), f32, Cpu, T>, CpuError> {
    let dev = s.device().clone();
    let (s, mut tape) = s.try_contiguous()?.split_tape();
    let stride = s.shape().1;
    let data = read(&s);
    let view = w.view().map(|(r, c)| (r.to_vec(), c.to_vec()));
    let at = move |i: usize, j: usize| match &view {
        None => i * stride + j,
        Some((rows, cols)) => rows[i] * stride + cols[j],
    };
    let scores = {
        let at = at.clone();
        move |data: &[f32], i: usize, buf: &mut [f32]| {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = data[at(i, j)];
            }
        }
    };
    let fwd = batch_loss_on_rows(f, w, |i, buf| scores(&data, i, buf));
    let out = dev.try_tensor_from_vec(vec![fwd.loss], ())?;
    if T::OWNS_TAPE {
        let (out_ghost, w, f) = (out.clone(), w.clone(), *f);
        tape.add_backward_op(move |grads| {
            let g = upstream(grads, &out_ghost)?[0];
            let gs = grads.get_or_alloc_mut(&s)?;
            batch_grad_on_rows(
                &f,
                &w,
                &fwd,
                g,
                |i, buf| scores(&data, i, buf),
                |i, ds| {
                    for (j, &d) in ds.iter().enumerate() {
                        gs[at(i, j)] += d;
                    }
                },
            );
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
