//! `uvae bench` (throughput) and `uvae profile` (where a step's time goes).

use super::common::CommonArgs;
use super::console::{Mode, WorkBar};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::model::ModelChoice;
use unbiased_vae::{bench, error, profile};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The model: vae (784-200-200-50) or hvae (Burda et al.'s two stochastic layers).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    /// Training configurations, estimator:k:batch, comma-separated.
    #[arg(long, default_value = "iwae:50:100,iwae-dreg:50:100,iwae:5:20")]
    configs: String,
    /// Timed steps per repeat.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Samples per datapoint of the evaluation benchmark (0: skip it).
    #[arg(long, default_value_t = 5000)]
    eval_k: usize,
    /// Test images of the evaluation benchmark.
    #[arg(long, default_value_t = 100)]
    eval_images: usize,
    /// Print one JSON object per result instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    let configs = bench::parse_configs(&a.configs)?;
    if a.eval_k > 0 {
        error::at_least(
            "--eval-images",
            a.eval_images,
            1,
            "the evaluation benchmark",
        )?;
        error::at_most(
            "--eval-k",
            a.eval_k,
            error::MAX_SAMPLES,
            "the evaluation benchmark",
        )?;
    }
    let ds = a.common.dataset(400)?;
    let params = bench::mnist_model(a.model, &ds)?;
    let mut backend = a.common.backend(&params)?;
    let mode = Mode::detect(a.common.quiet || a.json);
    for c in configs {
        backend.set_params(&params.values)?;
        backend.reset_optimizer();
        let spinner = WorkBar::spinner(
            mode,
            &format!("timing {} K={} batch={}", c.estimator.kind, c.k, c.batch),
        );
        let r = bench::train_steps(
            backend.as_mut(),
            &ds,
            c.estimator,
            c.k,
            c.batch,
            a.warmup,
            a.steps,
            a.repeats,
        )
        .with_context(|| format!("--configs entry {}:{}:{}", c.estimator.kind, c.k, c.batch))?;
        drop(spinner);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "train {:<10} K={:<5} batch={:<5} {:>10.1} datapoints/s (median of {}; range {:.1}..{:.1})  {}",
                r.estimator, r.k, r.batch, r.datapoints_per_s, r.repeats, r.min_datapoints_per_s, r.max_datapoints_per_s, r.backend
            );
        }
    }
    if a.eval_k > 0 {
        backend.set_params(&params.values)?;
        let spinner = WorkBar::spinner(mode, &format!("timing L_{}", a.eval_k));
        let r = bench::eval_throughput(backend.as_mut(), &ds, a.eval_k, a.eval_images)?;
        drop(spinner);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "eval  L_{:<5} {} images {:>8.2} s  {:>10.1} images/s  {:.3e} samples/s  {}",
                r.k, r.images, r.seconds, r.datapoints_per_s, r.samples_per_s, r.backend
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The model: vae (784-200-200-50) or hvae (Burda et al.'s two stochastic layers).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    #[arg(long, default_value = "iwae")]
    estimator: EstimatorKind,
    #[arg(long, default_value_t = 50)]
    k: usize,
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    alpha: f64,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Profiled steps (the same number again runs unprofiled for wall time).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Compute units (SMs, CUs) of the GPU the dispatch structure is judged against, and the
    /// split-K target of the GPU backend (at least 4 workgroups per unit); adapters do not
    /// report it.
    #[arg(long, default_value_t = unbiased_vae::backend::DEFAULT_COMPUTE_UNITS)]
    compute_units: usize,
    /// Chrome trace file (open in ui.perfetto.dev or chrome://tracing).
    #[arg(long, default_value = "runs/profile.trace.json")]
    trace: PathBuf,
}

pub fn run_profile(a: ProfileArgs) -> Result<()> {
    let ds = a.common.dataset(400)?;
    let params = bench::mnist_model(a.model, &ds)?;
    let mut backend = a.common.backend(&params)?;
    unbiased_vae::error::at_least("--compute-units", a.compute_units, 1, "a profile")?;
    backend.set_compute_units(a.compute_units);
    let est = Estimator::new(a.estimator, a.alpha);
    let report = profile::profile(
        backend.as_mut(),
        &ds,
        est,
        a.k,
        a.batch,
        a.steps,
        a.warmup,
        a.compute_units,
    )?;
    let trace = serde_json::to_vec(&profile::chrome_trace(&report))?;
    if let Some(dir) = a.trace.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for --trace", dir.display()))?;
    }
    unbiased_vae::files::write_atomic(&a.trace, &trace)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", profile::format_table(&report));
        println!(
            "\nChrome trace ({} events): {}",
            report.events.len(),
            a.trace.display()
        );
    }
    Ok(())
}
