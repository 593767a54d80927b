//! How the C allocator hands freed memory back, and why a training loop
//! cares.
//!
//! A training step allocates the same large buffers every time: a CNN's
//! activations, its gradients, the convolution ops' outputs (megabytes at
//! batch 80). glibc's `malloc` serves a request of 128 KiB and more with
//! fresh pages from the kernel (`mmap`) and returns them on `free`, raising
//! that threshold on its own only when it sees such a block freed; and it
//! trims the top of its heap back to the kernel as well. Where it ends up
//! depends on what the process allocated before. When the buffers land on
//! fresh pages, every step pays a page fault and a zeroed page for each
//! 4 KiB it touches: measured with `STEP_TABLE=1 cargo bench --bench
//! losses`, where three MLP steps run before the CNN's in the same process,
//! the CNN step took 15.2 ms (3.6 million page faults over the run) against
//! 8.7 ms (18 thousand) with the allocator told to keep its memory — the
//! same code, two threads, 2026-11-30. A process that ran the CNN alone
//! happened to get the fast state (8.4–9.1 ms).
//!
//! [`keep_freed_memory`] makes that state the rule: the examples and the
//! benches call it first thing, and a training program can too. PyTorch's
//! CPU tensors come from the same `malloc`; `benches/step_torch.py` makes
//! the same two settings for it, so the side-by-side figures compare the
//! libraries, not the allocator's moods. (`GLIBC_TUNABLES=
//! glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2000000000`
//! does the same from outside a program.)

/// The largest request glibc lets its heap serve instead of `mmap`
/// (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit targets, 32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap that glibc keeps instead of handing
/// it back to the kernel (2 GB: in practice, all of it).
pub const TRIM_THRESHOLD: usize = 2_000_000_000;

/// Asks the C allocator to keep freed memory for reuse, so that a training
/// loop's buffers stop costing a page fault per 4 KiB every step (see the
/// [module docs](self)): requests up to [`MMAP_THRESHOLD`] come from the
/// heap rather than fresh `mmap`s, and the heap is not trimmed below
/// [`TRIM_THRESHOLD`].
///
/// The cost is memory: what a step freed stays with the process for the
/// next step, as a cache would keep it, instead of returning to the system.
/// It changes no value the library computes. Returns whether the settings
/// were made: `true` with glibc on Linux; elsewhere it does nothing and
/// returns `false` (other allocators keep freed memory their own way).
///
/// ```
/// let kept = metric_loss_core::allocator::keep_freed_memory();
/// assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes two tuning parameters of glibc's
        // allocator (it takes its own lock); both values fit a C int.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
