//! `uvae figure NAME`: the figures of docs/img, each written as PNG, CSV and JSON.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use unbiased_vae::apps::bench;
use unbiased_vae::apps::figures::{
    bias, dreg_curves, meeting_times, mlmc_decay, parse_sizes, snr, Figure,
};
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::data;
use unbiased_vae::model::{checkpoint, ModelChoice};

#[derive(Args)]
pub struct FigureArgs {
    #[command(subcommand)]
    figure: Which,
}

/// Flags every figure takes.
#[derive(Args)]
struct Common {
    /// Folder for <name>.png, <name>.csv and <name>.json; or FILE.png, with FILE.csv and
    /// FILE.json beside it.
    #[arg(long, default_value = "runs/figures", value_name = "DIR|FILE.png")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which datapoint of the model's data (mlmc-decay's VAE: a test image).
    #[arg(long, default_value_t = 0)]
    datapoint: usize,
}

#[derive(Subcommand)]
enum Which {
    /// Encoder-gradient SNR, squared bias and variance against K (Tucker et al. 2019, §6.1, Fig. 1): IWAE, STL, IWAE-DReG, RWS, RWS-DReG.
    Snr {
        #[command(flatten)]
        common: Common,
        /// toy (the linear-Gaussian toy) or vae (the MNIST VAE).
        #[arg(long, default_value = "toy", value_parser = ["toy", "vae"])]
        model: String,
        /// Gradient estimates per K, shared by the five estimators (default: 2000 on the toy, 500 on the VAE).
        #[arg(long)]
        reps: Option<usize>,
        /// Sample sizes (default: 1,3,10,30,100,300,1000 on the toy, 1,3,10,30,100,300 on the VAE).
        #[arg(long)]
        ks: Option<String>,
        /// VAE weights for --model vae (default: fresh, as `uvae bench`'s peer model).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// MNIST-layout IDX folder for --model vae's test image (default: the bundled MNIST).
        #[arg(long)]
        data: Option<PathBuf>,
        /// CPU backend threads (0: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// E[Delta_k^2] against the MLMC level on PPCA and the MNIST VAE, with the fitted beta and p range.
    MlmcDecay {
        #[command(flatten)]
        common: Common,
        /// Draws per level on PPCA.
        #[arg(long, default_value_t = 2000)]
        reps: usize,
        /// Draws per level on the VAE (0: leave the VAE out).
        #[arg(long, default_value_t = 400)]
        vae_reps: usize,
        #[arg(long, default_value_t = 6)]
        max_level: u32,
        /// Base groups of 2^I0 samples.
        #[arg(long, default_value_t = 2)]
        i0: u32,
        /// VAE weights (default: fresh, as `uvae bench`'s peer model).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// MNIST-layout IDX folder for the VAE's test image (default: the bundled MNIST).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Meeting-time survival P(tau > t) of coupled PIMH, ISIR and DISIR (a labelled reconstruction) chains.
    MeetingTimes {
        #[command(flatten)]
        common: Common,
        /// Coupled runs per (kernel, K).
        #[arg(long, default_value_t = 10000)]
        reps: usize,
        #[arg(long, default_value = "2,5,10,20")]
        ks: String,
        #[arg(long, value_enum, default_value = "ppca")]
        model: ModelChoice,
        #[arg(long, default_value_t = 1000)]
        max_iters: usize,
    },
    /// Training curves as the DReG paper draws them: test objective (JVI's estimate for JVI runs) against steps, relative to a baseline group if named, each seed faint and the mean bold; the encoder gradient's variance beside it where logged.
    DregCurves {
        /// Run directories (e.g. a `uvae reproduce dreg` folder's `*-seed*`); runs are grouped by their name without `-seed<S>`.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// Draw the test objective relative to this group's mean at the same step (e.g. iwae-dreg-k64).
        #[arg(long, value_name = "GROUP")]
        baseline: Option<String>,
        /// Folder for dreg-curves.png/.csv/.json, or FILE.png.
        #[arg(long, default_value = "runs/figures", value_name = "DIR|FILE.png")]
        out: PathBuf,
    },
    /// Bias of log p(x) estimates against cost: IWAE (L_K), SUMO, MLMC-SS, MLMC-RR, ±2 SE bars.
    Bias {
        #[command(flatten)]
        common: Common,
        /// Estimates per point.
        #[arg(long, default_value_t = 20000)]
        reps: usize,
        #[arg(long, value_enum, default_value = "ppca")]
        model: ModelChoice,
    },
}

/// The VAE's weights (a checkpoint, or `uvae bench`'s fresh peer model) and test image
/// `datapoint` of the data folder (default: the bundled MNIST), binarised for evaluation.
fn vae_and_image(
    dir: Option<&std::path::Path>,
    weights: Option<&std::path::Path>,
    datapoint: usize,
) -> Result<(unbiased_vae::model::Params, Vec<f32>)> {
    let ds = data::load_or_bundled(dir, 400)?;
    let params = match weights {
        Some(p) => checkpoint::load(p)?.0,
        None => bench::peer_model(&ds),
    };
    if datapoint >= ds.test.count {
        anyhow::bail!(
            "--datapoint {datapoint}: the test set has {} images",
            ds.test.count
        );
    }
    let x = data::binarize_eval(&ds.test.slice(datapoint..datapoint + 1));
    Ok((params, x))
}

pub fn run(a: FigureArgs) -> Result<()> {
    let (fig, out): (Figure, PathBuf) = match a.figure {
        Which::Snr {
            common,
            model,
            reps,
            ks,
            checkpoint,
            data,
            threads,
        } => {
            let vae = model == "vae";
            if !vae && (checkpoint.is_some() || data.is_some()) {
                anyhow::bail!("--checkpoint and --data apply to --model vae only");
            }
            let default_ks = if vae {
                "1,3,10,30,100,300"
            } else {
                "1,3,10,30,100,300,1000"
            };
            let cfg = snr::SnrConfig {
                seed: common.seed,
                reps: reps.unwrap_or(if vae { 500 } else { 2000 }),
                ks: parse_sizes(ks.as_deref().unwrap_or(default_ks), "--ks")?,
                datapoint: common.datapoint,
                threads,
            };
            let fig = if vae {
                let (params, x) =
                    vae_and_image(data.as_deref(), checkpoint.as_deref(), common.datapoint)?;
                let weights = checkpoint
                    .as_ref()
                    .map_or("fresh (seed 0)".to_string(), |p| p.display().to_string());
                let mut src = snr::vae_source(&params, x, common.datapoint, threads)?;
                let settings = serde_json::json!({ "model": "vae", "weights": weights });
                snr::figure(&cfg, &mut src, "MNIST VAE", settings)?
            } else {
                let mut src = snr::toy_source(common.seed, common.datapoint, threads)?;
                let settings = serde_json::json!({
                    "model": "toy",
                    "perturbation_sd": unbiased_vae::exact::Toy::PAPER_PERTURB_SD,
                });
                snr::figure(&cfg, &mut src, "toy (D = 20)", settings)?
            };
            (fig, common.out)
        }
        Which::MlmcDecay {
            common,
            reps,
            vae_reps,
            max_level,
            i0,
            checkpoint,
            data,
            threads,
        } => {
            let cfg = mlmc_decay::DecayConfig {
                seed: common.seed,
                reps,
                vae_reps,
                max_level,
                i0,
                datapoint: common.datapoint,
                vae: (vae_reps > 0).then(|| match &checkpoint {
                    Some(p) => mlmc_decay::VaeSource::Checkpoint(p.clone()),
                    None => mlmc_decay::VaeSource::Fresh,
                }),
                threads,
            };
            let mut decays = vec![mlmc_decay::ppca_decay(&cfg)?];
            if cfg.vae.is_some() {
                let (params, x) =
                    vae_and_image(data.as_deref(), checkpoint.as_deref(), common.datapoint)?;
                let mut backend = CpuBackend::new(&params.layout, &params.values, threads)?;
                decays.push(mlmc_decay::vae_decay(&mut backend, &x, &cfg)?);
            }
            (mlmc_decay::figure(&cfg, &decays)?, common.out)
        }
        Which::MeetingTimes {
            common,
            reps,
            ks,
            model,
            max_iters,
        } => {
            let cfg = meeting_times::MeetingConfig {
                model,
                seed: common.seed,
                reps,
                ks: parse_sizes(&ks, "--ks")?,
                datapoint: common.datapoint,
                max_iters,
            };
            (meeting_times::figure(&cfg)?, common.out)
        }
        Which::Bias {
            common,
            reps,
            model,
        } => {
            let cfg = bias::BiasConfig {
                model,
                seed: common.seed,
                reps,
                datapoint: common.datapoint,
                ..bias::BiasConfig::default()
            };
            (bias::figure(&cfg)?, common.out)
        }
        Which::DregCurves {
            runs,
            baseline,
            out,
        } => {
            let cfg = dreg_curves::CurvesConfig { runs, baseline };
            (dreg_curves::figure(&cfg)?, out)
        }
    };
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let w = if is_png {
        fig.write_to(&out)?
    } else {
        fig.write(&out)?
    };
    println!("{}", fig.chart.title);
    for n in &fig.notes {
        println!("note: {n}");
    }
    if !fig.summary.is_null() {
        println!("summary: {}", fig.summary);
    }
    println!(
        "wrote {}, {}, {}",
        w.png.display(),
        w.csv.display(),
        w.json.display()
    );
    Ok(())
}
