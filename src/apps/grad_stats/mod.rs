//! `uvae grad-stats`: the statistics of an estimator's theta-gradient on a model with a
//! closed-form log p(x): bias against the exact gradient (significance by a Bonferroni-
//! corrected z-test), variance, signal-to-noise ratio and cost, per parameter group; for
//! MLMC the measured decay of E[Delta_k^2] with the level and the range of p it implies.

mod backend;
mod dreg_check;
use crate::estimators::{Estimator, EstimatorKind};
use crate::exact::{self, ExactModel, Ppca, Toy};
use crate::model::ModelChoice;
use crate::progress::Progress;
use crate::stats::Moments;
use anyhow::{bail, Result};
pub use backend::{grad_stats_hgauss, grad_stats_vae, Reference};
pub use dreg_check::{
    dreg_check_hgauss, format_dreg_check, DregCheck, PairLayer, DREG_CHECK_CONFIDENCE,
};

/// `--model hgauss`'s encoders: the posterior's means, 1.2 times its marginal sds.
pub const HGAUSS_SD_INFLATION: f64 = 1.2;

/// The gradient estimates a statistics run draws: `reps` of them by `estimator` with `k`
/// samples, at datapoint `datapoint` of the data of `seed` (an exact model's parameters
/// too), the draws seeded by it.
#[derive(Clone, Copy, Debug)]
pub struct GradStatsRun {
    pub estimator: Estimator,
    pub k: usize,
    pub reps: usize,
    pub seed: u64,
    pub datapoint: usize,
}
use rand::SeedableRng;
use serde::Serialize;

fn build(kind: ModelChoice, seed: u64) -> Result<Box<dyn ExactModel>> {
    match kind {
        ModelChoice::Toy => Ok(Box::new(Toy::new(seed))),
        ModelChoice::Ppca => Ok(Box::new(Ppca::new(seed))),
        ModelChoice::Vae | ModelChoice::Hvae | ModelChoice::Cvae => {
            bail!("the VAE has no closed-form gradient: use grad_stats_vae")
        }
        // The coupled chains' route (Fisher's identity): the model with its hierarchical q at
        // the encoders grad_stats_hgauss sets in the backend.
        ModelChoice::Hgauss => Ok(Box::new(exact::HGaussQ::at_posterior(
            exact::HGauss::new(seed),
            HGAUSS_SD_INFLATION,
        ))),
    }
}

