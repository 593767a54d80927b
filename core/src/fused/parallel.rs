//! Work shared between the calling thread and rayon's pool, robust to a
//! busy machine.

/// `f(0)`, …, `f(parts − 1)`, shared between the calling thread and
/// `parts − 1` helpers on rayon's pool, each part run by whoever claims it
/// first.
///
/// The calling thread (often a training loop's main thread, outside the
/// pool) works instead of sleeping, and it never waits for a helper that has
/// not started: a part no helper has claimed yet, it runs itself. On a busy
/// machine a pool thread can take milliseconds to be scheduled; `rayon::join`
/// or a scope would wait for it, here the work runs on the calling thread. A
/// helper that starts late finds nothing left and returns at once.
pub(crate) fn in_parallel(parts: usize, f: impl Fn(usize) + Sync) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// What the calling thread and its helpers share.
    struct Claims {
        parts: usize,
        /// The next part to claim.
        next: AtomicUsize,
        /// Parts finished (run or panicked).
        done: AtomicUsize,
        panicked: AtomicBool,
        /// `f`, its lifetime erased: only called for a claimed part, and
        /// the calling thread does not return before every claimed part is
        /// done, so `f` outlives every call.
        f: *const (dyn Fn(usize) + Sync + 'static),
    }
    // SAFETY: `f` is `Sync` and only called while it is alive (see the
    // field); the rest is atomics.
    unsafe impl Send for Claims {}
    // SAFETY: as above.
    unsafe impl Sync for Claims {}

    impl Claims {
        fn work(&self) {
            loop {
                let p = self.next.fetch_add(1, Ordering::AcqRel);
                if p >= self.parts {
                    return;
                }
                // SAFETY: part p is claimed and not done, so the calling
                // thread is still inside `in_parallel` and `f` is alive.
                let f = unsafe { &*self.f };
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(p)));
                if run.is_err() {
                    self.panicked.store(true, Ordering::Release);
                }
                self.done.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    if parts < 2 {
        (0..parts).for_each(f);
        return;
    }
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: only the lifetime bound changes (same fat pointer); see
    // `Claims::f` for why every call happens while `f` is alive.
    let f = unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(f)
    };
    let claims = Arc::new(Claims {
        parts,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        f,
    });
    for _ in 1..parts {
        let claims = Arc::clone(&claims);
        rayon::spawn(move || claims.work());
    }
    claims.work();
    // only parts a helper claimed and is running are left
    let mut spins = 0u32;
    while claims.done.load(Ordering::Acquire) < parts {
        if spins < 1 << 10 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    assert!(
        !claims.panicked.load(Ordering::Acquire),
        "in_parallel: a part panicked"
    );
}

/// From this many values on, a row-wise pass over a fresh buffer (a
/// gradient dfdx has just allocated) is cut among rayon's threads: its
/// first write to each 4 KiB page is a page fault that zeroes the page,
/// a few microseconds each (128 of them for a 1024 × 128 gradient), which
/// the kernel serves to two cores at once.
const ROW_PARTS_MIN_VALUES: usize = 1 << 15;

/// How many parts [`in_row_parts`] cuts a pass over `values` values into:
/// rayon's thread count from [`ROW_PARTS_MIN_VALUES`] on, else one.
pub(crate) fn row_parts(values: usize) -> usize {
    if values >= ROW_PARTS_MIN_VALUES {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

/// `f(first row, its rows)` for `buf`, rows of `width` values, cut into at
/// most `parts` runs of whole rows (as even as can be) shared by
/// [`in_parallel`]: for work whose rows do not depend on each other, so
/// that the result does not depend on the cut.
pub(crate) fn in_row_parts<T: Send>(
    buf: &mut [T],
    width: usize,
    parts: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let rows = buf.len().checked_div(width).unwrap_or(0);
    if parts < 2 || rows < 2 {
        f(0, buf);
        return;
    }
    let per = rows.div_ceil(parts.min(rows));
    let chunks: Vec<std::sync::Mutex<Option<&mut [T]>>> = buf
        .chunks_mut(per * width)
        .map(|c| std::sync::Mutex::new(Some(c)))
        .collect();
    in_parallel(chunks.len(), |p| {
        let chunk = chunks[p].lock().expect("a part's rows").take();
        f(p * per, chunk.expect("each part runs once"));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part runs exactly once, whoever claims it.
    #[test]
    fn every_part_runs_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for parts in 0..6 {
            let runs: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                in_parallel(parts, |p| {
                    runs[p].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 50));
        }
    }

    /// `in_row_parts` hands every row to `f` once, with its index, in runs
    /// of whole rows: any width, row count and number of parts.
    #[test]
    fn row_parts_cover_every_row_once() {
        for width in [1, 3, 8] {
            for rows in [0, 1, 2, 5, 17, 64] {
                for parts in [1, 2, 3, 7] {
                    let mut buf = vec![0.0f32; rows * width];
                    in_row_parts(&mut buf, width, parts, |r0, rows| {
                        assert_eq!(rows.len() % width, 0);
                        for (k, v) in rows.iter_mut().enumerate() {
                            *v += (r0 * width + k) as f32 + 1.0;
                        }
                    });
                    let want: Vec<f32> = (0..rows * width).map(|k| k as f32 + 1.0).collect();
                    assert_eq!(buf, want, "width={width} rows={rows} parts={parts}");
                }
            }
        }
    }

    /// A part that panics, on whichever thread, makes the call panic.
    #[test]
    #[should_panic(expected = "a part panicked")]
    fn a_panicking_part_panics_the_call() {
        in_parallel(3, |p| assert!(p != 1, "part 1"));
    }
}
