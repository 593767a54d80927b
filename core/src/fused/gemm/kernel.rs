//! The micro-kernel every product of the project ends in: one `MR × NR`
//! tile of `C` from a packed sliver of `A` (`MR` rows, `kc` steps, stored
//! `k`-major: value `(k, r)` at `k·MR + r`) and a packed panel of `B` (`kc`
//! steps of `NR` columns: value `(k, l)` at `k·NR + l`), as [`super::pack`]
//! writes them.
//!
//! The tile is a sum of `kc` outer products held in registers: on AVX2 +
//! FMA, 12 accumulators of 8 lanes, two panel loads and six broadcasts per
//! step of `k`, no horizontal sums. The AVX2 kernel is picked at run time
//! ([`Kernel::detect`]); elsewhere a portable kernel of the same shape runs.
//! Both sum each entry as one chain over `k` in increasing order (the AVX2
//! one with fused multiply-adds), so [`Store::Add`] continuing a tile over a
//! second block of `k` gives bit for bit what one block would, and
//! [`Kernel::norms`] gives exactly the diagonal of a Gram tile.

/// Rows per micro-tile.
pub(crate) const MR: usize = 6;
/// Columns per micro-tile (the width of one packed panel of `B`).
pub(crate) const NR: usize = 16;

/// How a micro-tile's sum `Σ_k a_k b_kᵀ` is written to `C`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Store {
    /// `C = Σ` (the old `C` is not read).
    Set,
    /// `C = C + Σ`, the sum continuing from the stored `C` (the chain of
    /// additions of one longer sum: what a second block of `k` needs).
    Add,
    /// `C = α·Σ + β·C`, with `C` not read when `β = 0`.
    Scale(f32, f32),
}

/// Where a micro-tile's `MR` rows of `A` are read: packed (`ld = 0`:
/// value `(k, r)` at `ptr[k·MR + r]`, as [`super::pack`] writes it), or
/// in place in a row-major `op(A)` (value `(k, r)` at `ptr[r·ld + k]`), so
/// that a plain `A` needs no transposing copy: each step broadcasts one
/// value from each of the `MR` rows, which are read front to back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sliver {
    pub(crate) ptr: *const f32,
    pub(crate) ld: usize,
}

impl Sliver {
    /// A packed sliver: `kc·MR` values from `ptr`.
    pub(crate) fn packed(ptr: *const f32) -> Self {
        Sliver { ptr, ld: 0 }
    }

    /// `MR` rows in place, `ld` apart (`ld ≥ 1`), `kc` values each from
    /// `ptr`.
    pub(crate) fn rows(ptr: *const f32, ld: usize) -> Self {
        debug_assert!(ld > 0);
        Sliver { ptr, ld }
    }
}

/// Which micro-kernel runs: decided once per call (or per packing of a Gram
/// matrix) and handed to every thread, so that all tiles of one result, and
/// the norms that go with them, are summed alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    simd: bool,
}

impl Kernel {
    /// AVX2 + FMA if this CPU has them (`std` caches the answer), else the
    /// portable kernel; the portable one on a thread inside
    /// [`tests::portable`].
    pub(crate) fn detect() -> Self {
        #[cfg(test)]
        if tests::PORTABLE.get() {
            return Kernel { simd: false };
        }
        #[cfg(target_arch = "x86_64")]
        let simd = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        Kernel { simd }
    }

    /// Whether the AVX2 + FMA kernel runs (callers with SIMD passes of
    /// their own follow the same choice).
    pub(crate) fn simd(self) -> bool {
        self.simd
    }

    /// One full tile: `c[r·ldc + l]` for `r < MR`, `l < NR`, stored as
    /// `store` says.
    ///
    /// # Safety
    /// `a` points at `kc·MR` values, `b` at `kc·NR`, and `c` at
    /// `(MR − 1)·ldc + NR` values this thread may write (and read).
    #[inline]
    pub(crate) unsafe fn full(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        store: Store,
    ) {
        // SAFETY: a packed sliver, as documented.
        unsafe { self.full_a(kc, Sliver::packed(a), b, c, ldc, store) }
    }

