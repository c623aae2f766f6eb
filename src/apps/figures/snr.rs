//! `uvae figure snr`: the signal-to-noise ratio of the encoder (phi) gradient against K on
//! the linear-Gaussian toy, as in Tucker et al. (2019, §6.1, Fig. 1; after Rainforth et al.
//! 2018): parameters near the optimum (every entry perturbed by N(0, 0.01^2), `Toy::new`),
//! the gradient of the inference network's parameters (A, b) at one datapoint, for
//! increasing K.
//!
//! The gradient is the one training uses: the CPU backend on the toy's backend layout,
//! `forward` at K samples, the estimator's coefficients, `backward`, and the encoder part of
//! `gradient()` with the frozen rows (the fixed log-sd) left out. All five estimators see the
//! same samples in each replication (one forward, five backwards). Per coordinate
//! SNR_i = |mean_i| / sd_i over the replications; the figure shows the mean of SNR_i over the
//! 420 learned coordinates (the table also gives the median).

use super::{Figure, Table};
use crate::apps::plot::{Axis, Chart, Line, Marker, Series};
use crate::backend::{cpu::CpuBackend, Backend, Noise};
use crate::estimators::{Coefficients, Estimator, EstimatorKind};
use crate::exact::{ExactModel, Toy};
use crate::model::exact_training::{toy_layout, toy_to_params};
use crate::rng::Stream;
use crate::stats::Moments;
use anyhow::{bail, Result};
use serde_json::json;

/// The estimators of the figure, in legend order.
pub const ESTIMATORS: [EstimatorKind; 5] = [
    EstimatorKind::Iwae,
    EstimatorKind::Stl,
    EstimatorKind::IwaeDreg,
    EstimatorKind::Rws,
    EstimatorKind::RwsDreg,
];

#[derive(Clone, Debug, PartialEq)]
pub struct SnrConfig {
    pub seed: u64,
    /// Independent gradient estimates per (estimator, K).
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

/// One (estimator, K) point.
#[derive(Clone, Debug, PartialEq)]
pub struct SnrPoint {
    pub estimator: EstimatorKind,
    pub k: usize,
    /// Mean over learned coordinates of |mean_i| / sd_i.
    pub snr_mean: f64,
    pub snr_median: f64,
    /// Mean over coordinates of |mean_i| and of sd_i.
    pub mean_abs_grad: f64,
    pub mean_sd: f64,
    /// Coordinates with a nonzero variance (those the SNR averages over).
    pub coords: usize,
}

/// The SNR of every estimator at every K; points whose gradient is identically zero (e.g.
/// RWS-DReG at K = 1, where w = 1 makes w - w^2 = 0) are left out and listed in the notes.
pub fn measure(cfg: &SnrConfig) -> Result<(Vec<SnrPoint>, Vec<String>)> {
    if cfg.reps < 2 {
        bail!("--reps must be at least 2 (an SNR needs a standard deviation)");
    }
    let toy = Toy::new(cfg.seed);
    if cfg.datapoint >= toy.data().len() {
        bail!(
            "--datapoint {} is out of range: the toy has {} datapoints",
            cfg.datapoint,
            toy.data().len()
        );
    }
    let layout = toy_layout(toy.x_dim());
    let params = toy_to_params(&toy);
    let mut backend = CpuBackend::new(&layout, &params.values, cfg.threads)?;
    // The learned encoder coordinates: encoder_len minus the frozen log-sd rows and biases.
    let coords: Vec<usize> = (0..layout.encoder_len)
        .filter(|i| !layout.frozen.iter().any(|r| r.contains(i)))
        .collect();
    let x: Vec<f32> = toy.data()[cfg.datapoint]
        .iter()
        .map(|&v| v as f32)
        .collect();
    let programs: Vec<_> = ESTIMATORS
        .iter()
        .map(|&k| Estimator::new(k, 0.0).program())
        .collect();
    let mut coeffs = Coefficients::default();
    let (mut points, mut notes) = (Vec::new(), Vec::new());
    for (ki, &k) in cfg.ks.iter().enumerate() {
        let mut acc = vec![Moments::new(coords.len()); ESTIMATORS.len()];
        for r in 0..cfg.reps {
            // A fresh Philox counter per (K, replication): no samples shared across K.
            let noise = Noise {
                seed: cfg.seed,
                stream: Stream::Eps,
                step: (ki * cfg.reps + r) as u32,
                first_datapoint: cfg.datapoint as u32,
                first_sample: 0,
            };
            let lw = backend.forward(&x, 1, k, &noise)?.to_vec();
            for (e, program) in programs.iter().enumerate() {
                program.coefficients_into(&lw, 1, k, &mut coeffs);
                backend.backward(&coeffs.a, &coeffs.b, &coeffs.c)?;
                let g = backend.gradient()?;
                let picked: Vec<f64> = coords.iter().map(|&i| g[i] as f64).collect();
                acc[e].push(&picked);
            }
        }
        for (e, &est) in ESTIMATORS.iter().enumerate() {
            let m = &acc[e];
            let live: Vec<usize> = (0..m.dim()).filter(|&i| m.var(i) > 0.0).collect();
            if live.is_empty() {
                notes.push(format!(
                    "{} at K = {k}: the encoder gradient is identically zero (zero variance), so its SNR is undefined; the point is omitted",
                    est.name()
                ));
                continue;
            }
            let mut snr: Vec<f64> = live
                .iter()
                .map(|&i| m.mean(i).abs() / m.var(i).sqrt())
                .collect();
            snr.sort_by(f64::total_cmp);
            let n = live.len() as f64;
            points.push(SnrPoint {
                estimator: est,
                k,
                snr_mean: snr.iter().sum::<f64>() / n,
                snr_median: snr[snr.len() / 2],
                mean_abs_grad: live.iter().map(|&i| m.mean(i).abs()).sum::<f64>() / n,
                mean_sd: live.iter().map(|&i| m.var(i).sqrt()).sum::<f64>() / n,
                coords: live.len(),
            });
        }
    }
    Ok((points, notes))
}

/// The slope of log10 SNR against log10 K for one estimator (None with under two points).
pub fn log_log_slope(points: &[SnrPoint], est: EstimatorKind) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.estimator == est && p.snr_mean > 0.0)
        .map(|p| ((p.k as f64).log10(), p.snr_mean.log10()))
        .collect();
    super::least_squares(&pts).map(|(s, _)| s)
}

