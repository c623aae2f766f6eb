//! The training loop: minibatches, the estimator between forward and backward, Adam, and
//! per-epoch validation, metrics and checkpoints.

mod data;
mod feed;
mod grad_var;
mod metrics;
mod observer;
mod run;
mod state;
mod test_jvi;

pub use feed::MinibatchFeed;
pub use grad_var::{GradVarPoint, GradVarProbe};
pub use metrics::{ChainMetrics, EpochMetrics};
pub use observer::TrainObserver;
pub use run::{BEST_CHECKPOINT_FILE, CHECKPOINT_FILE};
pub use state::STATE_FILE;
pub use test_jvi::{jvi_estimate, logs_jvi};

use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{cpu::CpuBackend, Backend, ChainOutcome, Minibatch, StepInputs};
use crate::config::{BackendChoice, CheckpointEvery, RunOptions, TrainConfig};
use crate::error::ConfigError;
use crate::estimators::StepPlan;
use crate::files;
use crate::model::{checkpoint, Params};
use crate::run_lock::DirLock;
use anyhow::{bail, Context, Result};
use data::TrainData;
use observer::EpochCallback;
use state::TrainState;
use std::path::Path;

/// Seeds the host-side level draws (SUMO, MLMC) from the run seed, apart from the shuffle.
const LEVEL_STREAM: u64 = 0x1E7E_15EE_D000_0001;

/// What one training step drew and cost.
#[derive(Clone, Debug, Default)]
pub struct StepInfo {
    /// Samples per datapoint the estimate used (mean over the batch).
    pub samples: f64,
    /// SUMO's tail length or MLMC's level.
    pub level: Option<u32>,
    /// Coupled chains: what the chains did.
    pub chains: Option<ChainOutcome>,
}

/// One training step as `plan` says: a coefficient-program step (SUMO's and MLMC's size
/// drawn from `levels`) or a coupled-chain step. The training loop and the benchmarks share it.
pub fn estimator_step(
    backend: &mut dyn Backend,
    plan: &StepPlan,
    x: Minibatch<'_>,
    step: &StepInputs,
    levels: &mut impl rand::Rng,
) -> Result<StepInfo> {
    let Some(draw) = plan.draw(levels) else {
        let chains = plan.coupling().expect("a plan without a draw is coupled");
        let o = backend.chain_minibatch(x, step, chains)?;
        let samples = o.particles.iter().map(|&p| p as f64).sum::<f64>() / step.batch as f64;
        return Ok(StepInfo {
            samples,
            level: None,
            chains: Some(o),
        });
    };
    backend.train_minibatch(x, step, draw.n, &draw.program)?;
    Ok(StepInfo {
        samples: draw.n as f64,
        level: draw.level,
        chains: None,
    })
}

/// What a run should say before it starts: MLMC's p outside the range with finite cost and
/// variance, the true target of a capped MLMC, and that DISIR is a reconstruction.
pub fn estimator_notes(plan: &StepPlan) -> Vec<String> {
    if plan.coupling().map(|c| c.kernel) == Some(crate::coupling::ChainKernel::Disir) {
        return vec!["note: coupled-disir is a labelled reconstruction (ISIR with a Metropolised index draw); the paper's DISIR could not be checked, see docs/estimators.md §3".into()];
    }
    // A capped MLMC's warning is its true target; an uncapped one warns about p's range.
    match plan.mlmc() {
        Some(m) => m
            .warnings(crate::estimators::mlmc::DEFAULT_BETA)
            .into_iter()
            .map(|w| format!("warning: {w}"))
            .collect(),
        None => Vec::new(),
    }
}

/// Builds the backend a configuration asks for. `auto` takes a hardware GPU adapter when
/// there is one and otherwise the CPU, saying so on stderr.
pub fn make_backend(
    choice: BackendChoice,
    params: &Params,
    threads: usize,
    adapter: Option<&str>,
) -> Result<Box<dyn Backend>> {
    crate::error::threads(threads)?;
    let gpu = |allow_software: bool| -> Result<Box<dyn Backend>> {
        let choice = AdapterChoice {
            name: adapter.map(str::to_string),
            allow_software,
            disable_subgroups: false,
        };
        Ok(Box::new(GpuBackend::new(
            &params.layout,
            &params.values,
            &choice,
        )?))
    };
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new(
            &params.layout,
            &params.values,
            threads,
        )?)),
        BackendChoice::Gpu => gpu(true),
        BackendChoice::Auto => match gpu(adapter.is_some()) {
            Ok(b) => Ok(b),
            Err(e) => {
                // One line, whatever the error's chain holds.
                let why = format!("{e:#}")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                eprintln!("notice: no usable GPU adapter ({why}); running on the CPU");
                Ok(Box::new(CpuBackend::new(
                    &params.layout,
                    &params.values,
                    threads,
                )?))
            }
        },
    }
}

