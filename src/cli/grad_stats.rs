//! `uvae grad-stats`: bias, variance, SNR and cost of an estimator's gradient.

use super::common::{ChainArgs, CommonArgs, MlmcArgs};
use super::console::{Mode, WorkBar};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::apps::bench;
use unbiased_vae::apps::grad_stats::{self, GradStatsReport};
use unbiased_vae::data;
use unbiased_vae::error::ConfigError;
use unbiased_vae::estimators::{EncoderChoice, Estimator, EstimatorKind};
use unbiased_vae::model::{checkpoint, ModelChoice};

#[derive(Args)]
pub struct GradStatsArgs {
    /// toy (linear-Gaussian, DReG paper section 6.1), ppca, or vae (against a large-K reference).
    #[arg(long, value_enum, default_value = "ppca")]
    model: ModelChoice,
    /// Any training estimator, or coupled-pimh, coupled-isir, coupled-disir (toy, ppca and hgauss).
    #[arg(long, default_value = "iwae")]
    estimator: EstimatorKind,
    #[command(flatten)]
    chains: ChainArgs,
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Independent gradient estimates.
    #[arg(long, default_value_t = 20_000)]
    reps: usize,
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    alpha: f64,
    #[command(flatten)]
    mlmc: MlmcArgs,
    /// Which datapoint of the model's data set (vae: a test image).
    #[arg(long, default_value_t = 0)]
    datapoint: usize,
    /// vae: the checkpoint to measure at (default: the peer model's fresh initialisation).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// vae: K of the IWAE reference gradient.
    #[arg(long, default_value_t = 5000)]
    reference_k: usize,
    /// vae: IWAE gradients averaged into the reference.
    #[arg(long, default_value_t = 20)]
    reference_reps: usize,
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
    /// hgauss: instead of --estimator, test that IWAE-DReG's and RWS-DReG's mean encoder gradients equal IWAE's and RWS's on both encoders (STL's difference beside).
    #[arg(long)]
    dreg_check: bool,
}

pub fn run(a: GradStatsArgs) -> Result<()> {
    let est = Estimator {
        unbiased: a.mlmc.options(EncoderChoice::default(), None),
        chains: a.chains.options(),
        ..Estimator::new(a.estimator, a.alpha)
    };
    let run = grad_stats::GradStatsRun {
        estimator: est,
        k: a.k,
        reps: a.reps,
        seed: a.seed,
        datapoint: a.datapoint,
    };
    if a.dreg_check {
        if a.model != ModelChoice::Hgauss {
            return Err(ConfigError::NotApplicable {
                flag: "--dreg-check",
                context: format!("to --model {}", a.model),
                fix: "use --model hgauss (the two-layer exact model)".into(),
            }
            .into());
        }
        let c = grad_stats::dreg_check_hgauss(a.seed, a.datapoint, a.k, a.reps)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&c)?);
        } else {
            print!("{}", grad_stats::format_dreg_check(&c));
        }
        if !c.passed {
            anyhow::bail!("the DReG check failed (see above)");
        }
        return Ok(());
    }
    let mut bar = WorkBar::new(Mode::detect(a.common.quiet));
    let report = if a.model == ModelChoice::Hgauss {
        grad_stats::grad_stats_hgauss(&run, &mut bar)?
    } else if a.model.is_exact() {
        grad_stats::grad_stats(a.model, &run, &mut bar)?
    } else {
        if a.estimator.is_coupled() {
            return Err(ConfigError::NotApplicable {
                flag: "--estimator",
                context: format!(
                    "to --model {}: coupled chains need the exact model (Fisher's identity)",
                    a.model
                ),
                fix: "use --model toy, ppca or hgauss".into(),
            }
            .into());
        }
        let ds = a.common.dataset(400)?;
        let params = match &a.checkpoint {
            Some(path) => checkpoint::load(path)?.0,
            None => bench::mnist_model(a.model, &ds)?,
        };
        if let Some(path) = &a.checkpoint {
            data::check_dim(&ds, params.layout.arch.x_dim, path)?;
        }
        if a.datapoint >= ds.test.count {
            return Err(ConfigError::range(
                "--datapoint",
                a.datapoint,
                format!("the test set has {} images", ds.test.count),
            )
            .into());
        }
        let x = data::binarize_eval(&ds.test.slice(a.datapoint..a.datapoint + 1));
        let mut backend = a.common.backend(&params)?;
        grad_stats::grad_stats_vae(
            backend.as_mut(),
            &x,
            &run,
            a.reference_k,
            a.reference_reps,
            &mut bar,
        )?
    };
    drop(bar);
    print(&report, a.json)
}

fn print(r: &GradStatsReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", grad_stats::format_report(r));
    }
    Ok(())
}
