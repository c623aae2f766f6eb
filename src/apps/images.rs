//! Pictures of a model: decoder means for latents drawn from the prior, and test images
//! beside their reconstructions, as grids of square grey tiles with a thin border.

use crate::error::ConfigError;
use crate::model::{reference, Likelihood, Params};
use anyhow::{Context, Result};
use image::{GrayImage, Luma};
use rand::SeedableRng;
use std::path::Path;

/// Pixels between tiles and around the grid.
const BORDER: u32 = 1;
/// Border grey: mid-dark, so both white strokes and a black background stay distinct.
const BORDER_GREY: u8 = 96;

/// Side of the square image a layout's x_dim holds (28 for MNIST); an error naming the
/// checkpoint's model when x_dim is not a square or the decoder is not Bernoulli.
/// The most tiles (and tiles per row) a picture takes.
pub const MAX_TILES: usize = 4096;

pub fn tile_side(params: &Params) -> Result<u32, ConfigError> {
    let arch = &params.layout.arch;
    if arch.cond.is_some() {
        return Err(ConfigError::NotApplicable {
            flag: "--checkpoint",
            context: "to pictures: this checkpoint is a conditional model (--model cvae), whose decoder draws the bottom rows given the top ones".into(),
            fix: "pass a checkpoint of an image VAE (uvae train --model vae or hvae)".into(),
        });
    }
    let side = (arch.x_dim as f64).sqrt().round() as usize;
    if side * side != arch.x_dim || !matches!(arch.likelihood, Likelihood::Bernoulli) {
        return Err(ConfigError::NotApplicable {
            flag: "--checkpoint",
            context: format!(
                "to pictures: this checkpoint's model has {} {} outputs, not a square image of Bernoulli pixels",
                arch.x_dim,
                match arch.likelihood {
                    Likelihood::Bernoulli => "Bernoulli",
                    Likelihood::Gaussian { .. } => "Gaussian",
                }
            ),
            fix: "pass a checkpoint of an image VAE (uvae train --model vae)".into(),
        });
    }
    Ok(side as u32)
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Decoder means (Bernoulli probabilities) of `n` latents z ~ N(0, I), drawn from `seed`; a
/// two-layer model draws z2 ~ N(0, I), then z1 ~ p(z1 | z2).
pub fn prior_samples(params: &Params, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let p: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let arch = &params.layout.arch;
    let mut z = vec![0.0; arch.z_dim];
    let mut z2 = vec![0.0; arch.noise_dim() - arch.z_dim];
    (0..n)
        .map(|_| {
            if arch.top.is_some() {
                crate::exact::fill_std_normals(&mut rng, &mut z2);
                crate::exact::fill_std_normals(&mut rng, &mut z);
                z = reference::prior_z1(&params.layout, &p, &z2, &z);
            } else {
                crate::exact::fill_std_normals(&mut rng, &mut z);
            }
            reference::decode(&params.layout, &p, &z)
                .into_iter()
                .map(sigmoid)
                .collect()
        })
        .collect()
}

/// The decoder means at the encoder's posterior mean for each image of `x` [n, x_dim].
pub fn reconstructions(params: &Params, x: &[f32]) -> Vec<Vec<f64>> {
    let p: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    x.chunks(params.layout.arch.x_dim)
        .map(|img| {
            let img: Vec<f64> = img.iter().map(|&v| v as f64).collect();
            let (mu, _) = reference::encode(&params.layout, &p, &img);
            reference::decode(&params.layout, &p, &mu)
                .into_iter()
                .map(sigmoid)
                .collect()
        })
        .collect()
}

/// A grid of `cols` columns of square tiles of `side` pixels, values in [0, 1] (1 white).
pub fn grid(tiles: &[Vec<f64>], side: u32, cols: u32) -> GrayImage {
    let cols = cols.max(1);
    let rows = (tiles.len() as u32).div_ceil(cols).max(1);
    let step = side + BORDER;
    let mut img = GrayImage::from_pixel(
        cols * step + BORDER,
        rows * step + BORDER,
        Luma([BORDER_GREY]),
    );
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = (
            (i as u32 % cols) * step + BORDER,
            (i as u32 / cols) * step + BORDER,
        );
        for (j, &v) in tile.iter().enumerate() {
            let (x, y) = (j as u32 % side, j as u32 / side);
            img.put_pixel(
                x0 + x,
                y0 + y,
                Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]),
            );
        }
    }
    img
}

/// Writes `img` as a PNG atomically (temporary file, fsync, rename).
pub fn save_png(img: &GrayImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("encoding the PNG")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for --out", dir.display()))?;
    }
    crate::files::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    fn tiny() -> Params {
        let arch = Arch {
            x_dim: 16,
            hidden: vec![8],
            z_dim: 2,
            likelihood: Likelihood::Bernoulli,
            top: None,
            cond: None,
        };
        Params::init(&arch, 3, None)
    }

    #[test]
    fn grid_places_tiles_inside_borders() {
        let tiles = vec![vec![1.0; 16], vec![0.0; 16], vec![0.5; 16]];
        let img = grid(&tiles, 4, 2);
        assert_eq!(img.dimensions(), (2 * 5 + 1, 2 * 5 + 1));
        assert_eq!(img.get_pixel(0, 0)[0], BORDER_GREY);
        assert_eq!(img.get_pixel(1, 1)[0], 255);
        assert_eq!(img.get_pixel(6, 1)[0], 0);
        assert_eq!(img.get_pixel(1, 6)[0], 128);
        // The empty fourth cell stays border grey.
        assert_eq!(img.get_pixel(7, 7)[0], BORDER_GREY);
    }

    #[test]
    fn samples_are_deterministic_probabilities() {
        let p = tiny();
        let a = prior_samples(&p, 3, 9);
        assert_eq!(a, prior_samples(&p, 3, 9));
        assert_ne!(a, prior_samples(&p, 3, 10));
        assert!(a.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(tile_side(&p), Ok(4));
        let recon = reconstructions(&p, &[0.5; 32]);
        assert_eq!((recon.len(), recon[0].len()), (2, 16));
    }

    #[test]
    fn non_image_models_are_refused_by_name() {
        let mut p = tiny();
        p.layout.arch.x_dim = 20;
        let e = tile_side(&p).unwrap_err();
        assert_eq!(e.flag(), "--checkpoint");
    }
}
