//! The MNIST split, batches as tensors, the device and file helpers.

use super::*;

/// Loads the digits (with `--validation`, only the first [`TRAIN`]).
pub fn load(args: &Args) -> Result<Mnist> {
    let mnist = Mnist::load(&args.data)?;
    if mnist.len() <= TRAIN {
        return Err(format!("need more than {TRAIN} digits, found {}", mnist.len()).into());
    }
    // `--validation`: the held-out digits are not even loaded
    Ok(if args.validation {
        mnist.select(0..TRAIN)
    } else {
        mnist
    })
}

/// The pixels of the listed images, as a `(n, 784)` tensor.
pub fn batch_tensor(
    dev: &Cpu,
    mnist: &Mnist,
    idx: &[usize],
) -> Tensor<(usize, Const<PIXELS>), f32, Cpu> {
    let mut pixels = Vec::with_capacity(idx.len() * PIXELS);
    for &i in idx {
        pixels.extend_from_slice(mnist.image(i).expect("index in range"));
    }
    dev.tensor_from_vec(pixels, (idx.len(), Const::<PIXELS>))
}

/// A seeded CPU device. Every example makes its device here, so this is
/// also where the C allocator is told to keep freed memory for the next
/// training step (see `metric_loss::allocator`: no page faults per step);
/// `DEFAULT_MALLOC=1` leaves glibc's own settings, as in the step bench.
pub fn device(seed: u64) -> Cpu {
    if std::env::var_os("DEFAULT_MALLOC").is_none() {
        metric_loss::allocator::keep_freed_memory();
    }
    Cpu::seed_from_u64(seed)
}

/// Builds a module on the device.
pub fn build<M: BuildOnDevice<Cpu, f32>>(dev: &Cpu) -> M::Built {
    dev.build_module::<M, f32>()
}

/// Makes sure `out` exists and returns `out/name`.
pub fn out_file(out: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    Ok(out.join(name))
}
