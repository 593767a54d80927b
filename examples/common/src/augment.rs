//! Data augmentation of the training digits (`--augment PX`): each digit of
//! a training batch shifted by a random whole number of pixels.
//!
//! Why: a CNN of ~220k weights trained ten epochs on 8,000 digits fits the
//! training digits long before it stops improving on held-out ones; a small
//! random translation of every training image (the standard remedy on
//! MNIST) shows it a slightly different digit each time it sees one, at no
//! cost to the step (a copy of 784 floats per image). Only training batches
//! are augmented: the embeddings evaluated are always of the untouched
//! digits.
//!
//! Deterministic: the shifts come from their own generator seeded with
//! `--seed`, so a run is reproducible, and `--augment 0` (no shift) draws
//! nothing and gives the un-augmented run bit for bit.

use super::*;

/// Side of the square MNIST digits.
const SIDE: usize = 28;

/// Random translations of up to `max_shift` pixels along each axis
/// (uniform over `[-max_shift, max_shift]²`, zero fill at the borders).
pub struct Translate {
    max_shift: usize,
    rng: StdRng,
}

impl Translate {
    /// Shifts of up to `max_shift` pixels (0: none), drawn from a generator
    /// seeded with `seed` (independent of the sampler's and the weights').
    pub fn new(max_shift: usize, seed: u64) -> Self {
        Translate {
            max_shift: max_shift.min(SIDE - 1),
            rng: StdRng::seed_from_u64(seed ^ 0x7a2a_6e5a_d1f7_0b11),
        }
    }

    /// The largest shift along an axis.
    pub fn max_shift(&self) -> usize {
        self.max_shift
    }

    /// The next shift `(dx, dy)` (right and down positive).
    pub fn draw(&mut self) -> (isize, isize) {
        let m = self.max_shift as isize;
        (self.rng.gen_range(-m..=m), self.rng.gen_range(-m..=m))
    }

    /// The pixels of the listed images, each shifted by its own random
    /// `(dx, dy)`, as a `(n, 784)` tensor; with `max_shift` 0 exactly
    /// [`batch_tensor`].
    pub fn batch(
        &mut self,
        dev: &Cpu,
        mnist: &Mnist,
        idx: &[usize],
    ) -> Tensor<(usize, Const<PIXELS>), f32, Cpu> {
        if self.max_shift == 0 {
            return batch_tensor(dev, mnist, idx);
        }
        let mut pixels = vec![0.0; idx.len() * PIXELS];
        for (&i, dst) in idx.iter().zip(pixels.chunks_exact_mut(PIXELS)) {
            let (dx, dy) = self.draw();
            translate(mnist.image(i).expect("index in range"), dx, dy, dst);
        }
        dev.tensor_from_vec(pixels, (idx.len(), Const::<PIXELS>))
    }
}

/// Writes the 28 × 28 image `src` moved `dx` pixels right and `dy` down into
/// `dst` (row-major, both 784 long): `dst[y][x] = src[y − dy][x − dx]`,
/// 0 where that pixel lies outside the image.
pub fn translate(src: &[f32], dx: isize, dy: isize, dst: &mut [f32]) {
    assert_eq!(src.len(), SIDE * SIDE, "a 28 × 28 source image");
    assert_eq!(dst.len(), SIDE * SIDE, "a 28 × 28 destination image");
    dst.fill(0.0);
    let n = SIDE as isize;
    if dx.abs() >= n || dy.abs() >= n {
        return;
    }
    // the destination columns whose source column is inside the image
    let (x0, x1) = (dx.max(0) as usize, (n + dx.min(0)) as usize);
    for y in 0..n {
        let sy = y - dy;
        if !(0..n).contains(&sy) {
            continue;
        }
        let (row, src_row) = (y as usize * SIDE, sy as usize * SIDE);
        let sx0 = (x0 as isize - dx) as usize;
        dst[row + x0..row + x1].copy_from_slice(&src[src_row + sx0..src_row + sx0 + (x1 - x0)]);
    }
}
