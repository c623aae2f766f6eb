//! The command line: one file per command family, each only parsing its flags and calling
//! the library. Errors reach `main` as one chain and are printed once.

mod bench;
mod check;
mod common;
mod console;
mod devices;
mod eval;
mod figure;
mod grad_stats;
mod images;
mod plot;
mod profile;
mod reproduce;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "uvae",
    version,
    about = "Train VAEs by maximum likelihood with unbiased and multi-sample gradient estimators"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a VAE; writes config.json, metrics.jsonl and checkpoint.safetensors into --out.
    Train(train::TrainArgs),
    /// Estimate the test-set log-likelihood of a checkpoint by the IWAE bound L_K.
    Eval(eval::EvalArgs),
    /// Check a GPU against the CPU reference: every kernel and estimator, same seed.
    Check {
        /// GPU adapter (substring of its name); default: the best one, software included.
        #[arg(long)]
        adapter: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure training-step and evaluation throughput (median of repeats after warm-up).
    Bench(bench::BenchArgs),
    /// Time a training step per kernel (GPU timestamps) or phase (CPU), with a Chrome trace.
    Profile(profile::ProfileArgs),
    /// Bias, variance, SNR and cost of an estimator's gradient on a model with exact log p(x).
    GradStats(grad_stats::GradStatsArgs),
    /// Draw decoder means for latents from the prior as a PNG grid.
    Sample(images::SampleArgs),
    /// Draw test images beside their reconstructions as a PNG grid.
    Reconstruct(images::ReconstructArgs),
    /// Plot runs' training curves (metrics.jsonl) overlaid, one colour per run, into a PNG.
    Plot(plot::PlotArgs),
    /// Compute a figure and write DIR/<name>.png, .csv and .json (the table behind it).
    Figure(figure::FigureArgs),
    /// Run a paper's experiment (its runs, resumable and shardable) into --out, with
    /// results.md, .json, .csv and a PNG of test NLL against epochs and time.
    Reproduce(reproduce::ReproduceArgs),
    /// List the GPU adapters wgpu can see, with backend, type, driver and features.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script to stdout (docs/cli.md says where each shell reads it).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// On a machine without a display, the Vulkan loader's Wayland probe prints
/// "error: XDG_RUNTIME_DIR is invalid or not set" for every instance wgpu creates, which reads
/// like a failure of ours. A compute-only program never wants a Wayland display, so when none
/// is configured, point the probe at an absolute path that does not exist: it then fails
/// quietly. Likewise Mesa's EGL warns while wgpu's GL probe (run only when no Vulkan, Metal
/// or DX12 adapter exists) looks for a display ("libEGL warning: ..."): only its fatal
/// messages are kept, unless the user set EGL_LOG_LEVEL. Called first thing in `main`, while
/// the process has one thread.
pub fn silence_display_probing() {
    let unset = |k: &str| std::env::var_os(k).is_none_or(|v| v.is_empty());
    if unset("WAYLAND_DISPLAY") && unset("XDG_RUNTIME_DIR") {
        std::env::set_var("WAYLAND_DISPLAY", "/nonexistent/uvae-compute-only");
    }
    if unset("EGL_LOG_LEVEL") {
        std::env::set_var("EGL_LOG_LEVEL", "fatal");
    }
}

/// Runs the parsed command; `matches` says which flags were typed (`train --resume` refuses
/// the ones that would change the run).
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a, matches.subcommand_matches("train")),
        Command::Eval(a) => eval::run(a),
        Command::Check { adapter, json } => check::run(adapter, json),
        Command::Bench(a) => bench::run_bench(a),
        Command::Profile(a) => profile::run(a),
        Command::GradStats(a) => grad_stats::run(a),
        Command::Sample(a) => images::run_sample(a),
        Command::Reconstruct(a) => images::run_reconstruct(a),
        Command::Devices { json } => devices::run_devices(json),
        Command::Plot(a) => plot::run(a),
        Command::Figure(a) => figure::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "uvae", &mut std::io::stdout());
            Ok(())
        }
    }
}
