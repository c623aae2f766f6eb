//! `uvae grad-stats` through a training backend: the VAE against a large-K IWAE reference,
//! and the exact two-layer model (`--model hgauss`) against its closed-form gradient.

use super::{group_stats, settings, GradStatsReport, GradStatsRun};
use crate::estimators::{Estimator, EstimatorKind};
use crate::model::ModelChoice;
use crate::progress::Progress;
use crate::stats::Moments;
use anyhow::{bail, Result};
use rand::SeedableRng;

/// What a backend-driven statistics run compares its estimates with.
pub enum Reference {
    /// The mean of `reps` IWAE gradients with `k` samples, which estimates grad L_k, close
    /// to grad log p(x) for large k (the VAE: no closed form); its standard error enters the
    /// z-test.
    Iwae { k: usize, reps: usize },
    /// The closed-form gradient `grad` of the coordinates `positions` of the flat parameter
    /// vector, named `groups` (ranges into `positions`), and log p(x) (`--model hgauss`).
    Exact {
        model: ModelChoice,
        positions: Vec<usize>,
        grad: Vec<f64>,
        log_px: f64,
        groups: Vec<(String, std::ops::Range<usize>)>,
    },
}

/// Gradient statistics of `run`'s estimator on the VAE in `backend` at the single datapoint
/// `x` (`run.datapoint` names it), against the mean of `reference_reps` IWAE gradients with
/// `reference_k` samples. The z-test uses both standard errors.
pub fn grad_stats_vae(
    backend: &mut dyn crate::backend::Backend,
    x: &[f32],
    run: &GradStatsRun,
    reference_k: usize,
    reference_reps: usize,
    progress: &mut dyn Progress,
) -> Result<GradStatsReport> {
    let reference = Reference::Iwae {
        k: reference_k,
        reps: reference_reps,
    };
    backend_stats(backend, x, run, &reference, progress)
}

/// `grad-stats --model hgauss`: the statistics at datapoint `run.datapoint` of the exact
/// two-layer model of `run.seed` with both encoders at 1.2 times the posterior's standard
/// deviations (as `tests/integration/hgauss_unbiased.rs`), through the CPU backend's
/// two-layer passes, against the closed-form gradient of (A, a, B, b).
pub fn grad_stats_hgauss(
    run: &GradStatsRun,
    progress: &mut dyn Progress,
) -> Result<GradStatsReport> {
    if run.estimator.plan(run.k)?.coupling().is_some() {
        // Fisher's identity on the model with its hierarchical q (exact::HGaussQ).
        return super::grad_stats(ModelChoice::Hgauss, run, progress);
    }
    let (seed, datapoint) = (run.seed, run.datapoint);
    use crate::model::exact_training::{hgauss_to_params_at_posterior, params_to_hgauss};
    let base = crate::exact::HGauss::new(seed);
    if datapoint >= base.data().len() {
        bail!(
            "--datapoint {datapoint} is out of range: --model hgauss has {} datapoints",
            base.data().len()
        );
    }
    let params = hgauss_to_params_at_posterior(&base, super::HGAUSS_SD_INFLATION);
    let model = params_to_hgauss(&params, base.data().to_vec())?;
    let x64 = &model.data()[datapoint];
    let x: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    let l = &params.layout;
    let (d1, dx) = (l.arch.z_dim, l.arch.x_dim);
    let d2 = l.arch.noise_dim() - d1;
    // decoder2's mean rows (A, a) and the decoder (B, b): the order of exact_grad_theta.
    let (dec2, dec) = (&l.decoder2[0], &l.decoder[0]);
    let positions: Vec<usize> = (dec2.w..dec2.w + d1 * d2)
        .chain(dec2.b..dec2.b + d1)
        .chain(dec.w..dec.w + dx * d1)
        .chain(dec.b..dec.b + dx)
        .collect();
    let mut at = 0;
    let groups = [("A", d1 * d2), ("a", d1), ("B", dx * d1), ("b", dx)]
        .into_iter()
        .map(|(name, len)| {
            at += len;
            (name.to_string(), at - len..at)
        })
        .collect();
    let reference = Reference::Exact {
        model: ModelChoice::Hgauss,
        positions,
        grad: model.exact_grad_theta(x64),
        log_px: model.exact_log_px(x64),
        groups,
    };
    let mut backend = crate::backend::cpu::CpuBackend::new(&params.layout, &params.values, 1)?;
    backend_stats(&mut backend, &x, run, &reference, progress)
}

