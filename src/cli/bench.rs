//! `uvae bench`: training-step and evaluation throughput.

use super::common::CommonArgs;
use super::console::{Mode, WorkBar};
use anyhow::{Context, Result};
use clap::Args;
use unbiased_vae::apps::bench;
use unbiased_vae::error;
use unbiased_vae::model::ModelChoice;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The model: vae (784-200-200-50) or hvae (Burda et al.'s two stochastic layers).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    /// Training configurations, estimator:k:batch, comma-separated ("none": skip them).
    #[arg(long, default_value = "iwae:50:100,iwae-dreg:50:100,iwae:5:20")]
    configs: String,
    /// Timed steps per repeat.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps of real training before the timed repeats: the steady state,
    /// as the peer measures it, past the first steps' untrained weights.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Samples per datapoint of the evaluation benchmark (0: skip it).
    #[arg(long, default_value_t = 5000)]
    eval_k: usize,
    /// Test images of the evaluation benchmark.
    #[arg(long, default_value_t = 100)]
    eval_images: usize,
    /// Also time the CPU backend's sgemm on an N x N square (the peak line the phases'
    /// GFLOP/s are set against; 0: skip).
    #[arg(long, default_value_t = 0, value_name = "N")]
    gemm_peak: usize,
    /// Also time the one-layer decoder's phases alone (each GEMM, the elementwise passes, the
    /// noise, a copy) on N sample rows, with all workers and with one (0: skip).
    #[arg(long, default_value_t = 0, value_name = "N")]
    phases: usize,
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
    if a.gemm_peak > 0 {
        let r = bench::gemm_peak(a.gemm_peak, a.common.threads)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "gemm  {n}x{n}x{n} {:>10.1} GFLOP/s (best of 3)  {}",
                r.gflops,
                r.backend,
                n = r.gemm
            );
        }
    }
    if a.phases > 0 {
        for r in bench::phase_rates(a.phases, a.common.threads)? {
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let rate = match (r.gflops, r.gelems) {
                    (Some(g), _) => format!("{g:>8.1} GFLOP/s"),
                    (_, Some(e)) => format!("{e:>8.3} Gelem/s"),
                    _ => String::new(),
                };
                println!(
                    "phase {:<28} {:>2} threads  pieces of {:<5} {:>9.3} ms  {rate}  {}",
                    r.key, r.threads, r.piece_rows, r.ms, r.what
                );
            }
        }
    }
    if configs.is_empty() && a.eval_k == 0 {
        return Ok(());
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
        let r = bench::train_steps(backend.as_mut(), &ds, &c, a.warmup, a.steps, a.repeats)
            .with_context(|| format!("--configs entry {}:{}:{}", c.estimator.kind, c.k, c.batch))?;
        drop(spinner);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "train {:<10} K={:<5} batch={:<5} {:>10.1} datapoints/s (median of {} after {} warm-up steps; range {:.1}..{:.1})  {}",
                r.estimator, r.k, r.batch, r.datapoints_per_s, r.repeats, r.warmup, r.min_datapoints_per_s, r.max_datapoints_per_s, r.backend
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
