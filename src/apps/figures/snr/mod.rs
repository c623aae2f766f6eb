//! `uvae figure snr`: Tucker et al. (2019, §6.1, Fig. 1; after Rainforth et al. 2018) in three
//! panels against K: the encoder (phi) gradient's signal-to-noise ratio, its squared bias
//! against the expected IWAE gradient, and its variance, for IWAE, STL, IWAE-DReG, RWS and
//! RWS-DReG. On the linear-Gaussian toy (parameters near the optimum, every entry perturbed
//! by N(0, 0.01^2), `Toy::new`) or on the MNIST VAE (`--model vae`, fresh weights or a
//! checkpoint), at one datapoint.
//!
//! The gradient is the one training uses: the CPU backend, `forward` at K samples, the
//! estimator's coefficients, `backward`, and the encoder part of `gradient()` with frozen
//! rows left out. How each statistic is estimated is in [`measure`]; the slope in [`fit`].

pub mod fit;
pub mod measure;

use super::{Cell, Figure, Table};
use crate::apps::plot::{Axis, Chart, Line, Marker, Series};
use crate::backend::cpu::CpuBackend;
use crate::estimators::EstimatorKind;
use crate::exact::{ExactModel, Toy};
use crate::model::exact_training::{toy_layout, toy_to_params};
use crate::model::Params;
use anyhow::{bail, Result};
pub use fit::{weighted_slope, Slope};
pub use measure::{measure, Bias, SnrPoint, Source, BIAS_ALPHA, ESTIMATORS, GROUPS};
use serde_json::{json, Map, Value};

/// The K range of the fitted slopes (inclusive): past K = 10 both trends are established.
pub const SLOPE_KS: (usize, usize) = (10, 1000);

/// At most this many of the VAE's encoder coordinates are measured (evenly spaced): the
/// statistics are means over coordinates, and 20 jackknife groups of 15 running moments
/// per coordinate would take gigabytes at the encoder's full 200,000.
pub const MAX_VAE_COORDS: usize = 2000;

/// A point counts as resolved when its SNR is at least this many times its noise floor.
pub const RESOLVED_RATIO: f64 = 10.0;

#[derive(Clone, Debug, PartialEq)]
pub struct SnrConfig {
    pub seed: u64,
    /// Independent gradient estimates per K (the same at every K; see the module notes).
    pub reps: usize,
    pub ks: Vec<usize>,
    pub datapoint: usize,
    /// CPU backend threads (0: all cores).
    pub threads: usize,
}

impl Default for SnrConfig {
    fn default() -> Self {
        SnrConfig {
            seed: 0,
            reps: 2000,
            ks: vec![1, 3, 10, 30, 100, 300, 1000],
            datapoint: 0,
            threads: 0,
        }
    }
}

/// The toy's encoder gradient at `datapoint` of `Toy::new(seed)`.
pub fn toy_source(seed: u64, datapoint: usize, threads: usize) -> Result<Source> {
    let toy = Toy::new(seed);
    if datapoint >= toy.data().len() {
        bail!(
            "--datapoint {datapoint} is out of range: the toy has {} datapoints",
            toy.data().len()
        );
    }
    let layout = toy_layout(toy.x_dim());
    let params = toy_to_params(&toy);
    let x = toy.data()[datapoint].iter().map(|&v| v as f32).collect();
    source(&params.values, &layout, x, datapoint, threads, usize::MAX)
}

/// A VAE's encoder gradient at the binarised image `x` (one image's pixels).
pub fn vae_source(
    params: &Params,
    x: Vec<f32>,
    datapoint: usize,
    threads: usize,
) -> Result<Source> {
    if x.len() != params.layout.arch.x_dim {
        bail!(
            "the image has {} pixels but the model expects {}",
            x.len(),
            params.layout.arch.x_dim
        );
    }
    source(
        &params.values,
        &params.layout,
        x,
        datapoint,
        threads,
        MAX_VAE_COORDS,
    )
}

fn source(
    values: &[f32],
    layout: &crate::model::Layout,
    x: Vec<f32>,
    datapoint: usize,
    threads: usize,
    max_coords: usize,
) -> Result<Source> {
    let backend = CpuBackend::new(layout, values, threads)?;
    let learned: Vec<usize> = (0..layout.encoder_len)
        .filter(|i| !layout.frozen.iter().any(|r| r.contains(i)))
        .collect();
    let coords = if learned.len() <= max_coords {
        learned
    } else {
        (0..max_coords)
            .map(|j| learned[j * learned.len() / max_coords])
            .collect()
    };
    Ok(Source {
        backend,
        x,
        coords,
        datapoint,
    })
}

fn yes_no(b: &Option<Bias>) -> Vec<Cell> {
    match b {
        Some(b) => vec![
            b.sq.into(),
            b.floor.into(),
            b.max_z.into(),
            if b.significant() { "yes" } else { "no" }.into(),
        ],
        None => vec!["-".into(), "-".into(), "-".into(), "-".into()],
    }
}

