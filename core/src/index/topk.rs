//! The `k` smallest of a stream of keys, without sorting the stream.
//!
//! A max-heap of the best `k` seen so far, and its worst key as a threshold:
//! a block of 16 keys is reduced to its minimum (a loop the compiler turns
//! into SIMD minimums) and skipped whole when that minimum is above the
//! threshold, which is what almost every block does once the heap is full —
//! after `j` keys in random order the next one enters with chance `k/j`, so
//! a row of `n` keys costs about `n/16` block tests and `k·ln(n/k)` heap
//! replacements. Only the `k` survivors are sorted, at the end.
//!
//! Order: by key (a NaN key, which the index's checked inputs never give,
//! after every number), then by id, then by position: a total order, so
//! the result does not depend on the scan order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Keys per block test.
const LANES: usize = 16;

/// One candidate neighbour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    /// The ranking key (smaller is nearer).
    pub key: f32,
    /// The caller's id of the row.
    pub id: u64,
    /// The row's position in the index.
    pub pos: usize,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        // NaN after every number whatever its sign bit (x86's default NaN
        // has it set, which `total_cmp` alone would put first).
        (self.key.is_nan().cmp(&other.key.is_nan()))
            .then(self.key.total_cmp(&other.key))
            .then(self.id.cmp(&other.id))
            .then(self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Hit {}

/// The `k` smallest hits offered so far.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
    /// The largest key in the heap once it is full, `+∞` before.
    worst: f32,
}

impl TopK {
    /// An empty selection of `k` (which may be 0: then nothing is kept).
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k),
            worst: f32::INFINITY,
        }
    }

    /// Offers one candidate.
    #[inline]
    pub(crate) fn offer(&mut self, key: f32, id: u64, pos: usize) {
        if self.heap.len() < self.k {
            self.heap.push(Hit { key, id, pos });
            if self.heap.len() == self.k {
                self.worst = self.heap.peek().map_or(f32::INFINITY, |h| h.key);
            }
            return;
        }
        // Not `<`: an equal key may still win on its id, and a NaN `worst`
        // (which sorts last) must let every number in.
        if !(key > self.worst) {
            let hit = Hit { key, id, pos };
            if let Some(mut top) = self.heap.peek_mut() {
                if hit < *top {
                    *top = hit;
                }
            }
            self.worst = self.heap.peek().map_or(f32::INFINITY, |h| h.key);
        }
    }

    /// Offers the keys of consecutive rows `first_pos..` whose ids are
    /// `ids` (one per key).
    #[inline]
    pub(crate) fn offer_row(&mut self, keys: &[f32], ids: &[u64], first_pos: usize) {
        debug_assert_eq!(keys.len(), ids.len());
        let mut blocks = keys.chunks_exact(LANES);
        let mut at = 0;
        for block in &mut blocks {
            // Skip the block when none of its keys can enter. While the heap
            // is not full, `worst` is +∞ and every block is looked at.
            let block: &[f32; LANES] = block.try_into().expect("a block of LANES");
            if !(block_min(block) > self.worst) || self.heap.len() < self.k {
                for (j, &key) in block.iter().enumerate() {
                    self.offer(key, ids[at + j], first_pos + at + j);
                }
            }
            at += LANES;
        }
        for (j, &key) in blocks.remainder().iter().enumerate() {
            self.offer(key, ids[at + j], first_pos + at + j);
        }
    }

    /// The kept hits, nearest first; the selection is left empty.
    pub(crate) fn drain_sorted(&mut self, out: &mut Vec<Hit>) {
        out.clear();
        out.extend(self.heap.drain());
        out.sort_unstable();
    }
}

/// The smallest of 16 keys, as 8-wide SIMD minimums. A NaN may or may not
/// survive; the caller tests `!(min > worst)`, so a NaN only makes it look
/// at the block key by key.
#[inline(always)]
fn block_min(block: &[f32; LANES]) -> f32 {
    let mut m = [0.0f32; 8];
    for (l, m) in m.iter_mut().enumerate() {
        let (a, b) = (block[l], block[l + 8]);
        *m = if a < b { a } else { b };
    }
    let mut w = 8;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            m[l] = if m[l] < m[l + w] { m[l] } else { m[l + w] };
        }
    }
    m[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(keys: &[f32], ids: &[u64], k: usize) -> Vec<(f32, u64, usize)> {
        let mut all: Vec<Hit> = keys
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(pos, (&key, &id))| Hit { key, id, pos })
            .collect();
        all.sort();
        all.truncate(k);
        all.into_iter().map(|h| (h.key, h.id, h.pos)).collect()
    }

    fn run(keys: &[f32], ids: &[u64], k: usize, split: usize) -> Vec<(f32, u64, usize)> {
        let mut t = TopK::new(k);
        // two rows, as a tiled scan offers them
        t.offer_row(&keys[..split], &ids[..split], 0);
        t.offer_row(&keys[split..], &ids[split..], split);
        let mut out = Vec::new();
        t.drain_sorted(&mut out);
        out.into_iter().map(|h| (h.key, h.id, h.pos)).collect()
    }

    #[test]
    fn equals_a_full_sort_on_every_k() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        for n in [1usize, 15, 16, 17, 100, 333] {
            // few distinct keys: many ties, broken by id (shuffled) then position
            let keys: Vec<f32> = (0..n).map(|_| (next() % 7) as f32 - 3.0).collect();
            let ids: Vec<u64> = (0..n).map(|_| next() % (n as u64 / 2 + 1)).collect();
            for k in [1, 2, 10, n / 2, n] {
                if k == 0 {
                    continue;
                }
                for split in [0, n / 3, n] {
                    assert_eq!(
                        run(&keys, &ids, k, split),
                        naive(&keys, &ids, k),
                        "n={n} k={k}"
                    );
                }
            }
        }
    }

    #[test]
    fn block_min_is_the_minimum() {
        let mut b = [5.0f32; LANES];
        for i in 0..LANES {
            b[i] = -1.0;
            assert_eq!(block_min(&b), -1.0);
            b[i] = 5.0;
        }
    }

    #[test]
    fn k_zero_keeps_nothing_and_nan_sorts_last() {
        let mut t = TopK::new(0);
        t.offer_row(&[1.0, 2.0], &[0, 1], 0);
        let mut out = Vec::new();
        t.drain_sorted(&mut out);
        assert!(out.is_empty());
        let mut t = TopK::new(2);
        t.offer_row(&[f32::NAN, 3.0, f32::NAN, 1.0], &[0, 1, 2, 3], 0);
        t.drain_sorted(&mut out);
        let got: Vec<u64> = out.iter().map(|h| h.id).collect();
        assert_eq!(got, vec![3, 1]);
    }
}
