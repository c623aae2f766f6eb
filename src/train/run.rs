//! The epochs of a run, from its start or from a saved training state: minibatches, the
//! estimator's step, the backend's sums, validation, metrics.jsonl, and the checkpoint with
//! its training state, at each epoch's end and every `--checkpoint-every` in between.

use super::data::TrainData;
use super::metrics::{EpochMetrics, EpochSums};
use super::state::{Position, TrainState, STATE_FILE};
use super::{
    estimator_step, GradVarProbe, MinibatchFeed, TrainObserver, TrainOutcome, LEVEL_STREAM,
    STATS_EVERY,
};
use crate::backend::{Backend, Noise, StepInputs, StepStats};
use crate::config::{CheckpointEvery, OnNonFinite, RunOptions, TrainConfig};
use crate::estimators::StepPlan;
use crate::model::{checkpoint, Params};
use crate::rng::Stream;
use crate::{eval, files};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The checkpoint's file name in the run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The checkpoint of the epoch with the best validation bound so far, beside the latest.
pub const BEST_CHECKPOINT_FILE: &str = "checkpoint-best.safetensors";

/// The loop's state between steps: what a training state saves.
struct Cursor {
    epoch: usize,
    step_in_epoch: usize,
    step: u32,
    level_rng: ChaCha8Rng,
    shuffle_rng: ChaCha8Rng,
    order: Vec<usize>,
    sums: EpochSums,
    /// Seconds of the epoch's steps before this process took it over.
    seconds_before: f64,
}

/// Where the last save put the run: (epoch, step in epoch, run step).
type Saved = (usize, usize, u32);

struct Loop<'a> {
    cfg: &'a TrainConfig,
    opts: &'a RunOptions,
    plan: &'a StepPlan,
    backend: &'a mut dyn Backend,
    steps_per_epoch: usize,
    last_saved: Option<Saved>,
    last_save_at: Instant,
    /// Binarized validation images (or the exact model's data) and their count.
    val: (Vec<f32>, usize),
    /// Binarized test images and their count, for `--test-every`.
    test: Option<(Vec<f32>, usize)>,
    /// The best validation bound of the epochs completed (metrics.jsonl's lines).
    best_val: Option<f64>,
}

