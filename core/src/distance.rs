//! Distances between embeddings: row-wise (between two batches, row `i` with
//! row `i`) and as the full `N x N` matrix of one batch that miners read.
//!
//! | name        | `d(a, b)`                          | range        | matrix form |
//! |-------------|------------------------------------|--------------|-------------|
//! | `euclidean` | `‖a − b‖₂`                          | `[0, ∞)`     | Gram trick  |
//! | squared     | `‖a − b‖₂²`                         | `[0, ∞)`     | Gram trick  |
//! | `cosine`    | `1 − ⟨a, b⟩ / (‖a‖ ‖b‖)`            | `[0, 2]`     | Gram of normalized rows |
//! | `manhattan` | `‖a − b‖₁`                          | `[0, ∞)`     | none (row gathers) |
//! | `dot`       | `−⟨a, b⟩`                           | `(−∞, ∞)`    | `−Gram`     |
//!
//! `dot` is an *inverted similarity* (pytorch-metric-learning's words): it is
//! the negative inner product so that "smaller is closer" holds for every
//! distance and the loss formulas are unchanged. Its margins are on the scale
//! of inner products, not of lengths.
//!
//! Numerics, the edge cases a training run meets:
//! - `d(x, x)` is exactly `0.0` in the forward pass, and a Euclidean distance
//!   of zero has a zero subgradient (as PyTorch's `cdist` backward), never NaN
//!   ([`MetricDevice::try_safe_sqrt`]).
//! - The matrix form expands `‖a‖² + ‖b‖² − 2⟨a, b⟩` (one GEMM, no
//!   `N x N x D` intermediate), clamps it at 0 and sets its diagonal to exactly 0.
//! - A zero vector has no direction: [`l2_normalize`] divides by
//!   `max(‖x‖, 1e-8)`, so a zero row stays zero and its cosine distance to
//!   anything is 1.

use crate::device::MetricDevice;
use dfdx::prelude::*;

/// The `max(‖x‖, NORM_EPS)` floor of [`l2_normalize`] and the cosine distance.
pub const NORM_EPS: f32 = 1e-8;

type Rows<B, const D: usize, Dev, T> = Tensor<(B, Const<D>), f32, Dev, T>;
type Col<B, Dev, T> = Tensor<(B,), f32, Dev, T>;
type Square<N, Dev, T> = Tensor<(N, N), f32, Dev, T>;

/// Two handles on one tensor, with distinct ids, for a binary op that needs
/// the same tensor on both sides (`X Xᵀ`).
///
/// dfdx's backward rejects a binary op whose two sides have one id, and views
/// (`permute`, `broadcast`) keep the id. The first handle keeps the tape; the
/// second goes through a real identity op, so gradients reaching either handle
/// flow back to `t`. Where a tensor is merely used twice by different ops,
/// `split_tape` + `retaped` is enough and costs nothing.
pub fn fork<S: Shape, Dev: Device<f32>, T: Tape<f32, Dev>>(
    t: Tensor<S, f32, Dev, T>,
) -> Result<(Tensor<S, f32, Dev, T>, Tensor<S, f32, Dev, T>), Dev::Err> {
    let (t, tape) = t.split_tape();
    let second = t.retaped::<T>().try_mul(1.0)?;
    Ok((t.put_tape(tape), second))
}

/// `‖a_i − b_i‖₂²` for each row `i`.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::squared_euclidean;
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0], [1.0, 1.0]]);
/// let b = dev.tensor([[3.0f32, 4.0], [1.0, 1.0]]);
/// assert_eq!(squared_euclidean(a, b).unwrap().array(), [25.0, 0.0]);
/// ```
pub fn squared_euclidean<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, T>,
) -> Result<Col<B, Dev, T>, Dev::Err> {
    Dev::try_euclidean_rows(a, b, true)
}

/// `‖a_i − b_i‖₂` for each row `i`, with a zero subgradient at distance 0.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::euclidean;
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0], [1.0, 1.0]]);
/// let b = dev.tensor([[3.0f32, 4.0], [1.0, 1.0]]);
/// assert_eq!(euclidean(a, b).unwrap().array(), [5.0, 0.0]);
/// ```
pub fn euclidean<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, T>,
) -> Result<Col<B, Dev, T>, Dev::Err> {
    Dev::try_euclidean_rows(a, b, false)
}

