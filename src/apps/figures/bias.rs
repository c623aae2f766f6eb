//! `uvae figure bias`: the bias of estimates of log p(x) against their expected cost
//! (samples per datapoint) on an exact model, whose log p(x) is known: the IWAE bound L_K
//! (biased low, the bias shrinking like 1/K), SUMO, MLMC single-sample and MLMC Russian
//! roulette (unbiased at every cost). Each point is the mean of `reps` independent estimates,
//! with ±2 standard-error bars.

use super::{exact_log_weights, Figure, Table};
use crate::apps::plot::{Axis, Chart, Line, Marker, Series};
use crate::estimators::{iwae_bound, Estimator, EstimatorKind, StepPlan};
use crate::exact::{ExactModel, Ppca, Toy};
use crate::model::ModelChoice;
use crate::stats::Moments;
use anyhow::{bail, Result};
use rand::SeedableRng;
use serde_json::json;

#[derive(Clone, Debug, PartialEq)]
pub struct BiasConfig {
    pub model: ModelChoice,
    pub seed: u64,
    /// Independent estimates per point.
    pub reps: usize,
    pub datapoint: usize,
    /// IWAE's K.
    pub iwae_ks: Vec<usize>,
    /// SUMO's m (the minimum number of samples).
    pub sumo_ms: Vec<usize>,
    /// MLMC's I0 (base groups of 2^I0 samples), at the default p = 0.6.
    pub mlmc_i0s: Vec<u32>,
}

impl Default for BiasConfig {
    fn default() -> Self {
        BiasConfig {
            model: ModelChoice::Ppca,
            seed: 0,
            reps: 20000,
            datapoint: 0,
            iwae_ks: vec![1, 2, 4, 8, 16, 32, 64],
            sumo_ms: vec![1, 2, 4, 8, 16],
            mlmc_i0s: vec![0, 1, 2, 3],
        }
    }
}

/// One plotted point.
#[derive(Clone, Debug, PartialEq)]
pub struct BiasPoint {
    pub estimator: EstimatorKind,
    /// "K = 8", "m = 4", "I0 = 2".
    pub setting: String,
    pub cost_mean: f64,
    pub cost_expected: f64,
    pub estimate: f64,
    pub bias: f64,
    pub stderr: f64,
}

/// Estimates of log p(x) from `plan` (or L_K for IWAE), `reps` of them.
fn run_point(
    model: &dyn ExactModel,
    x: &[f64],
    plan: &StepPlan,
    reps: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> (Moments, Moments) {
    let (mut est, mut cost) = (Moments::new(1), Moments::new(1));
    for _ in 0..reps {
        let draw = plan.draw(rng).expect("a fixed or random-size plan");
        let l = exact_log_weights(model, x, draw.n, rng);
        let v = match plan {
            StepPlan::Fixed { .. } => iwae_bound(&l),
            _ => {
                let (mut a, mut b, mut c) =
                    (vec![0.0; draw.n], vec![0.0; draw.n], vec![0.0; draw.n]);
                draw.program.evaluate_row(&l, &mut a, &mut b, &mut c)
            }
        };
        est.push(&[v]);
        cost.push(&[draw.n as f64]);
    }
    (est, cost)
}

pub fn measure(cfg: &BiasConfig) -> Result<(Vec<BiasPoint>, f64)> {
    if cfg.reps < 2 {
        bail!("--reps must be at least 2 (a standard error needs two estimates)");
    }
    let model: Box<dyn ExactModel> = match cfg.model {
        ModelChoice::Toy => Box::new(Toy::new(cfg.seed)),
        ModelChoice::Ppca => Box::new(Ppca::new(cfg.seed)),
        m @ (ModelChoice::Vae | ModelChoice::Hvae) => {
            bail!("--model {m} has no exact log p(x): use toy or ppca")
        }
        ModelChoice::Hgauss => bail!("--model hgauss is not in this figure yet: use toy or ppca"),
    };
    let Some(x) = model.data().get(cfg.datapoint) else {
        bail!("--datapoint {} is out of range", cfg.datapoint);
    };
    let exact = model.exact_log_px(x);
    let mut jobs: Vec<(EstimatorKind, String, StepPlan)> = Vec::new();
    for &k in &cfg.iwae_ks {
        let plan = Estimator::new(EstimatorKind::Iwae, 0.0).plan(k)?;
        jobs.push((EstimatorKind::Iwae, format!("K = {k}"), plan));
    }
    for &m in &cfg.sumo_ms {
        let plan = Estimator::new(EstimatorKind::Sumo, 0.0).plan(m)?;
        jobs.push((EstimatorKind::Sumo, format!("m = {m}"), plan));
    }
    for kind in [EstimatorKind::MlmcSs, EstimatorKind::MlmcRr] {
        for &i0 in &cfg.mlmc_i0s {
            let mut e = Estimator::new(kind, 0.0);
            e.unbiased.mlmc_i0 = i0;
            jobs.push((kind, format!("I0 = {i0}"), e.plan(1)?));
        }
    }
    let mut points = Vec::new();
    for (j, (kind, setting, plan)) in jobs.into_iter().enumerate() {
        // One stream per point, so changing one list leaves the other points unchanged.
        let tag = ((kind as u64) << 40) ^ ((j as u64) << 20) ^ setting.len() as u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xB1A5_0000 ^ tag);
        let (est, cost) = run_point(model.as_ref(), x, &plan, cfg.reps, &mut rng);
        points.push(BiasPoint {
            estimator: kind,
            setting,
            cost_mean: cost.mean(0),
            cost_expected: plan.expected_samples().unwrap_or(cost.mean(0)),
            estimate: est.mean(0),
            bias: est.mean(0) - exact,
            stderr: est.stderr(0),
        });
    }
    Ok((points, exact))
}

