//! `uvae reproduce`: a paper's experiment as a list of runs ([`protocols`]), each trained into
//! its own run directory, scored by the test bound, and gathered into results.md, .json,
//! .csv and .png ([`results`]). A protocol is resumable: a finished run (its `result.json`)
//! is skipped, an unfinished one continues from its training state exactly. Any number of
//! processes may work on one folder: each takes the next run that is neither finished nor
//! held by another ([`queue`]), `--shard I/N` narrows the runs a process may take, and any
//! of them (or `--report`) writes the results of whatever is finished.

pub mod protocols;
mod queue;
pub mod results;

pub use protocols::{Protocol, ProtocolSpec, Row, Selection};
pub use results::RunResult;

use crate::config::{self, BackendChoice, RunOptions, TestBound, TrainConfig};
use crate::error::ConfigError;
use crate::progress::Progress;
use crate::run_lock::DirLock;
use crate::train::{self, TrainObserver};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// How a protocol is run: its budget, its runs' subset and where they run. None keeps the
/// protocol's own setting.
#[derive(Clone, Debug, Default)]
pub struct ReproduceOptions {
    pub out: PathBuf,
    /// Epochs of every run, or the protocol's epochs times `epochs_scale` (at least 1).
    pub epochs: Option<usize>,
    pub epochs_scale: Option<f64>,
    /// Seeds 0..seeds of every row (None: the protocol's, the trials its paper averages).
    pub seeds: Option<usize>,
    /// Row names, or figure ids (`fig2`) standing for their rows, to run (None: all).
    pub runs: Option<Vec<String>>,
    /// (I, N), 1-based: this process runs the runs whose index i has i % N == I - 1.
    pub shard: Option<(usize, usize)>,
    pub backend: Option<BackendChoice>,
    pub adapter: Option<String>,
    pub threads: usize,
    pub data: Option<PathBuf>,
    /// `--binarize` and `--image-shape` for every run (None: the protocol's, dynamic).
    pub binarize: Option<crate::data::Binarization>,
    pub image_shape: Option<crate::data::ImageShape>,
    /// Train on the first N training images; hold out N validation images.
    pub train_limit: Option<usize>,
    pub valid_size: Option<usize>,
    pub val_k: Option<usize>,
    /// The final test bound's K and test images (None: the protocol's K, every image).
    pub eval_k: Option<usize>,
    pub eval_limit: Option<usize>,
    /// The test bound during training: every N epochs (None: about 20 points per run), its K
    /// and images.
    pub test_every: Option<usize>,
    pub test_k: Option<usize>,
    pub test_limit: Option<usize>,
    /// The gradient-variance logging of the rows that log it: every N steps, R estimates
    /// (None: the protocol's).
    pub grad_var_every: Option<usize>,
    pub grad_var_reps: Option<usize>,
    /// SIGINT/SIGTERM: finish the step, save, stop.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Samples per datapoint of the test bound during training unless `--test-k` says.
pub const DEFAULT_TEST_K: usize = 100;

/// One run of a protocol: its row, seed and configuration (with its output directory).
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub name: String,
    pub row: Row,
    pub seed: u64,
    pub cfg: TrainConfig,
}

/// The final test bound's settings, recorded in each result so a change re-scores the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvalSettings {
    pub k: usize,
    pub limit: Option<usize>,
    pub best_validation: bool,
}

/// What happened to a run in this invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAction {
    /// Its result.json was already there.
    Skipped,
    Started,
    /// Continued from its training state.
    Resumed,
    /// Trained already; only its test bound is computed (again).
    Scored,
}

/// Whoever watches a protocol (the CLI's console).
pub trait ProtocolObserver {
    /// Run `index` (from 1) of the `total` this process runs begins with `action`.
    fn on_run(&mut self, index: usize, total: usize, run: &PlannedRun, action: RunAction);
    /// A run's result, once written.
    fn on_result(&mut self, _result: &RunResult) {}
    /// Another process holds run `index` (from 1) of the `total` this process may run
    /// (`holder`: its pid and host); this one goes on with the next.
    fn on_busy(&mut self, _index: usize, _total: usize, _run: &PlannedRun, _holder: &str) {}
    /// A run failed (the protocol goes on with the next).
    fn on_failure(&mut self, _run: &PlannedRun, _error: &anyhow::Error) {}
    /// The observer of a run's training.
    fn training(&mut self) -> &mut dyn TrainObserver;
    /// The progress of a run's final test bound.
    fn scoring(&mut self) -> &mut dyn Progress;
}

