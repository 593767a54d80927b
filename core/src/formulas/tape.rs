//! The generic (tape-op) side of the family's formulas: the weights as
//! constant tensors, and the few stable building blocks every formula uses
//! (masked log-sum-exp, softplus, log-add-exp), each written once.

use super::{BatchFormula, ListSizes, PairWeights, batch_loss_on_rows};
use dfdx::prelude::*;

/// An `R × C` matrix on the tape.
pub type Mat<Dev, T = NoneTape> = Tensor<(usize, usize), f32, Dev, T>;
/// One number per row, on the tape.
pub type Vector<Dev, T = NoneTape> = Tensor<(usize,), f32, Dev, T>;

/// Added to a score where an entry is masked out of a log-sum-exp: far
/// below any score, finite (so that `0 · BIG` stays 0 and no NaN appears),
/// and its `exp` is exactly 0.
pub const MASKED: f32 = -1e30;

/// [`PairWeights`] as constant device tensors, for the generic path.
#[derive(Debug, Clone)]
pub struct TapeWeights<Dev: Device<f32>> {
    /// Positive weights, `R × C`.
    pub pos: Mat<Dev>,
    /// Negative weights, `R × C`.
    pub neg: Mat<Dev>,
    /// `ln w` where a positive weight is `> 0`, [`MASKED`] elsewhere.
    pub pos_log: Mat<Dev>,
    /// `ln w` where a negative weight is `> 0`, [`MASKED`] elsewhere.
    pub neg_log: Mat<Dev>,
    /// 0 where an entry is a positive or a negative pair, [`MASKED`] elsewhere.
    pub any_log: Mat<Dev>,
    /// 1 for rows with a positive pair, else 0.
    pub has_pos: Vector<Dev>,
    /// 1 for rows with a negative pair, else 0.
    pub has_neg: Vector<Dev>,
    /// Each row's sum of positive weights (host).
    pub pos_per_row: Vec<f32>,
    /// PML's list sizes.
    pub sizes: ListSizes,
    /// `(R, C)`.
    pub shape: (usize, usize),
    /// The weights themselves (host), for the row form.
    pub host: PairWeights,
}

impl<Dev: Device<f32>> TapeWeights<Dev> {
    /// Uploads `w` to `dev`.
    pub fn try_new(dev: &Dev, w: &PairWeights) -> Result<Self, Dev::Err> {
        let shape = (w.rows(), w.cols());
        let (pos, neg) = w.dense();
        let log = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&w| if w > 0.0 { w.ln() } else { MASKED })
                .collect()
        };
        let any: Vec<f32> = pos
            .iter()
            .zip(&neg)
            .map(|(p, q)| if *p > 0.0 || *q > 0.0 { 0.0 } else { MASKED })
            .collect();
        let c = shape.1.max(1);
        let flags = |v: &[f32]| -> Vec<f32> {
            v.chunks(c)
                .map(|r| f32::from(u8::from(r.iter().any(|&w| w > 0.0))))
                .take(shape.0)
                .collect()
        };
        let pos_per_row: Vec<f32> = pos
            .chunks(c)
            .map(|r| r.iter().sum())
            .take(shape.0)
            .collect();
        let (has_pos, has_neg) = (flags(&pos), flags(&neg));
        let mat = |v: Vec<f32>| dev.try_tensor_from_vec(v, shape);
        let vector = |v: Vec<f32>| dev.try_tensor_from_vec(v, (shape.0,));
        Ok(Self {
            pos_log: mat(log(&pos))?,
            neg_log: mat(log(&neg))?,
            any_log: mat(any)?,
            pos: mat(pos)?,
            neg: mat(neg)?,
            has_pos: vector(has_pos)?,
            has_neg: vector(has_neg)?,
            pos_per_row,
            sizes: w.sizes(),
            shape,
            host: w.clone(),
        })
    }

    /// A row vector broadcast along the columns.
    pub fn rows_of<T: Tape<f32, Dev>>(&self, v: Vector<Dev, T>) -> Result<Mat<Dev, T>, Dev::Err> {
        v.try_broadcast_like::<(usize, usize), Axis<1>>(&self.shape)
    }

    /// A vector of one number per column, broadcast along the rows.
    pub fn cols_of<T: Tape<f32, Dev>>(&self, v: Vector<Dev, T>) -> Result<Mat<Dev, T>, Dev::Err> {
        v.try_broadcast_like::<(usize, usize), Axis<0>>(&self.shape)
    }
}

