//! The validated run configuration, written to config.json beside every run.

use crate::data::{Binarization, ImageShape};
use crate::error::{self, ConfigError};
use crate::estimators::{Estimator, StepPlan};
use crate::model::{Arch, ModelChoice, MAX_LAYER};
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

/// The decoder's output bias at initialisation (`--output-bias`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OutputBias {
    /// The logit of the training images' mean pixel, clipped to [1e-3, 1 - 1e-3] (Burda et
    /// al.'s and Shi & Cornish's reference code), so training starts at the marginal pixel
    /// distribution.
    #[default]
    DataMean,
    /// Zero, like the other biases.
    Zero,
}

/// The test bound during training (`--test-every`, `--test-k`, `--test-limit`): L_k on the
/// first `limit` test images (all when None) after every `every`-th epoch and the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestBound {
    pub every: usize,
    pub k: usize,
    pub limit: Option<usize>,
}

impl TestBound {
    /// Whether the bound is computed after 0-based `epoch` of a run of `epochs`.
    pub fn due(&self, epoch: usize, epochs: usize) -> bool {
        (epoch + 1).is_multiple_of(self.every) || epoch + 1 == epochs
    }
}

/// Gradient variance during training (`--grad-var-every`, `--grad-var-reps`): after every
/// `every`-th step, `reps` independent gradient estimates on one fixed minibatch (the first
/// `--batch` training datapoints), with noise from their own Philox stream, summarised per
/// parameter group into metrics.jsonl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradVarLog {
    pub every: usize,
    pub reps: usize,
}

/// Replications per point of `--grad-var-every` unless `--grad-var-reps` says: enough for a
/// per-coordinate variance whose mean over ~10^5 coordinates is steady, at ten extra
/// forward and backward passes per point.
pub const DEFAULT_GRAD_VAR_REPS: usize = 10;

/// The most parameters a `--model vae` run accepts.
pub const MAX_PARAMS: usize = 1 << 28;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// vae (MNIST), or toy / ppca trained on their own generated data. Absent in
    /// configurations written before it existed: vae.
    #[serde(default)]
    pub model: ModelChoice,
    /// IDX folder, .npy folder, .npz or MAT-file (`--data`); None: the bundled MNIST.
    pub data: Option<PathBuf>,
    /// `--binarize`. Absent in configurations written before it existed: dynamic, as
    /// those runs did.
    #[serde(default)]
    pub binarize: Binarization,
    /// `--image-shape`; once the run has loaded its data, the data's image shape (it only
    /// shapes the pictures, so it is not run-defining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<ImageShape>,
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
    /// The decoder output bias at initialisation. Absent in configurations written before
    /// it existed: the data mean, as those runs did.
    #[serde(default)]
    pub output_bias: OutputBias,
    /// The test bound during training, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestBound>,
    /// The gradient's variance during training, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_var: Option<GradVarLog>,
    pub out: PathBuf,
}

impl TrainConfig {
    /// How this run reads its `--data`.
    pub fn load_options(&self) -> crate::data::LoadOptions {
        crate::data::LoadOptions {
            valid_size: self.valid_size,
            binarize: self.binarize,
            image_shape: self.image_shape,
        }
    }

