//! The plumbing of the explicit paths (`forward(a, p, n)`, `forward(a, b,
//! labels)`), written once: every argument goes onto the first one's tape,
//! and gets its own id where a binary op will see it next to another.

use super::{LossSpec, MetricSpace};
use crate::device::MetricDevice;
use dfdx::prelude::*;
use dfdx::tensor::Merge;

type Rows<B, const D: usize, Dev, T> = Tensor<(B, Const<D>), f32, Dev, T>;

/// Moves `other`'s tape onto `first` (merged): a caller may trace any one of
/// the arguments, or several.
pub(crate) fn absorb<S1, S2, Dev, T, T2>(
    first: Tensor<S1, f32, Dev, T>,
    other: Tensor<S2, f32, Dev, T2>,
) -> (Tensor<S1, f32, Dev, T>, Tensor<S2, f32, Dev>)
where
    S1: Shape,
    S2: Shape,
    Dev: Device<f32>,
    T: Tape<f32, Dev> + Merge<T2>,
    T2: Tape<f32, Dev>,
{
    let (other, other_tape) = other.split_tape();
    let (first, tape) = first.split_tape();
    (first.put_tape(tape.merge(other_tape)), other)
}

/// A caller may pass one tensor as two arguments (`loss.forward(x, x, x)`);
/// dfdx's backward panics on a binary op with one id on both sides, so a
/// tracked argument goes through an identity op that gives it its own id.
///
/// Not needed (and skipped) where the distance's own op tolerates one id on
/// both sides or a fresh op comes first: `normalize`, or a device's fused
/// Euclidean rows.
fn own_id<S: Shape, Dev: MetricDevice, T: Tape<f32, Dev>>(
    spec: &LossSpec,
    t: Tensor<S, f32, Dev, T>,
) -> Result<Tensor<S, f32, Dev, T>, Dev::Err> {
    let safe = spec.normalize
        || (Dev::EUCLIDEAN_ROWS_SAME_ID_SAFE && spec.distance.as_bytes() == b"euclidean");
    if T::OWNS_TAPE && !safe {
        t.try_mul(1.0)
    } else {
        Ok(t)
    }
}

/// A non-first argument, prepared on the tape type `T` of the first: its own
/// id where needed, then the loss's `embed`.
pub(crate) fn embed_other<L, B, const D: usize, Dev, T>(
    spec: &LossSpec,
    x: Rows<B, D, Dev, NoneTape>,
) -> Result<Rows<B, D, Dev, T>, Dev::Err>
where
    L: MetricSpace,
    B: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
{
    L::try_embed(own_id(spec, x.retaped::<T>())?)
}
