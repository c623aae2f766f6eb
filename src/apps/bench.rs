//! Training-step throughput, measured the way the PyTorch peer measures it: the same
//! model, dynamic binarization of random MNIST minibatches, Adam, timed after a warm-up.
//! The median of repeated runs is reported.

use crate::backend::{Backend, Noise, StepInputs};
use crate::data::{self, Dataset};
use crate::error::{self, ConfigError};
use crate::estimators::{Estimator, StepPlan};
use crate::model::{Arch, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
use crate::train::MinibatchFeed;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    pub backend: String,
    pub estimator: String,
    pub k: usize,
    pub batch: usize,
    pub steps: usize,
    pub repeats: usize,
    /// Untimed training steps before the first repeat.
    pub warmup: usize,
    /// Median over repeats of datapoints per second.
    pub datapoints_per_s: f64,
    pub min_datapoints_per_s: f64,
    pub max_datapoints_per_s: f64,
}

/// Drives training steps the way the PyTorch peer does: random MNIST minibatches with
/// dynamic binarization, the estimator's program, Adam at lr 1e-3.
pub struct StepDriver<'a> {
    ds: &'a Dataset,
    plan: StepPlan,
    levels: rand_chacha::ChaCha8Rng,
    adam: AdamConfig,
    batch: usize,
    /// Made at the first step, when the backend can take the images.
    feed: Option<MinibatchFeed>,
    idx: Vec<usize>,
    pick: rand_chacha::ChaCha8Rng,
    step: u32,
}

impl<'a> StepDriver<'a> {
    /// Validates the configuration's estimator with its `k` samples (the error names the
    /// flag to fix).
    pub fn new(ds: &'a Dataset, config: &BenchConfig) -> Result<Self, ConfigError> {
        let BenchConfig {
            estimator,
            k,
            batch,
        } = *config;
        error::at_least("--batch", batch, 1, "a minibatch")?;
        error::at_most(
            "--batch",
            batch,
            ds.train.count,
            &format!("a minibatch of the {} training images", ds.train.count),
        )?;
        Ok(StepDriver {
            ds,
            plan: estimator.plan(k)?,
            levels: rand_chacha::ChaCha8Rng::seed_from_u64(1),
            adam: AdamConfig::default(),
            batch,
            feed: None,
            idx: vec![0; batch],
            pick: rand_chacha::ChaCha8Rng::seed_from_u64(0),
            step: 0,
        })
    }

    /// One step: draw and binarize a minibatch (on the device where the backend holds the
    /// images, as the training loop does), then the estimator's training step.
    pub fn step(&mut self, backend: &mut dyn Backend) -> Result<()> {
        let n = self.ds.train.count;
        self.idx
            .iter_mut()
            .for_each(|i| *i = self.pick.random_range(0..n));
        if self.feed.is_none() {
            let (feed, notice) =
                MinibatchFeed::new(backend, Some(&self.ds.train), self.batch, self.ds.dim())?;
            if let Some(n) = notice {
                eprintln!("notice: {n}");
            }
            self.feed = Some(feed);
        }
        let feed = self.feed.as_mut().expect("made above");
        let (images, idx, step) = (&self.ds.train, &self.idx, self.step);
        let x = feed.minibatch(idx, 0, step, |x| {
            data::binarize_train(images, idx, 0, step, x)
        });
        let inputs = StepInputs {
            batch: self.batch,
            noise: Noise {
                seed: 0,
                stream: Stream::Eps,
                step: self.step,
                first_datapoint: 0,
                first_sample: 0,
            },
            adam: self.adam,
            lr: 1e-3,
        };
        crate::train::estimator_step(backend, &self.plan, x, &inputs, &mut self.levels)?;
        self.step += 1;
        Ok(())
    }
}

