//! The training loop: minibatches, the estimator between forward and backward, Adam, and
//! per-epoch validation, metrics and checkpoints.

mod data;
mod metrics;
mod observer;

pub use metrics::{ChainMetrics, EpochMetrics};
pub use observer::TrainObserver;

use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{cpu::CpuBackend, Backend, ChainOutcome, Noise};
use crate::config::{BackendChoice, TrainConfig};
use crate::estimators::StepPlan;
use crate::eval;
use crate::files;
use crate::model::{checkpoint, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
use anyhow::{bail, Context, Result};
use data::TrainData;
use metrics::EpochSums;
use observer::EpochCallback;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;

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
#[allow(clippy::too_many_arguments)]
pub fn estimator_step(
    backend: &mut dyn Backend,
    plan: &StepPlan,
    x: &[f32],
    batch: usize,
    noise: &Noise,
    levels: &mut impl rand::Rng,
    adam: &AdamConfig,
    lr: f64,
) -> Result<StepInfo> {
    let Some(draw) = plan.draw(levels) else {
        let chains = plan.coupling().expect("a plan without a draw is coupled");
        let o = backend.chain_step(x, batch, noise, chains, adam, lr)?;
        let samples = o.particles.iter().map(|&p| p as f64).sum::<f64>() / batch as f64;
        return Ok(StepInfo {
            samples,
            level: None,
            chains: Some(o),
        });
    };
    backend.train_step(x, batch, draw.n, noise, &draw.program, adam, lr)?;
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
    pub epochs: Vec<EpochMetrics>,
    pub params: Params,
}

/// Trains as `cfg` says, writing config.json, metrics.jsonl and checkpoint.safetensors into
/// `cfg.out`. `on_epoch` receives each epoch's metrics as they are written.
pub fn train(cfg: &TrainConfig, on_epoch: impl FnMut(&EpochMetrics)) -> Result<TrainOutcome> {
    train_observed(cfg, &mut EpochCallback(on_epoch))
}

/// [`train`], telling `observer` about the run's steps, validations and epochs as they happen.
pub fn train_observed(cfg: &TrainConfig, observer: &mut dyn TrainObserver) -> Result<TrainOutcome> {
    let plan = cfg.validate()?;
    let (train_data, params) = TrainData::load(cfg)?;
    let count = train_data.train_count();
    if count < cfg.batch {
        bail!("--batch {} is larger than the {count} training datapoints; lower --batch or raise --train-limit", cfg.batch);
    }
    crate::config::check_step_count(cfg.epochs, count / cfg.batch)?;
    // The backend first: a run that cannot start leaves --out as it was.
    let mut backend = make_backend(cfg.backend, &params, cfg.threads, cfg.adapter.as_deref())?;
    prepare_out_dir(cfg)?;
    backend.reset_optimizer();
    run_epochs(cfg, &plan, &train_data, backend.as_mut(), observer)
}

fn prepare_out_dir(cfg: &TrainConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.out).with_context(|| {
        format!(
            "cannot create output directory {} (--out)",
            cfg.out.display()
        )
    })?;
    let metrics = cfg.out.join("metrics.jsonl");
    if metrics.exists() {
        std::fs::remove_file(&metrics)
            .with_context(|| format!("cannot replace {}", metrics.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(cfg)?;
    json.push(b'\n');
    files::write_atomic(&cfg.out.join("config.json"), &json)
}

/// The backend's running sums are read every this many steps (and at an epoch's end), so
/// the console can show a running objective; the cadence does not depend on the console,
/// so every run sums its metrics the same way.
const STATS_EVERY: usize = 25;

fn run_epochs(
    cfg: &TrainConfig,
    plan: &StepPlan,
    ds: &TrainData,
    backend: &mut dyn Backend,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let b = cfg.batch;
    let steps_per_epoch = ds.train_count() / b;
    let (val_x, val_count) = ds.validation();
    let mut x = vec![0.0f32; b * ds.dim()];
    let mut level_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ LEVEL_STREAM);
    let mut order: Vec<usize> = (0..ds.train_count()).collect();
    let mut shuffle_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut step: u32 = 0;
    let mut history = Vec::new();
    let meta = metadata(cfg);
    observer.on_start(cfg.epochs, steps_per_epoch, b);
    for epoch in 0..cfg.epochs {
        let lr = cfg.schedule.lr(cfg.lr, epoch);
        order.shuffle(&mut shuffle_rng);
        let start = std::time::Instant::now();
        let mut sums = EpochSums::default();
        for batch_idx in order.chunks_exact(b) {
            ds.minibatch(batch_idx, cfg.seed, step, &mut x);
            let noise = Noise {
                seed: cfg.seed,
                stream: Stream::Eps,
                step,
                first_datapoint: 0,
                first_sample: 0,
            };
            let info = estimator_step(backend, plan, &x, b, &noise, &mut level_rng, &cfg.adam, lr)?;
            sums.push_step(info, plan.coupling());
            step += 1;
            let running = if sums.steps % STATS_EVERY == 0 {
                sums.push_stats(&backend.take_stats()?);
                Some(sums.objective / sums.steps as f64)
            } else {
                None
            };
            observer.on_step(epoch + 1, sums.steps, running);
        }
        sums.push_stats(&backend.take_stats()?);
        let obj = sums.objective;
        if !obj.is_finite() {
            bail!(
                "training diverged in epoch {}: the mean objective is {obj}; lower --lr or set --clip-encoder/--clip-decoder",
                epoch + 1
            );
        }
        let seconds = start.elapsed().as_secs_f64();
        observer.on_validation(epoch + 1, val_count);
        let val = eval::log_likelihood(
            backend,
            &val_x,
            val_count,
            cfg.val_k,
            eval::DEFAULT_EVAL_SEED,
            0,
        )?;
        let params = Params {
            layout: backend.layout().clone(),
            values: backend.params()?,
        };
        let (exact_log_px, optimum_log_px) = match ds {
            TrainData::Exact { model, .. } => (
                Some(model.mean_exact_log_px(&params)?),
                model.optimum_log_px(),
            ),
            TrainData::Images(_) => (None, None),
        };
        let s = steps_per_epoch as f64;
        let m = EpochMetrics {
            epoch: epoch + 1,
            steps: steps_per_epoch,
            lr,
            train_objective: obj / s,
            val_lk: val.mean,
            val_lk_stderr: val.stderr,
            val_k: cfg.val_k,
            seconds,
            datapoints_per_s: (steps_per_epoch * b) as f64 / seconds,
            grad_norm_encoder: sums.grad_norm_encoder / s,
            grad_norm_decoder: sums.grad_norm_decoder / s,
            samples_per_datapoint: sums.samples / s,
            expected_samples_per_datapoint: plan.expected_samples(),
            chains: sums.chain_metrics(),
            levels: (!sums.levels.is_empty()).then_some(sums.levels),
            exact_log_px,
            optimum_log_px,
        };
        files::append_jsonl(&cfg.out.join("metrics.jsonl"), &serde_json::to_value(&m)?)?;
        checkpoint::save(&params, &meta, &cfg.out.join("checkpoint.safetensors"))?;
        observer.on_epoch(&m);
        history.push(m);
    }
    let params = Params {
        layout: backend.layout().clone(),
        values: backend.params()?,
    };
    Ok(TrainOutcome {
        epochs: history,
        params,
    })
}

/// Checkpoint metadata: one key, so the header's bytes do not depend on hash-map order
/// and identical runs write identical files.
fn metadata(cfg: &TrainConfig) -> HashMap<String, String> {
    let value = serde_json::json!({
        "format": "unbiased-vae",
        "model": cfg.model.name(),
        "estimator": cfg.estimator.kind.name(),
        "k": cfg.k,
        "seed": cfg.seed,
        "config": cfg,
    });
    HashMap::from([("uvae".to_string(), value.to_string())])
}
