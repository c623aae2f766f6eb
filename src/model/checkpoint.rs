//! Checkpoints as safetensors (the format PyTorch users load with `safetensors.torch.load_file`),
//! tensor names and shapes as in `model::Layout::tensors`. The architecture is recovered from
//! the shapes, and the run's metadata is stored in the header.

use super::{Arch, Conditional, Layout, Params, TopLayer};
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Writes `params` to `path` atomically (temporary file, then rename).
pub fn save(params: &Params, metadata: &HashMap<String, String>, path: &Path) -> Result<()> {
    crate::files::write_atomic(path, &to_bytes(params, metadata)?)
}

/// The safetensors bytes [`save`] writes.
pub fn to_bytes(params: &Params, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let tensors = params.layout.tensors();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, off, len)| {
            let bytes: &[u8] = bytemuck::cast_slice(&params.values[*off..*off + *len]);
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches length"),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, Some(metadata.clone())).context("serializing checkpoint")
}

/// Reads a checkpoint written by `save` (or any safetensors file with the same names).
pub fn load(path: &Path) -> Result<(Params, HashMap<String, String>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    parse(&bytes, path)
}

/// [`load`] of a file's bytes; `path` names it in errors. Every failure is an error that
/// names the file and what is wrong: truncated or foreign files, missing, misshaped or
/// non-F32 tensors, and non-finite values.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(Params, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a safetensors checkpoint, or is truncated ({e}); pass the checkpoint.safetensors a `uvae train` run wrote",
            path.display()
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{}: unreadable safetensors header ({e})", path.display()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(st
            .tensor(name)
            .with_context(|| format!("checkpoint {} has no tensor {name}", path.display()))?
            .shape()
            .to_vec())
    };
    // encoder.0 is [hidden0, x]; count encoder layers until a name is missing.
    let stack_shapes = |prefix: &str| -> Result<Vec<Vec<usize>>> {
        let mut shapes = Vec::new();
        while let Ok(s) = shape(&format!("{prefix}.{}.weight", 2 * shapes.len())) {
            if s.len() != 2 || s.contains(&0) {
                bail!(
                    "checkpoint {}: {prefix}.{}.weight has shape {s:?}; a Linear weight must be [out, in] with both positive",
                    path.display(),
                    2 * shapes.len()
                );
            }
            shapes.push(s);
        }
        Ok(shapes)
    };
    let enc_shapes = stack_shapes("encoder")?;
    if enc_shapes.is_empty() {
        bail!(
            "checkpoint {} lacks encoder.0.weight: not a uvae VAE checkpoint",
            path.display()
        );
    }
    let x_dim = enc_shapes[0][1];
    let hidden: Vec<usize> = enc_shapes[..enc_shapes.len() - 1]
        .iter()
        .map(|s| s[0])
        .collect();
    let last = &enc_shapes[enc_shapes.len() - 1];
    if last[0] % 2 != 0 {
        bail!(
            "checkpoint {}: encoder output has {} units, expected 2 * latent",
            path.display(),
            last[0]
        );
    }
    // The shapes do not say the likelihood; the run's configuration in the metadata does
    // (absent: Bernoulli, the VAE's).
    let likelihood = metadata
        .get("uvae")
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| v.pointer("/config/arch/likelihood").cloned())
        .map(serde_json::from_value)
        .transpose()
        .with_context(|| {
            format!(
                "checkpoint {}: unreadable likelihood in its metadata",
                path.display()
            )
        })?
        .unwrap_or_default();
    if let crate::model::Likelihood::Gaussian { sd } = likelihood {
        if !(sd.is_finite() && sd > 0.0) {
            bail!(
                "checkpoint {}: its metadata gives a Gaussian likelihood with sd {sd}; it must be positive",
                path.display()
            );
        }
    }
    // A two-layer checkpoint (`--model hvae`) also holds q(z2 | z1) as encoder2.*; the
    // layout below then requires decoder2.* with the mirrored shapes.
    let enc2_shapes = stack_shapes("encoder2")?;
    let top = match enc2_shapes.split_last() {
        None => None,
        Some((last2, inner)) => {
            if last2[0] % 2 != 0 {
                bail!(
                    "checkpoint {}: encoder2 output has {} units, expected 2 * latent2",
                    path.display(),
                    last2[0]
                );
            }
            Some(TopLayer {
                hidden: inner.iter().map(|s| s[0]).collect(),
                z_dim: last2[0] / 2,
            })
        }
    };
    // A conditional checkpoint (`--model cvae`) also holds p(z | c) as prior.*, whose input
    // width is the context's pixel count; the layout below checks the rest of its shapes.
    let cond =
        match stack_shapes("prior")?.first() {
            None => None,
            Some(s) if s[1] >= x_dim || top.is_some() => bail!(
            "checkpoint {}: prior.0.weight reads {} context pixels of {x_dim}{}; a conditional \
             model's context must leave pixels to model and it has one stochastic layer",
            path.display(),
            s[1],
            if top.is_some() { " beside encoder2.*" } else { "" }
        ),
            Some(s) => Some(Conditional {
                split_row: metadata
                    .get("uvae")
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                    .and_then(|v| v.pointer("/config/arch/cond/split_row")?.as_u64())
                    .map(|r| r as usize),
                c_dim: s[1],
            }),
        };
    let arch = Arch {
        x_dim,
        hidden,
        z_dim: last[0] / 2,
        likelihood,
        top,
        cond,
    };
    let layout = Layout::new(&arch);
    let mut values = vec![0.0f32; layout.len];
    for (name, want, off, len) in layout.tensors() {
        let t = st
            .tensor(&name)
            .with_context(|| format!("checkpoint {} has no tensor {name}", path.display()))?;
        if t.shape() != want.as_slice() || t.dtype() != Dtype::F32 {
            bail!(
                "checkpoint {}: tensor {name} is {:?} {:?}, expected F32 {:?}",
                path.display(),
                t.dtype(),
                t.shape(),
                want
            );
        }
        for (v, c) in values[off..off + len]
            .iter_mut()
            .zip(t.data().chunks_exact(4))
        {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let bad = values[off..off + len]
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if bad > 0 {
            bail!(
                "checkpoint {}: tensor {name} holds {bad} non-finite values (NaN or infinity); \
                 the run that wrote it diverged; use an earlier checkpoint or retrain with a lower --lr",
                path.display()
            );
        }
    }
    Ok((Params { layout, values }, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_preserves_values_and_arch() {
        let arch = Arch {
            x_dim: 12,
            hidden: vec![7, 5],
            z_dim: 3,
            likelihood: Default::default(),
            top: None,
            cond: None,
        };
        let p = Params::init(&arch, 1, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let meta = HashMap::from([("estimator".to_string(), "iwae".to_string())]);
        save(&p, &meta, &path).unwrap();
        let (q, m) = load(&path).unwrap();
        assert_eq!(q.layout.arch, arch);
        assert_eq!(q.values, p.values);
        assert_eq!(m["estimator"], "iwae");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not a safetensors"), "{e}");
    }
}