/// What [`reproduce`] did.
pub struct Outcome {
    pub ran: Vec<(String, RunAction)>,
    /// The results files written and the number of finished runs they hold, of all.
    pub files: Vec<PathBuf>,
    pub finished: usize,
    pub total: usize,
}

/// The name of a run directory: the row and the seed.
fn run_name(row: &str, seed: u64) -> String {
    format!("{row}-seed{seed}")
}

impl ProtocolSpec {
    /// The protocol's runs under `opts` (every row and seed, before `--runs` and `--shard`),
    /// each configuration validated.
    pub fn plan(&self, opts: &ReproduceOptions) -> Result<Vec<PlannedRun>, ConfigError> {
        let mut out = Vec::new();
        // Burda et al.'s Omniglot columns when the data is their chardata.mat.
        let omniglot = self.protocol == Protocol::Burda
            && opts.data.as_deref().and_then(|d| d.file_name()) == Some("chardata.mat".as_ref());
        let rows = if omniglot {
            protocols::burda_omniglot_rows()
        } else {
            self.rows.clone()
        };
        for row in &rows {
            for seed in 0..self.seeds(opts) as u64 {
                let name = run_name(&row.name, seed);
                let cfg = self.configure(row, seed, opts, &name)?;
                out.push(PlannedRun {
                    name,
                    row: row.clone(),
                    seed,
                    cfg,
                });
            }
        }
        Ok(out)
    }

