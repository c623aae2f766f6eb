//! `uvae`: the command line. It only parses arguments and calls the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use unbiased_vae::config::{BackendChoice, TrainConfig};
use unbiased_vae::data;
use unbiased_vae::estimators::{
    ChainOptions, EncoderChoice, Estimator, EstimatorKind, UnbiasedOptions,
};
use unbiased_vae::eval;
use unbiased_vae::model::checkpoint;
use unbiased_vae::model::ModelChoice;
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::train;

#[derive(Parser)]
#[command(
    name = "uvae",
    version,
    about = "Train VAEs by maximum likelihood with unbiased and multi-sample gradient estimators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a VAE; writes config.json, metrics.jsonl and checkpoint.safetensors into --out.
    Train(TrainArgs),
    /// Estimate the test-set log-likelihood of a checkpoint by the IWAE bound L_K.
    Eval(EvalArgs),
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
    Bench(BenchArgs),
    /// Time a training step per kernel (GPU timestamps) or phase (CPU), with a Chrome trace.
    Profile(ProfileArgs),
    /// Bias, variance, SNR and cost of an estimator's gradient on a model with exact log p(x).
    GradStats(GradStatsArgs),
    /// List the GPU adapters wgpu can see, with backend, type, driver and features.
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Folder with MNIST-layout IDX files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz); default: the bundled MNIST.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Compute backend: auto (a GPU adapter if there is one, else the CPU), gpu, or cpu.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// GPU adapter to use: a case-insensitive substring of its name (see `uvae devices`).
    #[arg(long)]
    adapter: Option<String>,
    /// CPU worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Auto,
    Cpu,
    Gpu,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Gpu => BackendChoice::Gpu,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Gradient estimator: elbo, iwae, stl, iwae-dreg, rws, rws-dreg, dreg, jvi, jvi-dreg, sumo, mlmc-ss, mlmc-rr, coupled-pimh, coupled-isir, coupled-disir.
    #[arg(long, default_value = "iwae")]
    estimator: EstimatorKind,
    /// Samples per datapoint (SUMO: the minimum m; MLMC: unused, see --mlmc-i0; coupled-*: particles per set).
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    chains: ChainArgs,
    #[command(flatten)]
    mlmc: MlmcArgs,
    /// Encoder gradient of sumo / mlmc-*: dreg (IWAE-DReG), rws (unbiased RWS), variance (min E[estimate^2]).
    #[arg(long, value_enum, default_value = "dreg")]
    encoder: EncoderArg,
    /// DReG(alpha) mixing weight (estimator dreg only): 0 is IWAE-DReG, 1 is RWS-DReG.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    alpha: f64,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Adam learning rate (the first stage's under --schedule burda).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// constant, or burda (stage i runs 3^i epochs at lr * 10^(-i/7)).
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleArg,
    /// Use AMSGrad's running maximum of the second moment.
    #[arg(long)]
    amsgrad: bool,
    /// Clip the encoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_encoder: Option<f64>,
    /// Clip the decoder gradient to this L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    clip_decoder: Option<f64>,
    /// Model: vae (MNIST MLP VAE), toy (linear-Gaussian, D = 20) or ppca (probabilistic PCA);
    /// toy and ppca train on their own generated data and report the exact log p(x).
    #[arg(long, value_enum, default_value = "vae")]
    model: ModelChoice,
    /// Hidden layer sizes of the encoder (the decoder mirrors them); --model vae only
    /// [default: 200,200].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Latent dimension; --model vae only [default: 50].
    #[arg(long)]
    latent: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training images held back for validation (the last ones).
    #[arg(long, default_value_t = 400)]
    valid_size: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Samples per datapoint of the validation bound after each epoch.
    #[arg(long, default_value_t = 200)]
    val_k: usize,
    /// Run directory.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
}

/// MLMC's level distribution, shared by `train` and `grad-stats`.
#[derive(Args)]
struct MlmcArgs {
    /// MLMC level distribution P(k) = p (1 - p)^k; finite cost needs p > 1/2, finite variance p < 3/4.
    #[arg(long, default_value_t = 0.6)]
    mlmc_p: f64,
    /// MLMC base groups of 2^I0 samples.
    #[arg(long, default_value_t = 2)]
    mlmc_i0: u32,
    /// Largest MLMC level (the run then targets L_{2^(cap+I0+1)} and says so).
    #[arg(long)]
    mlmc_cap: Option<u32>,
}

impl MlmcArgs {
    /// The MLMC settings, with `encoder`.
    fn options(&self, encoder: EncoderChoice) -> UnbiasedOptions {
        UnbiasedOptions {
            mlmc_p: self.mlmc_p,
            mlmc_i0: self.mlmc_i0,
            mlmc_cap: self.mlmc_cap,
            encoder,
        }
    }
}

