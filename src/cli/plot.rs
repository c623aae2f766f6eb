//! `uvae plot`: training curves of run directories, overlaid.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use unbiased_vae::apps::plot::runs::{self, XAxis};

#[derive(Clone, Copy, ValueEnum)]
enum X {
    Epoch,
    /// Cumulative training time (metrics.jsonl's per-epoch seconds, summed).
    Seconds,
    /// Training steps (metrics.jsonl's per-epoch steps, summed).
    Steps,
}

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories written by `uvae train` (each with metrics.jsonl and config.json).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// The PNG to write (default: plot.png in the first run directory).
    #[arg(long, value_name = "FILE.png")]
    out: Option<PathBuf>,
    /// The x axis.
    #[arg(long, value_enum, default_value = "epoch")]
    x: X,
    /// Plot one metrics.jsonl field (e.g. grad_norm_encoder; ±2 SE bars where NAME_stderr
    /// exists) instead of the default: train objective, validation L_K and test L_K when logged.
    /// A field of logged points by its path (grad_var.encoder.snr), or grad_var: the
    /// encoder's and the decoder's gradient variance of --grad-var-every (log scale).
    #[arg(long, value_name = "NAME")]
    metric: Option<String>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let loaded = a
        .runs
        .iter()
        .map(|d| runs::load_run(d))
        .collect::<Result<Vec<_>>>()?;
    let x = match a.x {
        X::Epoch => XAxis::Epoch,
        X::Seconds => XAxis::Seconds,
        X::Steps => XAxis::Steps,
    };
    let chart = runs::runs_chart(&loaded, x, a.metric.as_deref())?;
    let out = a.out.unwrap_or_else(|| a.runs[0].join("plot.png"));
    chart.save_png(&out)?;
    println!(
        "wrote {} ({} curves from {} runs)",
        out.display(),
        chart.series.len(),
        loaded.len()
    );
    Ok(())
}
