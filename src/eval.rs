//! The IWAE bound L_K = log (1/K) sum_k w_k as an estimate of log p(x), chunked over
//! datapoints and samples so memory stays bounded for any K.

use crate::backend::{Backend, Noise};
use crate::progress::{Progress, Silent};
use crate::rng::Stream;
use anyhow::Result;
use serde::Serialize;

/// Seed of the evaluation noise unless the caller gives one.
pub const DEFAULT_EVAL_SEED: u64 = 0xE7A1;

#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub k: usize,
    pub count: usize,
    /// Mean of L_K over datapoints, nats.
    pub mean: f64,
    /// Standard error of that mean over datapoints.
    pub stderr: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
    #[serde(skip)]
    pub per_point: Vec<f64>,
}

/// L_K for each of `count` datapoints in `x` [count, x_dim]. Datapoint i uses noise
/// (EvalEps, step 0, first_index + i), so a subset scores the same as in the whole set.
pub fn log_likelihood(
    backend: &mut dyn Backend,
    x: &[f32],
    count: usize,
    k: usize,
    seed: u64,
    first_index: u32,
) -> Result<EvalResult> {
    log_likelihood_with(backend, x, count, k, seed, first_index, &mut Silent)
}

/// [`log_likelihood`], reporting the datapoints done to `progress`.
pub fn log_likelihood_with(
    backend: &mut dyn Backend,
    x: &[f32],
    count: usize,
    k: usize,
    seed: u64,
    first_index: u32,
    progress: &mut dyn Progress,
) -> Result<EvalResult> {
    progress.start(&format!("L_{k}"), count as u64, "datapoints");
    let xd = backend.layout().arch.x_dim;
    let start = std::time::Instant::now();
    let max_rows = backend.eval_rows().min(backend.max_rows()).max(1);
    let k_chunk = k.min(max_rows);
    let points = (max_rows / k_chunk).max(1);
    let mut per_point = Vec::with_capacity(count);
    // Values an interrupted evaluation left kept are not this one's.
    backend.lse_take()?;
    let mut b0 = 0;
    while b0 < count {
        let nb = points.min(count - b0);
        let mut s0 = 0;
        while s0 < k {
            let ns = k_chunk.min(k - s0);
            let noise = Noise {
                seed,
                stream: Stream::EvalEps,
                step: 0,
                first_datapoint: first_index + b0 as u32,
                first_sample: s0 as u32,
            };
            backend.lse_chunk(&x[b0 * xd..(b0 + nb) * xd], nb, ns, &noise, s0 == 0)?;
            s0 += ns;
        }
        backend.lse_keep(nb)?;
        b0 += nb;
        progress.advance(b0 as u64);
    }
    // One readback for the whole evaluation, not one per group of datapoints.
    per_point.extend(backend.lse_take()?.iter().map(|v| v - (k as f64).ln()));
    if per_point.len() != count {
        anyhow::bail!(
            "the backend kept {} evaluation values for {count} datapoints",
            per_point.len()
        );
    }
    progress.finish();
    let n = per_point.len() as f64;
    let mean = per_point.iter().sum::<f64>() / n;
    let var = if per_point.len() > 1 {
        per_point.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let seconds = start.elapsed().as_secs_f64();
    Ok(EvalResult {
        k,
        count,
        mean,
        stderr: (var / n).sqrt(),
        seconds,
        samples_per_s: (count * k) as f64 / seconds,
        per_point,
    })
}