/// The columns of the table; the bias columns hold "-" where a comparison does not apply.
pub const COLUMNS: [&str; 18] = [
    "estimator",
    "k",
    "reps",
    "snr",
    "snr_se",
    "snr_floor",
    "mean_from",
    "variance",
    "mean_abs_grad",
    "coords",
    "bias_sq",
    "bias_sq_floor",
    "bias_max_z",
    "bias_significant",
    "bias_rws_sq",
    "bias_rws_sq_floor",
    "bias_rws_max_z",
    "bias_rws_significant",
];

/// Each estimator's slope of log10 SNR against log10 K over [`SLOPE_KS`].
pub fn slopes(points: &[SnrPoint]) -> Vec<(EstimatorKind, Slope)> {
    ESTIMATORS
        .iter()
        .filter_map(|&e| {
            let pts: Vec<(f64, f64, f64)> = points
                .iter()
                .filter(|p| p.estimator == e && (SLOPE_KS.0..=SLOPE_KS.1).contains(&p.k))
                .map(|p| {
                    let se_log = p.snr_se / (p.snr * std::f64::consts::LN_10);
                    ((p.k as f64).log10(), p.snr.log10(), se_log)
                })
                .collect();
            weighted_slope(&pts).map(|s| (e, s))
        })
        .collect()
}

/// Measures and draws the figure; `model` names the model in titles ("toy (D = 20)"),
/// `settings` are merged into the JSON's settings.
pub fn figure(cfg: &SnrConfig, src: &mut Source, model: &str, settings: Value) -> Result<Figure> {
    let (points, mut notes) = measure(src, cfg.seed, &cfg.ks, cfg.reps)?;
    let mut table = Table::new(&COLUMNS);
    for p in &points {
        let mut row: Vec<Cell> = vec![
            p.estimator.name().into(),
            p.k.into(),
            p.reps.into(),
            p.snr.into(),
            p.snr_se.into(),
            p.snr_floor.into(),
            p.mean_from.name().into(),
            p.variance.into(),
            p.mean_abs_grad.into(),
            p.coords.into(),
        ];
        row.extend(yes_no(&p.bias_iwae));
        row.extend(yes_no(&p.bias_rws));
        table.push(row);
    }
    let plain = (2.0 / (std::f64::consts::PI * cfg.reps as f64)).sqrt();
    let unresolved: Vec<String> = points
        .iter()
        .filter(|p| p.snr < RESOLVED_RATIO * p.snr_floor)
        .map(|p| format!("{} K={}", p.estimator.name(), p.k))
        .collect();
    notes.push(format!(
        "{} replications at every K (the same samples for all five estimators), datapoint {}; SNR = mean over {} encoder coordinates of |E g_i| / sd_i, IWAE's and RWS's E g_i estimated by IWAE-DReG's and RWS-DReG's mean (equal expectations, tested in the bias columns), whose noise is far smaller",
        cfg.reps, cfg.datapoint, src.coords.len()
    ));
    notes.push(format!(
        "snr_floor: what a zero-mean coordinate would read, sqrt(2/(pi R)) = {plain:.4} times mean_i sd(mean source)_i / sd_i; a point is resolved at >= {RESOLVED_RATIO}x its floor; unresolved: {}",
        if unresolved.is_empty() { "none".to_string() } else { unresolved.join(", ") }
    ));
    notes.push(format!(
        "snr_se: delete-one-group jackknife over {GROUPS} groups of replications; slopes: weighted least squares of log10 SNR on log10 K over K = {}..{}, weights 1/se^2 (se carried to log10 by the delta method), slope se = sqrt(1/sum w (x - xbar)^2) x max(1, sqrt(chi^2/dof))",
        SLOPE_KS.0, SLOPE_KS.1
    ));
    notes.push(format!(
        "bias: paired differences g_e - g_IWAE on the same samples (bias_rws_*: RWS-DReG - RWS); bias_sq = mean_i (mean d_i)^2, bias_sq_floor = mean_i var(d_i)/R (its value were the bias zero); significant = max_i |mean d_i| / se_i beyond the two-sided Bonferroni critical value at family-wise alpha = {BIAS_ALPHA} over the coordinates"
    ));

    let mut slope_json = Map::new();
    let fitted = slopes(&points);
    for (e, s) in &fitted {
        slope_json.insert(
            e.name().to_string(),
            json!({ "slope": s.slope, "se": s.se, "z": s.z(), "points": s.points, "chi2_per_dof": s.chi2_per_dof }),
        );
    }
    let mut verdicts = Map::new();
    for p in &points {
        let mut v = Map::new();
        if let Some(b) = &p.bias_iwae {
            v.insert("vs_iwae".into(), json!(b.significant()));
        }
        if let Some(b) = &p.bias_rws {
            v.insert("vs_rws".into(), json!(b.significant()));
        }
        if !v.is_empty() {
            verdicts.insert(
                format!("{} K={}", p.estimator.name(), p.k),
                Value::Object(v),
            );
        }
    }
    let panels = charts(cfg, &points, &fitted, model, plain);
    let mut set = json!({
        "seed": cfg.seed, "reps": cfg.reps, "ks": cfg.ks, "datapoint": cfg.datapoint,
        "backend": "cpu", "coords": src.coords.len(),
    });
    if let (Some(s), Value::Object(extra)) = (set.as_object_mut(), settings) {
        s.extend(extra);
    }
    let mut it = panels.into_iter();
    Ok(Figure {
        name: "snr",
        chart: it.next().expect("three panels"),
        panels: it.collect(),
        table,
        settings: set,
        notes,
        summary: json!({
            "slopes": slope_json,
            "slope_k_range": [SLOPE_KS.0, SLOPE_KS.1],
            "noise_floor_plain": plain,
            "unresolved": unresolved,
            "bias_alpha": BIAS_ALPHA,
            "bias_significant": verdicts,
        }),
    })
}

