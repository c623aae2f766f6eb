//! The JVI estimate on the test images (`--test-every` of a JVI or JVI-DReG run): the DReG
//! paper's JVI panels plot it, not the IWAE bound, since JVI's objective is no bound.

use crate::backend::{Backend, Noise};
use crate::estimators::{Coefficients, Estimator, EstimatorKind};
use crate::rng::Stream;
use anyhow::{bail, Result};

/// Whether a run of `kind` logs the JVI estimate beside its test bound.
pub fn logs_jvi(kind: EstimatorKind) -> bool {
    matches!(kind, EstimatorKind::Jvi | EstimatorKind::JviDreg)
}

/// The first-order jackknife estimate J = K L_K - (K-1) mean_i L_{K-1}^(-i) of each of
/// `count` datapoints in `x`, from the samples the test bound L_K draws (EvalEps, step 0,
/// datapoint i, samples 0..K), averaged: (mean, standard error over the datapoints).
pub fn jvi_estimate(
    backend: &mut dyn Backend,
    x: &[f32],
    count: usize,
    k: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let jvi = Estimator::new(EstimatorKind::Jvi, 0.0);
    // K >= 2, or an error naming it.
    jvi.plan(k)?;
    let per_pass = backend.max_rows() / k;
    if per_pass == 0 {
        bail!(
            "--test-k {k}: the JVI estimate needs all K samples of a datapoint in one pass of {} rows; lower --test-k",
            backend.max_rows()
        );
    }
    let xd = x.len() / count.max(1);
    let mut coeffs = Coefficients::default();
    let mut values = Vec::with_capacity(count);
    for b0 in (0..count).step_by(per_pass) {
        let nb = per_pass.min(count - b0);
        let noise = Noise {
            seed,
            stream: Stream::EvalEps,
            step: 0,
            first_datapoint: b0 as u32,
            first_sample: 0,
        };
        let lw = backend.forward(&x[b0 * xd..(b0 + nb) * xd], nb, k, &noise)?;
        jvi.coefficients_into(lw, nb, k, &mut coeffs);
        values.extend_from_slice(&coeffs.objective[..nb]);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Ok((mean, (var / n).sqrt()))
}
