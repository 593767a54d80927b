//! The `k` smallest of a stream of keys, without sorting the stream.
//!
//! A buffer of candidates and a threshold ([`TopK::worst`]): the caller
//! tests a block of keys against the threshold at once (SIMD compares) and
//! skips the block when none can enter, which is what almost every block
//! does once `k` keys are known — after `j` keys in random order the next
//! one is among the best `k` with chance `k/j`. Keys that pass are
//! appended; when the buffer holds `2k` (at least `k + 32`), a linear-time
//! selection (`select_nth_unstable`) keeps the best `k` and their worst
//! becomes the threshold. The threshold lags a heap's by at most a doubling
//! of the scan, and a row of `n` keys costs about `n/16` block tests,
//! `2k·ln(n/k)` appends and `log₂(n/k)` compactions of `2k` — where a
//! max-heap paid `log₂ k` mispredicted compares for each of its
//! `k·ln(n/k)` replacements (a quarter of a retrieval pass at `k = 80`).
//! Only the `k` survivors are sorted, at the end.
//!
//! Order: by key (a NaN key, which the index's checked inputs never give,
//! after every number; `−0` equal to `+0`), then by the row's *tie rank* —
//! its place in the order of (id, position), which the index keeps — so by
//! id, then by position: a total order, so the result does not depend on
//! the scan order. A candidate is one `u64`, the key's bits made
//! order-preserving above the tie rank, so that every comparison is one
//! integer compare.

use std::cmp::Ordering;

/// One neighbour found.
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
        ordered(self.key)
            .cmp(&ordered(other.key))
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

/// The bits of `key` as an unsigned integer in the order of the numbers:
/// `−0` as `+0`, every NaN last.
#[inline(always)]
fn ordered(key: f32) -> u32 {
    if key.is_nan() {
        return u32::MAX;
    }
    let bits = (key + 0.0).to_bits(); // −0 + 0 = +0
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// The inverse of [`ordered`] (a NaN comes back as a NaN).
#[inline(always)]
fn from_ordered(o: u32) -> f32 {
    f32::from_bits(if o >> 31 == 1 { o & !(1 << 31) } else { !o })
}

/// One heap entry: the key's order above the tie rank.
#[inline(always)]
fn pack(key: f32, rank: u32) -> u64 {
    (ordered(key) as u64) << 32 | rank as u64
}

/// Whether a `key` may be among the best, given the threshold `worst`:
/// `key <= worst`, or either is NaN — written `!(key > worst)` on purpose,
/// so that a NaN is looked at (and ordered last) rather than dropped.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(crate) fn may_enter(key: f32, worst: f32) -> bool {
    !(key > worst)
}

/// The `k` smallest (key, tie rank) offered so far.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    /// Candidates: at most [`capacity`](Self::capacity), the best `k` among
    /// them the best offered so far.
    buf: Vec<u64>,
    /// The `k`-th smallest key at the last compaction, `+∞` before: every
    /// key above it is certainly out.
    worst: f32,
}

impl TopK {
    /// An empty selection of `k` (which may be 0: then nothing is kept).
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::new(),
            worst: f32::INFINITY,
        }
    }

    /// Candidates held before a compaction: `k` more than kept (at least
    /// 32), so that a compaction, linear in `k`, is paid for by as many
    /// candidates, and the threshold tightens each time the scan has gone
    /// about twice as far.
    fn capacity(&self) -> usize {
        self.k + self.k.max(32)
    }

    /// Offers the row of tie rank `rank` at `key`.
    #[inline]
    pub(crate) fn offer(&mut self, key: f32, rank: u32) {
        // Not `<`: an equal key may still win on its rank.
        if self.k > 0 && may_enter(key, self.worst) {
            self.buf.push(pack(key, rank));
            if self.buf.len() >= self.capacity() {
                self.compact();
            }
        }
    }

    /// Keeps the best `k` candidates (a linear-time selection, no sort)
    /// and makes the worst of them the threshold.
    fn compact(&mut self) {
        if self.buf.len() >= self.k && self.k > 0 {
            let (_, kth, _) = self.buf.select_nth_unstable(self.k - 1);
            self.worst = from_ordered((*kth >> 32) as u32);
            self.buf.truncate(self.k);
        }
    }

    /// The key a candidate must not exceed to be looked at: `+∞` until
    /// `k` are known, then the `k`-th smallest key at the last compaction
    /// (a NaN if that is a NaN, which the callers' `!(key > worst)` lets
    /// everything past).
    #[inline]
    pub(crate) fn worst(&self) -> f32 {
        self.worst
    }

    /// Whether nothing is to be kept (`k = 0`).
    pub(crate) fn wants_none(&self) -> bool {
        self.k == 0
    }

    /// The kept rows, nearest first, as hits: `order[rank]` is the position
    /// of the row of tie rank `rank`, `ids[pos]` its id. The selection is
    /// left empty.
    pub(crate) fn drain_sorted(&mut self, order: &[u32], ids: &[u64], out: &mut Vec<Hit>) {
        self.compact();
        self.buf.sort_unstable();
        out.clear();
        out.extend(self.buf.drain(..).map(|e| {
            let pos = order[(e & u32::MAX as u64) as usize] as usize;
            Hit {
                key: from_ordered((e >> 32) as u32),
                id: ids[pos],
                pos,
            }
        }));
        self.worst = f32::INFINITY;
    }
}