/// `‖a_i − b_i‖₁` for each row `i` (subgradient 0 where `a_ij = b_ij`).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::manhattan;
/// let dev = Cpu::default();
/// let a = dev.tensor([[0.0f32, 0.0]]);
/// let b = dev.tensor([[3.0f32, -4.0]]);
/// assert_eq!(manhattan(a, b).unwrap().array(), [7.0]);
/// ```
pub fn manhattan<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, T>,
) -> Result<Col<B, Dev, T>, Dev::Err> {
    a.try_sub(b)?.try_abs()?.try_sum::<(B,), Axis<1>>()
}

/// `−⟨a_i, b_i⟩` for each row `i`: the inverted inner-product similarity.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::dot;
/// let dev = Cpu::default();
/// let a = dev.tensor([[1.0f32, 2.0]]);
/// let b = dev.tensor([[3.0f32, 4.0]]);
/// assert_eq!(dot(a, b).unwrap().array(), [-11.0]);
/// ```
pub fn dot<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, T>,
) -> Result<Col<B, Dev, T>, Dev::Err> {
    a.try_mul(b)?.try_sum::<(B,), Axis<1>>()?.try_negate()
}

/// `1 − ⟨a_i, b_i⟩ / (‖a_i‖ ‖b_i‖)` for each row `i`; a zero row counts as
/// orthogonal to everything (distance 1).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::cosine;
/// let dev = Cpu::default();
/// let a = dev.tensor([[1.0f32, 0.0], [1.0, 0.0], [0.0, 0.0]]);
/// let b = dev.tensor([[2.0f32, 0.0], [0.0, 3.0], [1.0, 1.0]]);
/// assert_eq!(cosine(a, b).unwrap().array(), [0.0, 1.0, 1.0]);
/// ```
pub fn cosine<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    a: Rows<B, D, Dev, T>,
    b: Rows<B, D, Dev, T>,
) -> Result<Col<B, Dev, T>, Dev::Err> {
    let a = l2_normalize(a)?;
    let b = l2_normalize(b)?;
    dot(a, b)?.try_add(1.0)
}

/// Each row divided by its Euclidean norm (floored at [`NORM_EPS`]).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::l2_normalize;
/// let dev = Cpu::default();
/// let x = dev.tensor([[3.0f32, 4.0], [0.0, 0.0]]);
/// assert_eq!(l2_normalize(x).unwrap().array(), [[0.6, 0.8], [0.0, 0.0]]);
/// ```
pub fn l2_normalize<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<B, D, Dev, T>,
) -> Result<Rows<B, D, Dev, T>, Dev::Err> {
    Dev::try_l2_normalize(x)
}

/// The generic [`l2_normalize`]: `square`, `sum`, `safe_sqrt`, `clamp` and a
/// broadcast `div` on the tape (what [`Cpu`] fuses into one op).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::{generic_l2_normalize, l2_normalize};
/// let dev = Cpu::default();
/// let x = dev.tensor([[3.0f32, 4.0], [0.0, 0.0]]);
/// let generic = generic_l2_normalize(x.clone()).unwrap().array();
/// assert_eq!(generic, l2_normalize(x).unwrap().array());
/// assert_eq!(generic, [[0.6, 0.8], [0.0, 0.0]]);
/// ```
pub fn generic_l2_normalize<B: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<B, D, Dev, T>,
) -> Result<Rows<B, D, Dev, T>, Dev::Err> {
    let shape = *x.shape();
    let (x, tape) = x.split_tape();
    let norm = x.retaped::<T>().try_square()?.try_sum::<(B,), Axis<1>>()?;
    let norm = Dev::try_safe_sqrt(norm)?.try_clamp(NORM_EPS, f32::INFINITY)?;
    x.put_tape(tape)
        .try_div(norm.try_broadcast_like::<_, Axis<1>>(&shape)?)
}