/// `ln Σ_j e^{x_ij + bias_ij}` per row: a log-sum-exp over the entries a
/// `*_log` bias keeps (weighted by `e^{bias}`). A row with none gives about
/// [`MASKED`] (multiply by a `has_*` flag for PML's 0).
pub fn lse<Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Mat<Dev, T>,
    bias: &Mat<Dev>,
) -> Result<Vector<Dev, T>, Dev::Err> {
    x.try_add(bias.clone())?
        .try_logsumexp::<(usize,), Axis<1>>()
}

/// `ln(eᵃ + eᵇ)` elementwise, stable. `a` and `b` must have different ids
/// (see [`fork`](crate::distance::fork)).
pub fn logaddexp<S, L, Dev, T>(
    a: Tensor<S, f32, Dev, T>,
    b: Tensor<S, f32, Dev, T>,
) -> Result<Tensor<S, f32, Dev, T>, Dev::Err>
where
    S: Shape,
    L: Shape + ReduceShapeTo<S, Axis<0>>,
    Dev: Device<f32>,
    T: Tape<f32, Dev>,
    [Tensor<S, f32, Dev, T>; 2]: TryStack<Stacked = Tensor<L, f32, Dev, T>, Err = Dev::Err>,
{
    [a, b].try_stack()?.try_logsumexp::<S, Axis<0>>()
}

/// `ln(1 + eˣ)` elementwise, stable, with the derivative `σ(x)` everywhere.
pub fn softplus<S, L, Dev, T>(x: Tensor<S, f32, Dev, T>) -> Result<Tensor<S, f32, Dev, T>, Dev::Err>
where
    S: Shape,
    L: Shape + ReduceShapeTo<S, Axis<0>>,
    Dev: Device<f32>,
    T: Tape<f32, Dev>,
    [Tensor<S, f32, Dev, T>; 2]: TryStack<Stacked = Tensor<L, f32, Dev, T>, Err = Dev::Err>,
{
    let zeros = x.device().try_zeros_like(x.shape())?.retaped::<T>();
    logaddexp(x, zeros)
}

/// The loss `total / divisor`, or 0 with `total`'s tape (zero gradients)
/// when `divisor` is 0.
pub fn ratio<Dev: Device<f32>, T: Tape<f32, Dev>>(
    total: Tensor<(), f32, Dev, T>,
    divisor: f32,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    if divisor > 0.0 {
        total.try_div(divisor)
    } else {
        zero(total)
    }
}

/// 0, carrying `x`'s tape: PML's zero loss, whose gradient is zeros.
pub fn zero<S: Shape, Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Tensor<S, f32, Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    let (x, tape) = x.split_tape();
    Ok(x.device().try_zeros::<()>()?.put_tape(tape))
}

/// The sum of every entry.
pub fn total<Dev: Device<f32>, T: Tape<f32, Dev>>(
    x: Mat<Dev, T>,
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    x.try_sum::<(), Axes2<0, 1>>()
}

/// Each row's count by the formula's row form, on a host copy of `s`: for
/// the reducers that count rows by their value (PML's `AvgNonZeroReducer`),
/// so that both paths leave out the same rows, however the last bits of a
/// row whose loss is about 0 round.
pub fn row_counts<F: BatchFormula, Dev: Device<f32>, T>(
    f: &F,
    s: &Mat<Dev, T>,
    w: &TapeWeights<Dev>,
) -> Vec<f32> {
    let c = w.shape.1;
    if w.shape.0 * c == 0 {
        return vec![0.0; w.shape.0];
    }
    let data = s.as_vec();
    batch_loss_on_rows(f, &w.host, |i, buf| {
        buf.copy_from_slice(&data[i * c..(i + 1) * c])
    })
    .counts
}

/// The mean of `v` over the rows whose count is `> 0` (PML's
/// `AvgNonZeroReducer`, with the counts of [`row_counts`]); 0 when none is.
pub fn mean_counted<Dev: Device<f32>, T: Tape<f32, Dev>>(
    v: Vector<Dev, T>,
    counts: &[f32],
) -> Result<Tensor<(), f32, Dev, T>, Dev::Err> {
    let keep: Vec<f32> = counts
        .iter()
        .map(|&c| f32::from(u8::from(c > 0.0)))
        .collect();
    let count = keep.iter().sum();
    let keep = v.device().try_tensor_from_vec(keep, *v.shape())?;
    ratio(v.try_mul(keep)?.try_sum()?, count)
}
