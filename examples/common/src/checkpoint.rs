//! `--save PATH` and `--load PATH`: the trained encoder as a safetensors
//! file, through dfdx (`SaveToSafetensors` / `LoadFromSafetensors`). The
//! file holds the encoder alone, so any example with the same encoder
//! (`triplet_mnist`, `siamese_mnist`, `custom_loss`, `search_mnist`) loads
//! what another saved. Values are stored as they are: a loaded encoder
//! gives bit-identical embeddings.

use std::path::Path;

use dfdx::nn::{LoadFromSafetensors, SaveToSafetensors};

use super::*;

/// Writes `encoder`'s parameters to `path` (creating its folder).
pub fn save_encoder<M: TensorCollection<f32, Cpu>>(path: &Path, encoder: &M) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    encoder
        .save_safetensors(path)
        .map_err(|e| format!("cannot save the encoder to {}: {e:?}", path.display()).into())
}

/// Reads `encoder`'s parameters from `path` (a file [`save_encoder`] wrote
/// for an encoder of the same shape).
pub fn load_encoder<M: TensorCollection<f32, Cpu>>(path: &Path, encoder: &mut M) -> Result<()> {
    encoder.load_safetensors(path).map_err(|e| {
        format!(
            "cannot load an encoder from {} (saved by an example with this encoder?): {e:?}",
            path.display()
        )
        .into()
    })
}

/// With `--load`, loads the encoder (`encoder(net)`) and reports that
/// nothing was trained; otherwise runs `train` on the net. With `--save`,
/// the encoder is saved after.
pub fn train_or_load<N, M, F>(
    args: &Args,
    net: &mut N,
    encoder: fn(&mut N) -> &mut M,
    train: F,
) -> Result<Training>
where
    M: TensorCollection<f32, Cpu>,
    F: FnOnce(&mut N) -> Result<Training>,
{
    let training = match &args.load {
        Some(path) => {
            load_encoder(path, encoder(net))?;
            Training::loaded()
        }
        None => train(net)?,
    };
    if let Some(path) = &args.save {
        save_encoder(path, encoder(net))?;
    }
    Ok(training)
}