    /// Checks every field, each error naming its flag and what it accepts, and resolves the
    /// estimator and K into the plan every training step follows.
    pub fn validate(&self) -> Result<StepPlan, ConfigError> {
        let plan = self.estimator.plan(self.k)?;
        error::at_least("--batch", self.batch, 1, "a minibatch")?;
        error::at_least("--epochs", self.epochs, 1, "training")?;
        error::positive("--lr", self.lr)?;
        error::at_least("--val-k", self.val_k, 1, "the validation bound L_K")?;
        error::at_most(
            "--val-k",
            self.val_k,
            error::MAX_SAMPLES,
            "the validation bound L_K",
        )?;
        error::threads(self.threads)?;
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
        } else {
            if let Some(top) = &self.arch.top {
                crate::model::validate_top(top)?;
            }
            for &h in &self.arch.hidden {
                error::at_most("--hidden", h, MAX_LAYER, "a hidden layer")?;
            }
            error::at_most("--latent", self.arch.z_dim, MAX_LAYER, "the latent")?;
            let dims = self.arch.encoder_dims();
            let params: usize = 2 * dims
                .windows(2)
                .map(|io| io[0] * io[1] + io[1])
                .sum::<usize>();
            if params > MAX_PARAMS {
                return Err(ConfigError::range(
                    "--hidden/--latent",
                    format!("{:?}/{}", self.arch.hidden, self.arch.z_dim),
                    format!("the model would hold {params} parameters; at most {MAX_PARAMS} (1 GiB of f32 per copy)"),
                ));
            }
            error::at_least(
                "--valid-size",
                self.valid_size,
                1,
                "the validation after each epoch",
            )?;
        }
        error::positive("--adam-eps", self.adam.eps)?;
        if let Some(t) = &self.test {
            if self.model.is_exact() {
                return Err(ConfigError::NotApplicable {
                    flag: "--test-every",
                    context: format!("to --model {}, which has no test images", self.model),
                    fix: "drop --test-every; the run reports the exact log p(x) instead".into(),
                });
            }
            error::at_least("--test-every", t.every, 1, "the test bound")?;
            error::at_least("--test-k", t.k, 1, "the test bound L_K")?;
            error::at_most("--test-k", t.k, error::MAX_SAMPLES, "the test bound L_K")?;
            if let Some(limit) = t.limit {
                error::at_least("--test-limit", limit, 1, "the test bound")?;
            }
        }
        if self.model.is_exact() && self.binarize != Binarization::default() {
            return Err(ConfigError::NotApplicable {
                flag: "--binarize",
                context: format!("to --model {}: it trains on continuous data", self.model),
                fix: "drop --binarize".into(),
            });
        }
        if let Some(g) = &self.grad_var {
            error::at_least("--grad-var-every", g.every, 1, "the gradient variance")?;
            error::at_least(
                "--grad-var-reps",
                g.reps,
                2,
                "a variance (two estimates at least)",
            )?;
            if plan.coupling().is_some() {
                return Err(ConfigError::NotApplicable {
                    flag: "--grad-var-every",
                    context: format!(
                        "to --estimator {}: a coupled-chain step has no standalone gradient pass",
                        self.estimator.kind.name()
                    ),
                    fix: "drop --grad-var-every, or pick a coefficient estimator".into(),
                });
            }
        }
        if self.model.is_exact() && self.output_bias != OutputBias::default() {
            return Err(ConfigError::NotApplicable {
                flag: "--output-bias",
                context: format!("to --model {}: its decoder is linear-Gaussian", self.model),
                fix: "drop --output-bias".into(),
            });
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

/// The steps of a run are numbered in 32 bits (the noise address): `--epochs` times the
/// steps per epoch must fit.
pub fn check_step_count(epochs: usize, steps_per_epoch: usize) -> Result<(), ConfigError> {
    let max = u32::MAX as usize / steps_per_epoch.max(1);
    error::at_most(
        "--epochs",
        epochs,
        max,
        &format!("with {steps_per_epoch} steps per epoch, a run of at most 2^32 steps"),
    )
}

/// Fields of config.json that do not change what a run computes: a rerun that differs only
/// in them replaces the run in place.
const NOT_RUN_DEFINING: [&str; 7] = [
    "out",
    "image_shape",
    "threads",
    "backend",
    "adapter",
    "on_nonfinite",
    "checkpoint_every",
];

/// Whether `cfg.out` may receive this run. A directory holding another run's state
/// (config.json of a different configuration, or a checkpoint or metrics of no readable
/// configuration) is refused unless `force`, so a typo cannot overwrite a long run. Returns
/// the notice to print when a run is replaced.
pub fn check_out_dir(cfg: &TrainConfig, force: bool) -> anyhow::Result<Option<String>> {
    let dir = &cfg.out;
    let config = dir.join("config.json");
    let state = ["checkpoint.safetensors", "metrics.jsonl"]
        .into_iter()
        .find(|f| dir.join(f).exists());
    let previous = match std::fs::read(&config) {
        Ok(bytes) => Some(serde_json::from_slice::<serde_json::Value>(&bytes).ok()),
        Err(_) if state.is_none() => return Ok(None),
        Err(_) => None,
    };
    let why = match previous {
        Some(Some(old)) => {
            let differing = differing_fields(&old, &serde_json::to_value(cfg)?);
            if differing.is_empty() {
                return Ok(Some(format!(
                    "notice: --out {} holds a run of the same configuration; replacing it",
                    dir.display()
                )));
            }
            format!("another run's state (its {} differ)", differing.join(", "))
        }
        Some(None) => "a config.json that is not a uvae run configuration".to_string(),
        None => format!("a {} but no config.json", state.unwrap_or("run file")),
    };
    if force {
        return Ok(Some(format!(
            "notice: --out {} held {why}; replacing it (--force)",
            dir.display()
        )));
    }
    anyhow::bail!(
        "--out {} holds {why}; choose another --out, or pass --force to replace it",
        dir.display()
    )
}

/// Run-defining fields added after runs were written, and the value their absence means
/// (so a rerun of an older run's command still matches it).
const ADDED_LATER: [(&str, &str); 1] = [("binarize", "dynamic")];

/// The run-defining top-level fields in which two config.json values differ.
pub(crate) fn differing_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let value = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k).cloned().or_else(|| {
            ADDED_LATER
                .iter()
                .find(|(f, _)| *f == k)
                .map(|(_, v)| serde_json::Value::from(*v))
        })
    };
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !NOT_RUN_DEFINING.contains(&k.as_str()) && value(o, k) != value(n, k))
        .map(|k| k.to_string())
        .collect()
}

