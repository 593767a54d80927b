//! [`Window`]: where a square kernel lands on an image, shared by
//! [`Conv2D`](super::Conv2D), [`MaxPool2D`](super::MaxPool2D) and
//! [`AvgPool2D`](super::AvgPool2D).

use crate::error::MetricLossError;

/// The geometry of a `kernel × kernel` window sliding over an image of
/// `height × width` pixels with a step of `stride` and `padding` zeros
/// around every side: PyTorch's `conv2d` / `max_pool2d` arithmetic,
/// `out = ⌊(in + 2·padding − kernel) / stride⌋ + 1` (no dilation, no
/// ceil mode).
///
/// A `Window` is valid by construction ([`try_new`](Self::try_new) rejects
/// an image smaller than the kernel), which is what the device methods
/// ([`MetricDevice::try_conv2d`](crate::device::MetricDevice::try_conv2d)
/// and the pools) rely on. The layers build it from their input's shape;
/// build one yourself to check an image size before running a network:
///
/// ```
/// use metric_loss_core::nets::Window;
/// // the reference CNN: 28 → conv 3 → 26 → pool 2 → 13 → conv 3 → 11 → pool 2 → 5
/// let conv = Window::try_new("Conv2D", 3, 1, 0, 28, 28).unwrap();
/// assert_eq!(conv.output_size(), (26, 26));
/// let pool = Window::try_new("MaxPool2D", 2, 2, 0, 11, 11).unwrap();
/// assert_eq!(pool.output_size(), (5, 5));
/// // padding of half the kernel keeps the size
/// assert_eq!(Window::try_new("Conv2D", 5, 1, 2, 9, 7).unwrap().output_size(), (9, 7));
/// assert!(Window::try_new("Conv2D", 3, 1, 0, 2, 8).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    kernel: usize,
    stride: usize,
    padding: usize,
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
}

