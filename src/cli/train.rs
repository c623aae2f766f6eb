//! `uvae train`: its flags, their one conversion into a validated [`TrainConfig`], and the
//! console lines of a run.

use super::common::{ChainArgs, CommonArgs, MlmcArgs};
use super::console::{Mode, TrainConsole};
use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use unbiased_vae::config::{
    self, CheckpointEvery, GradVarLog, OnNonFinite, OutputBias, RunOptions, TestBound, TrainConfig,
    DEFAULT_GRAD_VAR_REPS,
};
use unbiased_vae::error::ConfigError;
use unbiased_vae::estimators::{EncoderChoice, Estimator, EstimatorKind};
use unbiased_vae::model::ModelChoice;
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::run_lock::DirLock;
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
    /// Encoder gradient of sumo / mlmc-*: dreg (IWAE-DReG), rws (unbiased RWS), variance (min E[estimate^2]), iwae (IWAE on --encoder-k fresh samples of its own; Shi & Cornish).
    #[arg(long, value_enum, default_value = "dreg")]
    encoder: EncoderChoice,
    /// --encoder iwae: the encoder's own samples per datapoint, drawn after the estimator's.
    #[arg(long)]
    encoder_k: Option<usize>,
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
    /// constant; burda (stage i runs 3^i epochs at lr * 10^(-i/7)); or linear (lr * max(1 - 0.9 e / 3280, 0.1) at epoch e, Shi & Cornish).
    #[arg(long, value_enum, default_value = "constant")]
    schedule: Schedule,
    /// Use AMSGrad's running maximum of the second moment.
    #[arg(long)]
    amsgrad: bool,
    /// Adam's epsilon (PyTorch's default; Burda et al. and Shi & Cornish use 1e-4).
    #[arg(long, default_value_t = 1e-8, allow_negative_numbers = true)]
    adam_eps: f64,
    /// The decoder's output bias at initialisation: data-mean (the logit of the training images' mean pixel) or zero.
    #[arg(long, value_enum, default_value = "data-mean")]
    output_bias: OutputBias,
    /// Write the test bound L_{--test-k} into metrics.jsonl after every N epochs (and the last).
    #[arg(long, value_name = "N")]
    test_every: Option<usize>,
    /// Samples per datapoint of the test bound of --test-every [default: 1000].
    #[arg(long)]
    test_k: Option<usize>,
    /// The test bound of --test-every on the first N test images only.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Log the gradient's variance every N steps: --grad-var-reps estimates on one fixed
    /// minibatch, their noise apart from training's (the run's trajectory is unchanged);
    /// per encoder and decoder, the mean per-coordinate variance, the mean's norm and SNR.
    #[arg(long, value_name = "N")]
    grad_var_every: Option<usize>,
    /// Independent gradient estimates per point of --grad-var-every [default: 10].
    #[arg(long, value_name = "R")]
    grad_var_reps: Option<usize>,
    /// Clip the encoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_encoder: Option<f64>,
    /// Clip the decoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_decoder: Option<f64>,
    /// Model: vae (MNIST MLP VAE), hvae (two stochastic layers), cvae (the bottom rows
    /// given the top rows, --split-row), toy
    /// (linear-Gaussian, D = 20) or ppca (probabilistic PCA); toy and ppca train on their own
    /// generated data and report the exact log p(x).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    /// Hidden layer sizes of the encoder (the decoder mirrors them, cvae's prior p(z | c)
    /// repeats them); --model vae, hvae or cvae [default: 200,200].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Latent dimension (hvae: of z1); --model vae, hvae or cvae [default: 50; hvae 100].
    #[arg(long)]
    latent: Option<usize>,
    /// Hidden layer sizes of q(z2 | z1) (p(z1 | z2) mirrors them); --model hvae only
    /// [default: 100,100]. Its z1 takes --hidden and --latent [default: 200,200 and 100].
    #[arg(long, value_delimiter = ',')]
    hidden2: Option<Vec<usize>>,
    /// Dimension of z2; --model hvae only [default: 50].
    #[arg(long)]
    latent2: Option<usize>,
    /// Image rows in the context c (the rest are predicted); --model cvae only [default:
    /// half the rows, rounded down: 14 of MNIST's 28].
    #[arg(long)]
    split_row: Option<usize>,
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
    /// Save the checkpoint and training state mid-epoch every N steps (100), every so long
    /// (30s, 5m, 2h), or only at each epoch's end (epoch).
    #[arg(long, default_value = "5m")]
    checkpoint_every: CheckpointEvery,
    /// A step whose objective or gradient norm is NaN or infinite: stop (naming epoch, step,
    /// estimator and parameter group), or skip it and count it in metrics.jsonl.
    #[arg(long, value_enum, default_value = "stop")]
    on_nonfinite: OnNonFinite,
    /// Continue the run in RUN_DIR exactly where it stopped, with its config.json; only
    /// --epochs (to extend it), --checkpoint-every and --quiet may be given with it.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Replace the run in --out even when it holds another configuration's state.
    #[arg(long)]
    force: bool,
}

/// Samples per datapoint of `--test-every`'s bound unless `--test-k` says.
const DEFAULT_TEST_K: usize = 1000;

/// The flags `--resume` accepts beside itself: they do not change what the run computes.
const RESUME_FLAGS: [&str; 4] = ["resume", "epochs", "checkpoint_every", "quiet"];