/// Times `repeats` runs of `steps` training steps of `config` after `warmup` steps.
pub fn train_steps(
    backend: &mut dyn Backend,
    ds: &Dataset,
    config: &BenchConfig,
    warmup: usize,
    steps: usize,
    repeats: usize,
) -> Result<StepBench> {
    error::at_least("--steps", steps, 1, "a benchmark")?;
    error::at_least("--repeats", repeats, 1, "a benchmark")?;
    let BenchConfig {
        estimator,
        k,
        batch,
    } = *config;
    let mut driver = StepDriver::new(ds, config)?;
    for _ in 0..warmup {
        driver.step(backend)?;
    }
    // Steps may run asynchronously (GPU): reading the stats waits for them.
    backend.take_stats()?;
    let mut rates = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = std::time::Instant::now();
        for _ in 0..steps {
            driver.step(backend)?;
        }
        backend.take_stats()?;
        rates.push((steps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(StepBench {
        backend: backend.describe(),
        estimator: estimator.kind.name().to_string(),
        k,
        batch,
        steps,
        repeats,
        warmup,
        datapoints_per_s: rates[rates.len() / 2],
        min_datapoints_per_s: rates[0],
        max_datapoints_per_s: rates[rates.len() - 1],
    })
}

/// Fresh parameters of the MNIST model `--model` names for `ds`: the peer's one-layer
/// model (784-200-200-50) or Burda et al.'s two-layer one; the exact models are an error.
pub fn mnist_model(model: crate::model::ModelChoice, ds: &Dataset) -> anyhow::Result<Params> {
    use crate::model::ModelChoice;
    match model {
        ModelChoice::Vae => Ok(peer_model(ds)),
        ModelChoice::Hvae => Ok(Params::init(
            &Arch {
                x_dim: ds.dim(),
                ..Arch::burda_mnist_two_layer()
            },
            0,
            Some(&ds.train_mean()),
        )),
        m => Err(crate::error::ConfigError::NotApplicable {
            flag: "--model",
            context: format!("here with {m}: this command runs the MNIST models"),
            fix: "use --model vae or --model hvae".into(),
        }
        .into()),
    }
}

/// Fresh parameters of the peer's model (784-200-200-50) for `ds`.
pub fn peer_model(ds: &Dataset) -> Params {
    Params::init(
        &Arch {
            x_dim: ds.dim(),
            ..Arch::burda_mnist()
        },
        0,
        Some(&ds.train_mean()),
    )
}

/// The peak line: the CPU backend's own sgemm on an n x n square, split over its workers.
#[derive(Clone, Debug, Serialize)]
pub struct GemmPeak {
    pub gemm: usize,
    pub threads: usize,
    /// Best of the timed runs.
    pub gflops: f64,
    pub backend: String,
}

/// Times the CPU backend's sgemm on an `n` x `n` square with `threads` workers (0: all).
pub fn gemm_peak(n: usize, threads: usize) -> Result<GemmPeak> {
    error::at_least("--gemm-peak", n, 64, "a GEMM benchmark")?;
    error::at_most("--gemm-peak", n, 8192, "a GEMM benchmark")?;
    error::threads(threads)?;
    crate::backend::cpu::vector_path::configured()?;
    let pool = crate::backend::cpu::worker_pool(threads)?;
    let threads = pool.current_num_threads();
    Ok(GemmPeak {
        gemm: n,
        threads,
        gflops: crate::backend::cpu::square_sgemm_gflops(&pool, n, 3),
        backend: format!(
            "cpu ({threads} threads, {})",
            crate::backend::cpu::vector_path::describe()
        ),
    })
}

/// `--phases`: the one-layer decoder's phases timed alone on `rows` sample rows (K = 50,
/// batch 100 gives 5,000), with `threads` workers (0: all) and again with one, so the split
/// over cores shows beside each rate.
pub fn phase_rates(rows: usize, threads: usize) -> Result<Vec<crate::backend::cpu::PhaseRate>> {
    error::at_least("--phases", rows, 1, "the phase benchmark")?;
    error::at_most("--phases", rows, 1 << 16, "the phase benchmark")?;
    error::threads(threads)?;
    crate::backend::cpu::vector_path::configured()?;
    let dims = Arch::burda_mnist().decoder_dims();
    let mut all = Vec::new();
    let pool = crate::backend::cpu::worker_pool(threads)?;
    all.extend(crate::backend::cpu::decoder_phase_rates(
        &pool, &dims, rows, 5,
    ));
    if pool.current_num_threads() > 1 {
        let one = crate::backend::cpu::worker_pool(1)?;
        all.extend(crate::backend::cpu::decoder_phase_rates(
            &one, &dims, rows, 5,
        ));
    }
    Ok(all)
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalBench {
    pub backend: String,
    pub k: usize,
    pub images: usize,
    pub seconds: f64,
    pub datapoints_per_s: f64,
    pub samples_per_s: f64,
    pub mean_lk: f64,
}

/// Times L_K over the first `limit` test images.
pub fn eval_throughput(
    backend: &mut dyn Backend,
    ds: &Dataset,
    k: usize,
    limit: usize,
) -> Result<EvalBench> {
    let test = ds.test.slice(0..limit.min(ds.test.count));
    let x = data::binarize_eval(&test);
    let r = crate::eval::log_likelihood(
        backend,
        &x,
        test.count,
        k,
        crate::eval::DEFAULT_EVAL_SEED,
        0,
    )?;
    Ok(EvalBench {
        backend: backend.describe(),
        k,
        images: test.count,
        seconds: r.seconds,
        datapoints_per_s: test.count as f64 / r.seconds,
        samples_per_s: r.samples_per_s,
        mean_lk: r.mean,
    })
}

/// A training configuration to time: estimator, samples, batch.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub estimator: Estimator,
    pub k: usize,
    pub batch: usize,
}

/// Parses "iwae:50:100,iwae-dreg:50:100" (estimator:k:batch); "none" is no configuration.
pub fn parse_configs(s: &str) -> Result<Vec<BenchConfig>> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|part| {
            let f: Vec<&str> = part.trim().split(':').collect();
            if f.len() != 3 {
                anyhow::bail!(
                    "--configs entry '{part}' must be estimator:k:batch, e.g. iwae:50:100"
                );
            }
            let kind = f[0]
                .parse::<crate::estimators::EstimatorKind>()
                .map_err(|e| anyhow::anyhow!("--configs: {e}"))?;
            let k: usize = f[1].parse().map_err(|_| {
                anyhow::anyhow!("--configs entry '{part}': k '{}' is not a number", f[1])
            })?;
            let batch: usize = f[2].parse().map_err(|_| {
                anyhow::anyhow!("--configs entry '{part}': batch '{}' is not a number", f[2])
            })?;
            let estimator = Estimator::new(kind, 0.5);
            let checked = error::at_least("--batch", batch, 1, "a minibatch")
                .and_then(|()| estimator.plan(k).map(drop));
            if let Err(e) = checked {
                anyhow::bail!("--configs entry '{part}' (estimator:k:batch): {e}");
            }
            Ok(BenchConfig {
                estimator,
                k,
                batch,
            })
        })
        .collect()
}