const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
    Marker::Circle,
];

fn styled(s: Series, e: usize) -> Series {
    let line = if e == 4 { Line::Dashed } else { Line::Solid };
    s.color(e).marker(MARKERS[e]).line(line)
}

fn charts(
    cfg: &SnrConfig,
    points: &[SnrPoint],
    fitted: &[(EstimatorKind, Slope)],
    model: &str,
    plain: f64,
) -> Vec<Chart> {
    let k_axis = || Axis::log("K (samples per datapoint)");
    let panel = |title: String, y: &str| {
        let mut c = Chart::new(title, k_axis(), Axis::log(y));
        c.width = 800;
        c
    };
    let of = |e: EstimatorKind| points.iter().filter(move |p| p.estimator == e);
    let (k0, k1) = (
        *cfg.ks.iter().min().unwrap_or(&1) as f64,
        *cfg.ks.iter().max().unwrap_or(&1) as f64,
    );
    let mut snr = panel(
        format!("Encoder-gradient SNR, {model}, R = {} (±1 SE)", cfg.reps),
        "SNR (mean over coordinates)",
    );
    let mut bias = panel(
        "Squared bias against E[IWAE gradient]".into(),
        "bias^2 (mean over coordinates)",
    );
    let mut var = panel("Variance".into(), "variance (mean over coordinates)");
    for (e, &est) in ESTIMATORS.iter().enumerate() {
        let slope = fitted.iter().find(|f| f.0 == est).map(|f| f.1);
        let name = match slope {
            Some(s) => format!("{} (slope {:+.2} ± {:.3})", est.name(), s.slope, s.se),
            None => est.name().to_string(),
        };
        let pts: Vec<(f64, f64)> = of(est).map(|p| (p.k as f64, p.snr)).collect();
        let err: Vec<f64> = of(est).map(|p| p.snr_se).collect();
        snr.push(styled(Series::new(name, pts).with_err(err), e));
        var.push(styled(
            Series::new(
                est.name(),
                of(est).map(|p| (p.k as f64, p.variance)).collect(),
            ),
            e,
        ));
        if est != EstimatorKind::Iwae {
            let b: Vec<(f64, f64)> = of(est)
                .filter_map(|p| p.bias_iwae.as_ref().map(|b| (p.k as f64, b.sq)))
                .collect();
            bias.push(styled(Series::new(est.name(), b), e));
        }
    }
    // IWAE's (and RWS's) floor is lower than the plain one: its mean comes from its DReG twin.
    for (e, est) in [(0, EstimatorKind::Iwae), (3, EstimatorKind::Rws)] {
        let f: Vec<(f64, f64)> = of(est).map(|p| (p.k as f64, p.snr_floor)).collect();
        snr.push(
            Series::new(format!("{} noise floor", est.name()), f)
                .color(e)
                .marker(Marker::None)
                .line(Line::Dashed),
        );
    }
    snr.push(
        Series::new(
            format!("noise floor sqrt(2/(pi R)) = {plain:.3}"),
            vec![(k0, plain), (k1, plain)],
        )
        .color(7)
        .marker(Marker::None)
        .line(Line::Dashed),
    );
    // IWAE-DReG's floor: the level its squared "bias" reads at if it is unbiased.
    let floor: Vec<(f64, f64)> = of(EstimatorKind::IwaeDreg)
        .filter_map(|p| p.bias_iwae.as_ref().map(|b| (p.k as f64, b.floor)))
        .collect();
    bias.push(
        Series::new("iwae-dreg noise floor (var(d)/R)", floor)
            .color(2)
            .marker(Marker::None)
            .line(Line::Dashed),
    );
    vec![snr, bias, var]
}

impl std::fmt::Display for SnrPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} K={} SNR={:.4}±{:.4}",
            self.estimator.name(),
            self.k,
            self.snr,
            self.snr_se
        )
    }
}
