//! The training loop: minibatches, the estimator between forward and backward, Adam, and
//! per-epoch validation, metrics and checkpoints.

use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{cpu::CpuBackend, Backend, ChainOutcome, Noise};
use crate::config::{BackendChoice, TrainConfig};
use crate::data::{self, Dataset};
use crate::estimators::StepPlan;
use crate::eval;
use crate::exact::training::ExactTraining;
use crate::files;
use crate::model::{checkpoint, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::HashMap;

/// Seeds the host-side level draws (SUMO, MLMC) from the run seed, apart from the shuffle.
const LEVEL_STREAM: u64 = 0x1E7E_15EE_D000_0001;

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub steps: usize,
    pub lr: f64,
    /// Mean over the epoch's minibatches of the estimator's objective (nats per datapoint).
    pub train_objective: f64,
    /// Validation L_K, mean and standard error over the validation images.
    pub val_lk: f64,
    pub val_lk_stderr: f64,
    pub val_k: usize,
    /// Seconds of training steps in this epoch (validation excluded).
    pub seconds: f64,
    pub datapoints_per_s: f64,
    /// Mean L2 norm of the minibatch gradients, encoder (phi) and decoder (theta).
    pub grad_norm_encoder: f64,
    pub grad_norm_decoder: f64,
    /// Mean samples per datapoint per step this epoch (the cost), and its expectation (None
    /// for the coupled chains, whose cost follows the meeting time: `samples_per_datapoint` is
    /// then its running estimate and `chains` the meeting-time distribution).
    pub samples_per_datapoint: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_samples_per_datapoint: Option<f64>,
    /// SUMO's tail lengths K or MLMC's levels drawn this epoch: value -> minibatches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<std::collections::BTreeMap<u32, usize>>,
    /// Coupled chains: meeting times and cost this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chains: Option<ChainMetrics>,
    /// --model toy / ppca: the exact mean log p(x) over the training data under the current
    /// decoder (closed form, f64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_log_px: Option<f64>,
    /// --model toy: the maximum-likelihood optimum's mean log p(x) (mu* = the data mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimum_log_px: Option<f64>,
}

/// A coupled-chain epoch: one meeting time per datapoint and step.
#[derive(Clone, Debug, Serialize)]
pub struct ChainMetrics {
    pub meeting_time_mean: f64,
    pub meeting_time_p90: usize,
    pub meeting_time_max: usize,
    /// Datapoint-steps stopped by the iteration cap before meeting: their gradients are
    /// truncated, hence biased.
    pub capped: usize,
    /// Mean time indices per step: the batch runs until its slowest datapoint is done.
    pub iterations_mean: f64,
    /// Mean particles per datapoint per step the batch computed (every datapoint draws until
    /// the slowest is done); `samples_per_datapoint` counts only those each estimate used.
    pub computed_samples_per_datapoint: f64,
}

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

/// What a run trains on: binarized images (the VAE), or an exact model's own continuous
/// data, where validation is on the same training data (the exact log p(x) is over it too).
enum TrainData {
    Images(Dataset),
    Exact {
        model: ExactTraining,
        x: Vec<f32>,
        count: usize,
    },
}

