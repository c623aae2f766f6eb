//! Flags every command that touches data or a backend shares, and the one place that turns
//! them into a dataset and a backend.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::backend::Backend;
use unbiased_vae::config::BackendChoice;
use unbiased_vae::data::{self, Binarization, Dataset, ImageShape, LoadOptions};
use unbiased_vae::estimators::{ChainOptions, EncoderChoice, UnbiasedOptions};
use unbiased_vae::model::Params;
use unbiased_vae::train;

#[derive(Args)]
pub struct CommonArgs {
    /// The images: a folder of MNIST-layout IDX files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz), a folder of train.npy and test.npy, a .npz file, or a MAT v5 file (chardata.mat); default: the bundled MNIST.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// dynamic (a fresh Bernoulli draw per step), threshold (x > 0.5, fixed) or none (the data is binary already) [default: dynamic; eval and reconstruct: the checkpoint's].
    #[arg(long, value_enum)]
    pub binarize: Option<Binarization>,
    /// Image shape HxW[xC] of (N, D) arrays (default: square grey images).
    #[arg(long, value_name = "HxW[xC]")]
    pub image_shape: Option<ImageShape>,
    /// Compute backend: auto (a GPU adapter if there is one, else the CPU), gpu, or cpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// GPU adapter to use: a case-insensitive substring of its name (see `uvae devices`).
    #[arg(long)]
    pub adapter: Option<String>,
    /// CPU worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print only errors, warnings and the final result (no progress, no per-epoch lines).
    #[arg(long, short)]
    pub quiet: bool,
}

impl CommonArgs {
    /// The data set of `--data` (or the bundled MNIST), `valid_size` training images held
    /// back for validation.
    pub fn dataset(&self, valid_size: usize) -> Result<Dataset> {
        self.dataset_as(valid_size, self.binarize.unwrap_or_default())
    }

    /// [`CommonArgs::dataset`] binarized by `--binarize`, else by `trained` (a checkpoint's rule).
    pub fn dataset_as(&self, valid_size: usize, trained: Binarization) -> Result<Dataset> {
        let opts = LoadOptions {
            valid_size,
            binarize: self.binarize.unwrap_or(trained),
            image_shape: self.image_shape,
        };
        data::load_or_bundled_with(self.data.as_deref(), &opts)
    }

    /// The backend of `--backend`, `--adapter` and `--threads`, holding `params`.
    pub fn backend(&self, params: &Params) -> Result<Box<dyn Backend>> {
        train::make_backend(self.backend, params, self.threads, self.adapter.as_deref())
    }
}

/// MLMC's level distribution, shared by `train` and `grad-stats`.
#[derive(Args)]
pub struct MlmcArgs {
    /// MLMC level distribution P(k) = p (1 - p)^k; finite cost needs p > 1/2, finite variance p < 3/4.
    #[arg(long, default_value_t = 0.6)]
    pub mlmc_p: f64,
    /// MLMC base groups of 2^I0 samples.
    #[arg(long, default_value_t = 2)]
    pub mlmc_i0: u32,
    /// Largest MLMC level (the run then targets L_{2^(cap+I0+1)} and says so).
    #[arg(long)]
    pub mlmc_cap: Option<u32>,
}

impl MlmcArgs {
    /// The MLMC settings, with `encoder` (and its own samples `encoder_k` under `iwae`).
    pub fn options(&self, encoder: EncoderChoice, encoder_k: Option<usize>) -> UnbiasedOptions {
        UnbiasedOptions {
            mlmc_p: self.mlmc_p,
            mlmc_i0: self.mlmc_i0,
            mlmc_cap: self.mlmc_cap,
            encoder,
            encoder_k: encoder_k.unwrap_or(0),
        }
    }
}

/// The coupled chains' horizon, shared by `train` and `grad-stats`.
#[derive(Args)]
pub struct ChainArgs {
    /// Coupled chains: the time average H_{k:m} starts at iteration --chain-k ...
    #[arg(long, default_value_t = 0)]
    pub chain_k: usize,
    /// ... and ends at --chain-m.
    #[arg(long, default_value_t = 4)]
    pub chain_m: usize,
    /// Coupled chains: the lag L between the two chains.
    #[arg(long, default_value_t = 1)]
    pub lag: usize,
    /// Coupled chains: iterations before a datapoint's chains stop unmet (counted and reported; the estimate is then biased).
    #[arg(long, default_value_t = 1000)]
    pub max_iters: usize,
}

impl ChainArgs {
    pub fn options(&self) -> ChainOptions {
        ChainOptions {
            burn_in: self.chain_k,
            horizon: self.chain_m,
            lag: self.lag,
            max_iters: self.max_iters,
        }
    }
}