/// Runs the epochs of `cfg` from `resume` (None: the start, whose state is saved first).
pub(super) fn run_epochs(
    cfg: &TrainConfig,
    opts: &RunOptions,
    plan: &StepPlan,
    ds: &TrainData,
    backend: &mut dyn Backend,
    observer: &mut dyn TrainObserver,
    resume: Option<TrainState>,
) -> Result<TrainOutcome> {
    let b = cfg.batch;
    let steps_per_epoch = ds.train_count() / b;
    let mut lp = Loop {
        cfg,
        opts,
        plan,
        backend,
        steps_per_epoch,
        last_saved: None,
        last_save_at: Instant::now(),
        val: ds.validation(),
        test: cfg.test.and_then(|t| ds.test(t.limit)),
        best_val: None,
    };
    let mut cur = Cursor {
        epoch: 0,
        step_in_epoch: 0,
        step: 0,
        level_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ LEVEL_STREAM),
        shuffle_rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        order: (0..ds.train_count()).collect(),
        sums: EpochSums::default(),
        seconds_before: 0.0,
    };
    match resume {
        None => lp.save(&cur, &StepStats::default())?,
        Some(st) => {
            cur.level_rng.set_word_pos(st.level_rng());
            cur.shuffle_rng.set_word_pos(st.shuffle_rng());
            let p = st.pos;
            (cur.epoch, cur.step_in_epoch, cur.step) = (p.epoch, p.step_in_epoch, p.step);
            (cur.sums, cur.seconds_before, cur.order) = (p.sums, p.seconds, st.order);
            lp.backend.set_params(&st.params)?;
            lp.backend.set_optimizer_state(&st.adam)?;
            lp.backend.set_stats(&p.pending)?;
            lp.last_saved = Some((cur.epoch, cur.step_in_epoch, cur.step));
            lp.best_val = best_logged_val(&cfg.out.join("metrics.jsonl"))?;
        }
    }
    // The training images go to the backend once when it binarizes them itself.
    let (mut feed, notice) = MinibatchFeed::new(lp.backend, ds.images(), b, ds.dim())?;
    if let Some(n) = notice {
        eprintln!("notice: {n}");
    }
    // --grad-var-every's fixed minibatch: the first `batch` training datapoints, binarized
    // once (as training step 0 would).
    let probe_x = cfg.grad_var.map(|_| {
        let idx: Vec<usize> = (0..b).collect();
        let mut x = vec![0.0f32; b * ds.dim()];
        ds.minibatch(&idx, cfg.seed, 0, &mut x);
        x
    });
    let probe = cfg
        .grad_var
        .zip(probe_x.as_deref())
        .map(|(g, x)| GradVarProbe {
            plan,
            x,
            batch: b,
            seed: cfg.seed,
            reps: g.reps,
        });
    let mut history = Vec::new();
    observer.on_start(cfg.epochs, steps_per_epoch, b);
    while cur.epoch < cfg.epochs {
        let epoch = cur.epoch;
        let lr = cfg.schedule.lr(cfg.lr, epoch);
        if cur.step_in_epoch == 0 {
            cur.order.shuffle(&mut cur.shuffle_rng);
            cur.sums = EpochSums::default();
            cur.seconds_before = 0.0;
        }
        let start = Instant::now();
        // The backend's sums were last read at a multiple of STATS_EVERY steps.
        let mut window = cur.step_in_epoch / STATS_EVERY * STATS_EVERY;
        while cur.step_in_epoch < steps_per_epoch {
            let j = cur.step_in_epoch;
            let idx = &cur.order[j * b..(j + 1) * b];
            let x = feed.minibatch(idx, cfg.seed, cur.step, |x| {
                ds.minibatch(idx, cfg.seed, cur.step, x)
            });
            let step = StepInputs {
                batch: b,
                noise: Noise {
                    seed: cfg.seed,
                    stream: Stream::Eps,
                    step: cur.step,
                    first_datapoint: 0,
                    first_sample: 0,
                },
                adam: cfg.adam,
                lr,
            };
            let info = estimator_step(lp.backend, plan, x, &step, &mut cur.level_rng)?;
            cur.sums.push_step(info, plan.coupling());
            cur.step += 1;
            cur.step_in_epoch += 1;
            if let (Some(p), Some(g)) = (&probe, cfg.grad_var) {
                if u64::from(cur.step).is_multiple_of(g.every as u64) {
                    cur.sums.grad_var.push(p.measure(lp.backend, cur.step)?);
                }
            }
            if lp.backend.stats_on_host() {
                let pending = lp.backend.peek_stats()?;
                lp.check_finite(epoch, window, &pending)?;
            }
            let running = if cur.sums.steps.is_multiple_of(STATS_EVERY) {
                let s = lp.backend.take_stats()?;
                lp.check_finite(epoch, window, &s)?;
                cur.sums.push_stats(&s);
                window = cur.sums.steps;
                let good = cur.sums.steps - cur.sums.nonfinite;
                Some(cur.sums.objective / good.max(1) as f64)
            } else {
                None
            };
            observer.on_step(epoch + 1, cur.sums.steps, running);
            let stop = lp.stop_requested();
            if cur.step_in_epoch < steps_per_epoch && (stop || lp.save_due(cur.step)) {
                let pending = lp.backend.peek_stats()?;
                lp.check_finite(epoch, window, &pending)?;
                let seconds = cur.seconds_before + start.elapsed().as_secs_f64();
                let saved = cur.seconds_before;
                cur.seconds_before = seconds;
                lp.save(&cur, &pending)?;
                cur.seconds_before = saved;
                if stop {
                    return Err(lp.interrupted());
                }
            }
        }
        let s = lp.backend.take_stats()?;
        lp.check_finite(epoch, window, &s)?;
        cur.sums.push_stats(&s);
        let seconds = cur.seconds_before + start.elapsed().as_secs_f64();
        let m = lp.epoch_metrics(ds, &cur.sums, epoch, lr, seconds, observer)?;
        files::append_jsonl(&cfg.out.join("metrics.jsonl"), &serde_json::to_value(&m)?)?;
        // Before the state's save: a kill in between redoes the epoch, which rewrites it.
        if lp.best_val.is_none_or(|b| m.val_lk > b) {
            lp.best_val = Some(m.val_lk);
            lp.save_best(cur.step)?;
        }
        cur.epoch += 1;
        cur.step_in_epoch = 0;
        cur.sums = EpochSums::default();
        cur.seconds_before = 0.0;
        lp.save(&cur, &StepStats::default())?;
        observer.on_epoch(&m);
        history.push(m);
        if lp.stop_requested() && cur.epoch < cfg.epochs {
            return Err(lp.interrupted());
        }
    }
    let params = Params {
        layout: lp.backend.layout().clone(),
        values: lp.backend.params()?,
    };
    Ok(TrainOutcome {
        epochs: history,
        params,
    })
}