/// The Gram matrix `X Xᵀ` of a batch, on the tape.
pub fn gram<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    let (x, xt) = fork(x)?;
    x.try_matmul(xt.try_permute::<(Const<D>, N), Axes2<1, 0>>()?)
}

/// A constant `N x N` matrix with zeros on the diagonal and ones elsewhere.
fn off_diagonal<N: Dim, Dev: MetricDevice>(
    dev: &Dev,
    n: N,
) -> Result<Square<N, Dev, NoneTape>, Dev::Err> {
    let len = n.size();
    let mut mask = vec![1.0f32; len * len];
    for i in 0..len {
        mask[i * len + i] = 0.0;
    }
    dev.try_tensor_from_vec(mask, (n, n))
}

/// The `N x N` matrix of squared Euclidean distances of one batch:
/// `‖x_i‖² + ‖x_j‖² − 2⟨x_i, x_j⟩`, clamped at 0, diagonal exactly 0.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::squared_euclidean_matrix;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0], [3.0, 4.0]]);
/// assert_eq!(squared_euclidean_matrix(x).unwrap().array(), [[0.0, 25.0], [25.0, 0.0]]);
/// ```
pub fn squared_euclidean_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    Dev::try_euclidean_matrix(x, true)
}

/// The generic [`squared_euclidean_matrix`]: a Gram matrix, broadcast norms,
/// a clamp and a diagonal mask on the tape (what [`Cpu`] fuses into one op).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::generic_squared_euclidean_matrix;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0], [3.0, 4.0]]);
/// let d2 = generic_squared_euclidean_matrix(x).unwrap();
/// assert_eq!(d2.array(), [[0.0, 25.0], [25.0, 0.0]]);
/// ```
pub fn generic_squared_euclidean_matrix<
    N: Dim,
    const D: usize,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    let n = x.shape().0;
    let dev = x.device().clone();
    let (x, tape) = x.split_tape();
    let (sq, sq_tape) = x
        .retaped::<T>()
        .try_square()?
        .try_sum::<(N,), Axis<1>>()?
        .split_tape();
    let sq_rows = sq.clone().put_tape(sq_tape);
    let sq_cols = sq.retaped::<T>();
    gram(x.put_tape(tape))?
        .try_mul(-2.0)?
        .try_add(sq_rows.try_broadcast_like::<_, Axis<1>>(&(n, n))?)?
        .try_add(sq_cols.try_broadcast_like::<_, Axis<0>>(&(n, n))?)?
        .try_clamp(0.0, f32::INFINITY)?
        .try_mul(off_diagonal(&dev, n)?)
}

/// The `N x N` matrix of Euclidean distances of one batch (zero subgradient
/// wherever a distance is 0, the diagonal included).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::euclidean_matrix;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0], [3.0, 4.0]]);
/// assert_eq!(euclidean_matrix(x).unwrap().array(), [[0.0, 5.0], [5.0, 0.0]]);
/// ```
pub fn euclidean_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    Dev::try_euclidean_matrix(x, false)
}

/// The `N x N` matrix of cosine distances of one batch, diagonal exactly 0
/// for nonzero rows.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::cosine_matrix;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [0.0, 2.0]]);
/// assert_eq!(cosine_matrix(x).unwrap().array(), [[0.0, 1.0], [1.0, 0.0]]);
/// ```
pub fn cosine_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    // On the diagonal 1 − ⟨x̂, x̂⟩ is rounding noise around 0: clamp it away.
    let n = x.shape().0;
    let dev = x.device().clone();
    gram(l2_normalize(x)?)?
        .try_negate()?
        .try_add(1.0)?
        .try_clamp(0.0, 2.0)?
        .try_mul(off_diagonal(&dev, n)?)
}

/// The `N x N` matrix of inverted inner products `−⟨x_i, x_j⟩` of one batch.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::dot_matrix;
/// let dev = Cpu::default();
/// let x = dev.tensor([[1.0f32, 0.0], [2.0, 1.0]]);
/// assert_eq!(dot_matrix(x).unwrap().array(), [[-1.0, -2.0], [-2.0, -5.0]]);
/// ```
pub fn dot_matrix<N: Dim, const D: usize, Dev: MetricDevice, T: Tape<f32, Dev>>(
    x: Rows<N, D, Dev, T>,
) -> Result<Square<N, Dev, T>, Dev::Err> {
    gram(x)?.try_negate()
}