impl TrainData {
    fn dim(&self) -> usize {
        match self {
            TrainData::Images(ds) => ds.dim(),
            TrainData::Exact { model, .. } => model.dim(),
        }
    }
    fn train_count(&self) -> usize {
        match self {
            TrainData::Images(ds) => ds.train.count,
            TrainData::Exact { count, .. } => *count,
        }
    }
    /// (validation x, count).
    fn validation(&self) -> (Vec<f32>, usize) {
        match self {
            TrainData::Images(ds) => (data::binarize_eval(&ds.valid), ds.valid.count),
            TrainData::Exact { x, count, .. } => (x.clone(), *count),
        }
    }
    /// Fills `out` with the minibatch `indices` (binarized afresh per step for images).
    fn minibatch(&self, indices: &[usize], seed: u64, step: u32, out: &mut [f32]) {
        match self {
            TrainData::Images(ds) => data::binarize_train(&ds.train, indices, seed, step, out),
            TrainData::Exact { model, x, .. } => {
                let d = model.dim();
                for (row, &i) in out.chunks_exact_mut(d).zip(indices) {
                    row.copy_from_slice(&x[i * d..(i + 1) * d]);
                }
            }
        }
    }
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
                eprintln!("notice: no usable GPU adapter ({e:#}); running on the CPU");
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
/// `cfg.out`. `progress` receives each epoch's metrics as they are written.
pub fn train(cfg: &TrainConfig, mut progress: impl FnMut(&EpochMetrics)) -> Result<TrainOutcome> {
    let plan = cfg.validate()?;
    let (train_data, params) = match ExactTraining::new(cfg.model, cfg.seed) {
        None => {
            let mut ds = data::load_or_bundled(cfg.data.as_deref(), cfg.valid_size)?;
            if let Some(limit) = cfg.train_limit {
                if limit < ds.train.count {
                    ds.train = ds.train.slice(0..limit);
                }
            }
            let mut arch = cfg.arch.clone();
            arch.x_dim = ds.dim();
            let params = Params::init(&arch, cfg.seed, Some(&ds.train_mean()));
            (TrainData::Images(ds), params)
        }
        Some(model) => {
            let params = model.initial_params(cfg.seed);
            let count = cfg.train_limit.unwrap_or(usize::MAX).min(model.count());
            let mut x = model.data_f32();
            x.truncate(count * model.dim());
            (TrainData::Exact { model, x, count }, params)
        }
    };
    let count = train_data.train_count();
    if count < cfg.batch {
        bail!("--batch {} is larger than the {count} training datapoints; lower --batch or raise --train-limit", cfg.batch);
    }
    prepare_out_dir(cfg)?;
    let mut backend = make_backend(cfg.backend, &params, cfg.threads, cfg.adapter.as_deref())?;
    backend.reset_optimizer();
    let outcome = run_epochs(cfg, &plan, &train_data, backend.as_mut(), &mut progress)?;
    Ok(outcome)
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

fn run_epochs(
    cfg: &TrainConfig,
    plan: &StepPlan,
    ds: &TrainData,
    backend: &mut dyn Backend,
    progress: &mut impl FnMut(&EpochMetrics),
) -> Result<TrainOutcome> {
    let xd = ds.dim();
    let b = cfg.batch;
    let steps_per_epoch = ds.train_count() / b;
    let (val_x, val_count) = ds.validation();
    let mut x = vec![0.0f32; b * xd];
    let mut level_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ LEVEL_STREAM);
    let expected_samples = plan.expected_samples();
    let chain_cfg = plan.coupling();
    let mut order: Vec<usize> = (0..ds.train_count()).collect();
    let mut shuffle_rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut step: u32 = 0;
    let mut history = Vec::new();
    let meta = metadata(cfg);
    for epoch in 0..cfg.epochs {
        let lr = cfg.schedule.lr(cfg.lr, epoch);
        order.shuffle(&mut shuffle_rng);
        let start = std::time::Instant::now();
        let mut samples = 0.0;
        let mut levels: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        let (mut meet, mut capped) = (Vec::new(), Vec::new());
        let (mut iterations, mut computed) = (0usize, 0usize);
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
            samples += info.samples;
            if let Some(level) = info.level {
                *levels.entry(level).or_default() += 1;
            }
            if let (Some(o), Some(c)) = (info.chains, &chain_cfg) {
                meet.extend(o.meeting_times.iter().map(|&t| t as usize));
                capped.extend(o.capped);
                iterations += o.iterations;
                computed += c.particles_through(o.iterations);
            }
            step += 1;
        }
        let stats = backend.take_stats()?;
        let (obj, ne, nd) = (
            stats.objective,
            stats.grad_norm_encoder,
            stats.grad_norm_decoder,
        );
        if !obj.is_finite() {
            bail!(
                "training diverged in epoch {}: the mean objective is {obj}; lower --lr or set --clip-encoder/--clip-decoder",
                epoch + 1
            );
        }
        let seconds = start.elapsed().as_secs_f64();
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
            grad_norm_encoder: ne / s,
            grad_norm_decoder: nd / s,
            samples_per_datapoint: samples / s,
            expected_samples_per_datapoint: expected_samples,
            levels: (!levels.is_empty()).then_some(levels),
            chains: (!meet.is_empty()).then(|| {
                let m = crate::coupling::MeetingStats::from_times(&meet, &capped);
                ChainMetrics {
                    meeting_time_mean: m.mean,
                    meeting_time_p90: m.p90,
                    meeting_time_max: m.max,
                    capped: m.capped,
                    iterations_mean: iterations as f64 / s,
                    computed_samples_per_datapoint: computed as f64 / s,
                }
            }),
            exact_log_px,
            optimum_log_px,
        };
        files::append_jsonl(&cfg.out.join("metrics.jsonl"), &serde_json::to_value(&m)?)?;
        checkpoint::save(&params, &meta, &cfg.out.join("checkpoint.safetensors"))?;
        progress(&m);
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
