//! Packing: a block of a logical matrix copied into the panels the
//! micro-kernel reads (see [`super::kernel`]), whatever the operand's
//! storage. The one copy loop of every product: `B`'s panels are `NR`
//! columns of `op(B)`, `A`'s slivers are `MR` columns of `op(A)ᵀ`.

use super::{Kernel, Operand};

/// Packs rows `r0..r0 + kc` and columns `c0..c0 + nc` of the logical
/// matrix `op` into panels of `W` columns: value `(k, l)` of panel `q` at
/// `dst[q·kc·W + k·W + l]` is `op[r0 + k][c0 + q·W + l]`, and 0 past column
/// `nc` (so an edge panel is a full one for the kernel). `dst` holds at least
/// `nc.div_ceil(W)·W·kc` values. `kernel` says whether AVX2 may be used
/// (for the transposing case).
pub(crate) fn pack<const W: usize>(
    kernel: Kernel,
    op: Operand<'_>,
    r0: usize,
    kc: usize,
    c0: usize,
    nc: usize,
    dst: &mut [f32],
) {
    let ld = op.ld;
    if kc == 0 {
        return;
    }
    for (q, panel) in dst[..nc.div_ceil(W) * W * kc]
        .chunks_exact_mut(W * kc)
        .enumerate()
    {
        let first = c0 + q * W;
        let w = W.min(nc - q * W);
        if !op.trans {
            // op[r][c] = data[r·ld + c]: each step of k is a run of w values
            // (a whole panel's runs copied as fixed-size arrays: no memcpy
            // call per step)
            for (k, dst) in panel.chunks_exact_mut(W).enumerate() {
                let at = (r0 + k) * ld + first;
                if w == W {
                    let src: &[f32; W] = op.data[at..at + W].try_into().expect("W values");
                    dst.copy_from_slice(src);
                } else {
                    let src = &op.data[at..at + w];
                    for (l, d) in dst.iter_mut().enumerate() {
                        *d = src.get(l).copied().unwrap_or(0.0);
                    }
                }
            }
        } else if w == W {
            // op[r][c] = data[c·ld + r]: each column is a run over k; W of
            // them read side by side, written one step of k at a time
            let cols: [&[f32]; W] =
                std::array::from_fn(|l| &op.data[(first + l) * ld + r0..][..kc]);
            interleave(kernel, &cols, kc, panel);
        } else {
            panel.fill(0.0);
            for l in 0..w {
                let col = &op.data[(first + l) * ld + r0..][..kc];
                for (k, &v) in col.iter().enumerate() {
                    panel[k * W + l] = v;
                }
            }
        }
    }
}

/// `dst[k·W + l] = cols[l][k]` for `k < kc`, `l < W`: `W` runs of `kc`
/// values side by side, written one step of `k` at a time. With AVX2, eight
/// steps of eight runs at a time through an 8 × 8 transpose in registers.
fn interleave<const W: usize>(kernel: Kernel, cols: &[&[f32]; W], kc: usize, dst: &mut [f32]) {
    assert!(cols.iter().all(|c| c.len() >= kc) && dst.len() >= kc * W);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if kernel.simd() && W <= 16 {
        done = kc / 8 * 8;
        // SAFETY: AVX2 is present (the kernel's choice); the runs hold kc
        // values and `dst` kc·W (asserted), and only the first kc/8·8 steps
        // are written.
        unsafe { avx2::interleave(cols, done, dst) };
    }
    for k in done..kc {
        for (d, col) in dst[k * W..(k + 1) * W].iter_mut().zip(cols) {
            *d = col[k];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// The first `steps` (a multiple of 8) steps of `interleave`.
    ///
    /// # Safety
    /// The CPU has AVX2; every run holds `steps` values, `dst` `steps·W`;
    /// `W ≤ 16`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn interleave<const W: usize>(
        cols: &[&[f32]; W],
        steps: usize,
        dst: &mut [f32],
    ) {
        // SAFETY (whole body): reads stay in the first `steps` values of
        // each run, writes in the first `steps·W` of `dst` (the caller's
        // contract): the rows past a group's runs are zeros, not loads, and
        // a store reaching past `steps·W` goes through `tail`.
        unsafe {
            for l0 in (0..W).step_by(8) {
                let lanes = (W - l0).min(8);
                for k0 in (0..steps).step_by(8) {
                    let row = |r: usize| {
                        if r < lanes {
                            _mm256_loadu_ps(cols[l0 + r].as_ptr().add(k0))
                        } else {
                            _mm256_setzero_ps()
                        }
                    };
                    let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                    let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
                    let out = crate::fused::transpose::transpose8([r0, r1, r2, r3, r4, r5, r6, r7]);
                    for (j, v) in out.into_iter().enumerate() {
                        let at = (k0 + j) * W + l0;
                        if lanes == 8 || at + 8 <= steps * W {
                            // a narrow group's extra lanes land on the next
                            // step's first values, written after this
                            // (masked stores are slow on AMD cores)
                            _mm256_storeu_ps(dst.as_mut_ptr().add(at), v);
                        } else {
                            let mut tail = [0.0f32; 8];
                            _mm256_storeu_ps(tail.as_mut_ptr(), v);
                            dst[at..at + lanes].copy_from_slice(&tail[..lanes]);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::{MR, NR};
    use super::super::portable;
    use super::*;

    fn check<const W: usize>(
        op: Operand<'_>,
        at: &dyn Fn(usize, usize) -> f32,
        (r0, kc, c0, nc): (usize, usize, usize, usize),
    ) {
        for kernel in [Kernel::detect(), portable(Kernel::detect)] {
            let mut dst = vec![f32::NAN; nc.div_ceil(W) * W * kc];
            pack::<W>(kernel, op, r0, kc, c0, nc, &mut dst);
            for q in 0..nc.div_ceil(W) {
                for k in 0..kc {
                    for l in 0..W {
                        let want = if q * W + l < nc {
                            at(r0 + k, c0 + q * W + l)
                        } else {
                            0.0
                        };
                        let got = dst[q * kc * W + k * W + l];
                        assert_eq!(got, want, "{kernel:?} W={W} q={q} k={k} l={l}");
                    }
                }
            }
        }
    }

    /// Every value lands where the kernel reads it, zero padding included,
    /// from plain and transposed storage with a row stride past the width,
    /// with either kernel's copy loop (the AVX2 one eight steps at a time,
    /// so blocks of `k` with and without a remainder of 8).
    #[test]
    fn panels_hold_the_block() {
        // the logical op is rows x cols; both storages have spare columns
        let (rows, cols, ld, ld_t) = (43, 37, 39, 45);
        let plain: Vec<f32> = (0..rows * ld).map(|i| i as f32).collect();
        let stored_t: Vec<f32> = (0..cols * ld_t).map(|i| -(i as f32)).collect();
        let at_plain = |r: usize, c: usize| plain[r * ld + c];
        let at_t = |r: usize, c: usize| stored_t[c * ld_t + r];
        let ops: [(Operand<'_>, &dyn Fn(usize, usize) -> f32); 2] = [
            (Operand::plain(&plain, ld), &at_plain),
            (Operand::transposed(&stored_t, ld_t), &at_t),
        ];
        for (op, at) in ops {
            for block in [
                (0, rows, 0, cols),
                (3, 7, 2, 17),
                (5, 1, 36, 1),
                (0, 16, 0, 16),
                (2, 40, 3, 32),
            ] {
                check::<MR>(op, at, block);
                check::<NR>(op, at, block);
            }
        }
    }
}