    fn configure(
        &self,
        row: &Row,
        seed: u64,
        opts: &ReproduceOptions,
        name: &str,
    ) -> Result<TrainConfig, ConfigError> {
        let mut cfg = row.cfg.clone();
        cfg.seed = seed;
        cfg.out = opts.out.join(name);
        cfg.threads = opts.threads;
        cfg.data = opts.data.clone();
        cfg.binarize = opts.binarize.unwrap_or(cfg.binarize);
        cfg.image_shape = opts.image_shape;
        if let Some(b) = opts.backend {
            cfg.backend = b;
        }
        cfg.adapter = opts.adapter.clone();
        if let Some(e) = opts.epochs {
            cfg.epochs = e;
        } else if let Some(s) = opts.epochs_scale {
            crate::error::positive("--epochs-scale", s)?;
            cfg.epochs = ((cfg.epochs as f64 * s).round() as usize).max(1);
        }
        cfg.train_limit = opts.train_limit.or(cfg.train_limit);
        cfg.valid_size = opts.valid_size.unwrap_or(cfg.valid_size);
        cfg.val_k = opts.val_k.unwrap_or(cfg.val_k);
        let (every, k) = (self.test_every, self.test_k_is_training_k.then_some(cfg.k));
        cfg.test = Some(TestBound {
            every: opts
                .test_every
                .or(every)
                .unwrap_or((cfg.epochs / 20).max(1)),
            k: opts.test_k.or(k).unwrap_or(DEFAULT_TEST_K),
            limit: opts.test_limit,
        });
        if let Some(g) = &mut cfg.grad_var {
            g.every = opts.grad_var_every.unwrap_or(g.every);
            g.reps = opts.grad_var_reps.unwrap_or(g.reps);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Seeds per row: `--seeds`, else the protocol's.
    pub fn seeds(&self, opts: &ReproduceOptions) -> usize {
        opts.seeds.unwrap_or(self.seeds).max(1)
    }

    /// Whether `--runs`'s `name` picks `row`: its own name, or its figure's id.
    pub fn picks(name: &str, row: &Row) -> bool {
        row.name == name || row.figure == Some(name)
    }

    pub fn eval_settings(&self, opts: &ReproduceOptions) -> EvalSettings {
        EvalSettings {
            k: opts.eval_k.unwrap_or(self.eval_k),
            limit: opts.eval_limit,
            best_validation: self.selection == Selection::BestValidation,
        }
    }
}

/// Checks the options that do not belong to one run.
fn check_options(spec: &ProtocolSpec, opts: &ReproduceOptions) -> Result<(), ConfigError> {
    if let Some(seeds) = opts.seeds {
        crate::error::at_least("--seeds", seeds, 1, "a protocol")?;
    }
    let asked = opts.grad_var_every.is_some() || opts.grad_var_reps.is_some();
    if asked && !spec.rows.iter().any(|r| r.cfg.grad_var.is_some()) {
        return Err(ConfigError::NotApplicable {
            flag: "--grad-var-every",
            context: format!(
                "to protocol {}: none of its rows logs the gradient variance",
                spec.protocol.name()
            ),
            fix: "drop --grad-var-every and --grad-var-reps".into(),
        });
    }
    if let Some((i, n)) = opts.shard {
        if n == 0 || i == 0 || i > n {
            return Err(ConfigError::range(
                "--shard",
                format!("{i}/{n}"),
                "give I/N with 1 <= I <= N, e.g. 2/4 (a Slurm array 0..N-1 passes $((SLURM_ARRAY_TASK_ID + 1))/N)",
            ));
        }
    }
    if let Some(names) = &opts.runs {
        for n in names {
            if !spec.rows.iter().any(|r| ProtocolSpec::picks(n, r)) {
                let mut known: Vec<&str> = spec.rows.iter().filter_map(|r| r.figure).collect();
                known.dedup();
                known.extend(spec.rows.iter().map(|r| r.name.as_str()));
                return Err(ConfigError::UnknownName {
                    flag: "--runs",
                    given: n.clone(),
                    accepted: known.join(", "),
                });
            }
        }
    }
    if let Some(k) = opts.eval_k {
        crate::error::at_least("--eval-k", k, 1, "the test bound")?;
        crate::error::at_most("--eval-k", k, crate::error::MAX_SAMPLES, "the test bound")?;
    }
    if let Some(l) = opts.eval_limit {
        crate::error::at_least("--eval-limit", l, 1, "the test bound")?;
    }
    Ok(())
}

/// The runs this process owns: `--runs` picks rows, `--shard` every N-th of those left.
pub fn selected(all: Vec<PlannedRun>, opts: &ReproduceOptions) -> Vec<PlannedRun> {
    all.into_iter()
        .filter(|r| {
            let picked = |n: &Vec<String>| n.iter().any(|n| ProtocolSpec::picks(n, &r.row));
            opts.runs.as_ref().is_none_or(picked)
        })
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|(s, n)| i % n == s - 1))
        .map(|(_, r)| r)
        .collect()
}

/// Runs `protocol` as `opts` say, as one worker of a queue ([`queue`]): it takes, one after
/// another, the runs of its selection that are neither finished nor held by another
/// process, and after each rewrites the results files over every finished run in
/// `opts.out` (this worker's and the others').
pub fn reproduce(
    protocol: Protocol,
    opts: &ReproduceOptions,
    observer: &mut dyn ProtocolObserver,
) -> Result<Outcome> {
    let spec = protocol.spec();
    check_options(&spec, opts)?;
    let all = spec.plan(opts)?;
    let eval = spec.eval_settings(opts);
    let mine = selected(all.clone(), opts);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {} (--out)", opts.out.display()))?;
    let work = queue::Work {
        spec: &spec,
        all: &all,
        eval: &eval,
        opts,
    };
    let done = queue::run(&work, &mine, observer)?;
    let (files, finished) = work.write_results()?;
    if !done.failed.is_empty() {
        bail!(
            "{} of the {} runs of this process failed; the results files in {} hold the {finished} finished runs. Fix the cause and rerun the same command:\n  {}",
            done.failed.len(),
            mine.len(),
            opts.out.display(),
            done.failed.join("\n  ")
        );
    }
    Ok(Outcome {
        ran: done.ran,
        files,
        finished,
        total: all.len(),
    })
}