/// `run`'s estimates of its estimator's gradient through `backend` at datapoint `x`,
/// against `reference`.
fn backend_stats(
    backend: &mut dyn crate::backend::Backend,
    x: &[f32],
    run: &GradStatsRun,
    reference: &Reference,
    progress: &mut dyn Progress,
) -> Result<GradStatsReport> {
    let GradStatsRun {
        estimator,
        k,
        reps,
        seed,
        datapoint,
    } = *run;
    use crate::backend::Noise;
    use crate::rng::Stream;
    let reference_reps = match reference {
        Reference::Iwae { reps, .. } => *reps,
        Reference::Exact { .. } => 0,
    };
    if reps < 2 || matches!(reference, Reference::Iwae { reps, .. } if *reps < 2) {
        bail!("--reps and --reference-reps must be at least 2");
    }
    let layout = backend.layout().clone();
    let positions: Vec<usize> = match reference {
        Reference::Iwae { .. } => (layout.encoder_len..layout.len).collect(),
        Reference::Exact { positions, .. } => positions.clone(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x67AD_57A7);
    let plan = estimator.plan(k)?;
    if plan.coupling().is_some() {
        bail!("--estimator coupled-* runs on --model toy, ppca or hgauss (Fisher's identity needs the exact model)");
    }
    let mut coeffs = crate::estimators::Coefficients::default();
    let mut run = |backend: &mut dyn crate::backend::Backend,
                   plan: &crate::estimators::StepPlan,
                   step: u32,
                   acc: &mut Moments,
                   rng: &mut rand_chacha::ChaCha8Rng|
     -> Result<(usize, f64)> {
        let draw = plan.draw(rng).expect("a coefficient plan");
        let noise = Noise {
            seed,
            stream: Stream::Eps,
            step,
            first_datapoint: datapoint as u32,
            first_sample: 0,
        };
        let lw = backend.forward(x, 1, draw.n, &noise)?;
        draw.program.coefficients_into(lw, 1, draw.n, &mut coeffs);
        backend.backward(&coeffs.a, &coeffs.b, &coeffs.c)?;
        let g = backend.gradient()?;
        let picked: Vec<f64> = positions.iter().map(|&i| g[i] as f64).collect();
        acc.push(&picked);
        Ok((draw.n, coeffs.objective[0]))
    };
    let mut iwae_reference = Moments::new(positions.len());
    let mut lk = 0.0;
    progress.start("reference", (reference_reps + reps) as u64, "gradients");
    if let Reference::Iwae { k: reference_k, .. } = reference {
        let reference_plan = Estimator::new(EstimatorKind::Iwae, 0.0).plan(*reference_k)?;
        for r in 0..reference_reps {
            progress.advance(r as u64);
            lk += run(
                backend,
                &reference_plan,
                (1 << 30) + r as u32,
                &mut iwae_reference,
                &mut rng,
            )?
            .1 / reference_reps as f64;
        }
    }
    let mut est = Moments::new(positions.len());
    let mut cost = 0;
    for r in 0..reps {
        progress.advance((reference_reps + r) as u64);
        cost += run(backend, &plan, r as u32, &mut est, &mut rng)?.0;
    }
    progress.finish();
    let (model, groups, exact_log_px, reference_text) = match reference {
        Reference::Iwae { k: reference_k, .. } => {
            let groups = layout
                .decoder2
                .iter()
                .chain(&layout.decoder)
                .map(|l| {
                    let range = (l.w - layout.encoder_len)..(l.b + l.out - layout.encoder_len);
                    group_stats(l.name.clone(), range, &est, |i| {
                        (
                            iwae_reference.mean(i),
                            iwae_reference.var(i) / iwae_reference.count() as f64,
                        )
                    })
                })
                .collect();
            let model = if layout.arch.top.is_some() {
                ModelChoice::Hvae
            } else {
                ModelChoice::Vae
            };
            (model, groups, lk, format!("the mean of {reference_reps} IWAE gradients with K = {reference_k} (estimates grad L_{reference_k}; its standard error enters the z-test)"))
        }
        Reference::Exact {
            model,
            grad,
            log_px,
            groups,
            ..
        } => {
            let groups = groups
                .iter()
                .map(|(name, range)| {
                    group_stats(name.clone(), range.clone(), &est, |i| (grad[i], 0.0))
                })
                .collect();
            (
                *model,
                groups,
                *log_px,
                "the exact gradient (closed form)".to_string(),
            )
        }
    };
    Ok(GradStatsReport {
        model,
        estimator: estimator.kind.name().to_string(),
        settings: settings(&estimator, k),
        k,
        reps,
        datapoint,
        exact_log_px,
        reference: reference_text,
        cost_measured: cost as f64 / reps as f64,
        cost_expected: plan.expected_samples().unwrap_or(f64::NAN),
        groups,
        mlmc_decay: None,
        beta: None,
        p_range: None,
        meeting: None,
    })
}
