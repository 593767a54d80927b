//! Direct loops (in f64) for convolution and pooling, values and the
//! gradients of `L = Σ r·y`, and helpers shared by the image tests.

use rand::Rng;
use rand::rngs::StdRng;

/// `(batch, channels, height, width)`.
pub type Dims = (usize, usize, usize, usize);

/// Output size of a window, PyTorch's formula.
pub fn out_size(side: usize, k: usize, s: usize, p: usize) -> usize {
    (side + 2 * p - k) / s + 1
}

/// A convolution problem and its naive answers.
pub struct Conv {
    pub dims: Dims,
    pub out_channels: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl Conv {
    pub fn out_dims(&self) -> Dims {
        let (b, _, h, w) = self.dims;
        (
            b,
            self.out_channels,
            out_size(h, self.k, self.s, self.p),
            out_size(w, self.k, self.s, self.p),
        )
    }

    /// Calls `f(b, o, oy, ox, c, ky, kx, x_index)` for every product of the
    /// convolution that reads a pixel inside the image.
    fn each(&self, mut f: impl FnMut([usize; 7], usize)) {
        let (b, c, h, w) = self.dims;
        let (_, o, oh, ow) = self.out_dims();
        for bi in 0..b {
            for oi in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ci in 0..c {
                            for ky in 0..self.k {
                                for kx in 0..self.k {
                                    let iy = (oy * self.s + ky) as isize - self.p as isize;
                                    let ix = (ox * self.s + kx) as isize - self.p as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xi = ((bi * c + ci) * h + iy as usize) * w + ix as usize;
                                    f([bi, oi, oy, ox, ci, ky, kx], xi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn y_index(&self, [b, o, oy, ox, ..]: [usize; 7]) -> usize {
        let (_, oc, oh, ow) = self.out_dims();
        ((b * oc + o) * oh + oy) * ow + ox
    }

    fn w_index(&self, [_, o, _, _, c, ky, kx]: [usize; 7]) -> usize {
        let ci = self.dims.1;
        ((o * ci + c) * self.k + ky) * self.k + kx
    }

    /// `y = conv(x, w) + bias`.
    pub fn forward(&self, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
        let (b, o, oh, ow) = self.out_dims();
        let mut y = vec![0.0f64; b * o * oh * ow];
        for (i, v) in y.iter_mut().enumerate() {
            *v = bias[(i / (oh * ow)) % o] as f64;
        }
        self.each(|at, xi| {
            y[self.y_index(at)] += x[xi] as f64 * w[self.w_index(at)] as f64;
        });
        y.into_iter().map(|v| v as f32).collect()
    }

    /// `(∂L/∂x, ∂L/∂w, ∂L/∂bias)` of `L = Σ r·y`.
    pub fn grads(&self, x: &[f32], w: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut gx = vec![0.0f64; x.len()];
        let mut gw = vec![0.0f64; w.len()];
        let (_, o, oh, ow) = self.out_dims();
        let mut gb = vec![0.0f64; o];
        for (i, &v) in r.iter().enumerate() {
            gb[(i / (oh * ow)) % o] += v as f64;
        }
        self.each(|at, xi| {
            let g = r[self.y_index(at)] as f64;
            gx[xi] += g * w[self.w_index(at)] as f64;
            gw[self.w_index(at)] += g * x[xi] as f64;
        });
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (f(gx), f(gw), f(gb))
    }
}

/// Max (first maximum wins) or mean of each window, and `∂L/∂x` of
/// `L = Σ r·y`.
pub fn pool(
    x: &[f32],
    dims: Dims,
    k: usize,
    s: usize,
    max: bool,
    r: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (b, c, h, w) = dims;
    let (oh, ow) = (out_size(h, k, s, 0), out_size(w, k, s, 0));
    let mut y = Vec::with_capacity(b * c * oh * ow);
    let mut gx = vec![0.0f32; x.len()];
    for plane in 0..b * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let at = |ky: usize, kx: usize| (plane * h + oy * s + ky) * w + ox * s + kx;
                let g = r[y.len()];
                if max {
                    let mut best = at(0, 0);
                    for ky in 0..k {
                        for kx in 0..k {
                            if x[at(ky, kx)] > x[best] {
                                best = at(ky, kx);
                            }
                        }
                    }
                    y.push(x[best]);
                    gx[best] += g;
                } else {
                    let mut sum = 0.0f64;
                    for ky in 0..k {
                        for kx in 0..k {
                            sum += x[at(ky, kx)] as f64;
                            gx[at(ky, kx)] += g / (k * k) as f32;
                        }
                    }
                    y.push((sum / (k * k) as f64) as f32);
                }
            }
        }
    }
    (y, gx)
}

/// `n` standard-normal-ish values.
pub fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * 1.7).collect()
}

/// Asserts `got ≈ want` element-wise, relative to the larger magnitude.
#[track_caller]
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs().max(g.abs())),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}