impl Loop<'_> {
    fn stop_requested(&self) -> bool {
        self.opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Whether `--checkpoint-every` asks for a save after run step `step`.
    fn save_due(&self, step: u32) -> bool {
        match self.opts.checkpoint_every {
            CheckpointEvery::Steps(n) => u64::from(step).is_multiple_of(n),
            CheckpointEvery::Seconds(s) => self.last_save_at.elapsed().as_secs_f64() >= s,
            CheckpointEvery::Epoch => false,
        }
    }

    fn interrupted(&self) -> anyhow::Error {
        let (epoch, step, _) = self.last_saved.unwrap_or_default();
        let dir = self.cfg.out.display();
        let at = if step == 0 {
            format!("after epoch {epoch}")
        } else {
            format!(
                "after step {step} of {} in epoch {}",
                self.steps_per_epoch,
                epoch + 1
            )
        };
        anyhow::anyhow!(
            "interrupted: stopped {at} and saved the checkpoint and training state in {dir}; continue with `uvae train --resume {dir}`"
        )
    }

    /// Under `--on-nonfinite stop`, the error for sums that saw a non-finite step; `window`
    /// is the step in the epoch after which the backend's sums were last read.
    fn check_finite(&self, epoch: usize, window: usize, s: &StepStats) -> Result<()> {
        let Some(nf) = s.first_nonfinite else {
            return Ok(());
        };
        if self.opts.on_nonfinite == OnNonFinite::Skip {
            return Ok(());
        }
        let what = match (nf.objective, nf.encoder || nf.decoder) {
            (true, true) => "the objective and the gradient are",
            (true, false) => "the objective is",
            _ => "the gradient is",
        };
        let step = window + nf.index;
        let saved = match self.last_saved {
            Some((e, s, _)) => format!(
                "the last good checkpoint, {} (epoch {}, step {s}), is intact",
                self.cfg.out.join(CHECKPOINT_FILE).display(),
                e + 1
            ),
            None => "no checkpoint was written".to_string(),
        };
        bail!(
            "non-finite training step: epoch {}, step {step} of {} (run step {}), estimator {}, parameter group {}: {what} NaN or infinite; the step was not applied and {saved}. Lower --lr, set --clip-encoder/--clip-decoder, or pass --on-nonfinite skip",
            epoch + 1,
            self.steps_per_epoch,
            epoch * self.steps_per_epoch + step,
            self.cfg.estimator.kind.name(),
            nf.groups(),
        )
    }

    /// Writes the checkpoint and the training state of `cur` (with the backend's unread sums
    /// `pending`): both to temporary files, then renamed state first (`state` module docs).
    /// Non-finite parameters are never saved.
    fn save(&mut self, cur: &Cursor, pending: &StepStats) -> Result<()> {
        let values = self.backend.params()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            let group = if i < self.backend.layout().encoder_len {
                "encoder"
            } else {
                "decoder"
            };
            bail!(
                "non-finite parameters in the {group} (value {i}) at epoch {}, step {}, estimator {}; nothing was saved. Lower --lr or set --clip-encoder/--clip-decoder",
                cur.epoch + 1,
                cur.step_in_epoch,
                self.cfg.estimator.kind.name()
            );
        }
        let adam = self.backend.optimizer_state()?;
        let state = TrainState {
            pos: Position {
                format: 1,
                epoch: cur.epoch,
                step_in_epoch: cur.step_in_epoch,
                step: cur.step,
                adam_t: adam.t,
                level_rng: cur.level_rng.get_word_pos().to_string(),
                shuffle_rng: cur.shuffle_rng.get_word_pos().to_string(),
                sums: cur.sums.clone(),
                pending: *pending,
                seconds: cur.seconds_before,
            },
            params: values,
            adam,
            order: cur.order.clone(),
        };
        let state_bytes = state.to_bytes()?;
        let params = Params {
            layout: self.backend.layout().clone(),
            values: state.params,
        };
        let ckpt = checkpoint::to_bytes(&params, &metadata(self.cfg, cur.step))?;
        let out = &self.cfg.out;
        files::write_all_atomic(&[
            (&out.join(STATE_FILE), &state_bytes),
            (&out.join(CHECKPOINT_FILE), &ckpt),
        ])?;
        self.last_saved = Some((cur.epoch, cur.step_in_epoch, cur.step));
        self.last_save_at = Instant::now();
        Ok(())
    }

    /// The current parameters as the best-validation checkpoint.
    fn save_best(&mut self, step: u32) -> Result<()> {
        let params = Params {
            layout: self.backend.layout().clone(),
            values: self.backend.params()?,
        };
        let bytes = checkpoint::to_bytes(&params, &metadata(self.cfg, step))?;
        files::write_atomic(&self.cfg.out.join(BEST_CHECKPOINT_FILE), &bytes)
    }

    /// Validation and the epoch's line of metrics.jsonl.
    fn epoch_metrics(
        &mut self,
        ds: &TrainData,
        sums: &EpochSums,
        epoch: usize,
        lr: f64,
        seconds: f64,
        observer: &mut dyn TrainObserver,
    ) -> Result<EpochMetrics> {
        let (cfg, plan) = (self.cfg, self.plan);
        let steps = self.steps_per_epoch;
        let good = steps - sums.nonfinite.min(steps);
        if good == 0 {
            bail!(
                "every step of epoch {} was non-finite (estimator {}); the last good checkpoint is intact. Lower --lr or set --clip-encoder/--clip-decoder",
                epoch + 1,
                cfg.estimator.kind.name()
            );
        }
        let obj = sums.objective;
        if !obj.is_finite() {
            bail!(
                "training diverged in epoch {}: the mean objective is {obj}; lower --lr or set --clip-encoder/--clip-decoder",
                epoch + 1
            );
        }
        let (val_x, val_count) = (&self.val.0, self.val.1);
        observer.on_validation(epoch + 1, val_count);
        let val = eval::log_likelihood(
            self.backend,
            val_x,
            val_count,
            cfg.val_k,
            eval::DEFAULT_EVAL_SEED,
            0,
        )?;
        let test = match (&self.test, cfg.test) {
            (Some((x, count)), Some(t)) if t.due(epoch, cfg.epochs) => {
                observer.on_validation(epoch + 1, *count);
                let r =
                    eval::log_likelihood(self.backend, x, *count, t.k, eval::DEFAULT_EVAL_SEED, 0)?;
                let jvi = if super::logs_jvi(cfg.estimator.kind) {
                    let seed = eval::DEFAULT_EVAL_SEED;
                    Some(super::jvi_estimate(self.backend, x, *count, t.k, seed)?)
                } else {
                    None
                };
                Some((r.mean, r.stderr, t.k, jvi))
            }
            _ => None,
        };
        let params = Params {
            layout: self.backend.layout().clone(),
            values: self.backend.params()?,
        };
        let (exact_log_px, optimum_log_px) = match ds {
            TrainData::Exact { model, .. } => (
                Some(model.mean_exact_log_px(&params)?),
                model.optimum_log_px(),
            ),
            TrainData::Images(_) => (None, None),
        };
        let (s, g) = (steps as f64, good as f64);
        Ok(EpochMetrics {
            epoch: epoch + 1,
            steps,
            lr,
            train_objective: obj / g,
            val_lk: val.mean,
            val_lk_stderr: val.stderr,
            val_k: cfg.val_k,
            test_lk: test.map(|t| t.0),
            test_lk_stderr: test.map(|t| t.1),
            test_k: test.map(|t| t.2),
            test_jvi: test.and_then(|t| t.3).map(|j| j.0),
            test_jvi_stderr: test.and_then(|t| t.3).map(|j| j.1),
            seconds,
            datapoints_per_s: (steps * cfg.batch) as f64 / seconds,
            grad_norm_encoder: sums.grad_norm_encoder / g,
            grad_norm_decoder: sums.grad_norm_decoder / g,
            samples_per_datapoint: sums.samples / s,
            expected_samples_per_datapoint: plan.expected_samples(),
            chains: sums.chain_metrics(),
            levels: (!sums.levels.is_empty()).then(|| sums.levels.clone()),
            nonfinite_steps: (self.opts.on_nonfinite == OnNonFinite::Skip)
                .then_some(sums.nonfinite),
            grad_var: cfg.grad_var.map(|_| sums.grad_var.clone()),
            exact_log_px,
            optimum_log_px,
        })
    }
}