/// What a run does with a training step whose objective or gradient norm is NaN or infinite
/// (Adam never applies a non-finite gradient, on either backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnNonFinite {
    /// Stop with a message naming the epoch, the step, the estimator and the parameter
    /// group; the last good checkpoint stays as it was.
    #[default]
    Stop,
    /// Leave such steps out (no update) and count them in metrics.jsonl (`nonfinite_steps`).
    Skip,
}

/// How often a run saves its checkpoint and training state in the middle of an epoch
/// (`--checkpoint-every`): every N steps (`100`), every so many seconds, minutes or hours
/// (`30s`, `5m`, `2h`), or only at the end of each epoch (`epoch`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CheckpointEvery {
    Steps(u64),
    Seconds(f64),
    Epoch,
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery::Seconds(300.0)
    }
}

impl std::str::FromStr for CheckpointEvery {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::range(
                "--checkpoint-every",
                format!("'{s}'"),
                "give a positive number of steps (100), a time (30s, 5m, 2h) or 'epoch'",
            )
        };
        let t = s.trim();
        if t == "epoch" {
            return Ok(CheckpointEvery::Epoch);
        }
        if let Ok(n) = t.parse::<u64>() {
            return if n > 0 {
                Ok(CheckpointEvery::Steps(n))
            } else {
                Err(bad())
            };
        }
        let (num, unit) = t.split_at(t.len().saturating_sub(1));
        let scale = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        match num.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(CheckpointEvery::Seconds(v * scale)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for CheckpointEvery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointEvery::Steps(n) => write!(f, "{n}"),
            CheckpointEvery::Seconds(s) => write!(f, "{s}s"),
            CheckpointEvery::Epoch => write!(f, "epoch"),
        }
    }
}

impl Serialize for CheckpointEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CheckpointEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a run saves and reacts, beside what it computes ([`TrainConfig`]): written into
/// config.json with it (`on_nonfinite`, `checkpoint_every`) and read back by `--resume`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunOptions {
    #[serde(default)]
    pub on_nonfinite: OnNonFinite,
    #[serde(default)]
    pub checkpoint_every: CheckpointEvery,
    /// Set (by a signal handler) to finish the current step, save, and stop.
    #[serde(skip)]
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_from_before_binarize_matches_dynamic_only() {
        let old = serde_json::json!({"k": 5, "out": "a"});
        let new = |b: &str| serde_json::json!({"k": 5, "out": "b", "binarize": b, "image_shape": "28x28"});
        assert!(differing_fields(&old, &new("dynamic")).is_empty());
        assert_eq!(differing_fields(&old, &new("threshold")), ["binarize"]);
        assert_eq!(differing_fields(&new("none"), &old), ["binarize"]);
    }

    #[test]
    fn checkpoint_every_parses_steps_times_and_epoch() {
        assert_eq!("100".parse(), Ok(CheckpointEvery::Steps(100)));
        assert_eq!("5m".parse(), Ok(CheckpointEvery::Seconds(300.0)));
        assert_eq!("1.5h".parse(), Ok(CheckpointEvery::Seconds(5400.0)));
        assert_eq!("epoch".parse(), Ok(CheckpointEvery::Epoch));
        for bad in ["0", "-3", "5x", "m", "", "0s", "nans"] {
            let e = bad.parse::<CheckpointEvery>().unwrap_err();
            assert_eq!(e.flag(), "--checkpoint-every", "{bad}");
        }
        for c in [
            CheckpointEvery::Steps(7),
            CheckpointEvery::Seconds(30.0),
            CheckpointEvery::Epoch,
        ] {
            assert_eq!(c.to_string().parse(), Ok(c));
        }
    }
}