/// The coupled chains' horizon, shared by `train` and `grad-stats`.
#[derive(Args)]
struct ChainArgs {
    /// Coupled chains: the time average H_{k:m} starts at iteration --chain-k ...
    #[arg(long, default_value_t = 0)]
    chain_k: usize,
    /// ... and ends at --chain-m.
    #[arg(long, default_value_t = 4)]
    chain_m: usize,
    /// Coupled chains: the lag L between the two chains.
    #[arg(long, default_value_t = 1)]
    lag: usize,
    /// Coupled chains: iterations before a datapoint's chains stop unmet (counted and reported; the estimate is then biased).
    #[arg(long, default_value_t = 1000)]
    max_iters: usize,
}

impl ChainArgs {
    fn options(&self) -> ChainOptions {
        ChainOptions {
            burn_in: self.chain_k,
            horizon: self.chain_m,
            lag: self.lag,
            max_iters: self.max_iters,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EncoderArg {
    Dreg,
    Rws,
    Variance,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScheduleArg {
    Constant,
    Burda,
}

#[derive(Args)]
struct EvalArgs {
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

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    common: CommonArgs,
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

fn run_bench(a: BenchArgs) -> Result<()> {
    use unbiased_vae::bench;
    if a.steps == 0 || a.repeats == 0 {
        anyhow::bail!("--steps and --repeats must be at least 1");
    }
    let configs = bench::parse_configs(&a.configs)?;
    let ds = data::load_or_bundled(a.common.data.as_deref(), 400)?;
    let params = bench::peer_model(&ds);
    let mut backend = train::make_backend(
        a.common.backend.into(),
        &params,
        a.common.threads,
        a.common.adapter.as_deref(),
    )?;
    for c in configs {
        backend.set_params(&params.values)?;
        backend.reset_optimizer();
        let r = bench::train_steps(
            backend.as_mut(),
            &ds,
            c.estimator,
            c.k,
            c.batch,
            a.warmup,
            a.steps,
            a.repeats,
        )?;
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
        let r = bench::eval_throughput(backend.as_mut(), &ds, a.eval_k, a.eval_images)?;
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
struct ProfileArgs {
    #[command(flatten)]
    common: CommonArgs,
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
    /// Chrome trace file (open in ui.perfetto.dev or chrome://tracing).
    #[arg(long, default_value = "runs/profile.trace.json")]
    trace: PathBuf,
}

fn run_profile(a: ProfileArgs) -> Result<()> {
    if a.steps == 0 || a.batch == 0 {
        anyhow::bail!("--steps and --batch must be at least 1");
    }
    if a.k < a.estimator.min_samples() {
        anyhow::bail!(
            "--k {} is too small for --estimator {}: it needs at least {}",
            a.k,
            a.estimator,
            a.estimator.min_samples()
        );
    }
    let ds = data::load_or_bundled(a.common.data.as_deref(), 400)?;
    let params = unbiased_vae::bench::peer_model(&ds);
    let mut backend = train::make_backend(
        a.common.backend.into(),
        &params,
        a.common.threads,
        a.common.adapter.as_deref(),
    )?;
    let est = Estimator::new(a.estimator, a.alpha);
    let report = unbiased_vae::profile::profile(
        backend.as_mut(),
        &ds,
        est,
        a.k,
        a.batch,
        a.steps,
        a.warmup,
    )?;
    let trace = serde_json::to_vec(&unbiased_vae::profile::chrome_trace(&report))?;
    if let Some(dir) = a.trace.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for --trace", dir.display()))?;
    }
    unbiased_vae::files::write_atomic(&a.trace, &trace)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", unbiased_vae::profile::format_table(&report));
        println!(
            "\nChrome trace ({} events): {}",
            report.events.len(),
            a.trace.display()
        );
    }
    Ok(())
}

#[derive(Args)]
struct GradStatsArgs {
    /// toy (linear-Gaussian, DReG paper section 6.1) or ppca.
    #[arg(long, value_enum, default_value = "ppca")]
    model: ModelChoice,
    /// Any training estimator, or coupled-pimh, coupled-isir, coupled-disir (toy and ppca).
    #[arg(long, default_value = "iwae")]
    estimator: String,
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
}

fn run_grad_stats(a: GradStatsArgs) -> Result<()> {
    use unbiased_vae::grad_stats;
    let exact = |m: ModelChoice| m.is_exact().then_some(m);
    let kind: EstimatorKind = a
        .estimator
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--estimator: {e}"))?;
    if kind.coupling_kernel().is_some() {
        let model = exact(a.model).context("--estimator coupled-* runs on --model toy or ppca (Fisher's identity needs the exact model)")?;
        let est = Estimator {
            chains: a.chains.options(),
            ..Estimator::new(kind, a.alpha)
        };
        let cfg = est.coupling(a.k).map_err(|e| {
            anyhow::anyhow!("{e} (check --k, --chain-k, --chain-m, --lag and --max-iters)")
        })?;
        let r = grad_stats::grad_stats_coupled(model, cfg, a.reps, a.seed, a.datapoint)?;
        return print_grad_stats(&r, a.json);
    }
    let est = Estimator {
        unbiased: a.mlmc.options(EncoderChoice::default()),
        ..Estimator::new(kind, a.alpha)
    };
    if matches!(kind, EstimatorKind::MlmcSs | EstimatorKind::MlmcRr) {
        est.mlmc()
            .map_err(|e| anyhow::anyhow!("{e} (check --mlmc-p, --mlmc-i0 and --mlmc-cap)"))?;
    }
    let r = match a.model {
        model @ (ModelChoice::Toy | ModelChoice::Ppca) => {
            grad_stats::grad_stats(model, est, a.k, a.reps, a.seed, a.datapoint)?
        }
        ModelChoice::Vae => {
            let ds = data::load_or_bundled(a.common.data.as_deref(), 400)?;
            let params = match &a.checkpoint {
                Some(path) => checkpoint::load(path)?.0,
                None => unbiased_vae::bench::peer_model(&ds),
            };
            if a.datapoint >= ds.test.count {
                anyhow::bail!(
                    "--datapoint {} is out of range: {} test images",
                    a.datapoint,
                    ds.test.count
                );
            }
            let x = data::binarize_eval(&ds.test.slice(a.datapoint..a.datapoint + 1));
            let mut backend = train::make_backend(
                a.common.backend.into(),
                &params,
                a.common.threads,
                a.common.adapter.as_deref(),
            )?;
            grad_stats::grad_stats_vae(
                backend.as_mut(),
                &x,
                est,
                a.k,
                a.reps,
                a.reference_k,
                a.reference_reps,
                a.seed,
                a.datapoint,
            )?
        }
    };
    print_grad_stats(&r, a.json)
}

fn print_grad_stats(r: &unbiased_vae::grad_stats::GradStatsReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", unbiased_vae::grad_stats::format_report(r));
    }
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<()> {
    let model = a.model;
    let cfg = TrainConfig {
        model,
        data: a.common.data,
        valid_size: a.valid_size,
        train_limit: a.train_limit,
        arch: unbiased_vae::config::resolve_arch(model, a.hidden, a.latent)?,
        estimator: Estimator {
            unbiased: a.mlmc.options(match a.encoder {
                EncoderArg::Dreg => EncoderChoice::Dreg,
                EncoderArg::Rws => EncoderChoice::Rws,
                EncoderArg::Variance => EncoderChoice::Variance,
            }),
            chains: a.chains.options(),
            ..Estimator::new(a.estimator, a.alpha)
        },
        k: a.k,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        schedule: match a.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Burda => Schedule::Burda,
        },
        adam: AdamConfig {
            amsgrad: a.amsgrad,
            clip_encoder: a.clip_encoder,
            clip_decoder: a.clip_decoder,
            ..Default::default()
        },
        seed: a.seed,
        threads: a.common.threads,
        backend: a.common.backend.into(),
        adapter: a.common.adapter,
        val_k: a.val_k,
        out: a.out,
    };
    cfg.validate()?;
    for note in train::estimator_notes(&cfg) {
        eprintln!("{note}");
    }
    println!(
        "training {} K={} batch={} for {} epochs -> {}",
        cfg.estimator.kind,
        cfg.k,
        cfg.batch,
        cfg.epochs,
        cfg.out.display()
    );
    let outcome = train::train(&cfg, |m| {
        let exact = match (m.exact_log_px, m.optimum_log_px) {
            (Some(e), Some(o)) => format!("  exact log p(x) {e:>9.3} (optimum {o:.3})"),
            (Some(e), None) => format!("  exact log p(x) {e:>9.3}"),
            _ => String::new(),
        };
        println!(
            "epoch {:>3}  objective {:>9.3}  val L_{} {:>9.3} ± {:.3}{exact}  {:>6.1} s  {:>8.0} datapoints/s",
            m.epoch, m.train_objective, m.val_k, m.val_lk, m.val_lk_stderr, m.seconds, m.datapoints_per_s
        );
        if let Some(c) = &m.chains {
            println!(
                "           chains met at t = {:.2} on average (90% by {}, max {}); {:.1} samples per datapoint used, {:.1} computed",
                c.meeting_time_mean, c.meeting_time_p90, c.meeting_time_max, m.samples_per_datapoint, c.computed_samples_per_datapoint
            );
            if c.capped > 0 {
                eprintln!(
                    "warning: epoch {}: {} datapoint-steps reached --max-iters before their chains met; those gradients are truncated and biased (raise --max-iters)",
                    m.epoch, c.capped
                );
            }
        }
    })?;
    let best = outcome.epochs.last().map(|m| m.val_lk).unwrap_or(f64::NAN);
    println!(
        "done: final validation L_{} = {best:.3}; checkpoint {}",
        cfg.val_k,
        cfg.out.join("checkpoint.safetensors").display()
    );
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    if a.k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let (params, meta) = checkpoint::load(&a.checkpoint)?;
    if let Some(model) = unbiased_vae::exact::training::from_checkpoint_metadata(&meta)? {
        return run_eval_exact(a, params, model);
    }
    let ds = data::load_or_bundled(a.common.data.as_deref(), 0)?;
    if ds.dim() != params.layout.arch.x_dim {
        anyhow::bail!(
            "checkpoint {} models {}-pixel images but the data has {}; pass the matching --data",
            a.checkpoint.display(),
            params.layout.arch.x_dim,
            ds.dim()
        );
    }
    let test = match a.limit {
        Some(0) => anyhow::bail!("--limit must be at least 1"),
        Some(n) if n < ds.test.count => ds.test.slice(0..n),
        _ => ds.test.clone(),
    };
    let x = data::binarize_eval(&test);
    let mut backend = train::make_backend(
        a.common.backend.into(),
        &params,
        a.common.threads,
        a.common.adapter.as_deref(),
    )?;
    let r = eval::log_likelihood(backend.as_mut(), &x, test.count, a.k, a.seed, 0)
        .context("evaluating")?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "L_{} = {:.3} ± {:.3} nats (mean ± standard error over {} test images; {:.1} s, {:.0} samples/s, {})",
            r.k,
            r.mean,
            r.stderr,
            r.count,
            r.seconds,
            r.samples_per_s,
            backend.describe()
        );
    }
    Ok(())
}

/// `uvae eval` of a --model toy / ppca checkpoint: L_K and the exact log p(x) over the data
/// regenerated from the run's seed.
fn run_eval_exact(
    a: EvalArgs,
    params: unbiased_vae::model::Params,
    model: unbiased_vae::exact::training::ExactTraining,
) -> Result<()> {
    if a.common.data.is_some() {
        anyhow::bail!("--data does not apply: this checkpoint's model ({}) regenerates its own data from its seed; drop --data", model.choice().name());
    }
    let count = match a.limit {
        Some(0) => anyhow::bail!("--limit must be at least 1"),
        Some(n) => n.min(model.count()),
        None => model.count(),
    };
    let mut x = model.data_f32();
    x.truncate(count * model.dim());
    let mut backend = train::make_backend(
        a.common.backend.into(),
        &params,
        a.common.threads,
        a.common.adapter.as_deref(),
    )?;
    let r =
        eval::log_likelihood(backend.as_mut(), &x, count, a.k, a.seed, 0).context("evaluating")?;
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

fn run_check(adapter: Option<String>, json: bool) -> Result<()> {
    let choice = unbiased_vae::backend::gpu::AdapterChoice {
        name: adapter,
        allow_software: true,
        disable_subgroups: false,
    };
    let report = unbiased_vae::parity::run_suite(&choice, &Default::default())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", unbiased_vae::parity::format_table(&report));
    }
    if report.failed() > 0 {
        anyhow::bail!(
            "{} parity checks failed on {}",
            report.failed(),
            report.device
        );
    }
    Ok(())
}

fn run_devices(json: bool) -> Result<()> {
    let adapters = unbiased_vae::backend::gpu::list_adapters();
    if json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapters found (install a Vulkan, Metal or DX12 driver; on Debian: mesa-vulkan-drivers); --backend cpu works everywhere");
        return Ok(());
    }
    println!(
        "{:<3} {:<40} {:<8} {:<14} {:<24} {:<9} {:<8} max binding",
        "#", "name", "backend", "type", "driver", "timestamp", "subgroup"
    );
    for a in &adapters {
        let driver = format!("{} {}", a.driver, a.driver_info);
        println!(
            "{:<3} {:<40} {:<8} {:<14} {:<24} {:<9} {:<8} {} MiB",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            driver.trim(),
            if a.timestamp_query { "yes" } else { "no" },
            if a.subgroup { "yes" } else { "no" },
            a.max_storage_binding_mib
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Devices { json } => run_devices(json),
        Command::Bench(a) => run_bench(a),
        Command::GradStats(a) => run_grad_stats(a),
        Command::Profile(a) => run_profile(a),
        Command::Check { adapter, json } => run_check(adapter, json),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
