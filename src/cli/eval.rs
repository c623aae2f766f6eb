//! `uvae eval`: L_K of a checkpoint on the test images (or, for an exact model, on its own
//! regenerated data beside the exact log p(x)).

use super::common::CommonArgs;
use super::console::{Mode, WorkBar};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::error::{self, ConfigError};
use unbiased_vae::model::exact_training::{self, ExactTraining};
use unbiased_vae::model::{active_units, checkpoint, Params};
use unbiased_vae::{data, eval};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Checkpoint written by `uvae train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Samples per datapoint.
    #[arg(long, default_value_t = 5000)]
    k: usize,
    /// Score only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the evaluation noise.
    #[arg(long, default_value_t = eval::DEFAULT_EVAL_SEED)]
    seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: EvalArgs) -> Result<()> {
    error::at_least("--k", a.k, 1, "the bound L_K")?;
    error::at_most("--k", a.k, error::MAX_SAMPLES, "the bound L_K")?;
    if let Some(limit) = a.limit {
        error::at_least("--limit", limit, 1, "an evaluation")?;
    }
    let (params, meta) = checkpoint::load(&a.checkpoint)?;
    if let Some(model) = exact_training::from_checkpoint_metadata(&meta)? {
        return run_exact(a, params, model);
    }
    let trained = data::binarization::of_checkpoint(&meta)
        .with_context(|| format!("reading {}", a.checkpoint.display()))?;
    let ds = a.common.dataset_as(0, trained)?;
    data::check_dim(&ds, params.layout.arch.x_dim, &a.checkpoint)?;
    let test = match a.limit {
        Some(n) if n < ds.test.count => ds.test.slice(0..n),
        _ => ds.test.clone(),
    };
    let x = data::binarize_eval(&test);
    let mut backend = a.common.backend(&params)?;
    let mut bar = WorkBar::new(Mode::detect(a.common.quiet));
    let r = eval::log_likelihood_with(backend.as_mut(), &x, test.count, a.k, a.seed, 0, &mut bar)
        .context("evaluating")?;
    let active = active_units::active_units(&params, &x, test.count, a.seed);
    let rule = a.common.binarize.unwrap_or(trained);
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["active_units"] = serde_json::to_value(&active.per_layer)?;
        v["binarize"] = rule.name().into();
        println!("{v}");
    } else {
        // A conditional model's bound is on log p(bottom rows | top rows).
        let of = match params.layout.arch.cond {
            Some(c) => format!(" of log p(bottom | top {} pixels)", c.c_dim),
            None => String::new(),
        };
        println!(
            "L_{}{of} = {:.3} ± {:.3} nats (mean ± standard error over {} test images, binarize {rule}; {:.1} s, {:.0} samples/s, {})",
            r.k,
            r.mean,
            r.stderr,
            r.count,
            r.seconds,
            r.samples_per_s,
            backend.describe()
        );
        println!(
            "active units: {} (per stochastic layer: Cov_x(E_q[z | x]) > {})",
            active.label(),
            active_units::ACTIVITY_THRESHOLD
        );
    }
    Ok(())
}

/// `uvae eval` of a --model toy / ppca checkpoint: L_K and the exact log p(x) over the data
/// regenerated from the run's seed.
fn run_exact(a: EvalArgs, params: Params, model: ExactTraining) -> Result<()> {
    if a.common.data.is_some() {
        return Err(ConfigError::NotApplicable {
            flag: "--data",
            context: format!(
                "to this checkpoint: its model ({}) regenerates its own data from its seed",
                model.choice()
            ),
            fix: "drop --data".into(),
        }
        .into());
    }
    let count = a.limit.unwrap_or(usize::MAX).min(model.count());
    let mut x = model.data_f32();
    x.truncate(count * model.dim());
    let mut backend = a.common.backend(&params)?;
    let mut bar = WorkBar::new(Mode::detect(a.common.quiet));
    let r = eval::log_likelihood_with(backend.as_mut(), &x, count, a.k, a.seed, 0, &mut bar)
        .context("evaluating")?;
    let exact = model.mean_exact_log_px(&params)?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = model.choice().name().into();
        v["exact_log_px"] = exact.into();
        if let Some(o) = model.optimum_log_px() {
            v["optimum_log_px"] = o.into();
        }
        println!("{v}");
    } else {
        let opt = model
            .optimum_log_px()
            .map(|o| format!(", optimum {o:.3}"))
            .unwrap_or_default();
        println!(
            "L_{} = {:.3} ± {:.3} nats over {} datapoints of --model {}; exact log p(x) = {exact:.3} (all {} datapoints{opt}); {:.1} s, {}",
            r.k,
            r.mean,
            r.stderr,
            r.count,
            model.choice().name(),
            model.count(),
            r.seconds,
            backend.describe()
        );
    }
    Ok(())
}
