//! Training-step throughput, measured the way the PyTorch peer measures it: the same
//! model, dynamic binarization of random MNIST minibatches, Adam, timed after a warm-up.
//! The median of repeated runs is reported.

use crate::backend::{Backend, Noise};
use crate::data::{self, Dataset};
use crate::estimators::Estimator;
use crate::model::{Arch, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
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
    /// Median over repeats of datapoints per second.
    pub datapoints_per_s: f64,
    pub min_datapoints_per_s: f64,
    pub max_datapoints_per_s: f64,
}

/// Times `repeats` runs of `steps` training steps after `warmup` steps.
#[allow(clippy::too_many_arguments)]
pub fn train_steps(
    backend: &mut dyn Backend,
    ds: &Dataset,
    estimator: Estimator,
    k: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    repeats: usize,
) -> Result<StepBench> {
    let xd = ds.dim();
    let mut x = vec![0.0f32; batch * xd];
    let mut idx = vec![0usize; batch];
    let program = estimator.program();
    let mut pick = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let adam = AdamConfig::default();
    let mut step = 0u32;
    let mut one = |backend: &mut dyn Backend| -> Result<()> {
        idx.iter_mut()
            .for_each(|i| *i = pick.random_range(0..ds.train.count));
        data::binarize_train(&ds.train, &idx, 0, step, &mut x);
        let noise = Noise {
            seed: 0,
            stream: Stream::Eps,
            step,
            first_datapoint: 0,
            first_sample: 0,
        };
        backend.train_step(&x, batch, k, &noise, &program, &adam, 1e-3)?;
        step += 1;
        Ok(())
    };
    for _ in 0..warmup {
        one(backend)?;
    }
    // Steps may run asynchronously (GPU): reading the stats waits for them.
    backend.take_stats()?;
    let mut rates = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = std::time::Instant::now();
        for _ in 0..steps {
            one(backend)?;
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
        datapoints_per_s: rates[rates.len() / 2],
        min_datapoints_per_s: rates[0],
        max_datapoints_per_s: rates[rates.len() - 1],
    })
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
