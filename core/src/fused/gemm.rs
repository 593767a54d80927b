//! The project's one GEMM: `C = α·op(A)·op(B) + β·C` on row-major `f32`
//! buffers, with `op` the identity or the transpose on either side, so that
//! `A·B`, `A·Bᵀ` and `Aᵀ·B` are one call each.
//!
//! Built as BLIS builds one (Van Zee and van de Geijn, 2015): `k` is cut
//! into blocks of at most [`KC`] steps, `op(B)`'s block packed into panels
//! of [`NR`] columns (at most `NC` columns at a time), `op(A)`'s into slivers
//! of [`MR`] rows (at most `MC` rows at a time), and every `MR × NR` tile of
//! `C` is one call of the micro-kernel ([`kernel`]: AVX2 + FMA picked at run
//! time, a portable twin elsewhere) on a sliver and a panel that sit in L1.
//! [`pack`] is the one copy loop for every storage order, so the four
//! transpose pairs cost the same. Packing buffers are [`Scratch`].
//!
//! Large products are cut in as many parts as rayon has threads, along
//! whichever of `m`, `n` or `k` makes the parts copy the least twice (each
//! part packs the whole of the operand it shares; a cut along `k` sums the
//! parts' results instead), and each part runs the serial loops above. The
//! calling thread runs parts too, and any part no pool thread has claimed
//! yet: a busy machine's late-scheduled helper never stalls a product.
//!
//! A caller that multiplies the same operands many times (the index:
//! every block of queries against every reference tile) packs them once
//! ([`PackedA`], [`PackedB`]) and runs each product from the packs on its
//! own thread ([`gemm_packed`]).
//!
//! A `C` narrower than a panel (a convolution's weight gradient, `O × 9`)
//! is computed as `Cᵀ = op(B)ᵀ·op(A)ᵀ` when that takes fewer tiles.
//!
//! The Gram tiles of the fused mining passes ([`super::gram`]) are the same
//! micro-kernel on the same packing.

mod kernel;
mod pack;

pub(crate) use kernel::{Kernel, MR, NR, Sliver, Store};
pub(crate) use pack::pack;

#[cfg(test)]
pub(crate) use kernel::tests::portable;

use super::Scratch;
use super::parallel::in_parallel;

/// Steps of `k` per packed block: a sliver of `A` (`MR·KC`, 7.5 KiB) and a
/// panel of `B` (`KC·NR`, 20 KiB) share the 32 KiB L1 of the cores this was
/// tuned on (AMD Zen 3). 320 rather than 256 keeps a convolution's 288
/// (32 channels × 3 × 3) in one block: each tile of `C` stored once, not
/// stored and read back (3–6 % on its products, measured). Only where the
/// caller's `α ≠ 1` or `β ∉ {0, 1}` do the blocks change bits (each later
/// block adds `α·Σ` to `C` instead of continuing one sum), so `k` up to
/// 256 (the ranking family's `N = 256`, `1024 = 4 × 256`) cut as before.
pub(crate) const KC: usize = 320;
/// Rows of `op(A)` per packed block (`MC·KC`, 144 KiB, stays in L2).
const MC: usize = 144;
/// Columns of `op(B)` per packed block (`KC·NC`, 5 MiB, in L3).
const NC: usize = 4080;

/// Up to this many columns of `C` (eight panels of `B`), a plain `op(A)`
/// is read where it is stored (each step broadcasts from `MR` rows,
/// [`Sliver::rows`]) instead of packed by a transposing copy. Measured on
/// `benches/gemm.rs`, one thread, the copy saved paid on narrow products
/// (the conv2 forward over a batch `9680 × 64 × 288` +12 %, conv1's
/// `54080 × 32 × 9` +29 %, the family's backward `N × 128 × N` +4–7 %, the
/// 1600 → 128 linear layer +3 %); from 256 columns on it did not (each block
/// of `A` is read once per panel, and a packed, contiguous one streams
/// better: within ±3 % on most, a 10 % loss on `9680 × 288 × 64`).
const IN_PLACE_MAX_N: usize = 128;

/// From this many multiply-adds (`m·n·k`) on, a product is cut in parts
/// for rayon's threads. Below it, handing a part to a second thread costs
/// more than it saves. Measured on the 2-core machine while other builds
/// ran, serial vs cut in 2, 400 calls of each alternating from a thread
/// outside the pool, first quartile (the products of `benches/gemm.rs`'s
/// group `gemm_cut`): 393 K multiply-adds 9.6 vs 10.8 µs, 655 K 16.2 vs
/// 13.5 µs, 1.3 M 31.3 vs 27.2 µs, 2.6 M 64.4 vs 47.2 µs.
const PARALLEL_MIN_MADDS: usize = 1 << 19;

/// One operand of [`gemm`]: `data` holds a row-major matrix with row stride
/// `ld`; with `trans` the operand is its transpose.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    /// The stored matrix, row-major.
    pub data: &'a [f32],
    /// Its row stride (at least its number of stored columns).
    pub ld: usize,
    /// Whether the operand is the transpose of the stored matrix.
    pub trans: bool,
}