/// What a finished run returns.
pub struct TrainOutcome {
    /// The epochs this call trained (a resumed run's: those after the resume).
    pub epochs: Vec<EpochMetrics>,
    pub params: Params,
}

/// Trains as `cfg` says, writing config.json, metrics.jsonl, checkpoint.safetensors and
/// train-state.safetensors into `cfg.out`. `on_epoch` receives each epoch's metrics as they
/// are written.
pub fn train(cfg: &TrainConfig, on_epoch: impl FnMut(&EpochMetrics)) -> Result<TrainOutcome> {
    train_observed(cfg, &mut EpochCallback(on_epoch))
}

/// [`train`], telling `observer` about the run's steps, validations and epochs as they happen.
pub fn train_observed(cfg: &TrainConfig, observer: &mut dyn TrainObserver) -> Result<TrainOutcome> {
    train_with(cfg, &RunOptions::default(), observer)
}

/// [`train_observed`] with how the run saves and reacts (`opts`). The run holds the lock of
/// `cfg.out` from before its first write to its end ([`DirLock`]); another process holding
/// it is an error naming it.
pub fn train_with(
    cfg: &TrainConfig,
    opts: &RunOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    start(cfg, opts, None, observer)
}

/// [`train_with`] in a run directory whose lock the caller holds (`uvae reproduce` keeps it
/// from choosing the run to writing its result).
pub fn train_claimed(
    cfg: &TrainConfig,
    opts: &RunOptions,
    lock: &DirLock,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    start(cfg, opts, Some(lock), observer)
}

fn start(
    cfg: &TrainConfig,
    opts: &RunOptions,
    held: Option<&DirLock>,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let plan = cfg.validate()?;
    check_lock(held, &cfg.out)?;
    let (train_data, params) = TrainData::load(cfg)?;
    check_batch(cfg, &train_data)?;
    // config.json and the checkpoints record the data's image shape (for the pictures).
    let recorded = TrainConfig {
        image_shape: train_data.image_shape().or(cfg.image_shape),
        ..cfg.clone()
    };
    let cfg = &recorded;
    // The backend first: a run that cannot start leaves --out as it was.
    let mut backend = make_backend(cfg.backend, &params, cfg.threads, cfg.adapter.as_deref())?;
    observer.on_backend(&backend.describe());
    // Validated, then claimed, then written: nothing in --out changes before the lock is ours.
    let _own = match held {
        Some(_) => None,
        None => Some(DirLock::claim_run(
            &cfg.out,
            &format!("--out {}", cfg.out.display()),
        )?),
    };
    prepare_out_dir(cfg, opts)?;
    backend.reset_optimizer();
    run::run_epochs(
        cfg,
        opts,
        &plan,
        &train_data,
        backend.as_mut(),
        observer,
        None,
    )
}

/// A lock handed in must be the one of the directory the run writes.
fn check_lock(held: Option<&DirLock>, dir: &Path) -> Result<()> {
    match held {
        Some(l) if l.dir() != dir => bail!(
            "internal: the lock held is {}'s, the run writes {}",
            l.dir().display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

fn check_batch(cfg: &TrainConfig, ds: &TrainData) -> Result<()> {
    let count = ds.train_count();
    if count < cfg.batch {
        bail!("--batch {} is larger than the {count} training datapoints; lower --batch or raise --train-limit", cfg.batch);
    }
    crate::config::check_step_count(cfg.epochs, count / cfg.batch)?;
    Ok(())
}

/// config.json: the run's configuration, with its [`RunOptions`] beside the fields.
fn config_json(cfg: &TrainConfig, opts: &RunOptions) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(cfg)?;
    if let (Some(map), serde_json::Value::Object(extra)) =
        (v.as_object_mut(), serde_json::to_value(opts)?)
    {
        map.extend(extra);
    }
    let mut json = serde_json::to_vec_pretty(&v)?;
    json.push(b'\n');
    Ok(json)
}

fn prepare_out_dir(cfg: &TrainConfig, opts: &RunOptions) -> Result<()> {
    std::fs::create_dir_all(&cfg.out).with_context(|| {
        format!(
            "cannot create output directory {} (--out)",
            cfg.out.display()
        )
    })?;
    files::remove_temps(&cfg.out)?;
    let metrics = cfg.out.join("metrics.jsonl");
    if metrics.exists() {
        std::fs::remove_file(&metrics)
            .with_context(|| format!("cannot replace {}", metrics.display()))?;
    }
    files::write_atomic(&cfg.out.join("config.json"), &config_json(cfg, opts)?)
}

/// What `--resume` may change: `--epochs` (to extend the run; never below the epochs it has
/// completed), `--checkpoint-every`, and (for `uvae reproduce`) the test bound's cadence,
/// which only adds lines' fields to metrics.jsonl.
#[derive(Clone, Debug, Default)]
pub struct ResumeChanges {
    pub epochs: Option<usize>,
    pub checkpoint_every: Option<CheckpointEvery>,
    pub test: Option<crate::config::TestBound>,
}

/// The configuration and options a run directory's config.json records.
pub fn load_run(dir: &Path) -> Result<(TrainConfig, RunOptions)> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "--resume {}: cannot read {}; is it a run directory of `uvae train`?",
            dir.display(),
            path.display()
        )
    })?;
    let cfg: TrainConfig = serde_json::from_slice(&bytes)
        .with_context(|| format!("--resume: {} is not a run configuration", path.display()))?;
    let opts: RunOptions = serde_json::from_slice(&bytes)
        .with_context(|| format!("--resume: {} is not a run configuration", path.display()))?;
    Ok((cfg, opts))
}