/// Named ranges of theta: the toy's prior mean; PPCA's W (row-major) and b.
fn groups(kind: ModelChoice, model: &dyn ExactModel) -> Vec<(String, std::ops::Range<usize>)> {
    match kind {
        ModelChoice::Toy => vec![("mu".to_string(), 0..model.theta_len())],
        ModelChoice::Ppca => {
            let w = model.x_dim() * model.z_dim();
            vec![
                ("W".to_string(), 0..w),
                ("b".to_string(), w..model.theta_len()),
            ]
        }
        ModelChoice::Hgauss => {
            // HGauss::new's shape (the only one build makes).
            let (dx, d1, d2, _, _) = exact::HGauss::SHAPE;
            debug_assert_eq!(model.theta_len(), d1 * d2 + d1 + dx * d1 + dx);
            let mut at = 0;
            [("A", d1 * d2), ("a", d1), ("B", dx * d1), ("b", dx)]
                .into_iter()
                .map(|(name, len)| {
                    at += len;
                    (name.to_string(), at - len..at)
                })
                .collect()
        }
        // The VAE's groups are its decoder layers (grad_stats_vae).
        ModelChoice::Vae | ModelChoice::Hvae | ModelChoice::Cvae => Vec::new(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupStats {
    pub group: String,
    pub dims: usize,
    /// || mean estimate - exact gradient ||.
    pub bias_norm: f64,
    /// Largest |bias / standard error| over the group's coordinates.
    pub max_abs_z: f64,
    /// max_abs_z beyond the Bonferroni-corrected two-sided critical value at 99%.
    pub significant: bool,
    pub critical_z: f64,
    /// Mean over coordinates of the estimate's variance.
    pub mean_variance: f64,
    /// Mean over coordinates of |E g_i| / sd(g_i) (Rainforth et al. 2018).
    pub snr: f64,
}

pub use crate::apps::figures::mlmc_decay::LevelDecay;

#[derive(Clone, Debug, Serialize)]
pub struct GradStatsReport {
    pub model: ModelChoice,
    pub estimator: String,
    /// The estimator's size settings, e.g. "K = 5", "m = 5", "I0 = 2, p = 0.6".
    pub settings: String,
    pub k: usize,
    pub reps: usize,
    pub datapoint: usize,
    /// log p(x): exact, or the reference's L_K for the VAE.
    pub exact_log_px: f64,
    pub reference: String,
    /// Samples per datapoint per estimate: measured mean and closed-form expectation.
    pub cost_measured: f64,
    pub cost_expected: f64,
    pub groups: Vec<GroupStats>,
    /// MLMC only: E[Delta_k^2] by level, the fitted decay rate beta (E ~ 2^(-beta k)), and the
    /// range of p with finite cost and variance it implies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlmc_decay: Option<Vec<LevelDecay>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_range: Option<(f64, f64)>,
    /// Coupled chains only: meeting times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting: Option<MeetingSummary>,
}

/// The estimator's size settings as text: "K = 5", "m = 5", "I0 = 2, p = 0.6".
pub(super) fn settings(estimator: &Estimator, k: usize) -> String {
    match estimator.kind {
        EstimatorKind::Sumo => format!("m = {k}"),
        EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
            let o = &estimator.unbiased;
            format!(
                "I0 = {}, p = {}{}",
                o.mlmc_i0,
                o.mlmc_p,
                o.mlmc_cap.map_or(String::new(), |c| format!(", cap = {c}"))
            )
        }
        _ => format!("K = {k}"),
    }
}

/// Runs `run`'s independent estimates of the theta-gradient at one datapoint of an exact
/// model (the coupled chains through [`grad_stats_coupled`]).
pub fn grad_stats(
    kind: ModelChoice,
    run: &GradStatsRun,
    progress: &mut dyn Progress,
) -> Result<GradStatsReport> {
    let GradStatsRun {
        estimator,
        k,
        reps,
        seed,
        datapoint,
    } = *run;
    let plan = estimator.plan(k)?;
    if let Some(chains) = plan.coupling() {
        return grad_stats_coupled(kind, *chains, reps, seed, datapoint, progress);
    }
    let mut report = exact_stats(kind, reps, seed, datapoint, progress, |model, x, rng| {
        let draw = plan.draw(rng).expect("a coefficient plan");
        let (l, d) = exact::draw_samples(model, x, draw.n, rng);
        let (mut a, mut b, mut c) = (vec![0.0; draw.n], vec![0.0; draw.n], vec![0.0; draw.n]);
        draw.program.evaluate_row(&l, &mut a, &mut b, &mut c);
        Ok((exact::combine(&a, &d, model.theta_len()), draw.n, None))
    })?;
    report.estimator = estimator.kind.name().to_string();
    report.settings = settings(&estimator, k);
    report.k = k;
    report.cost_expected = plan.expected_samples().unwrap_or(f64::NAN);
    if matches!(
        estimator.kind,
        EstimatorKind::MlmcSs | EstimatorKind::MlmcRr
    ) {
        let model = build(kind, seed)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xDECA_7000);
        let x = &model.data()[datapoint];
        let (decay, beta) = crate::apps::figures::mlmc_decay::level_decay(
            6,
            estimator.unbiased.mlmc_i0,
            reps.min(4000),
            |n| Ok(exact::draw_samples(model.as_ref(), x, n, &mut rng).0),
        )?;
        report.mlmc_decay = Some(decay);
        report.beta = Some(beta);
        report.p_range = Some((0.5, 1.0 - 2f64.powf(-beta)));
    }
    Ok(report)
}

/// The same statistics for a coupled Markov chain estimator (Ruiz et al. 2021), with the
/// meeting times' mean and tail.
pub fn grad_stats_coupled(
    kind: ModelChoice,
    cfg: crate::coupling::CouplingConfig,
    reps: usize,
    seed: u64,
    datapoint: usize,
    progress: &mut dyn Progress,
) -> Result<GradStatsReport> {
    cfg.validate()?;
    let mut report = exact_stats(kind, reps, seed, datapoint, progress, |model, x, rng| {
        let e = crate::coupling::estimate(model, x, &cfg, rng);
        Ok((e.grad_theta, e.proposals, Some((e.meeting_time, e.capped))))
    })?;
    report.estimator = format!("coupled-{}", cfg.kernel);
    report.settings = format!(
        "K = {} particles, k = {}, m = {}, lag = {}",
        cfg.particles, cfg.burn_in, cfg.horizon, cfg.lag
    );
    report.k = cfg.particles;
    report.cost_expected = f64::NAN;
    Ok(report)
}

/// Meeting times of coupled chains: mean, tail, and how many runs hit the iteration cap.
#[derive(Clone, Debug, Serialize)]
pub struct MeetingSummary {
    pub mean: f64,
    pub sd: f64,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub capped: usize,
}

/// Runs `one` (an estimate: gradient, samples drawn, meeting time and cap) `reps` times at
/// one datapoint of an exact model and summarises against the exact gradient.
#[allow(clippy::type_complexity)]
fn exact_stats(
    kind: ModelChoice,
    reps: usize,
    seed: u64,
    datapoint: usize,
    progress: &mut dyn Progress,
    mut one: impl FnMut(
        &dyn ExactModel,
        &[f64],
        &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Vec<f64>, usize, Option<(usize, bool)>)>,
) -> Result<GradStatsReport> {
    if reps < 2 {
        bail!("--reps must be at least 2 (a variance needs two estimates)");
    }
    let model = build(kind, seed)?;
    let data = model.data();
    if datapoint >= data.len() {
        bail!(
            "--datapoint {datapoint} is out of range: the {kind:?} data set has {} points",
            data.len()
        );
    }
    let x = &data[datapoint];
    let p = model.theta_len();
    let exact_grad = model.exact_grad_theta(x);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x67AD_57A7);
    let mut run = Moments::new(p);
    let mut cost = 0usize;
    let (mut times, mut capped) = (Vec::new(), Vec::new());
    progress.start("grad-stats", reps as u64, "estimates");
    for r in 0..reps {
        let (g, n, meeting) = one(model.as_ref(), x, &mut rng)?;
        run.push(&g);
        cost += n;
        if let Some((t, c)) = meeting {
            times.push(t);
            capped.push(c);
        }
        if r % 256 == 255 {
            progress.advance(r as u64 + 1);
        }
    }
    progress.finish();
    let groups = groups(kind, model.as_ref())
        .into_iter()
        .map(|(name, range)| group_stats(name, range.clone(), &run, |i| (exact_grad[i], 0.0)))
        .collect();
    let meeting = (!times.is_empty()).then(|| {
        let m = crate::coupling::MeetingStats::from_times(&times, &capped);
        MeetingSummary {
            mean: m.mean,
            sd: m.sd,
            p50: m.p50,
            p90: m.p90,
            p99: m.p99,
            max: m.max,
            capped: m.capped,
        }
    });
    Ok(GradStatsReport {
        model: kind,
        estimator: String::new(),
        settings: String::new(),
        k: 0,
        reps,
        datapoint,
        exact_log_px: model.exact_log_px(x),
        reference: "the closed-form gradient of log p(x)".to_string(),
        cost_measured: cost as f64 / reps as f64,
        cost_expected: f64::NAN,
        groups,
        mlmc_decay: None,
        beta: None,
        p_range: None,
        meeting,
    })
}

