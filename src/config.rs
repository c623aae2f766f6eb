//! The validated run configuration, written to config.json beside every run.

use crate::error::{self, ConfigError};
use crate::estimators::{Estimator, StepPlan};
use crate::model::{Arch, ModelChoice};
use crate::optim::{AdamConfig, Schedule};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
) -> Result<Arch, ConfigError> {
    match crate::exact::training::arch(model) {
        None => Ok(Arch {
            x_dim: 784,
            hidden: hidden.unwrap_or_else(|| vec![200, 200]),
            z_dim: latent.unwrap_or(50),
            likelihood: Default::default(),
        }),
        Some(fixed) => {
            for (flag, given) in [
                ("--hidden", hidden.is_some()),
                ("--latent", latent.is_some()),
            ] {
                if given {
                    return Err(ConfigError::NotApplicable {
                        flag,
                        context: format!(
                            "to --model {model}: its shape is fixed ({})",
                            crate::exact::training::shape_note(model)
                        ),
                        fix: format!("drop {flag}"),
                    });
                }
            }
            Ok(fixed)
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
    /// Checks every field, each error naming its flag and what it accepts, and resolves the
    /// estimator and K into the plan every training step follows.
    pub fn validate(&self) -> Result<StepPlan, ConfigError> {
        let plan = self.estimator.plan(self.k)?;
        error::at_least("--batch", self.batch, 1, "a minibatch")?;
        error::at_least("--epochs", self.epochs, 1, "training")?;
        error::positive("--lr", self.lr)?;
        error::at_least("--val-k", self.val_k, 1, "the validation bound L_K")?;
        if self.model.is_exact() {
            if let Some(data) = &self.data {
                return Err(ConfigError::NotApplicable {
                    flag: "--data",
                    context: format!(
                        "to --model {} ({}), which trains on its own generated data",
                        self.model,
                        data.display()
                    ),
                    fix: "drop --data, or use --model vae".into(),
                });
            }
        } else if self.arch.z_dim == 0
            || self.arch.hidden.is_empty()
            || self.arch.hidden.contains(&0)
        {
            return Err(ConfigError::range(
                "--hidden/--latent",
                format!("{:?}/{}", self.arch.hidden, self.arch.z_dim),
                "--hidden needs at least one positive size (e.g. 200,200) and --latent must be positive",
            ));
        }
        for (flag, v) in [
            ("--clip-encoder", self.adam.clip_encoder),
            ("--clip-decoder", self.adam.clip_decoder),
        ] {
            if let Some(v) = v {
                error::positive(flag, v)?;
            }
        }
        if let Some(limit) = self.train_limit {
            error::at_least("--train-limit", limit, 1, "training")?;
        }
        Ok(plan)
    }
}
