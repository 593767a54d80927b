//! [`Unflatten`]: rows of pixels to a batch of images, the first layer of a
//! convolutional encoder fed by the row-based API.

use dfdx::prelude::*;

/// Turns each row of `C·H·W` values of a batch `(B, Const<N>)` into a
/// `C × H × W` image, giving `(B, Const<C>, Const<H>, Const<W>)`:
/// PyTorch's `nn.Unflatten(1, (C, H, W))`.
///
/// # Why
///
/// The shared-weight networks and the embedding helpers
/// ([`Siamese::forward_pair`](super::Siamese::forward_pair),
/// [`TripletNet::embed_rows`](super::TripletNet::embed_rows), ...) and the
/// IDX reader deal in rows. Put `Unflatten` first and a convolutional
/// encoder takes rows too: `(Unflatten<1, 28, 28>, Conv2D<1, 32, 3>, ...)`
/// runs on MNIST's 784-pixel rows wherever an MLP does.
///
/// A row width `N` other than `C·H·W` does not compile (the check is made
/// when the layer is instantiated for `N`, as an error of `cargo build`).
/// The output is a view of the input (no copy) when the input is
/// contiguous. It has no parameters: it is its own builder.
///
/// ```
/// use metric_loss_core::prelude::*;
///
/// let dev = Cpu::default();
/// let rows: Tensor<(usize, Const<12>), f32, _> = dev.zeros_like(&(5, Const));
/// let images = Unflatten::<3, 2, 2>.forward(rows);
/// assert_eq!(images.shape(), &(5, Const::<3>, Const::<2>, Const::<2>));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Unflatten<const C: usize, const H: usize, const W: usize>;

impl<const C: usize, const H: usize, const W: usize> ZeroSizedModule for Unflatten<C, H, W> {}
impl<const C: usize, const H: usize, const W: usize> NonMutableModule for Unflatten<C, H, W> {}

/// Rejects a row width other than `C·H·W` at compile time.
struct Fits<const N: usize, const C: usize, const H: usize, const W: usize>;

impl<const N: usize, const C: usize, const H: usize, const W: usize> Fits<N, C, H, W> {
    const OK: () = assert!(
        N == C * H * W,
        "Unflatten<C, H, W> needs rows of C·H·W values"
    );
}

impl<
    B: Dim,
    const N: usize,
    const C: usize,
    const H: usize,
    const W: usize,
    D: Device<f32>,
    T: Tape<f32, D>,
> Module<Tensor<(B, Const<N>), f32, D, T>> for Unflatten<C, H, W>
{
    type Output = Tensor<(B, Const<C>, Const<H>, Const<W>), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<N>), f32, D, T>) -> Result<Self::Output, D::Err> {
        #[allow(clippy::let_unit_value)]
        let () = Fits::<N, C, H, W>::OK;
        let batch = x.shape().0;
        x.try_reshape_like(&(batch, Const, Const, Const))
    }
}