pub fn figure(cfg: &SnrConfig) -> Result<Figure> {
    let (points, mut notes) = measure(cfg)?;
    let mut table = Table::new(&[
        "estimator",
        "k",
        "snr",
        "snr_median",
        "mean_abs_grad",
        "mean_sd",
        "coords",
    ]);
    for p in &points {
        table.push(vec![
            p.estimator.name().into(),
            p.k.into(),
            p.snr_mean.into(),
            p.snr_median.into(),
            p.mean_abs_grad.into(),
            p.mean_sd.into(),
            p.coords.into(),
        ]);
    }
    // A coordinate whose true mean is 0 shows |mean| / sd of about sqrt(2 / (pi R)): below
    // this line a measured SNR is indistinguishable from none.
    let floor = (2.0 / (std::f64::consts::PI * cfg.reps as f64)).sqrt();
    notes.push(format!(
        "SNR = mean over the learned encoder coordinates (A and b; the frozen log-sd excluded) of |mean| / sd over {} replications at datapoint {}; a zero-mean coordinate reads about sqrt(2/(pi R)) = {floor:.3} (the dashed floor)",
        cfg.reps, cfg.datapoint
    ));
    let mut chart = Chart::new(
        format!(
            "Encoder gradient SNR on the toy (D = 20), {} replications",
            cfg.reps
        ),
        Axis::log("K (samples per datapoint)"),
        Axis::log("SNR of the encoder gradient (mean over coordinates)"),
    );
    let markers = [
        Marker::Circle,
        Marker::Triangle,
        Marker::Square,
        Marker::Cross,
        Marker::Circle,
    ];
    let mut slopes = serde_json::Map::new();
    for (e, &est) in ESTIMATORS.iter().enumerate() {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.estimator == est)
            .map(|p| (p.k as f64, p.snr_mean))
            .collect();
        let slope = log_log_slope(&points, est);
        if let Some(s) = slope {
            slopes.insert(est.name().to_string(), json!(s));
        }
        let name = match slope {
            Some(s) => format!("{} (slope {s:+.2})", est.name()),
            None => est.name().to_string(),
        };
        let line = if e == 4 { Line::Dashed } else { Line::Solid };
        chart.push(
            Series::new(name, pts)
                .color(e)
                .marker(markers[e])
                .line(line),
        );
    }
    let (k0, k1) = (
        *cfg.ks.iter().min().unwrap_or(&1) as f64,
        *cfg.ks.iter().max().unwrap_or(&1) as f64,
    );
    chart.push(
        Series::new(
            format!("noise floor sqrt(2/(pi R)) = {floor:.3}"),
            vec![(k0, floor), (k1, floor)],
        )
        .color(7)
        .marker(Marker::None)
        .line(Line::Dashed),
    );
    Ok(Figure {
        name: "snr",
        chart,
        panels: Vec::new(),
        table,
        settings: json!({
            "model": "toy", "seed": cfg.seed, "reps": cfg.reps, "ks": cfg.ks,
            "datapoint": cfg.datapoint, "perturbation_sd": Toy::PAPER_PERTURB_SD,
            "backend": "cpu",
        }),
        notes,
        summary: json!({ "log_log_slopes": slopes, "noise_floor": floor }),
    })
}

impl std::fmt::Display for SnrPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} K={} SNR={:.4}",
            self.estimator.name(),
            self.k,
            self.snr_mean
        )
    }
}