/// Tie ranks of rows with ids `ids`: `(rank_of_position, position_of_rank)`,
/// ranks in the order of (id, position). Ids that increase with the
/// position (the index's own numbering) need no sort.
pub(crate) fn tie_ranks(ids: &[u64]) -> (Vec<u32>, Vec<u32>) {
    let n = u32::try_from(ids.len()).expect("the index checks its size");
    let mut order: Vec<u32> = (0..n).collect();
    if !ids.windows(2).all(|w| w[0] < w[1]) {
        order.sort_unstable_by_key(|&p| (ids[p as usize], p));
    }
    let mut ranks = vec![0u32; order.len()];
    for (r, &p) in order.iter().enumerate() {
        ranks[p as usize] = r as u32;
    }
    (ranks, order)
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
        let (ranks, order) = tie_ranks(ids);
        let mut t = TopK::new(k);
        // two parts, as a tiled scan offers them
        for (pos, &key) in keys.iter().enumerate().take(split) {
            t.offer(key, ranks[pos]);
        }
        for (pos, &key) in keys.iter().enumerate().skip(split) {
            t.offer(key, ranks[pos]);
        }
        let mut out = Vec::new();
        t.drain_sorted(&order, ids, &mut out);
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
            // few distinct keys (and −0 beside +0): many ties, broken by id
            // (shuffled, repeated) then position
            let keys: Vec<f32> = (0..n)
                .map(|_| match next() % 8 {
                    7 => -0.0,
                    v => v as f32 - 3.0,
                })
                .collect();
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
    fn k_zero_keeps_nothing_and_nan_sorts_last() {
        let ids = [0, 1, 2, 3];
        let (ranks, order) = tie_ranks(&ids);
        let mut t = TopK::new(0);
        assert!(t.wants_none());
        t.offer(1.0, 0);
        let mut out = Vec::new();
        t.drain_sorted(&order, &ids, &mut out);
        assert!(out.is_empty());
        let mut t = TopK::new(2);
        let x86_nan = f32::from_bits(0xffc0_0000); // sign bit set
        for (pos, key) in [f32::NAN, 3.0, x86_nan, 1.0].into_iter().enumerate() {
            t.offer(key, ranks[pos]);
        }
        t.drain_sorted(&order, &ids, &mut out);
        let got: Vec<u64> = out.iter().map(|h| h.id).collect();
        assert_eq!(got, vec![3, 1]);
    }

    #[test]
    fn ordered_bits_follow_the_numbers() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            0.0,
            1e-40, // subnormal
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered(w[0]) < ordered(w[1]), "{w:?}");
        }
        assert_eq!(ordered(-0.0), ordered(0.0));
        assert_eq!(ordered(f32::NAN), u32::MAX);
        assert_eq!(ordered(-f32::NAN), u32::MAX);
        for x in xs {
            assert_eq!(from_ordered(ordered(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn tie_ranks_follow_id_then_position() {
        let (ranks, order) = tie_ranks(&[5, 3, 5, 1]);
        assert_eq!(order, vec![3, 1, 0, 2]);
        assert_eq!(ranks, vec![2, 1, 3, 0]);
        let (ranks, order) = tie_ranks(&[1, 4, 9]);
        assert_eq!((ranks, order), (vec![0, 1, 2], vec![0, 1, 2]));
    }
}