impl<'a> Operand<'a> {
    /// The stored matrix itself.
    pub fn plain(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: false,
        }
    }

    /// The transpose of the stored matrix.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: true,
        }
    }

    /// The transpose of this operand (the same storage).
    pub(crate) fn t(self) -> Self {
        Operand {
            trans: !self.trans,
            ..self
        }
    }

    /// The logical rows from `r0` on (`r0` below the row count).
    fn skip_rows(self, r0: usize) -> Self {
        let at = if self.trans { r0 } else { r0 * self.ld };
        Operand {
            data: &self.data[at..],
            ..self
        }
    }

    /// The logical columns from `c0` on (`c0` below the column count).
    fn skip_cols(self, c0: usize) -> Self {
        self.t().skip_rows(c0).t()
    }

    /// Whether the operand, `rows × cols` logically, fits in `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let (stored_rows, stored_cols) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        self.ld >= stored_cols && (stored_rows - 1) * self.ld + stored_cols <= self.data.len()
    }
}

/// `C = α·op(A)·op(B) + β·C`, with `op(A)` `m × k`, `op(B)` `k × n` and `C`
/// `m × n` row-major with row stride `ldc`. With `β = 0`, `C` is only
/// written (its old values, even NaN, are ignored), as in BLAS; so is it
/// with `k = 0` or `α = 0`, where `C = β·C` and the operands are not read.
/// Runs on rayon's threads when the product is large enough to pay.
///
/// Panics if an operand does not fit its buffer (a caller's bug, never a
/// user's input).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let forced = CUT_IN.get();
    let how = How {
        threads: forced.unwrap_or_else(rayon::current_num_threads),
        cut_small: forced.is_some(),
        ..How::default()
    };
    gemm_with(how, m, n, k, alpha, a, b, beta, c, ldc);
}

thread_local! {
    /// Set by [`cut_in`] on its thread.
    static CUT_IN: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every product [`gemm`] starts on this thread cut in
/// `parts` parts whatever its size (serial for 1), as [`gemm`] would cut it
/// on that many threads: for the benches that measure where cutting starts
/// to pay ([`PARALLEL_MIN_MADDS`]). `cut_in(1, f)` keeps every product of
/// `f` on the calling thread, for a caller that already shares its work
/// among rayon's threads (cutting again costs a helper task and a second
/// packing of the shared operand, never a wait).
#[doc(hidden)]
pub fn cut_in<R>(parts: usize, f: impl FnOnce() -> R) -> R {
    let before = CUT_IN.replace(Some(parts));
    let r = f();
    CUT_IN.set(before);
    r
}

/// How [`gemm_with`] runs a product: on how many threads, and (for the
/// tests) a forced split and orientation.
#[derive(Debug, Clone, Copy)]
struct How {
    kernel: Kernel,
    threads: usize,
    /// Cut for the threads whatever the size (see [`cut_in`]).
    cut_small: bool,
    /// The split, instead of [`plan`]'s.
    split: Option<Split>,
    /// Whether `Cᵀ` is computed, instead of [`transposes`]'s choice.
    transpose: Option<bool>,
    /// Steps of `k` per block at most ([`KC`]; the tests vary it).
    kc: usize,
    /// Whether a plain `op(A)` is read in place, instead of the choice of
    /// [`IN_PLACE_MAX_N`].
    in_place: Option<bool>,
}

impl Default for How {
    fn default() -> Self {
        How {
            kernel: Kernel::detect(),
            threads: 1,
            cut_small: false,
            split: None,
            transpose: None,
            kc: KC,
            in_place: None,
        }
    }
}

/// Whether `C = op(A)·op(B)` is better computed as `Cᵀ = op(B)ᵀ·op(A)ᵀ`:
/// when a quarter fewer `MR × NR` tiles cover it that way (a `C` of fewer
/// than [`NR`] columns, such as a convolution's weight gradient `O × 9`),
/// and `k` is long enough to pay for storing every tile through the
/// strided edge path.
fn transposes(m: usize, n: usize, k: usize) -> bool {
    let tiles = m.div_ceil(MR) * n.div_ceil(NR);
    let flipped = n.div_ceil(MR) * m.div_ceil(NR);
    k >= 32 && 4 * flipped <= 3 * tiles
}

/// How a product is shared among threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// One thread runs it all.
    Serial,
    /// Parts of the rows of `C`, each packing the whole of `op(B)`.
    Rows(usize),
    /// Parts of the columns of `C`, each packing the whole of `op(A)`.
    Cols(usize),
    /// Parts of `k`, each summed into its own `m × n` result.
    Depth(usize),
}

/// The split for a product on `threads` threads: serial below
/// [`PARALLEL_MIN_MADDS`], else the cut whose parts copy the least twice —
/// `k·n` for rows, `m·k` for columns, `m·n` written and read again for `k` —
/// among those with at least one tile (or one block of `k`) per part.
fn plan(m: usize, n: usize, k: usize, threads: usize) -> Split {
    if m.saturating_mul(n).saturating_mul(k) < PARALLEL_MIN_MADDS {
        return Split::Serial;
    }
    cut(m, n, k, threads)
}