    /// [`full`](Self::full) with the sliver of `A` packed or read where it
    /// is stored ([`Sliver`]).
    ///
    /// # Safety
    /// As [`full`](Self::full), with `a` reaching what [`Sliver`] says.
    #[inline]
    pub(crate) unsafe fn full_a(
        self,
        kc: usize,
        a: Sliver,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        store: Store,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: AVX2 and FMA are present (`simd` is only set when
            // detected); the pointers are the caller's, as documented.
            unsafe {
                if a.ld == 0 {
                    avx2::micro::<false>(kc, a.ptr, 0, b, c, ldc, store)
                } else {
                    avx2::micro::<true>(kc, a.ptr, a.ld, b, c, ldc, store)
                }
            };
            return;
        }
        // SAFETY: as documented for the caller.
        unsafe { micro_portable(kc, a, b, c, ldc, store) }
    }

    /// A tile cut to `rows × cols` (at most `MR × NR`) of a `C` with any
    /// strides: the kernel runs on `tile` (any values: the caller's, reused
    /// from one edge to the next) and only `c[r·rs + l·cs]`, `r < rows`,
    /// `l < cols`, is read and written.
    ///
    /// # Safety
    /// As [`full_a`](Self::full_a), with `c` reaching `(rows − 1)·rs +
    /// (cols − 1)·cs + 1` values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn edge(
        self,
        kc: usize,
        a: Sliver,
        b: *const f32,
        c: *mut f32,
        (rs, cs): (usize, usize),
        (rows, cols): (usize, usize),
        store: Store,
        tile: &mut [f32; MR * NR],
    ) {
        debug_assert!(rows <= MR && cols <= NR);
        let reads = match store {
            Store::Set => false,
            Store::Add => true,
            Store::Scale(_, beta) => beta != 0.0,
        };
        if reads {
            for r in 0..rows {
                for (l, t) in tile[r * NR..r * NR + cols].iter_mut().enumerate() {
                    // SAFETY: r < rows, l < cols: inside what the caller owns.
                    *t = unsafe { *c.add(r * rs + l * cs) };
                }
            }
        }
        // SAFETY: `tile` holds MR·NR values; `a` and `b` are the caller's.
        unsafe { self.full_a(kc, a, b, tile.as_mut_ptr(), NR, store) };
        for r in 0..rows {
            for (l, &v) in tile[r * NR..r * NR + cols].iter().enumerate() {
                // SAFETY: as above.
                unsafe { *c.add(r * rs + l * cs) = v };
            }
        }
    }

    /// Continues `sq[l] += Σ_k panel[k·NR + l]²` over one packed panel of
    /// `kc` steps, each lane the very chain of operations [`full`](Self::full)
    /// runs for a diagonal entry of a Gram tile.
    pub(crate) fn norms(self, panel: &[f32], kc: usize, sq: &mut [f32]) {
        assert!(panel.len() >= kc * NR && sq.len() >= NR);
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: AVX2 and FMA are present; `panel` holds kc steps of
            // NR values and `sq` NR values (asserted).
            unsafe { avx2::norms(kc, panel.as_ptr(), sq.as_mut_ptr()) };
            return;
        }
        for b in panel.chunks_exact(NR).take(kc) {
            for (s, &v) in sq.iter_mut().zip(b) {
                *s += v * v;
            }
        }
    }
}