/// The epochs the training state in `dir` has completed.
pub fn completed_epochs(dir: &Path) -> Result<usize> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let state =
        TrainState::from_bytes(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
    Ok(state.pos.epoch)
}

/// Continues the run in `dir` from its training state, exactly as if it had not stopped:
/// the configuration comes from its config.json (with `changes`), metrics.jsonl keeps the
/// epochs the state has completed, and the checkpoint is rewritten from the state when a kill
/// left it behind.
///
/// It holds the lock of `dir` from before it reads the training state to its end; another
/// process holding it is an error naming it.
pub fn resume(
    dir: &Path,
    changes: &ResumeChanges,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    // config.json first: a directory that is no run gets no lock file.
    load_run(dir)?;
    let lock = DirLock::claim_run(dir, &format!("--resume {}", dir.display()))?;
    resume_claimed(&lock, changes, stop, observer)
}

/// [`resume`] of the run directory whose lock the caller holds.
pub fn resume_claimed(
    lock: &DirLock,
    changes: &ResumeChanges,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let dir = lock.dir();
    // Read under the lock: what a process that held it before left is what continues.
    let (mut cfg, mut opts) = load_run(dir)?;
    opts.stop = stop;
    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).with_context(|| {
        format!(
            "--resume {}: no training state {} (written by uvae train since --checkpoint-every)",
            dir.display(),
            state_path.display()
        )
    })?;
    let state = TrainState::from_bytes(&bytes)
        .with_context(|| format!("--resume: {} is damaged", state_path.display()))?;
    if let Some(e) = changes.epochs {
        if e < state.pos.epoch {
            return Err(ConfigError::range(
                "--epochs",
                e,
                format!(
                    "the run in {} has completed {} epochs; --resume can only keep or extend them",
                    dir.display(),
                    state.pos.epoch
                ),
            )
            .into());
        }
        cfg.epochs = e;
    }
    if let Some(c) = changes.checkpoint_every {
        opts.checkpoint_every = c;
    }
    if let Some(t) = changes.test {
        cfg.test = Some(t);
    }
    cfg.out = dir.to_path_buf();
    let plan = cfg.validate()?;
    let (train_data, params) = TrainData::load(&cfg)?;
    check_batch(&cfg, &train_data)?;
    state
        .check_fits(
            params.layout.len,
            train_data.train_count(),
            train_data.train_count() / cfg.batch,
        )
        .with_context(|| format!("--resume: {} does not fit the run", state_path.display()))?;
    files::remove_temps(dir)?;
    files::truncate_lines(&dir.join("metrics.jsonl"), state.pos.epoch)?;
    let config = config_json(&cfg, &opts)?;
    if std::fs::read(dir.join("config.json")).ok().as_deref() != Some(&config[..]) {
        files::write_atomic(&dir.join("config.json"), &config)?;
    }
    // A kill between the state's rename and the checkpoint's leaves the checkpoint behind.
    let ckpt_path = dir.join(CHECKPOINT_FILE);
    let ckpt_step = checkpoint::load(&ckpt_path)
        .ok()
        .and_then(|(_, meta)| run::checkpoint_step(&meta));
    if ckpt_step != Some(state.pos.step) {
        eprintln!(
            "notice: {} does not hold the training state's step {}; rewriting it from the state",
            ckpt_path.display(),
            state.pos.step
        );
        let p = Params {
            layout: params.layout.clone(),
            values: state.params.clone(),
        };
        checkpoint::save(&p, &run::metadata(&cfg, state.pos.step), &ckpt_path)?;
    }
    let mut backend = make_backend(cfg.backend, &params, cfg.threads, cfg.adapter.as_deref())?;
    observer.on_backend(&backend.describe());
    backend.reset_optimizer();
    run::run_epochs(
        &cfg,
        &opts,
        &plan,
        &train_data,
        backend.as_mut(),
        observer,
        Some(state),
    )
}

/// The backend's running sums are read every this many steps (and at an epoch's end), so
/// the console can show a running objective; the cadence does not depend on the console,
/// so every run sums its metrics the same way.
const STATS_EVERY: usize = 25;
