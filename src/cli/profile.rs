//! `uvae profile`: where a training step's time goes, per GPU kernel or CPU phase.

use super::common::CommonArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::apps::{bench, profile};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::model::ModelChoice;

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

pub fn run(a: ProfileArgs) -> Result<()> {
    let ds = a.common.dataset(400)?;
    let params = bench::mnist_model(a.model, &ds)?;
    let mut backend = a.common.backend(&params)?;
    unbiased_vae::error::at_least("--compute-units", a.compute_units, 1, "a profile")?;
    backend.set_compute_units(a.compute_units);
    let config = bench::BenchConfig {
        estimator: Estimator::new(a.estimator, a.alpha),
        k: a.k,
        batch: a.batch,
    };
    let report = profile::profile(
        backend.as_mut(),
        &ds,
        &config,
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