pub fn figure(cfg: &BiasConfig) -> Result<Figure> {
    let (points, exact) = measure(cfg)?;
    let mut table = Table::new(&[
        "estimator",
        "setting",
        "cost_mean",
        "cost_expected",
        "estimate",
        "bias",
        "stderr",
        "exact_log_px",
    ]);
    let mut chart = Chart::new(
        format!(
            "Bias of log p(x) estimates on {} (log p(x) = {exact:.3}; {} per point, bars ±2 SE)",
            cfg.model.name(),
            cfg.reps
        ),
        Axis::log("expected cost (samples per datapoint)"),
        Axis::linear("bias: mean estimate - log p(x) (nats)"),
    );
    let kinds = [
        (
            EstimatorKind::Iwae,
            "IWAE L_K (a lower bound)",
            Marker::Circle,
        ),
        (EstimatorKind::Sumo, "SUMO", Marker::Triangle),
        (EstimatorKind::MlmcSs, "MLMC-SS (p = 0.6)", Marker::Square),
        (EstimatorKind::MlmcRr, "MLMC-RR (p = 0.6)", Marker::Cross),
    ];
    for (i, (kind, name, marker)) in kinds.iter().enumerate() {
        let mine: Vec<&BiasPoint> = points.iter().filter(|p| p.estimator == *kind).collect();
        for p in &mine {
            table.push(vec![
                kind.name().into(),
                p.setting.as_str().into(),
                p.cost_mean.into(),
                p.cost_expected.into(),
                p.estimate.into(),
                p.bias.into(),
                p.stderr.into(),
                exact.into(),
            ]);
        }
        chart.push(
            Series::new(
                *name,
                mine.iter().map(|p| (p.cost_expected, p.bias)).collect(),
            )
            .with_err(mine.iter().map(|p| 2.0 * p.stderr).collect())
            .color(i)
            .marker(*marker),
        );
    }
    let (c0, c1) = points.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.cost_expected), b.max(p.cost_expected))
    });
    chart.push(
        Series::new("zero bias", vec![(c0, 0.0), (c1, 0.0)])
            .color(7)
            .marker(Marker::None)
            .line(Line::Dashed),
    );
    Ok(Figure {
        name: "bias",
        chart,
        panels: Vec::new(),
        table,
        settings: json!({
            "model": cfg.model.name(), "seed": cfg.seed, "reps": cfg.reps,
            "datapoint": cfg.datapoint, "iwae_ks": cfg.iwae_ks, "sumo_ms": cfg.sumo_ms,
            "mlmc_i0s": cfg.mlmc_i0s, "mlmc_p": crate::estimators::mlmc::DEFAULT_P,
        }),
        notes: vec![
            "x is the closed-form expected cost (K, m + E[K], or E[2^(k+I0+1)]); the table also gives the measured mean".to_string(),
            "SUMO's default tail has infinite variance (docs/estimators.md §2.1): its standard errors are unreliable and can understate the spread".to_string(),
        ],
        summary: json!({ "exact_log_px": exact }),
    })
}
