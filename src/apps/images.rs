//! Pictures of a model: decoder means for latents drawn from the prior, and test images
//! beside their reconstructions, as grids of H x W tiles (grey, or colour for three
//! channels) with a thin border.

use crate::data::ImageShape;
use crate::error::ConfigError;
use crate::model::{reference, Likelihood, Params};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use rand::SeedableRng;
use std::path::Path;

/// Pixels between tiles and around the grid.
const BORDER: u32 = 1;
/// Border grey: mid-dark, so both white strokes and a black background stay distinct.
const BORDER_GREY: u8 = 96;

/// The most tiles (and tiles per row) a picture takes.
pub const MAX_TILES: usize = 4096;

/// The image shape of a checkpoint's tiles: the data's shape its run recorded in the
/// metadata (`image_shape`), else a square of x_dim (28 x 28 for MNIST). An error naming the
/// checkpoint when the model is not an image of Bernoulli pixels, or its channels are
/// neither grey (1) nor colour (3).
pub fn tile_shape(
    params: &Params,
    meta: &std::collections::HashMap<String, String>,
) -> Result<ImageShape, ConfigError> {
    let arch = &params.layout.arch;
    if arch.cond.is_some() {
        return Err(ConfigError::NotApplicable {
            flag: "--checkpoint",
            context: "to pictures: this checkpoint is a conditional model (--model cvae), whose decoder draws the bottom rows given the top ones".into(),
            fix: "pass a checkpoint of an image VAE (uvae train --model vae or hvae)".into(),
        });
    }
    let recorded = meta
        .get("uvae")
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| v.get("image_shape")?.as_str()?.parse::<ImageShape>().ok())
        .filter(|s| s.dim() == arch.x_dim);
    let shape = recorded.or(ImageShape::square(arch.x_dim));
    match shape {
        Some(s) if matches!(arch.likelihood, Likelihood::Bernoulli) && [1, 3].contains(&s.channels) => Ok(s),
        _ => Err(ConfigError::NotApplicable {
            flag: "--checkpoint",
            context: format!(
                "to pictures: this checkpoint's model has {} {} outputs{}, not a grey or colour image of Bernoulli pixels",
                arch.x_dim,
                match arch.likelihood {
                    Likelihood::Bernoulli => "Bernoulli",
                    Likelihood::Gaussian { .. } => "Gaussian",
                },
                shape.map_or(String::new(), |s| format!(" ({s})")),
            ),
            fix: "pass a checkpoint of an image VAE (uvae train --model vae) trained on grey or RGB images".into(),
        }),
    }
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

/// A grid of `cols` columns of tiles of `shape` (H x W, channels as colour; values in
/// [0, 1], 1 white), each tile's values in row-major order, channels last.
pub fn grid(tiles: &[Vec<f64>], shape: ImageShape, cols: u32) -> RgbImage {
    let cols = cols.max(1);
    let rows = (tiles.len() as u32).div_ceil(cols).max(1);
    let (h, w, c) = (shape.height as u32, shape.width as u32, shape.channels);
    let mut img = RgbImage::from_pixel(
        cols * (w + BORDER) + BORDER,
        rows * (h + BORDER) + BORDER,
        Rgb([BORDER_GREY; 3]),
    );
    let byte = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = (
            (i as u32 % cols) * (w + BORDER) + BORDER,
            (i as u32 / cols) * (h + BORDER) + BORDER,
        );
        for (j, px) in tile.chunks_exact(c).enumerate() {
            let (x, y) = (j as u32 % w, j as u32 / w);
            let rgb = if c == 3 {
                [byte(px[0]), byte(px[1]), byte(px[2])]
            } else {
                [byte(px[0]); 3]
            };
            img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
        }
    }
    img
}

/// The most `--scale` takes: a 28-pixel tile at 16x is 448 pixels.
pub const MAX_SCALE: u32 = 16;

/// `img` with each pixel drawn as a `factor` x `factor` block (nearest neighbour, so the
/// pixels stay sharp): a 28-pixel tile is small on a modern screen.
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    RgbImage::from_fn(img.width() * factor, img.height() * factor, |x, y| {
        *img.get_pixel(x / factor, y / factor)
    })
}