/// The best `val_lk` among the epochs metrics.jsonl holds (None: no epoch yet).
fn best_logged_val(path: &std::path::Path) -> Result<Option<f64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let mut best: Option<f64> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
        if let Some(val) = v.get("val_lk").and_then(serde_json::Value::as_f64) {
            best = Some(best.map_or(val, |b: f64| b.max(val)));
        }
    }
    Ok(best)
}

/// Checkpoint metadata: one key, so the header's bytes do not depend on hash-map order
/// and identical runs write identical files. `step` is the run step it holds (the training
/// state beside it names the same).
pub(super) fn metadata(cfg: &TrainConfig, step: u32) -> HashMap<String, String> {
    let value = serde_json::json!({
        "format": "unbiased-vae",
        "model": cfg.model.name(),
        "estimator": cfg.estimator.kind.name(),
        "k": cfg.k,
        "seed": cfg.seed,
        "binarize": cfg.binarize,
        "image_shape": cfg.image_shape,
        "step": step,
        "config": cfg,
    });
    HashMap::from([("uvae".to_string(), value.to_string())])
}

/// The run step a checkpoint's metadata names (None: absent or unreadable).
pub(super) fn checkpoint_step(meta: &HashMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(meta.get("uvae")?).ok()?;
    v.get("step")?.as_u64().and_then(|s| u32::try_from(s).ok())
}