/// Only the results files, from the finished runs in `opts.out`.
pub fn report(protocol: Protocol, opts: &ReproduceOptions) -> Result<Outcome> {
    let spec = protocol.spec();
    check_options(&spec, opts)?;
    let all = spec.plan(opts)?;
    let eval = spec.eval_settings(opts);
    let work = queue::Work {
        spec: &spec,
        all: &all,
        eval: &eval,
        opts,
    };
    let (files, finished) = work.write_results()?;
    Ok(Outcome {
        ran: Vec::new(),
        files,
        finished,
        total: all.len(),
    })
}

/// Whether `run` has its result.json, for the planned epochs and test bound.
fn is_finished(run: &PlannedRun, eval: &EvalSettings) -> Result<bool> {
    Ok(results::read(&run.cfg.out)?
        .is_some_and(|done| done.eval == *eval && done.epochs == run.cfg.epochs))
}

/// Where a run directory stands against the run planned for it.
enum Found {
    /// Nothing of a run (or only a config.json written before the first save).
    Fresh,
    /// The same configuration with a training state, but for the epoch count and the test
    /// bound's cadence where `changes` says (the resume extends the run to them).
    Resumable { changes: train::ResumeChanges },
}

fn inspect(run: &PlannedRun) -> Result<Found> {
    let dir = &run.cfg.out;
    let has_state = dir.join(train::STATE_FILE).exists();
    let Ok(bytes) = std::fs::read(dir.join("config.json")) else {
        if has_state || dir.join(train::CHECKPOINT_FILE).exists() {
            bail!(
                "{} holds run files but no config.json; move it away or choose another --out",
                dir.display()
            );
        }
        return Ok(Found::Fresh);
    };
    let old: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is damaged", dir.join("config.json").display()))?;
    let differing = config::differing_fields(&old, &serde_json::to_value(&run.cfg)?);
    let extendable = |f: &String| f == "epochs" || f == "test";
    match (differing.as_slice(), has_state) {
        (fields, true) if fields.iter().all(extendable) => Ok(Found::Resumable {
            changes: train::ResumeChanges {
                epochs: fields
                    .contains(&"epochs".to_string())
                    .then_some(run.cfg.epochs),
                checkpoint_every: None,
                test: run.cfg.test,
            },
        }),
        (_, false) => Ok(Found::Fresh),
        (fields, true) => bail!(
            "{} holds a run of another configuration (its {} differ from run {} of this protocol); choose another --out, or move it away",
            dir.display(),
            fields.join(", "),
            run.name
        ),
    }
}

/// Trains (or resumes) and scores `run`, whose directory's lock `lock` is, and writes its
/// result.json.
fn run_one(
    run: &PlannedRun,
    lock: &DirLock,
    work: &queue::Work,
    index: usize,
    total: usize,
    observer: &mut dyn ProtocolObserver,
) -> Result<RunAction> {
    let (eval, spec, opts) = (work.eval, work.spec, work.opts);
    let dir = &run.cfg.out;
    // Again under the lock: another worker may have finished it since the queue looked.
    if is_finished(run, eval)? {
        observer.on_run(index, total, run, RunAction::Skipped);
        return Ok(RunAction::Skipped);
    }
    let found = inspect(run)?;
    let run_opts = RunOptions {
        stop: opts.stop.clone(),
        ..RunOptions::default()
    };
    let action = match found {
        Found::Fresh => {
            observer.on_run(index, total, run, RunAction::Started);
            train::train_claimed(&run.cfg, &run_opts, lock, observer.training())
                .with_context(|| format!("run {}", run.name))?;
            RunAction::Started
        }
        Found::Resumable { changes } => {
            let done = train::completed_epochs(dir)?;
            let action = if done >= run.cfg.epochs {
                RunAction::Scored
            } else {
                RunAction::Resumed
            };
            observer.on_run(index, total, run, action);
            train::resume_claimed(lock, &changes, opts.stop.clone(), observer.training())
                .with_context(|| format!("run {}", run.name))?;
            action
        }
    };
    let result = results::score(run, spec, eval, observer.scoring())?;
    results::save(dir, &result)?;
    observer.on_result(&result);
    Ok(action)
}