/// The cut [`plan`] makes of a large product (serial for 1 thread).
fn cut(m: usize, n: usize, k: usize, threads: usize) -> Split {
    if threads < 2 {
        return Split::Serial;
    }
    let parts = threads;
    let options = [
        (m.div_ceil(MR) >= parts, k * n, Split::Rows(parts)),
        (n.div_ceil(NR) >= parts, m * k, Split::Cols(parts)),
        (k >= parts * 64, 2 * m * n, Split::Depth(parts)),
    ];
    options
        .into_iter()
        .filter(|o| o.0)
        .min_by_key(|o| o.1)
        .map_or(Split::Serial, |o| o.2)
}

/// [`gemm`] with the kernel and the split given.
#[allow(clippy::too_many_arguments)]
fn gemm_with(
    how: How,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(a.fits(m, k), "gemm: A does not hold {m} x {k}");
    assert!(b.fits(k, n), "gemm: B does not hold {k} x {n}");
    assert!(
        m == 0 || n == 0 || (ldc >= n && (m - 1) * ldc + n <= c.len()),
        "gemm: C does not hold {m} x {n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    // C (i, j) at c[i·rs + j·cs]; computed as Cᵀ, the roles swap
    let (m, n, a, b, rs, cs) = if how.transpose.unwrap_or_else(|| transposes(m, n, k)) {
        (n, m, b.t(), a.t(), 1, ldc)
    } else {
        (m, n, a, b, ldc, 1)
    };
    let split = how.split.unwrap_or_else(|| {
        if how.cut_small {
            cut(m, n, k, how.threads)
        } else {
            plan(m, n, k, how.threads)
        }
    });
    let c = SharedC(c.as_mut_ptr());
    let to = Strides { rs, cs };
    // SAFETY (every call below): the operands fit (asserted), and `c`
    // reaches (m − 1)·rs + (n − 1)·cs + 1 values of the exclusively borrowed
    // `c` (the asserted extent, in either orientation); the parts write
    // disjoint rows, disjoint columns, or (`Depth`) only part 0 writes `c`.
    match split {
        Split::Serial => unsafe { serial(how, m, n, k, alpha, a, b, beta, c.0, to) },
        Split::Rows(parts) => {
            let rows = m.div_ceil(MR).div_ceil(parts) * MR;
            in_parallel(m.div_ceil(rows), |p| {
                let r0 = p * rows;
                let mp = rows.min(m - r0);
                let cp = c.at(r0 * rs);
                unsafe { serial(how, mp, n, k, alpha, a.skip_rows(r0), b, beta, cp, to) }
            });
        }
        Split::Cols(parts) => {
            let cols = n.div_ceil(NR).div_ceil(parts) * NR;
            in_parallel(n.div_ceil(cols), |p| {
                let c0 = p * cols;
                let np = cols.min(n - c0);
                let cp = c.at(c0 * cs);
                unsafe { serial(how, m, np, k, alpha, a, b.skip_cols(c0), beta, cp, to) }
            });
        }
        Split::Depth(parts) => {
            let depth = k.div_ceil(parts);
            let parts = k.div_ceil(depth);
            // parts past the first sum into buffers of their own
            let mut partial: Vec<Scratch> =
                (1..parts).map(|_| Scratch::with_len(m * n, 0)).collect();
            let buffers: Vec<SharedC> = partial
                .iter_mut()
                .map(|s| SharedC(s.as_mut_ptr()))
                .collect();
            in_parallel(parts, |p| {
                let k0 = p * depth;
                let kp = depth.min(k - k0);
                let (a, b) = (a.skip_cols(k0), b.skip_rows(k0));
                if p == 0 {
                    unsafe { serial(how, m, n, kp, alpha, a, b, beta, c.at(0), to) }
                } else {
                    let buf = buffers[p - 1].at(0);
                    let own = Strides { rs: n, cs: 1 };
                    unsafe { serial(how, m, n, kp, alpha, a, b, 0.0, buf, own) }
                }
            });
            for part in &partial {
                for (i, src) in part.chunks_exact(n).enumerate() {
                    for (j, &v) in src.iter().enumerate() {
                        // SAFETY: (i, j) is inside C; no part is running.
                        unsafe { *c.at(i * rs + j * cs) += v };
                    }
                }
            }
        }
    }
}

/// From this many packed values on, [`Packed`] packs on rayon's threads.
const PARALLEL_MIN_PACK: usize = 1 << 18;

/// An operand packed once for many products: the panels (`W = NR`, for
/// `op(B)`) or slivers (`W = MR`, for `op(A)`) the micro-kernel reads, for
/// the whole of `k`, block by block of at most [`KC`] steps.
///
/// For a caller that multiplies the same operand many times — an index
/// searched by block after block of queries meets every reference tile
/// once per block — packing it once saves a copy (a transposing gather)
/// per product, and [`gemm_packed`] runs on the calling thread alone, for a
/// caller that already shares its work among rayon's threads.
pub(crate) struct Packed<const W: usize> {
    kernel: Kernel,
    /// Logical columns of `op(B)` (`W = NR`) or rows of `op(A)` (`W = MR`).
    len: usize,
    k: usize,
    /// Steps per block of `k` (the last may be shorter).
    kcb: usize,
    /// Block `i` of `k` (steps `i·kcb..`) at `i·kcb·len_r`, `len_r` being
    /// `len` rounded up to whole panels; panel `q` of a block of `kc` steps
    /// `q·kc·W` further.
    data: Scratch,
}

/// `op(B)` packed for [`gemm_packed`].
pub(crate) type PackedB = Packed<NR>;
/// `op(A)` packed for [`gemm_packed`].
pub(crate) type PackedA = Packed<MR>;

impl<const W: usize> Packed<W> {
    /// `len` rounded up to whole panels.
    fn len_r(&self) -> usize {
        self.len.div_ceil(W) * W
    }

    /// Packs the `k × len` logical matrix `op` (rows are steps of `k`).
    fn of(kernel: Kernel, op: Operand<'_>, k: usize, len: usize) -> Self {
        assert!(
            op.fits(k, len),
            "gemm: packed operand does not hold {k} x {len}"
        );
        let kcb = block_len(k, KC, 1).max(1);
        let len_r = len.div_ceil(W) * W;
        let mut data = Scratch::with_len(len_r * k, 0);
        // a large operand (an index's references) is packed on rayon's
        // threads too, each part a run of whole panels
        let panels = len.div_ceil(W);
        let parts = if len_r * k >= PARALLEL_MIN_PACK {
            rayon::current_num_threads().min(panels)
        } else {
            1
        };
        let per = panels.div_ceil(parts.max(1));
        let dst = SharedC(data.as_mut_ptr());
        in_parallel(panels.div_ceil(per.max(1)), |p| {
            let (c0, c1) = (p * per * W, ((p + 1) * per * W).min(len));
            for pc in (0..k).step_by(kcb) {
                let kc = kcb.min(k - pc);
                let at = pc * len_r + c0 * kc;
                let size = (c1 - c0).div_ceil(W) * W * kc;
                // SAFETY: part p writes panels p·per.. of each block of k,
                // `size` values from `at`, inside the `len_r·k` of `data`
                // and disjoint from every other part's.
                let dst = unsafe { std::slice::from_raw_parts_mut(dst.at(at), size) };
                pack::<W>(kernel, op, pc, kc, c0, c1 - c0, dst);
            }
        });
        Packed {
            kernel,
            len,
            k,
            kcb,
            data,
        }
    }

    /// The packed values of block `pc` of `k` (`kc` steps), from panel
    /// `first / W` on (`first` a multiple of `W`).
    fn block(&self, pc: usize, kc: usize, first: usize) -> &[f32] {
        debug_assert!(first.is_multiple_of(W));
        &self.data[pc * self.len_r() + first * kc..]
    }
}

impl PackedB {
    /// `op(B)`, `k × n`, packed.
    pub(crate) fn new(b: Operand<'_>, k: usize, n: usize) -> Self {
        Packed::of(Kernel::detect(), b, k, n)
    }

    /// A `k × n` matrix packed from its rows, never stored whole: `row(r,
    /// dst)` writes row `r` (`n` values) into `dst`, which is then copied
    /// into the panels. The same packed values as [`PackedB::new`] of the
    /// stored matrix (so the same products, bit for bit), without writing
    /// the matrix out and reading it back (a convolution's columns, built
    /// row by row from its image).
    pub(crate) fn from_rows(k: usize, n: usize, mut row: impl FnMut(usize, &mut [f32])) -> Self {
        let kcb = block_len(k, KC, 1).max(1);
        let len_r = n.div_ceil(NR) * NR;
        let mut data = Scratch::with_len(len_r * k, 0);
        // one row, zeros past `n` (an edge panel's, as `pack` writes)
        let mut buf = Scratch::with_len(len_r, 0);
        buf[n..].fill(0.0);
        for r in 0..k {
            row(r, &mut buf[..n]);
            let pc = r / kcb * kcb;
            let kc = kcb.min(k - pc);
            let block = &mut data[pc * len_r..][..len_r * kc];
            for (panel, v) in block.chunks_exact_mut(NR * kc).zip(buf.chunks_exact(NR)) {
                let v: &[f32; NR] = v.try_into().expect("NR values");
                panel[(r - pc) * NR..][..NR].copy_from_slice(v);
            }
        }
        Packed {
            kernel: Kernel::detect(),
            len: n,
            k,
            kcb,
            data,
        }
    }
}

impl PackedA {
    /// `op(A)`, `m × k`, packed.
    pub(crate) fn new(a: Operand<'_>, m: usize, k: usize) -> Self {
        Packed::of(Kernel::detect(), a.t(), k, m)
    }
}

/// `C = α·op(A)[rows]·op(B)[.., cols] + β·C` from packed operands, on the
/// calling thread: `C` is `rows.len() × cols.len()` with row stride `ldc`.
/// `rows.start` must be a multiple of [`MR`] and `cols.start` of [`NR`] (a
/// packed sliver or panel boundary).
///
/// Panics if the ranges, the packed `k`s or `C` do not fit (a caller's bug).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed(
    alpha: f32,
    a: &PackedA,
    rows: std::ops::Range<usize>,
    b: &PackedB,
    cols: std::ops::Range<usize>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert_eq!(a.k, b.k, "gemm_packed: the operands' k differ");
    assert_eq!(
        a.kernel, b.kernel,
        "gemm_packed: packed for different kernels"
    );
    assert!(
        rows.start.is_multiple_of(MR) && rows.end <= a.len,
        "gemm_packed: rows"
    );
    assert!(
        cols.start.is_multiple_of(NR) && cols.end <= b.len,
        "gemm_packed: columns"
    );
    let (m, n, k) = (rows.len(), cols.len(), a.k);
    assert!(
        m == 0 || n == 0 || (ldc >= n && (m - 1) * ldc + n <= c.len()),
        "gemm_packed: C does not hold {m} x {n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    let to = Strides { rs: ldc, cs: 1 };
    let mcb = block_len(m, MC, MR);
    let ncb = block_len(n, NC, NR);
    for (i, pc) in (0..k).step_by(a.kcb).enumerate() {
        let kc = a.kcb.min(k - pc);
        let store = store(i, alpha, beta);
        for jc in (0..n).step_by(ncb) {
            let nc = ncb.min(n - jc);
            let bp = b.block(pc, kc, cols.start + jc);
            for ic in (0..m).step_by(mcb) {
                let mc = mcb.min(m - ic);
                let ap = a.block(pc, kc, rows.start + ic);
                // SAFETY: the block (ic.., jc..) of C, mc × nc, is inside
                // the asserted m × n; the packs hold whole slivers and
                // panels of kc steps past rows.start + ic and cols.start + jc
                // (`block` asserts their lengths).
                unsafe {
                    block(
                        a.kernel,
                        (mc, nc, kc),
                        Slivers::Packed(ap),
                        bp,
                        c.as_mut_ptr().add(ic * ldc + jc),
                        to,
                        store,
                    )
                };
            }
        }
    }
}

/// `C`'s base pointer, handed to the parts of a split product (which write
/// disjoint parts of it).
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: the parts of one product write disjoint elements (see
// `gemm_with`), and the borrow of `C` outlives them all.
unsafe impl Send for SharedC {}
// SAFETY: as above.
unsafe impl Sync for SharedC {}

impl SharedC {
    /// The pointer `at` values in.
    fn at(self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
}

/// Where `C`'s element `(i, j)` is: `i·rs + j·cs` values in.
#[derive(Debug, Clone, Copy)]
struct Strides {
    rs: usize,
    cs: usize,
}

/// The length of each of the near-equal blocks `len` is cut into, at most
/// `max` (a multiple of `unit`) and a multiple of `unit`.
fn block_len(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max).max(1);
    len.div_ceil(blocks).div_ceil(unit) * unit
}

/// How the block of `k` numbered `i` is stored: the first with the caller's
/// `α` and `β`, the others added (continuing the sum when `α = 1`).
fn store(i: usize, alpha: f32, beta: f32) -> Store {
    match (i, alpha == 1.0) {
        (0, true) if beta == 0.0 => Store::Set,
        (0, true) if beta == 1.0 => Store::Add,
        (0, _) => Store::Scale(alpha, beta),
        (_, true) => Store::Add,
        (_, false) => Store::Scale(alpha, 1.0),
    }
}

/// The BLIS loops on one thread, for `k ≥ 1`, `m, n ≥ 1`, with `how`'s
/// kernel and blocks of `k` (its split and orientation are the caller's).
///
/// # Safety
/// The operands fit `m × k` and `k × n`; `c` reaches element `(m − 1,
/// n − 1)` through `to`, and no other thread touches `C`'s `m × n` during
/// the call.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    how: How,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: *mut f32,
    to: Strides,
) {
    let kernel = how.kernel;
    let kcb = block_len(k, how.kc, 1);
    let ncb = block_len(n, NC, NR);
    let mcb = block_len(m, MC, MR);
    let mut bp = Scratch::with_len(kcb * ncb, 0);
    let mut ap = Scratch::with_len(mcb * kcb, 0);
    // a plain A read where it is stored (no transposing copy)
    let in_place = !a.trans && how.in_place.unwrap_or(n <= IN_PLACE_MAX_N);
    for jc in (0..n).step_by(ncb) {
        let nc = ncb.min(n - jc);
        for (i, pc) in (0..k).step_by(kcb).enumerate() {
            let kc = kcb.min(k - pc);
            let store = store(i, alpha, beta);
            pack::<NR>(kernel, b, pc, kc, jc, nc, &mut bp);
            for ic in (0..m).step_by(mcb) {
                let mc = mcb.min(m - ic);
                let slivers = if in_place {
                    // only a last, partial sliver is packed
                    let whole = mc / MR * MR;
                    pack::<MR>(kernel, a.t(), pc, kc, ic + whole, mc - whole, &mut ap);
                    Slivers::Rows {
                        data: &a.data[ic * a.ld + pc..],
                        ld: a.ld,
                        last: &ap,
                    }
                } else {
                    pack::<MR>(kernel, a.t(), pc, kc, ic, mc, &mut ap);
                    Slivers::Packed(&ap)
                };
                // SAFETY: the block (ic.., jc..) of C, mc × nc, is inside
                // the caller's m × n; the packs hold mc and nc rounded up to
                // whole slivers and panels of kc steps.
                unsafe {
                    block(
                        kernel,
                        (mc, nc, kc),
                        slivers,
                        &bp,
                        c.add(ic * to.rs + jc * to.cs),
                        to,
                        store,
                    )
                };
            }
        }
    }
}

/// The slivers of one block of `op(A)` (`mc × kc`) for [`block`].
#[derive(Clone, Copy)]
enum Slivers<'a> {
    /// Packed: sliver `s` at `s·kc·MR`.
    Packed(&'a [f32]),
    /// In place: the block's row `r` at `data[r·ld..][..kc]` (a plain
    /// `op(A)`), but a last sliver of fewer than `MR` rows packed in `last`.
    Rows {
        data: &'a [f32],
        ld: usize,
        last: &'a [f32],
    },
}

/// Every tile of one packed block: `mc × nc` of `C` from `kc` steps. With
/// `C` stored by columns (`cs ≠ 1`, a transposed product) every tile goes
/// through the edge path, which reads and writes it value by value.
///
/// # Safety
/// `ap` holds `mc.div_ceil(MR)` slivers and `bp` `nc.div_ceil(NR)` panels of
/// `kc` steps; `c` reaches element `(mc − 1, nc − 1)` through `to`, all of
/// it this thread's.
unsafe fn block(
    kernel: Kernel,
    (mc, nc, kc): (usize, usize, usize),
    ap: Slivers<'_>,
    bp: &[f32],
    c: *mut f32,
    to: Strides,
    store: Store,
) {
    let whole = mc / MR;
    match ap {
        Slivers::Packed(ap) => assert!(ap.len() >= mc.div_ceil(MR) * MR * kc),
        Slivers::Rows { data, ld, last } => assert!(
            (whole == 0 || data.len() >= (whole * MR - 1) * ld + kc)
                && (whole * MR == mc || last.len() >= MR * kc)
        ),
    }
    assert!(bp.len() >= nc.div_ceil(NR) * NR * kc);
    let sliver = |s: usize| match ap {
        Slivers::Packed(ap) => Sliver::packed(ap[s * kc * MR..].as_ptr()),
        Slivers::Rows { data, ld, .. } if s < whole => {
            Sliver::rows(data[s * MR * ld..].as_ptr(), ld)
        }
        Slivers::Rows { last, .. } => Sliver::packed(last.as_ptr()),
    };
    // the edge tiles' local tile, set up once
    let mut tile = [0.0f32; MR * NR];
    for q in 0..nc.div_ceil(NR) {
        let cols = NR.min(nc - q * NR);
        let b = bp[q * kc * NR..].as_ptr();
        for s in 0..mc.div_ceil(MR) {
            let rows = MR.min(mc - s * MR);
            let a = sliver(s);
            // SAFETY: tile (s, q) lies inside the block; the sliver and the
            // panel hold kc steps (asserted above).
            unsafe {
                let cp = c.add(s * MR * to.rs + q * NR * to.cs);
                if rows == MR && cols == NR && to.cs == 1 {
                    kernel.full_a(kc, a, b, cp, to.rs, store);
                } else {
                    let at = (to.rs, to.cs);
                    kernel.edge(kc, a, b, cp, at, (rows, cols), store, &mut tile);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`PackedB::from_rows`] packs the same values as [`PackedB::new`] of
    /// the stored matrix, bit for bit (one and several blocks of `k`, whole
    /// and edge panels), so its products are the same.
    #[test]
    fn packing_from_rows_is_packing_the_matrix() {
        for (k, n) in [(1, 1), (9, 16), (288, 121), (700, 37), (KC + 1, 5)] {
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let from_rows = PackedB::from_rows(k, n, |r, row| {
                row.copy_from_slice(&b[r * n..][..n]);
            });
            let packed = PackedB::new(Operand::plain(&b, n), k, n);
            assert_eq!(
                (from_rows.k, from_rows.len, from_rows.kcb),
                (packed.k, packed.len, packed.kcb)
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&from_rows.data), bits(&packed.data), "{k} x {n}");
        }
    }

    /// `op(A)·op(B)` in f64, read through the same strides a caller gives.
    fn naive(m: usize, n: usize, k: usize, a: Operand<'_>, b: Operand<'_>) -> Vec<f64> {
        let at = |op: Operand<'_>, r: usize, c: usize| {
            f64::from(if op.trans {
                op.data[c * op.ld + r]
            } else {
                op.data[r * op.ld + c]
            })
        };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(a, i, p) * at(b, p, j)).sum();
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 31) % 29) as f32 / 7.0 - 2.0)
            .collect()
    }

    /// Runs `how` with this kernel, split and orientation.
    fn how(kernel: Kernel, split: Split, transpose: bool) -> How {
        How {
            kernel,
            split: Some(split),
            transpose: Some(transpose),
            ..How::default()
        }
    }

    /// One product with stored operands padded by `pad` columns, checked
    /// against [`naive`] for several `α`, `β`; `C` padded too, and its
    /// padding untouched.
    fn check(how: How, (m, n, k): (usize, usize, usize), ta: bool, tb: bool, pad: usize) {
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
        let av = values(ar * lda, 1);
        let bv = values(br * ldb, 2);
        let a = if ta {
            Operand::transposed(&av, lda)
        } else {
            Operand::plain(&av, lda)
        };
        let b = if tb {
            Operand::transposed(&bv, ldb)
        } else {
            Operand::plain(&bv, ldb)
        };
        let want = naive(m, n, k, a, b);
        for (alpha, beta) in [(1.0f32, 0.0f32), (1.0, 1.0), (-2.5, 0.0), (0.5, -3.0)] {
            let old = values(m * ldc, 3);
            let mut c = old.clone();
            if beta == 0.0 {
                // β = 0 ignores what was there, NaN included
                for i in 0..m {
                    c[i * ldc..i * ldc + n].fill(f32::NAN);
                }
            }
            gemm_with(how, m, n, k, alpha, a, b, beta, &mut c, ldc);
            for i in 0..m {
                for j in 0..ldc {
                    let got = c[i * ldc + j];
                    if j >= n {
                        assert_eq!(got, old[i * ldc + j], "padding of C written");
                        continue;
                    }
                    let w = f64::from(alpha) * want[i * n + j]
                        + f64::from(beta) * f64::from(old[i * ldc + j]);
                    let scale = (k as f64).sqrt() * 4.0 + w.abs();
                    assert!(
                        (f64::from(got) - w).abs() <= 2e-6 * scale,
                        "{how:?} {m}x{n}x{k} ta={ta} tb={tb} pad={pad} α={alpha} β={beta} ({i},{j}): {got} vs {w}"
                    );
                }
            }
        }
    }

    /// Odd sizes, every transpose pair, strided operands, both kernels,
    /// serial and every kind of parallel split, `C` or `Cᵀ` computed.
    #[test]
    fn every_transpose_pair_equals_the_naive_product() {
        let sizes = [
            (1, 1, 1),
            (7, 5, 3),
            (33, 17, 65),
            (6, 16, 128),
            (1, 40, 300),  // m = 1, two blocks of k
            (40, 1, 77),   // n = 1
            (13, 29, 600), // three blocks of k
            (150, 20, 10), // two blocks of rows
        ];
        for kernel in [Kernel::detect(), portable(Kernel::detect)] {
            for &size in &sizes {
                for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                    for transpose in [false, true] {
                        for pad in [0, 3] {
                            check(how(kernel, Split::Serial, transpose), size, ta, tb, pad);
                        }
                        // A read in place and packed, whatever C's width
                        for in_place in [false, true] {
                            let how = How {
                                in_place: Some(in_place),
                                ..how(kernel, Split::Serial, transpose)
                            };
                            check(how, size, ta, tb, 3);
                        }
                        for split in [
                            Split::Rows(2),
                            Split::Cols(2),
                            Split::Depth(2),
                            Split::Rows(3),
                            Split::Depth(3),
                        ] {
                            check(how(kernel, split, transpose), size, ta, tb, 1);
                        }
                    }
                }
            }
        }
    }

    /// Reading `A` in place and blocks of `k` of up to [`KC`] rather than 256
    /// steps change no bit of the products the CNN and the ranking family
    /// run (`α = 1`, `β ∈ {0, 1}`; the family's `α·Σ` with `k` a multiple
    /// of 256): each entry is the same chain of fused multiply-adds.
    #[test]
    fn in_place_a_and_longer_blocks_change_no_bits() {
        // (m, n, k, ta, tb, ldb, α): the CNN's conv2 products on one image or
        // a group of four, its linear layer, the family's backward
        let shapes = [
            (64, 121, 288, false, false, 484, 1.0f32),
            (64, 288, 484, false, true, 484, 1.0),
            (288, 121, 64, true, false, 121, 1.0),
            (64, 121, 288, false, false, 121, 1.0),
            (32, 676, 9, false, false, 676, 1.0),
            (80, 128, 1600, false, true, 1600, 1.0),
            (80, 1600, 128, false, false, 1600, 1.0),
            (256, 128, 256, false, false, 128, 0.37),
            (512, 128, 512, false, false, 128, -1.5),
        ];
        for kernel in [Kernel::detect(), portable(Kernel::detect)] {
            for &(m, n, k, ta, tb, ldb, alpha) in &shapes {
                let lda = if ta { m } else { k };
                let av = values(m * k, 1);
                let bv = values(if tb { n } else { k } * ldb, 2);
                let a = Operand {
                    data: &av,
                    ld: lda,
                    trans: ta,
                };
                let b = Operand {
                    data: &bv,
                    ld: ldb,
                    trans: tb,
                };
                for beta in [0.0f32, 1.0] {
                    let serial = how(kernel, Split::Serial, false);
                    let before = How {
                        kc: 256,
                        in_place: Some(false),
                        ..serial
                    };
                    // as chosen, and A read in place whatever C's width
                    let after = How {
                        in_place: None,
                        ..serial
                    };
                    let in_place = How {
                        in_place: Some(true),
                        ..serial
                    };
                    let runs = [before, after, in_place].map(|how| {
                        let mut c = values(m * n, 3);
                        gemm_with(how, m, n, k, alpha, a, b, beta, &mut c, n);
                        c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    });
                    assert!(runs[0] == runs[1], "{kernel:?} {m}x{n}x{k} β={beta}");
                    assert!(
                        runs[0] == runs[2],
                        "{kernel:?} {m}x{n}x{k} β={beta} in place"
                    );
                }
            }
        }
    }

    /// More columns than one packed block of `B` holds.
    #[test]
    fn wide_products_take_several_blocks_of_columns() {
        for (ta, tb) in [(false, false), (true, true)] {
            let (kernel, cols) = (Kernel::detect(), Split::Cols(2));
            check(
                how(kernel, Split::Serial, false),
                (3, NC + 37, 5),
                ta,
                tb,
                2,
            );
            check(how(kernel, cols, false), (7, 2 * NC + 1, 2), ta, tb, 0);
            // as Cᵀ: several blocks of rows of B
            check(
                how(kernel, Split::Rows(2), true),
                (NC + 37, 3, 5),
                ta,
                tb,
                1,
            );
        }
    }

    /// `k = 0` and `α = 0` give `β·C` (0 for `β = 0`, NaN or not), reading
    /// no operand.
    #[test]
    fn empty_sums_scale_c() {
        for alpha in [1.0, 0.0] {
            for (beta, want) in [(0.0f32, [0.0f32, 0.0]), (2.0, [2.0, 4.0])] {
                let mut c = vec![1.0f32, 2.0];
                if beta == 0.0 {
                    c.fill(f32::NAN);
                }
                let k = if alpha == 0.0 { 3 } else { 0 };
                let ones = [f32::NAN; 6];
                gemm(
                    1,
                    2,
                    k,
                    alpha,
                    Operand::plain(&ones, k),
                    Operand::plain(&ones, 2),
                    beta,
                    &mut c,
                    2,
                );
                assert_eq!(c, want, "α={alpha} β={beta}");
            }
        }
        let mut nothing: [f32; 0] = [];
        gemm(
            0,
            5,
            4,
            1.0,
            Operand::plain(&[], 4),
            Operand::plain(&[0.0; 20], 5),
            0.0,
            &mut nothing,
            5,
        );
    }

    /// `Cᵀ` is computed when it takes a quarter fewer tiles and `k` is long.
    #[test]
    fn narrow_products_are_computed_transposed() {
        assert!(transposes(32, 9, 676)); // 6 tiles as C, 4 as Cᵀ
        assert!(!transposes(32, 9, 9)); // too short a sum
        assert!(!transposes(80, 256, 784));
        assert!(!transposes(9, 32, 676));
    }

    /// The plan: serial when small or single-threaded, and the cut that
    /// copies least otherwise.
    #[test]
    fn plans_cut_where_least_is_copied() {
        assert_eq!(plan(80, 256, 784, 1), Split::Serial);
        assert_eq!(plan(16, 16, 16, 2), Split::Serial);
        // tall C: rows (B is small)
        assert_eq!(plan(54080, 32, 9, 2), Split::Rows(2));
        // wide C: columns (A is small)
        assert_eq!(plan(2000, 8000, 128, 2), Split::Cols(2));
        // long k, small C: k
        assert_eq!(plan(32, 9, 54080, 2), Split::Depth(2));
        // a single tile cannot be cut by rows or columns
        assert_eq!(plan(6, 16, 1 << 20, 2), Split::Depth(2));
    }

    /// Products of packed operands equal [`gemm`]'s, for any sub-block
    /// of rows and columns, several blocks of `k`, every storage order.
    #[test]
    fn packed_operands_give_the_same_products() {
        // the last two are packed on rayon's threads (a pool of 3 below)
        let sizes = [
            (1, 1, 1),
            (13, 37, 5),
            (50, 70, 128),
            (20, 40, 600),
            (7, 3001, 128),
            (13, 1100, 300),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| check_packed(&sizes));
    }

    fn check_packed(sizes: &[(usize, usize, usize)]) {
        for &(m, n, k) in sizes {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let (lda, ldb) = (if ta { m } else { k } + 1, if tb { k } else { n } + 2);
                let av = values(if ta { k } else { m } * lda, 1);
                let bv = values(if tb { n } else { k } * ldb, 2);
                let a = Operand {
                    data: &av,
                    ld: lda,
                    trans: ta,
                };
                let b = Operand {
                    data: &bv,
                    ld: ldb,
                    trans: tb,
                };
                let (pa, pb) = (PackedA::new(a, m, k), PackedB::new(b, k, n));
                for (r0, c0) in [(0, 0), (6, 16), (12, 32)] {
                    if r0 >= m || c0 >= n {
                        continue;
                    }
                    let (mm, nn) = (m - r0 - (m - r0) / 3, n - c0);
                    for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 2.0)] {
                        let old = values(mm * nn, 3);
                        let mut want = old.clone();
                        gemm(
                            mm,
                            nn,
                            k,
                            alpha,
                            a.skip_rows(r0),
                            b.skip_cols(c0),
                            beta,
                            &mut want,
                            nn,
                        );
                        let mut got = old.clone();
                        gemm_packed(alpha, &pa, r0..r0 + mm, &pb, c0..n, beta, &mut got, nn);
                        assert_eq!(got, want, "{m}x{n}x{k} ta={ta} tb={tb} at ({r0},{c0})");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "B does not hold")]
    fn a_short_operand_panics() {
        let mut c = [0.0; 4];
        gemm(
            2,
            2,
            2,
            1.0,
            Operand::plain(&[0.0; 4], 2),
            Operand::plain(&[0.0; 3], 2),
            0.0,
            &mut c,
            2,
        );
    }
}