/// Bias, significance, variance and SNR over `range`, against `reference(i)` = (value,
/// variance of the reference's mean; 0 for an exact one).
pub(super) fn group_stats(
    group: String,
    range: std::ops::Range<usize>,
    est: &Moments,
    reference: impl Fn(usize) -> (f64, f64),
) -> GroupStats {
    let dims = range.len();
    let critical_z = crate::stats::normal_quantile(1.0 - 0.01 / (2.0 * dims as f64));
    let (mut bias_sq, mut max_abs_z) = (0.0, 0.0f64);
    for i in range.clone() {
        let (r, r_var) = reference(i);
        let bias = est.mean(i) - r;
        bias_sq += bias * bias;
        let se = (est.var(i) / est.count() as f64 + r_var).sqrt();
        max_abs_z = max_abs_z.max(if se > 0.0 { bias.abs() / se } else { 0.0 });
    }
    let spread = est.spread(range);
    GroupStats {
        group,
        dims,
        bias_norm: bias_sq.sqrt(),
        max_abs_z,
        significant: max_abs_z > critical_z,
        critical_z,
        mean_variance: spread.mean_variance,
        snr: spread.snr,
    }
}

/// The report as text.
pub fn format_report(r: &GradStatsReport) -> String {
    let mut s = format!(
        "grad-stats: {:?} model, estimator {} ({}), {} independent estimates at datapoint {}\n",
        r.model, r.estimator, r.settings, r.reps, r.datapoint
    );
    let what = if !r.model.is_exact() {
        "reference L_K"
    } else {
        "exact log p(x)"
    };
    s += &format!(
        "bias against {}; {what} = {:.4}\n",
        r.reference, r.exact_log_px
    );
    s += &format!(
        "cost: {:.2} samples per datapoint per estimate",
        r.cost_measured
    );
    if !r.cost_expected.is_nan() {
        s += &format!(" (expected {:.2})", r.cost_expected);
    }
    s += "\n\n";
    s += &format!(
        "{:<10} {:>6} {:>11} {:>9} {:>9} {:>13} {:>11} {:>9}\n",
        "group", "dims", "|bias|", "max |z|", "crit z", "bias signif.", "mean var", "SNR"
    );
    for g in &r.groups {
        s += &format!(
            "{:<10} {:>6} {:>11.4e} {:>9.2} {:>9.2} {:>13} {:>11.4e} {:>9.3}\n",
            g.group,
            g.dims,
            g.bias_norm,
            g.max_abs_z,
            g.critical_z,
            if g.significant { "YES" } else { "no" },
            g.mean_variance,
            g.snr
        );
    }
    s += "(significance: two-sided z-test per coordinate at 99%, Bonferroni-corrected over the group)\n";
    if let Some(m) = &r.meeting {
        s += &format!(
            "\nmeeting times: mean {:.2} (sd {:.2}), median {}, 90% {}, 99% {}, max {}; {} of {} runs hit the iteration cap{}\n",
            m.mean,
            m.sd,
            m.p50,
            m.p90,
            m.p99,
            m.max,
            m.capped,
            r.reps,
            if m.capped > 0 { " (their estimates are truncated and biased)" } else { "" }
        );
    }
    if let (Some(decay), Some(beta), Some((lo, hi))) = (&r.mlmc_decay, r.beta, r.p_range) {
        s += "\nMLMC level decay of E[Delta_k^2] (antithetic difference at N = 2^(k+I0+1)):\n";
        for d in decay {
            s += &format!(
                "  k = {}  N = {:>5}  E[Delta^2] = {:.4e} ± {:.1e}\n",
                d.level, d.samples, d.mean_delta_sq, d.stderr
            );
        }
        s += &format!("fitted beta = {beta:.2} (E[Delta_k^2] ~ 2^(-beta k)): finite cost and variance need {lo} < p < {hi:.3}\n");
    }
    s
}
