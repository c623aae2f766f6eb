//! `uvae train`: its flags, their one conversion into a validated [`TrainConfig`], and the
//! console lines of a run.

use super::common::{ChainArgs, CommonArgs, MlmcArgs};
use super::console::{Mode, TrainConsole};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::config::{self, TrainConfig};
use unbiased_vae::error::ConfigError;
use unbiased_vae::estimators::{EncoderChoice, Estimator, EstimatorKind};
use unbiased_vae::model::ModelChoice;
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::train;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Gradient estimator: elbo, iwae, stl, iwae-dreg, rws, rws-dreg, dreg, jvi, jvi-dreg, sumo, mlmc-ss, mlmc-rr, coupled-pimh, coupled-isir, coupled-disir (a labelled reconstruction of the paper's DISIR, see docs/estimators.md §3).
    #[arg(long, default_value = "iwae")]
    estimator: EstimatorKind,
    /// Samples per datapoint (SUMO: the minimum m; MLMC: unused, see --mlmc-i0; coupled-*: particles per set).
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    chains: ChainArgs,
    #[command(flatten)]
    mlmc: MlmcArgs,
    /// Encoder gradient of sumo / mlmc-*: dreg (IWAE-DReG), rws (unbiased RWS), variance (min E[estimate^2]).
    #[arg(long, value_enum, default_value = "dreg")]
    encoder: EncoderChoice,
    /// DReG(alpha) mixing weight (estimator dreg only): 0 is IWAE-DReG, 1 is RWS-DReG.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    alpha: f64,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Adam learning rate (the first stage's under --schedule burda).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// constant, or burda (stage i runs 3^i epochs at lr * 10^(-i/7)).
    #[arg(long, value_enum, default_value = "constant")]
    schedule: Schedule,
    /// Use AMSGrad's running maximum of the second moment.
    #[arg(long)]
    amsgrad: bool,
    /// Clip the encoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_encoder: Option<f64>,
    /// Clip the decoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_decoder: Option<f64>,
    /// Model: vae (MNIST MLP VAE), toy (linear-Gaussian, D = 20) or ppca (probabilistic PCA);
    /// toy and ppca train on their own generated data and report the exact log p(x).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    /// Hidden layer sizes of the encoder (the decoder mirrors them); --model vae only
    /// [default: 200,200].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Latent dimension; --model vae only [default: 50].
    #[arg(long)]
    latent: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training images held back for validation (the last ones).
    #[arg(long, default_value_t = 400)]
    valid_size: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Samples per datapoint of the validation bound after each epoch.
    #[arg(long, default_value_t = 200)]
    val_k: usize,
    /// Run directory.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Replace the run in --out even when it holds another configuration's state.
    #[arg(long)]
    force: bool,
}

impl TrainArgs {
    /// The run configuration these flags describe (validated by [`TrainConfig::validate`]).
    fn config(self) -> Result<TrainConfig, ConfigError> {
        Ok(TrainConfig {
            model: self.model,
            data: self.common.data,
            valid_size: self.valid_size,
            train_limit: self.train_limit,
            arch: config::resolve_arch(self.model, self.hidden, self.latent)?,
            estimator: Estimator {
                unbiased: self.mlmc.options(self.encoder),
                chains: self.chains.options(),
                ..Estimator::new(self.estimator, self.alpha)
            },
            k: self.k,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            schedule: self.schedule,
            adam: AdamConfig {
                amsgrad: self.amsgrad,
                clip_encoder: self.clip_encoder,
                clip_decoder: self.clip_decoder,
                ..Default::default()
            },
            seed: self.seed,
            threads: self.common.threads,
            backend: self.common.backend,
            adapter: self.common.adapter,
            val_k: self.val_k,
            out: self.out,
        })
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mode = Mode::detect(args.common.quiet);
    let force = args.force;
    let cfg = args.config()?;
    let plan = cfg.validate()?;
    for note in train::estimator_notes(&plan) {
        eprintln!("{note}");
    }
    if let Some(notice) = config::check_out_dir(&cfg, force)? {
        eprintln!("{notice}");
    }
    let mut console = TrainConsole::new(mode);
    console.line(&format!(
        "training {} K={} batch={} for {} epochs -> {}",
        cfg.estimator.kind,
        cfg.k,
        cfg.batch,
        cfg.epochs,
        cfg.out.display()
    ));
    let outcome = train::train_observed(&cfg, &mut console)?;
    drop(console);
    let last = outcome.epochs.last().map(|m| m.val_lk).unwrap_or(f64::NAN);
    println!(
        "done: final validation L_{} = {last:.3}; checkpoint {}",
        cfg.val_k,
        cfg.out.join("checkpoint.safetensors").display()
    );
    Ok(())
}
