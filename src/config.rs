//! The validated run configuration, written to config.json beside every run.

use crate::estimators::{Estimator, EstimatorKind};
use crate::model::{Arch, ModelChoice};
use crate::optim::{AdamConfig, Schedule};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// A GPU adapter when one exists, else the CPU (with a notice).
    Auto,
    Cpu,
    Gpu,
}

/// The architecture for `--hidden` / `--latent` (None: not given). The exact models fix
/// their own shape, so giving either flag with them is an error that says so.
pub fn resolve_arch(
    model: ModelChoice,
    hidden: Option<Vec<usize>>,
    latent: Option<usize>,
) -> Result<Arch> {
    match model {
        ModelChoice::Vae => Ok(Arch {
            x_dim: 784,
            hidden: hidden.unwrap_or_else(|| vec![200, 200]),
            z_dim: latent.unwrap_or(50),
            likelihood: Default::default(),
        }),
        exact => {
            for (flag, given) in [
                ("--hidden", hidden.is_some()),
                ("--latent", latent.is_some()),
            ] {
                if given {
                    bail!(
                        "{flag} does not apply to --model {}: its shape is fixed ({}); drop {flag}",
                        exact.name(),
                        crate::exact::training::shape_note(exact)
                    );
                }
            }
            Ok(crate::exact::training::arch(exact).expect("an exact model"))
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// vae (MNIST), or toy / ppca trained on their own generated data. Absent in
    /// configurations written before it existed: vae.
    #[serde(default)]
    pub model: ModelChoice,
    /// Folder with MNIST-layout IDX files; None: the bundled MNIST.
    pub data: Option<PathBuf>,
    /// Training images held back for validation (the last ones, as Burda et al.).
    pub valid_size: usize,
    /// Use only the first N training images (quick runs and tests).
    pub train_limit: Option<usize>,
    pub arch: Arch,
    pub estimator: Estimator,
    /// Samples per datapoint.
    pub k: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub schedule: Schedule,
    pub adam: AdamConfig,
    pub seed: u64,
    /// CPU worker threads; 0: all cores.
    pub threads: usize,
    pub backend: BackendChoice,
    /// GPU adapter name (case-insensitive substring); None: the best adapter.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Samples per datapoint of the validation bound L_K after each epoch.
    pub val_k: usize,
    pub out: PathBuf,
}

impl TrainConfig {
    /// Checks every field and names the flag to fix.
    pub fn validate(&self) -> Result<()> {
        let min = self.estimator.kind.min_samples();
        if self.k == 0 {
            bail!("--k must be at least 1 (samples per datapoint)");
        }
        if self.k < min {
            bail!(
                "--k {} is too small for --estimator {}: it needs at least {min} samples",
                self.k,
                self.estimator.kind.name()
            );
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr {} must be a positive number", self.lr);
        }
        if self.val_k == 0 {
            bail!("--val-k must be at least 1");
        }
        if self.model != ModelChoice::Vae {
            if self.data.is_some() {
                bail!(
                    "--data applies to --model vae only: --model {} trains on its own generated data",
                    self.model.name()
                );
            }
        } else if self.arch.z_dim == 0
            || self.arch.hidden.contains(&0)
            || self.arch.hidden.is_empty()
        {
            bail!("--hidden needs at least one positive size (e.g. 200,200) and --latent must be positive");
        }
        if matches!(
            self.estimator.kind,
            EstimatorKind::MlmcSs | EstimatorKind::MlmcRr
        ) {
            self.estimator
                .mlmc()
                .map_err(|e| anyhow::anyhow!("{e} (check --mlmc-p, --mlmc-i0 and --mlmc-cap)"))?;
        }
        if self.estimator.kind.coupling_kernel().is_some() {
            self.estimator.coupling(self.k).map_err(|e| {
                anyhow::anyhow!("{e} (check --k, --chain-k, --chain-m, --lag and --max-iters)")
            })?;
        }
        if self.estimator.unbiased.encoder != crate::estimators::EncoderChoice::Dreg
            && !self.estimator.kind.is_random_size()
        {
            bail!("--encoder applies to sumo, mlmc-ss and mlmc-rr only; --estimator {} sets its own encoder gradient", self.estimator.kind);
        }
        if self.estimator.kind == EstimatorKind::Dreg && !self.estimator.alpha.is_finite() {
            bail!("--alpha must be a finite number");
        }
        for (flag, v) in [
            ("--clip-encoder", self.adam.clip_encoder),
            ("--clip-decoder", self.adam.clip_decoder),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    bail!("{flag} {v} must be a positive number");
                }
            }
        }
        if self.train_limit == Some(0) {
            bail!("--train-limit must be at least 1");
        }
        Ok(())
    }
}