impl TrainArgs {
    /// The run configuration these flags describe (validated by [`TrainConfig::validate`]).
    fn config(self) -> Result<TrainConfig, ConfigError> {
        if self.test_every.is_none() {
            for (flag, given) in [
                ("--test-k", self.test_k.is_some()),
                ("--test-limit", self.test_limit.is_some()),
            ] {
                if given {
                    return Err(ConfigError::NotApplicable {
                        flag,
                        context: "without --test-every".into(),
                        fix: "add --test-every N (epochs between test bounds) or drop it".into(),
                    });
                }
            }
        }
        if self.grad_var_every.is_none() && self.grad_var_reps.is_some() {
            return Err(ConfigError::NotApplicable {
                flag: "--grad-var-reps",
                context: "without --grad-var-every".into(),
                fix: "add --grad-var-every N (steps between measurements) or drop it".into(),
            });
        }
        let mut arch = unbiased_vae::model::resolve_arch(
            self.model,
            self.hidden,
            self.latent,
            self.hidden2,
            self.latent2,
        )?;
        unbiased_vae::model::apply_split_row(&mut arch, self.model, self.split_row)?;
        Ok(TrainConfig {
            model: self.model,
            data: self.common.data,
            binarize: self.common.binarize.unwrap_or_default(),
            image_shape: self.common.image_shape,
            valid_size: self.valid_size,
            train_limit: self.train_limit,
            arch,
            estimator: Estimator {
                unbiased: self.mlmc.options(self.encoder, self.encoder_k),
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
                eps: self.adam_eps,
                clip_encoder: self.clip_encoder,
                clip_decoder: self.clip_decoder,
                ..Default::default()
            },
            seed: self.seed,
            threads: self.common.threads,
            backend: self.common.backend,
            adapter: self.common.adapter,
            val_k: self.val_k,
            output_bias: self.output_bias,
            test: self.test_every.map(|every| TestBound {
                every,
                k: self.test_k.unwrap_or(DEFAULT_TEST_K),
                limit: self.test_limit,
            }),
            grad_var: self.grad_var_every.map(|every| GradVarLog {
                every,
                reps: self.grad_var_reps.unwrap_or(DEFAULT_GRAD_VAR_REPS),
            }),
            out: self.out,
        })
    }
}

/// SIGINT and SIGTERM set the returned flag: the run finishes its step, saves and stops. A
/// second signal exits at once.
pub(super) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second signal: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("signal received: finishing the step and saving (again to exit at once)");
    })?;
    Ok(stop)
}

/// With `--resume`, the flags typed that would change the run, as `--flag-name`.
fn refused_with_resume(matches: &ArgMatches) -> Option<String> {
    matches
        .ids()
        .map(|id| id.as_str())
        // Flattened argument structs appear as groups named after them (CommonArgs, ...).
        .filter(|id| !id.starts_with(char::is_uppercase) && !RESUME_FLAGS.contains(id))
        .find(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.replace('_', "-")))
}

pub fn run(args: TrainArgs, matches: Option<&ArgMatches>) -> Result<()> {
    let mode = Mode::detect(args.common.quiet);
    let given =
        |id: &str| matches.is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine));
    if let Some(dir) = args.resume.clone() {
        if let Some(flag) = matches.and_then(refused_with_resume) {
            return Err(ConfigError::Conflict {
                flag: "--resume",
                reason: format!(
                    "{flag} cannot be given with --resume: the run's configuration comes from {}; only --epochs (to extend the run), --checkpoint-every and --quiet may be given",
                    dir.join("config.json").display()
                ),
            }
            .into());
        }
        let changes = train::ResumeChanges {
            epochs: given("epochs").then_some(args.epochs),
            checkpoint_every: given("checkpoint_every").then_some(args.checkpoint_every),
            test: None,
        };
        return resume(&dir, &changes, mode);
    }
    let opts = RunOptions {
        on_nonfinite: args.on_nonfinite,
        checkpoint_every: args.checkpoint_every,
        stop: Some(stop_on_signals()?),
    };
    let force = args.force;
    let cfg = args.config()?;
    let plan = cfg.validate()?;
    for note in train::estimator_notes(&plan) {
        eprintln!("{note}");
    }
    // A run in progress there fails now, before the data and the backend load (the lock
    // itself is taken once they have, before the first write).
    DirLock::check_free(&cfg.out, &format!("--out {}", cfg.out.display()))?;
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
    let outcome = train::train_with(&cfg, &opts, &mut console)?;
    drop(console);
    finish(&cfg, &outcome);
    Ok(())
}

fn resume(dir: &Path, changes: &train::ResumeChanges, mode: Mode) -> Result<()> {
    let (mut cfg, _) = train::load_run(dir)?;
    if let Some(e) = changes.epochs {
        cfg.epochs = e;
    }
    let mut console = TrainConsole::new(mode);
    console.line(&format!(
        "resuming {} K={} batch={} for {} epochs in {}",
        cfg.estimator.kind,
        cfg.k,
        cfg.batch,
        cfg.epochs,
        dir.display()
    ));
    let outcome = train::resume(dir, changes, Some(stop_on_signals()?), &mut console)?;
    drop(console);
    cfg.out = dir.to_path_buf();
    finish(&cfg, &outcome);
    Ok(())
}

fn finish(cfg: &TrainConfig, outcome: &train::TrainOutcome) {
    let ckpt = cfg.out.join(train::CHECKPOINT_FILE);
    match outcome.epochs.last() {
        Some(m) => println!(
            "done: final validation L_{} = {:.3}; checkpoint {}",
            cfg.val_k,
            m.val_lk,
            ckpt.display()
        ),
        None => println!(
            "done: the run had already completed its {} epochs (--epochs extends it); checkpoint {}",
            cfg.epochs,
            ckpt.display()
        ),
    }
}