/// The `N x N` matrix of any row-wise distance, one row of the matrix at a
/// time (`N` tape ops of `N x D` each; no `N x N x D` intermediate). Used for
/// distances without a GEMM form: `manhattan` and user functions.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::{manhattan, matrix_by_rows};
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0], [1.0, -2.0]]);
/// let m = matrix_by_rows(x, |a, b| manhattan(a, b)).unwrap();
/// assert_eq!(m.array(), [[0.0, 3.0], [3.0, 0.0]]);
/// ```
pub fn matrix_by_rows<N, const D: usize, Dev, T, F>(
    x: Rows<N, D, Dev, T>,
    mut distance: F,
) -> Result<Square<N, Dev, T>, Dev::Err>
where
    N: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
    F: FnMut(
        Rows<usize, D, Dev, T>,
        Rows<usize, D, Dev, T>,
    ) -> Result<Col<usize, Dev, T>, Dev::Err>,
{
    let n = x.shape().0;
    let len = n.size();
    let dev = x.device().clone();
    let (x, tape) = x.try_reshape_like(&(len, Const::<D>))?.split_tape();
    let mut tape = Some(tape);
    let mut rows = Vec::with_capacity(len);
    for i in 0..len {
        let idx = dev.try_tensor_from_vec(vec![i; len], (len,))?;
        let xi = x
            .clone()
            .put_tape(tape.take().unwrap_or_default())
            .try_gather(idx)?;
        rows.push(distance(xi, x.retaped::<T>())?);
    }
    if rows.is_empty() {
        let empty = dev
            .try_zeros_like(&(n, n))?
            .put_tape(tape.take().unwrap_or_default());
        return Ok(empty);
    }
    rows.try_stack()?.try_reshape_like(&(n, n))
}

/// The `B × M` matrix of squared Euclidean distances between a batch (on
/// the tape) and constant rows `y` (no gradient: a
/// [`CrossBatchMemory`](crate::xbm::CrossBatchMemory)), `‖x_i‖² + ‖y_j‖² −
/// 2⟨x_i, y_j⟩` clamped at 0, the inner products on
/// [`MetricDevice::try_cross_gram`] (the project's GEMM on the CPU).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::squared_euclidean_against;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0]]);
/// let y = dev.tensor([[3.0f32, 4.0], [0.0, 1.0]]);
/// assert_eq!(squared_euclidean_against(x, &y).unwrap().array(), [[25.0, 1.0]]);
/// ```
pub fn squared_euclidean_against<B: Dim, M: Dim, const D: usize, Dev: MetricDevice, T>(
    x: Rows<B, D, Dev, T>,
    y: &Tensor<(M, Const<D>), f32, Dev>,
) -> Result<Tensor<(B, M), f32, Dev, T>, Dev::Err>
where
    T: Tape<f32, Dev>,
{
    let shape = (x.shape().0, y.shape().0);
    let (x, tape) = x.split_tape();
    let sq_x = x.retaped::<T>().try_square()?.try_sum::<(B,), Axis<1>>()?;
    let sq_y = y.clone().try_square()?.try_sum::<(M,), Axis<1>>()?;
    Dev::try_cross_gram(x.put_tape(tape), y)?
        .try_mul(-2.0)?
        .try_add(sq_x.try_broadcast_like::<_, Axis<1>>(&shape)?)?
        .try_add(sq_y.try_broadcast_like::<_, Axis<0>>(&shape)?)?
        .try_clamp(0.0, f32::INFINITY)
}

