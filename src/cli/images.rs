//! `uvae sample` and `uvae reconstruct`: PNG grids of what a checkpoint's decoder draws.

use super::common::CommonArgs;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::apps::images;
use unbiased_vae::error;
use unbiased_vae::model::checkpoint;

#[derive(Args)]
pub struct SampleArgs {
    /// Checkpoint written by `uvae train` (an image VAE).
    #[arg(long)]
    checkpoint: PathBuf,
    /// PNG to write.
    #[arg(long, default_value = "runs/samples.png")]
    out: PathBuf,
    /// Latents drawn from the prior N(0, I).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Tiles per row.
    #[arg(long, default_value_t = 8)]
    cols: u32,
    /// Seed of the prior draws (the same seed gives the same picture).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw each pixel as an N x N block (nearest neighbour), so tiles are not tiny.
    #[arg(long, default_value_t = 2, value_name = "N")]
    scale: u32,
}

fn check_scale(scale: u32) -> Result<(), error::ConfigError> {
    error::at_least("--scale", scale as usize, 1, "a picture")?;
    error::at_most(
        "--scale",
        scale as usize,
        images::MAX_SCALE as usize,
        "a picture",
    )
}

pub fn run_sample(a: SampleArgs) -> Result<()> {
    error::at_least("--n", a.n, 1, "a picture")?;
    error::at_most("--n", a.n, images::MAX_TILES, "a picture")?;
    error::at_least("--cols", a.cols as usize, 1, "a grid")?;
    error::at_most("--cols", a.cols as usize, images::MAX_TILES, "a grid")?;
    check_scale(a.scale)?;
    let (params, meta) = checkpoint::load(&a.checkpoint)?;
    let shape = images::tile_shape(&params, &meta)?;
    let tiles = images::prior_samples(&params, a.n, a.seed);
    let img = images::grid(&tiles, shape, a.cols);
    images::save_png(&images::upscale(&img, a.scale), &a.out)?;
    println!(
        "{} decoder means for z ~ N(0, I) (seed {}) -> {}",
        a.n,
        a.seed,
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Checkpoint written by `uvae train` (an image VAE).
    #[arg(long)]
    checkpoint: PathBuf,
    /// PNG to write: each binarized test image with its reconstruction to its right.
    #[arg(long, default_value = "runs/reconstructions.png")]
    out: PathBuf,
    /// Test images shown (the first ones).
    #[arg(long, default_value_t = 32)]
    n: usize,
    /// Image-and-reconstruction pairs per row.
    #[arg(long, default_value_t = 8)]
    pairs_per_row: u32,
    /// Draw each pixel as an N x N block (nearest neighbour), so tiles are not tiny.
    #[arg(long, default_value_t = 2, value_name = "N")]
    scale: u32,
}

pub fn run_reconstruct(a: ReconstructArgs) -> Result<()> {
    error::at_least("--n", a.n, 1, "a picture")?;
    error::at_most("--n", a.n, images::MAX_TILES, "a picture")?;
    error::at_least("--pairs-per-row", a.pairs_per_row as usize, 1, "a grid")?;
    error::at_most(
        "--pairs-per-row",
        a.pairs_per_row as usize,
        images::MAX_TILES,
        "a grid",
    )?;
    check_scale(a.scale)?;
    let (params, meta) = checkpoint::load(&a.checkpoint)?;
    let shape = images::tile_shape(&params, &meta)?;
    let ds = a
        .common
        .dataset_as(0, unbiased_vae::data::binarization::of_checkpoint(&meta)?)?;
    unbiased_vae::data::check_dim(&ds, params.layout.arch.x_dim, &a.checkpoint)?;
    let test = ds.test.slice(0..a.n.min(ds.test.count));
    // The model is trained on binarized images: show (and encode) the evaluation binarization.
    let x = unbiased_vae::data::binarize_eval(&test);
    let recon = images::reconstructions(&params, &x);
    let tiles: Vec<Vec<f64>> = x
        .chunks(ds.dim())
        .zip(recon)
        .flat_map(|(img, r)| [img.iter().map(|&v| v as f64).collect(), r])
        .collect();
    let img = images::grid(&tiles, shape, 2 * a.pairs_per_row);
    images::save_png(&images::upscale(&img, a.scale), &a.out)?;
    println!(
        "{} test images beside their reconstructions (decoder means at the posterior mean) -> {}",
        test.count,
        a.out.display()
    );
    Ok(())
}