/// The portable micro-kernel, the contract of [`Kernel::full_a`].
///
/// # Safety
/// As [`Kernel::full_a`].
unsafe fn micro_portable(
    kc: usize,
    a: Sliver,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    // value (k, r) of the sliver
    let (a_k, a_r) = if a.ld == 0 { (MR, 1) } else { (1, a.ld) };
    let a_len = if kc == 0 {
        0
    } else {
        (kc - 1) * a_k + (MR - 1) * a_r + 1
    };
    // SAFETY: the caller's pointers reach what `Sliver` says, kc·NR and
    // (MR−1)·ldc + NR values.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a.ptr, a_len),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    let mut acc = [[0.0f32; NR]; MR];
    if store == Store::Add {
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r of the tile.
            acc.copy_from_slice(unsafe { std::slice::from_raw_parts(c.add(r * ldc), NR) });
        }
    }
    for (k, b) in b.chunks_exact(NR).enumerate() {
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = a[k * a_k + r * a_r];
            for (s, &bv) in acc.iter_mut().zip(b) {
                *s += av * bv;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of the tile.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), NR) };
        match store {
            Store::Set | Store::Add => row.copy_from_slice(acc),
            Store::Scale(alpha, 0.0) => {
                for (c, &s) in row.iter_mut().zip(acc) {
                    *c = alpha * s;
                }
            }
            Store::Scale(alpha, beta) => {
                for (c, &s) in row.iter_mut().zip(acc) {
                    *c = alpha * s + beta * *c;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR, Store};
    use std::arch::x86_64::*;

    /// The AVX2 + FMA micro-kernel, the contract of `Kernel::full_a`: the
    /// sliver packed (`ROWS = false`, `lda` unused) or `MR` rows `lda`
    /// apart (`ROWS`), the same chain of operations for every entry.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers as for `Kernel::full_a`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn micro<const ROWS: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        store: Store,
    ) {
        // SAFETY (whole body): `a` holds the sliver's kc steps, `b` kc·NR
        // values, and `c` reaches (MR − 1)·ldc + NR (the caller's
        // contract); every access below stays inside those.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            if store == Store::Add {
                for (r, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm256_loadu_ps(c.add(r * ldc));
                    acc[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
                }
            }
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = if ROWS { r * lda } else { r };
                    let av = _mm256_broadcast_ss(&*a.add(at));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
                a = a.add(if ROWS { 1 } else { MR });
                b = b.add(NR);
            }
            match store {
                Store::Set | Store::Add => {
                    for (r, acc) in acc.iter().enumerate() {
                        _mm256_storeu_ps(c.add(r * ldc), acc[0]);
                        _mm256_storeu_ps(c.add(r * ldc + 8), acc[1]);
                    }
                }
                Store::Scale(alpha, beta) => {
                    let al = _mm256_set1_ps(alpha);
                    let be = _mm256_set1_ps(beta);
                    for (r, acc) in acc.iter().enumerate() {
                        for (h, &s) in acc.iter().enumerate() {
                            let p = c.add(r * ldc + 8 * h);
                            let v = if beta == 0.0 {
                                _mm256_mul_ps(al, s)
                            } else {
                                _mm256_fmadd_ps(be, _mm256_loadu_ps(p), _mm256_mul_ps(al, s))
                            };
                            _mm256_storeu_ps(p, v);
                        }
                    }
                }
            }
        }
    }

    /// `sq[l] += Σ_k panel[k·NR + l]²`, each lane the chain `micro` runs
    /// for a diagonal entry.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `panel` points at `kc · NR` values and `sq`
    /// at `NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn norms(kc: usize, panel: *const f32, sq: *mut f32) {
        // SAFETY: inside the caller's buffers, as documented.
        unsafe {
            let (mut s0, mut s1) = (_mm256_loadu_ps(sq), _mm256_loadu_ps(sq.add(8)));
            for k in 0..kc {
                let b0 = _mm256_loadu_ps(panel.add(k * NR));
                let b1 = _mm256_loadu_ps(panel.add(k * NR + 8));
                s0 = _mm256_fmadd_ps(b0, b0, s0);
                s1 = _mm256_fmadd_ps(b1, b1, s1);
            }
            _mm256_storeu_ps(sq, s0);
            _mm256_storeu_ps(sq.add(8), s1);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Set by a test to run the portable kernel on this thread.
        pub(crate) static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` with [`Kernel::detect`] answering "portable" on this thread
    /// (a product decides once, on the calling thread, so its rayon helpers
    /// follow).
    pub(crate) fn portable<R>(f: impl FnOnce() -> R) -> R {
        PORTABLE.set(true);
        let r = f();
        PORTABLE.set(false);
        r
    }

    /// Both kernels, every store, full and cut tiles, against plain sums.
    #[test]
    fn tiles_equal_plain_sums() {
        let kernels = [Kernel::detect(), portable(Kernel::detect)];
        assert!(!kernels[1].simd());
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| ((i * 5) % 11) as f32 / 4.0).collect();
        let sum =
            |r: usize, l: usize| -> f32 { (0..kc).map(|k| a[k * MR + r] * b[k * NR + l]).sum() };
        for kernel in kernels {
            for store in [
                Store::Set,
                Store::Add,
                Store::Scale(2.0, 0.0),
                Store::Scale(-0.5, 3.0),
            ] {
                for (rows, cols) in [(MR, NR), (1, 1), (5, 9), (MR, 3), (2, NR)] {
                    let ldc = NR + 5;
                    let old = |r: usize, l: usize| (r * 100 + l) as f32;
                    let mut c: Vec<f32> = (0..MR * ldc).map(|i| old(i / ldc, i % ldc)).collect();
                    if store == Store::Set || store == Store::Scale(2.0, 0.0) {
                        c.iter_mut().for_each(|v| *v = f32::NAN); // never read
                    }
                    let before = c.clone();
                    // SAFETY: a, b hold kc·MR and kc·NR values, c MR·ldc.
                    unsafe {
                        if (rows, cols) == (MR, NR) {
                            kernel.full(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, store)
                        } else {
                            kernel.edge(
                                kc,
                                Sliver::packed(a.as_ptr()),
                                b.as_ptr(),
                                c.as_mut_ptr(),
                                (ldc, 1),
                                (rows, cols),
                                store,
                                &mut [f32::NAN; MR * NR],
                            )
                        }
                    }
                    for r in 0..MR {
                        for l in 0..ldc {
                            let got = c[r * ldc + l];
                            if r >= rows || l >= cols {
                                assert_eq!(got.to_bits(), before[r * ldc + l].to_bits(), "outside");
                                continue;
                            }
                            let want = match store {
                                Store::Set => sum(r, l),
                                Store::Add => old(r, l) + sum(r, l),
                                Store::Scale(al, 0.0) => al * sum(r, l),
                                Store::Scale(al, be) => al * sum(r, l) + be * old(r, l),
                            };
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{kernel:?} {store:?} {rows}x{cols} ({r},{l}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A sum split in two blocks of `k` (`Set`, then `Add`) is bit for bit
    /// the sum in one block, and the norms are the diagonal of the tile.
    #[test]
    fn blocks_of_k_continue_one_chain() {
        for kernel in [Kernel::detect(), portable(Kernel::detect)] {
            let kc = 50;
            // a panel whose first MR columns are the sliver's rows: a Gram tile
            let b: Vec<f32> = (0..kc * NR)
                .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let a: Vec<f32> = b.chunks_exact(NR).flat_map(|s| s[..MR].to_vec()).collect();
            let (mut one, mut two) = (vec![0.0f32; MR * NR], vec![0.0f32; MR * NR]);
            let split = 17;
            // SAFETY: every buffer holds what the kernel reads and writes.
            unsafe {
                kernel.full(kc, a.as_ptr(), b.as_ptr(), one.as_mut_ptr(), NR, Store::Set);
                kernel.full(
                    split,
                    a.as_ptr(),
                    b.as_ptr(),
                    two.as_mut_ptr(),
                    NR,
                    Store::Set,
                );
                kernel.full(
                    kc - split,
                    a[split * MR..].as_ptr(),
                    b[split * NR..].as_ptr(),
                    two.as_mut_ptr(),
                    NR,
                    Store::Add,
                );
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one), bits(&two), "{kernel:?}");
            let mut sq = [0.0f32; NR];
            kernel.norms(&b[..split * NR], split, &mut sq);
            kernel.norms(&b[split * NR..], kc - split, &mut sq);
            for r in 0..MR {
                assert_eq!(
                    sq[r].to_bits(),
                    one[r * NR + r].to_bits(),
                    "{kernel:?} row {r}"
                );
            }
        }
    }
}