impl Window {
    /// The window of `layer` (named in the error) on a `height × width` image.
    ///
    /// Errors: [`MetricLossError::ImageTooSmall`] when `height` or `width`
    /// plus twice the padding is less than `kernel`;
    /// [`MetricLossError::InvalidConfig`] for a zero kernel or stride (the
    /// layers reject those at compile time).
    pub fn try_new(
        layer: &'static str,
        kernel: usize,
        stride: usize,
        padding: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, MetricLossError> {
        if kernel == 0 || stride == 0 {
            return Err(MetricLossError::InvalidConfig(format!(
                "{layer}: kernel ({kernel}) and stride ({stride}) must be at least 1"
            )));
        }
        let fits = |side: usize| side.checked_add(2 * padding).is_some_and(|s| s >= kernel);
        if !fits(height) || !fits(width) {
            return Err(MetricLossError::ImageTooSmall {
                layer,
                kernel,
                padding,
                height,
                width,
            });
        }
        let out = |side: usize| (side + 2 * padding - kernel) / stride + 1;
        Ok(Window {
            kernel,
            stride,
            padding,
            height,
            width,
            out_height: out(height),
            out_width: out(width),
        })
    }

    /// The kernel's side.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// The step between two windows.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zeros added on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// `(height, width)` of the input.
    pub fn input_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// `(height, width)` of the output.
    pub fn output_size(&self) -> (usize, usize) {
        (self.out_height, self.out_width)
    }

    /// Output pixels per channel.
    pub(crate) fn out_len(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Input pixels per channel.
    pub(crate) fn in_len(&self) -> usize {
        self.height * self.width
    }

    /// The input pixel `(row, column)` under kernel offset `(ky, kx)` of
    /// output pixel `(oy, ox)`, or `None` where it falls in the padding.
    #[inline]
    pub(crate) fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let y = (oy * self.stride + ky).checked_sub(self.padding)?;
        let x = (ox * self.stride + kx).checked_sub(self.padding)?;
        (y < self.height && x < self.width).then_some(y * self.width + x)
    }

    /// im2col as gather indices into a contiguous `(batch, channels, H, W)`
    /// tensor: one row per output pixel `(b, oy, ox)`, one column per
    /// `(c, ky, kx)` (the order of a PyTorch weight's `(in, kh, kw)`), and
    /// where the window falls in the padding, index 0 with a 0 in the mask
    /// (`None` when there is no padding).
    pub(crate) fn im2col_index(
        &self,
        batch: usize,
        channels: usize,
    ) -> (Vec<usize>, Option<Vec<f32>>) {
        let k = self.kernel;
        let len = batch * self.out_len() * channels * k * k;
        let mut idx = Vec::with_capacity(len);
        let mut mask = (self.padding > 0).then(|| Vec::with_capacity(len));
        for b in 0..batch {
            for oy in 0..self.out_height {
                for ox in 0..self.out_width {
                    for c in 0..channels {
                        let plane = (b * channels + c) * self.in_len();
                        for ky in 0..k {
                            for kx in 0..k {
                                let src = self.source(oy, ox, ky, kx);
                                idx.push(src.map_or(0, |s| plane + s));
                                if let Some(m) = mask.as_mut() {
                                    m.push(if src.is_some() { 1.0 } else { 0.0 });
                                }
                            }
                        }
                    }
                }
            }
        }
        (idx, mask)
    }

    /// Pooling windows as gather indices into `planes` contiguous images
    /// (no padding): `kernel²` indices per output pixel, planes first.
    pub(crate) fn pool_index(&self, planes: usize) -> Vec<usize> {
        let k = self.kernel;
        let mut idx = Vec::with_capacity(planes * self.out_len() * k * k);
        for p in 0..planes {
            for oy in 0..self.out_height {
                for ox in 0..self.out_width {
                    for ky in 0..k {
                        for kx in 0..k {
                            let s = self.source(oy, ox, ky, kx).expect("pools have no padding");
                            idx.push(p * self.in_len() + s);
                        }
                    }
                }
            }
        }
        idx
    }

    /// Max pooling of one image plane: for each output pixel the offset in
    /// `plane` of the window's maximum, written to `arg`, and its value to
    /// `out`. PyTorch's rule: the **first** maximum in row-major order wins
    /// a tie, and a NaN wins over any number (the last NaN of the window),
    /// so NaN propagates.
    pub(crate) fn max_of_plane(&self, plane: &[f32], out: &mut [f32], arg: &mut [u32]) {
        let plane = &plane[..self.height * self.width];
        let (out, arg) = (&mut out[..self.out_len()], &mut arg[..self.out_len()]);
        if self.out_len() == 0 {
            return;
        }
        // Windows side by side (the default stride) read each input row as
        // chunks of `kernel` pixels, a loop the compiler vectorises; the
        // common kernels get their own copy of it.
        match (self.kernel, self.stride) {
            (2, 2) => self.max_side_by_side(2, plane, out, arg),
            (3, 3) => self.max_side_by_side(3, plane, out, arg),
            (k, s) if k == s => self.max_side_by_side(k, plane, out, arg),
            _ => self.max_overlapping(plane, out, arg),
        }
    }

    /// Keeps `v` (at `at`) in `(o, a)` when it wins: larger, or NaN.
    #[inline(always)]
    fn keep_max(o: &mut f32, a: &mut u32, v: f32, at: usize) {
        // all ones where the tap wins, as bits: no branch on the data
        let m = (((v > *o) | v.is_nan()) as u32).wrapping_neg();
        *o = f32::from_bits((o.to_bits() & !m) | (v.to_bits() & m));
        *a = (*a & !m) | (at as u32 & m);
    }

    /// `stride == kernel`: output row `oy` reads input rows `oy·k ..`, each
    /// as `ow` chunks of `k` pixels, taps in row-major order.
    #[inline(always)]
    fn max_side_by_side(&self, k: usize, plane: &[f32], out: &mut [f32], arg: &mut [u32]) {
        let (w, ow) = (self.width, self.out_width);
        for (oy, (out, arg)) in out
            .chunks_exact_mut(ow)
            .zip(arg.chunks_exact_mut(ow))
            .enumerate()
        {
            for ky in 0..k {
                let start = (oy * k + ky) * w;
                let row = &plane[start..start + ow * k];
                let cells = out.iter_mut().zip(arg.iter_mut()).zip(row.chunks_exact(k));
                for (ox, ((o, a), taps)) in cells.enumerate() {
                    let at = start + ox * k;
                    if ky == 0 {
                        (*o, *a) = (taps[0], at as u32);
                    }
                    for (kx, &v) in taps.iter().enumerate().skip((ky == 0) as usize) {
                        Self::keep_max(o, a, v, at + kx);
                    }
                }
            }
        }
    }

    /// Any stride: one output row at a time, each tap for the whole row.
    fn max_overlapping(&self, plane: &[f32], out: &mut [f32], arg: &mut [u32]) {
        let (k, s, w, ow) = (self.kernel, self.stride, self.width, self.out_width);
        for (oy, (out, arg)) in out
            .chunks_exact_mut(ow)
            .zip(arg.chunks_exact_mut(ow))
            .enumerate()
        {
            for ky in 0..k {
                for kx in 0..k {
                    let first = (oy * s + ky) * w + kx;
                    let taps = plane[first..].iter().step_by(s);
                    let cells = out.iter_mut().zip(arg.iter_mut()).zip(taps);
                    for (ox, ((o, a), &v)) in cells.enumerate() {
                        if ky + kx == 0 {
                            (*o, *a) = (v, (first + ox * s) as u32);
                        } else {
                            Self::keep_max(o, a, v, first + ox * s);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_pytorch() {
        // torch.nn.Conv2d(1, 1, k, stride=s, padding=p)(torch.zeros(1, 1, h, w)).shape
        for (k, s, p, h, w, oh, ow) in [
            (3, 1, 0, 28, 28, 26, 26),
            (2, 2, 0, 13, 13, 6, 6),
            (3, 2, 1, 7, 8, 4, 4),
            (1, 3, 0, 5, 4, 2, 2),
            (5, 1, 2, 5, 6, 5, 6),
            (4, 1, 2, 1, 1, 2, 2),
        ] {
            let win = Window::try_new("Conv2D", k, s, p, h, w).unwrap();
            assert_eq!(win.output_size(), (oh, ow), "{k} {s} {p} {h} {w}");
        }
    }

    #[test]
    fn too_small_is_a_typed_error() {
        let err = Window::try_new("MaxPool2D", 3, 3, 0, 2, 9).unwrap_err();
        assert_eq!(
            err,
            MetricLossError::ImageTooSmall {
                layer: "MaxPool2D",
                kernel: 3,
                padding: 0,
                height: 2,
                width: 9
            }
        );
        assert_eq!(
            err.to_string(),
            "image too small: MaxPool2D has a 3x3 kernel with padding 0, so it needs images of at least 3x3, but got 2x9"
        );
        assert!(Window::try_new("Conv2D", 5, 1, 1, 3, 3).is_ok());
        assert!(Window::try_new("Conv2D", 5, 1, 1, 3, 2).is_err());
        assert!(matches!(
            Window::try_new("Conv2D", 0, 1, 0, 3, 3),
            Err(MetricLossError::InvalidConfig(_))
        ));
    }

    #[test]
    fn first_maximum_wins_and_nan_propagates() {
        let win = Window::try_new("MaxPool2D", 2, 2, 0, 2, 4).unwrap();
        let plane = [1.0, 3.0, f32::NAN, 0.0, 3.0, 3.0, 5.0, f32::NAN];
        let (mut out, mut arg) = ([0.0; 2], [0u32; 2]);
        win.max_of_plane(&plane, &mut out, &mut arg);
        assert_eq!(out[0], 3.0);
        assert_eq!(arg[0], 1);
        assert!(out[1].is_nan());
        assert_eq!(arg[1], 7, "the last NaN, as PyTorch's CPU kernel");
    }
}
