//! Host buffers reused from one call to the next.
//!
//! The fused kernels copy tensors to the host and keep some of those copies
//! until the backward pass. Allocated fresh, a buffer of a few hundred KiB
//! comes from `mmap` and costs a page fault per 4 KiB on first touch — on
//! the machine these kernels were measured on, more than the arithmetic
//! (a third of the explicit-triplet time at N = 1024). [`Scratch`] takes its
//! buffer from a small per-thread free list instead, and gives it back when
//! dropped (on whichever thread drops it).

use dfdx::prelude::*;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread.
const KEEP: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A `Vec<f32>` borrowed from this thread's free list, returned on drop.
///
/// The vector is kept at its full length (every value initialised once,
/// when it was first allocated) and the scratch shows its first `len`
/// values: taking a buffer of any size up to that never writes it again.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    /// `len` values of unspecified content (the caller overwrites them), and
    /// room for `capacity` in all.
    pub(crate) fn with_len(len: usize, capacity: usize) -> Self {
        let size = capacity.max(len);
        let buf = FREE
            .try_with(|free| {
                let mut free = free.borrow_mut();
                // the smallest buffer that is large enough
                let best = (0..free.len())
                    .filter(|&i| free[i].len() >= size)
                    .min_by_key(|&i| free[i].len());
                best.map(|i| free.swap_remove(i))
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0.0; size]);
        Scratch { buf, len }
    }

    /// A copy of `values`.
    pub(crate) fn copy_of_slice(values: &[f32]) -> Self {
        let mut s = Self::with_len(values.len(), 0);
        s.copy_from_slice(values);
        s
    }

    /// The elements of a contiguous CPU tensor.
    pub(crate) fn copy_of<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Self {
        let mut s = Self::with_len(t.shape().num_elements(), 0);
        t.copy_into(&mut s);
        s
    }
}

impl From<Vec<f32>> for Scratch {
    /// Adopts a buffer (given to the free list when dropped).
    fn from(buf: Vec<f32>) -> Self {
        let len = buf.len();
        Scratch { buf, len }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.buf);
        if v.is_empty() {
            return;
        }
        // During thread teardown the list may be gone: then just free.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.len() < KEEP {
                    free.push(v);
                } else if let Some(small) = free.iter_mut().min_by_key(|b| b.len()) {
                    // keep the larger of the two
                    if small.len() < v.len() {
                        *small = v;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let a = Scratch::with_len(1000, 0);
        let ptr = a.as_ptr();
        drop(a);
        let b = Scratch::with_len(500, 0);
        assert_eq!(b.as_ptr(), ptr, "the returned buffer is reused");
        assert_eq!(b.len(), 500);
        let c = Scratch::with_len(10, 5000);
        assert_ne!(c.as_ptr(), ptr, "too small a buffer is not handed out");
        drop((b, c));
        // shrunk and grown again, a buffer is not written (no zero-fill)
        let mut d = Scratch::with_len(1000, 0);
        d.fill(7.0);
        drop(d);
        drop(Scratch::with_len(300, 0));
        let e = Scratch::with_len(1000, 0);
        assert!(e.iter().all(|&v| v == 7.0));
        let dev = Cpu::default();
        let t = dev.tensor([[1.0f32, 2.0], [3.0, 4.0]]);
        assert_eq!(&*Scratch::copy_of(&t), &[1.0, 2.0, 3.0, 4.0]);
    }
}
