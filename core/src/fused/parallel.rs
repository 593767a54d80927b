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

    /// A part that panics, on whichever thread, makes the call panic.
    #[test]
    #[should_panic(expected = "a part panicked")]
    fn a_panicking_part_panics_the_call() {
        in_parallel(3, |p| assert!(p != 1, "part 1"));
    }
}