/// Writes `img` as a PNG atomically (temporary file, fsync, rename).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
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

    fn tiny(x_dim: usize) -> Params {
        let arch = Arch {
            x_dim,
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
        let img = grid(&tiles, "4x4".parse().unwrap(), 2);
        assert_eq!(img.dimensions(), (2 * 5 + 1, 2 * 5 + 1));
        assert_eq!(img.get_pixel(0, 0)[0], BORDER_GREY);
        assert_eq!(img.get_pixel(1, 1)[0], 255);
        assert_eq!(img.get_pixel(6, 1)[0], 0);
        assert_eq!(img.get_pixel(1, 6)[0], 128);
        // The empty fourth cell stays border grey.
        assert_eq!(img.get_pixel(7, 7)[0], BORDER_GREY);
    }

    #[test]
    fn upscaling_draws_each_pixel_as_a_block() {
        let img = grid(&[vec![1.0, 0.0, 0.5, 0.0]], "2x2".parse().unwrap(), 1);
        let big = upscale(&img, 3);
        assert_eq!(big.dimensions(), (3 * img.width(), 3 * img.height()));
        for (x, y, p) in big.enumerate_pixels() {
            assert_eq!(p, img.get_pixel(x / 3, y / 3), "pixel ({x}, {y})");
        }
        // The tile's first pixel (white) now fills rows and columns 3..6.
        assert_eq!(big.get_pixel(3, 3)[0], 255);
        assert_eq!(big.get_pixel(5, 5)[0], 255);
        assert_eq!(big.get_pixel(6, 3)[0], 0);
        assert_eq!(upscale(&img, 1), img);
    }

    #[test]
    fn samples_are_deterministic_probabilities() {
        let p = tiny(16);
        let a = prior_samples(&p, 3, 9);
        assert_eq!(a, prior_samples(&p, 3, 9));
        assert_ne!(a, prior_samples(&p, 3, 10));
        assert!(a.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(
            tile_shape(&p, &Default::default()).map(|s| s.to_string()),
            Ok("4x4".into())
        );
        let recon = reconstructions(&p, &[0.5; 32]);
        assert_eq!((recon.len(), recon[0].len()), (2, 16));
    }

    /// A recorded shape gives non-square and colour tiles: x_dim 6 as 2 x 3 grey or 1 x 2 RGB;
    /// without a record (6 is not square) or with one that does not fit, pictures are refused.
    #[test]
    fn recorded_shapes_give_non_square_and_colour_tiles() {
        let p = tiny(6);
        let meta = |s: &str| {
            std::collections::HashMap::from([(
                "uvae".to_string(),
                format!(r#"{{"image_shape":"{s}"}}"#),
            )])
        };
        assert_eq!(tile_shape(&p, &meta("2x3")).unwrap().to_string(), "2x3");
        assert_eq!(tile_shape(&p, &meta("1x2x3")).unwrap().channels, 3);
        assert!(tile_shape(&p, &Default::default()).is_err());
        assert!(tile_shape(&p, &meta("2x2")).is_err());
        let img = grid(
            &[vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]],
            "1x2x3".parse().unwrap(),
            1,
        );
        assert_eq!(img.dimensions(), (2 + 2, 1 + 2));
        assert_eq!(img.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(2, 1).0, [0, 0, 255]);
        let img = grid(&vec![vec![0.0; 6]; 3], "2x3".parse().unwrap(), 2);
        assert_eq!(img.dimensions(), (2 * 4 + 1, 2 * 3 + 1));
        assert_eq!(img.get_pixel(3, 2).0, [0; 3]);
        assert_eq!(img.get_pixel(4, 2).0, [BORDER_GREY; 3]);
    }

    #[test]
    fn non_image_models_are_refused_by_name() {
        let mut p = tiny(16);
        p.layout.arch.x_dim = 20;
        let e = tile_shape(&p, &Default::default()).unwrap_err();
        assert_eq!(e.flag(), "--checkpoint");
    }
}