/// The `B × M` matrix of Euclidean distances (or their squares) between a
/// batch and constant rows: [`squared_euclidean_against`], then a square
/// root with a zero subgradient at 0 (a batch row against its own copy).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::euclidean_against;
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0]]);
/// let y = dev.tensor([[3.0f32, 4.0], [0.0, 0.0]]);
/// let d = euclidean_against(x.leaky_trace(), &y, false).unwrap();
/// assert_eq!(d.array(), [[5.0, 0.0]]);
/// assert!(d.sum().backward().get(&x).as_vec().iter().all(|g| g.is_finite()));
/// ```
pub fn euclidean_against<B: Dim, M: Dim, const D: usize, Dev: MetricDevice, T>(
    x: Rows<B, D, Dev, T>,
    y: &Tensor<(M, Const<D>), f32, Dev>,
    squared: bool,
) -> Result<Tensor<(B, M), f32, Dev, T>, Dev::Err>
where
    T: Tape<f32, Dev>,
{
    let d2 = squared_euclidean_against(x, y)?;
    if squared {
        Ok(d2)
    } else {
        Dev::try_safe_sqrt(d2)
    }
}

/// The `B × M` matrix of cosine distances `1 − cos θ` between a batch and
/// constant rows, in `[0, 2]`.
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::cosine_against;
/// let dev = Cpu::default();
/// let x = dev.tensor([[2.0f32, 0.0]]);
/// let y = dev.tensor([[1.0f32, 0.0], [0.0, 3.0]]);
/// assert_eq!(cosine_against(x, &y).unwrap().array(), [[0.0, 1.0]]);
/// ```
pub fn cosine_against<B: Dim, M: Dim, const D: usize, Dev: MetricDevice, T>(
    x: Rows<B, D, Dev, T>,
    y: &Tensor<(M, Const<D>), f32, Dev>,
) -> Result<Tensor<(B, M), f32, Dev, T>, Dev::Err>
where
    T: Tape<f32, Dev>,
{
    let y = l2_normalize(y.clone())?;
    Dev::try_cross_gram(l2_normalize(x)?, &y)?
        .try_negate()?
        .try_add(1.0)?
        .try_clamp(0.0, 2.0)
}

/// The `B × M` matrix of any row-wise distance between a batch and
/// constant rows, one batch row at a time (`B` tape ops of `M × D` each):
/// for distances without a GEMM form (`manhattan`, user functions).
///
/// ```
/// use dfdx::prelude::*;
/// use metric_loss_core::distance::{manhattan, matrix_against_by_rows};
/// let dev = Cpu::default();
/// let x = dev.tensor([[0.0f32, 0.0], [1.0, 1.0]]);
/// let y = dev.tensor([[1.0f32, -2.0]]);
/// let m = matrix_against_by_rows(x, &y, |a, b| manhattan(a, b)).unwrap();
/// assert_eq!(m.array(), [[3.0], [3.0]]);
/// ```
pub fn matrix_against_by_rows<B, M, const D: usize, Dev, T, F>(
    x: Rows<B, D, Dev, T>,
    y: &Tensor<(M, Const<D>), f32, Dev>,
    mut distance: F,
) -> Result<Tensor<(B, M), f32, Dev, T>, Dev::Err>
where
    B: Dim,
    M: Dim,
    Dev: MetricDevice,
    T: Tape<f32, Dev>,
    F: FnMut(
        Rows<usize, D, Dev, T>,
        Rows<usize, D, Dev, T>,
    ) -> Result<Col<usize, Dev, T>, Dev::Err>,
{
    let shape = (x.shape().0, y.shape().0);
    let (b, m) = (shape.0.size(), shape.1.size());
    let dev = x.device().clone();
    let (x, tape) = x.try_reshape_like(&(b, Const::<D>))?.split_tape();
    if b == 0 || m == 0 {
        return Ok(dev.try_zeros_like(&shape)?.put_tape(tape));
    }
    let y = y.clone().try_reshape_like(&(m, Const::<D>))?;
    let mut tape = Some(tape);
    let mut rows = Vec::with_capacity(b);
    for i in 0..b {
        let idx = dev.try_tensor_from_vec(vec![i; m], (m,))?;
        let xi = x
            .clone()
            .put_tape(tape.take().unwrap_or_default())
            .try_gather(idx)?;
        rows.push(distance(xi, y.retaped::<T>())?);
    }
    rows.try_stack()?.try_reshape_like(&shape)
}
