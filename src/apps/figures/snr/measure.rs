//! The measurement behind `figure snr`: per (estimator, K), the encoder gradient's SNR with
//! its noise floor and jackknife standard error, its variance, and its bias against the
//! expected IWAE gradient (and, for RWS-DReG, against RWS's) with a Bonferroni z-test.
//!
//! All five estimators see the same samples in each replication (one forward, five
//! backwards), so biases are measured from paired differences g_e - g_IWAE, which need no
//! assumption about either mean.
//!
//! The mean in an SNR (Tucker et al. 2019, §6.1): IWAE's expected encoder gradient equals
//! IWAE-DReG's, and RWS's equals RWS-DReG's (the doubly reparameterised identity, Tucker et
//! al. eq. 5-7; the bias columns test it on the same replications). IWAE's true SNR at
//! K = 1000 is about 0.002 on the toy, which a plain mean resolves only with ~10^7
//! replications (its floor is sqrt(2/(pi R))). So IWAE's and RWS's |E g_i| is estimated by
//! the DReG estimator's mean, whose noise is sd_DReG,i / sqrt(R): the floor of such a point
//! is sqrt(2/(pi R)) * mean_i sd_DReG,i / sd_e,i, orders of magnitude lower at large K. The
//! standard deviation is always the estimator's own.

use crate::backend::{cpu::CpuBackend, Backend, Noise};
use crate::estimators::{Coefficients, Estimator, EstimatorKind};
use crate::rng::Stream;
use crate::stats::{normal_quantile, Moments};
use anyhow::{bail, Result};

/// The estimators of the figure, in legend order.
pub const ESTIMATORS: [EstimatorKind; 5] = [
    EstimatorKind::Iwae,
    EstimatorKind::Stl,
    EstimatorKind::IwaeDreg,
    EstimatorKind::Rws,
    EstimatorKind::RwsDreg,
];
const IWAE: usize = 0;
const IWAE_DREG: usize = 2;
const RWS: usize = 3;
const RWS_DREG: usize = 4;

/// Groups of replications for the delete-one-group jackknife of the SNR's standard error.
pub const GROUPS: usize = 20;

/// Family-wise false-alarm rate of one bias test (one estimator at one K, all coordinates):
/// Bonferroni over the coordinates, two-sided.
pub const BIAS_ALPHA: f64 = 1e-3;

/// A model's encoder gradient at one datapoint: the CPU backend, the input and the
/// coordinates measured (learned encoder parameters, frozen rows left out).
pub struct Source {
    pub backend: CpuBackend,
    pub x: Vec<f32>,
    pub coords: Vec<usize>,
    pub datapoint: usize,
}

/// Bias of one estimator against a reference estimator's expected gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Bias {
    /// Mean over coordinates of (mean paired difference)^2 (plug-in).
    pub sq: f64,
    /// Its expected value were the bias zero: mean over coordinates of var(d_i) / R.
    pub floor: f64,
    /// Largest |mean d_i| / se_i over coordinates.
    pub max_z: f64,
    /// Two-sided Bonferroni critical value at family-wise [`BIAS_ALPHA`].
    pub critical_z: f64,
}

impl Bias {
    pub fn significant(&self) -> bool {
        self.max_z > self.critical_z
    }
}

/// One (estimator, K) point.
#[derive(Clone, Debug, PartialEq)]
pub struct SnrPoint {
    pub estimator: EstimatorKind,
    pub k: usize,
    pub reps: usize,
    /// Mean over live coordinates of |E g_i| / sd_i.
    pub snr: f64,
    /// Delete-one-group jackknife standard error of `snr`.
    pub snr_se: f64,
    /// What a zero-mean coordinate would read: sqrt(2/(pi R)) * mean_i sd_mean,i / sd_i.
    pub snr_floor: f64,
    /// The estimator whose mean gives E g (itself, or its DReG twin).
    pub mean_from: EstimatorKind,
    /// Mean over coordinates of var(g_i).
    pub variance: f64,
    pub mean_abs_grad: f64,
    /// Coordinates with a nonzero variance (those the SNR averages over).
    pub coords: usize,
    /// Against E[g_IWAE]; None for IWAE itself.
    pub bias_iwae: Option<Bias>,
    /// Against E[g_RWS]; only for RWS-DReG.
    pub bias_rws: Option<Bias>,
}

/// Accumulated replications at one K: per group, each estimator's gradient and its paired
/// differences with IWAE's and RWS's.
struct Groups {
    grad: Vec<Vec<Moments>>,
    vs_iwae: Vec<Vec<Moments>>,
    vs_rws: Vec<Vec<Moments>>,
}

fn merged(groups: &[Vec<Moments>], e: usize, skip: Option<usize>) -> Moments {
    let mut m = Moments::new(groups[0][e].dim());
    for (g, ms) in groups.iter().enumerate() {
        if Some(g) != skip {
            m.merge(&ms[e]);
        }
    }
    m
}

/// The mean over live coordinates of |mean_ref,i| / sd_e,i.
fn snr_of(own: &Moments, mean: &Moments, live: &[usize]) -> f64 {
    live.iter()
        .map(|&i| mean.mean(i).abs() / own.var(i).sqrt())
        .sum::<f64>()
        / live.len() as f64
}

fn bias_of(d: &Moments) -> Bias {
    let r = d.count() as f64;
    let n = d.dim() as f64;
    let live: Vec<usize> = (0..d.dim()).filter(|&i| d.var(i) > 0.0).collect();
    let max_z = live
        .iter()
        .map(|&i| d.mean(i).abs() / d.stderr(i))
        .fold(0.0, f64::max);
    Bias {
        sq: (0..d.dim()).map(|i| d.mean(i).powi(2)).sum::<f64>() / n,
        floor: (0..d.dim()).map(|i| d.var(i) / r).sum::<f64>() / n,
        max_z,
        critical_z: normal_quantile(1.0 - BIAS_ALPHA / (2.0 * live.len().max(1) as f64)),
    }
}

/// Which estimator's mean stands for `e`'s expected gradient.
fn mean_source(e: usize) -> usize {
    match e {
        IWAE => IWAE_DREG,
        RWS => RWS_DREG,
        e => e,
    }
}

/// Draws `reps` replications at each K in `ks` and reduces them to points; points whose
/// SNR is undefined (a gradient identically zero, or a mean known to be exactly zero) are
/// left out and listed in the notes.
pub fn measure(
    src: &mut Source,
    seed: u64,
    ks: &[usize],
    reps: usize,
) -> Result<(Vec<SnrPoint>, Vec<String>)> {
    if reps < 2 * GROUPS {
        bail!(
            "--reps {reps} is too few: at least {} are needed ({GROUPS} jackknife groups of two)",
            2 * GROUPS
        );
    }
    let n = src.coords.len();
    let programs: Vec<_> = ESTIMATORS
        .iter()
        .map(|&k| Estimator::new(k, 0.0).program())
        .collect();
    let mut coeffs = Coefficients::default();
    let (mut points, mut notes) = (Vec::new(), Vec::new());
    let mut step = 0u32;
    for &k in ks {
        let fresh = || vec![vec![Moments::new(n); ESTIMATORS.len()]; GROUPS];
        let mut acc = Groups {
            grad: fresh(),
            vs_iwae: fresh(),
            vs_rws: fresh(),
        };
        let mut g = vec![vec![0.0; n]; ESTIMATORS.len()];
        let mut d = vec![0.0; n];
        for r in 0..reps {
            // A fresh Philox counter per (K, replication): no samples shared across K.
            let noise = Noise {
                seed,
                stream: Stream::Eps,
                step,
                first_datapoint: src.datapoint as u32,
                first_sample: 0,
            };
            step = step.wrapping_add(1);
            let lw = src.backend.forward(&src.x, 1, k, &noise)?.to_vec();
            for (e, program) in programs.iter().enumerate() {
                program.coefficients_into(&lw, 1, k, &mut coeffs);
                src.backend.backward(&coeffs.a, &coeffs.b, &coeffs.c)?;
                let full = src.backend.gradient()?;
                for (v, &i) in g[e].iter_mut().zip(&src.coords) {
                    *v = full[i] as f64;
                }
            }
            let grp = r * GROUPS / reps;
            for e in 0..ESTIMATORS.len() {
                acc.grad[grp][e].push(&g[e]);
                for (reference, into) in [(IWAE, &mut acc.vs_iwae), (RWS, &mut acc.vs_rws)] {
                    for i in 0..n {
                        d[i] = g[e][i] - g[reference][i];
                    }
                    into[grp][e].push(&d);
                }
            }
        }
        for (e, &est) in ESTIMATORS.iter().enumerate() {
            match point(&acc, e, k, reps) {
                Ok(p) => points.push(p),
                Err(why) => notes.push(format!(
                    "{} at K = {k}: {why}; the point is omitted",
                    est.name()
                )),
            }
        }
    }
    Ok((points, notes))
}

fn point(acc: &Groups, e: usize, k: usize, reps: usize) -> std::result::Result<SnrPoint, String> {
    let m = mean_source(e);
    let (own, mean) = (merged(&acc.grad, e, None), merged(&acc.grad, m, None));
    let live: Vec<usize> = (0..own.dim()).filter(|&i| own.var(i) > 0.0).collect();
    if live.is_empty() {
        return Err(
            "the encoder gradient is identically zero (zero variance), so its SNR is undefined"
                .into(),
        );
    }
    if (0..mean.dim()).all(|i| mean.var(i) == 0.0 && mean.mean(i) == 0.0) {
        return Err(format!(
            "its expected gradient is exactly zero ({} is identically zero), so its SNR is 0",
            ESTIMATORS[m].name()
        ));
    }
    let snr = snr_of(&own, &mean, &live);
    let jack: Vec<f64> = (0..GROUPS)
        .map(|g| {
            let own = merged(&acc.grad, e, Some(g));
            let mean = merged(&acc.grad, m, Some(g));
            snr_of(&own, &mean, &live)
        })
        .collect();
    let jbar = jack.iter().sum::<f64>() / GROUPS as f64;
    let gf = GROUPS as f64;
    let snr_se = ((gf - 1.0) / gf * jack.iter().map(|s| (s - jbar).powi(2)).sum::<f64>()).sqrt();
    let plain = (2.0 / (std::f64::consts::PI * reps as f64)).sqrt();
    let ratio = live
        .iter()
        .map(|&i| (mean.var(i) / own.var(i)).sqrt())
        .sum::<f64>()
        / live.len() as f64;
    let nl = live.len() as f64;
    Ok(SnrPoint {
        estimator: ESTIMATORS[e],
        k,
        reps,
        snr,
        snr_se,
        snr_floor: plain * ratio,
        mean_from: ESTIMATORS[m],
        variance: live.iter().map(|&i| own.var(i)).sum::<f64>() / nl,
        mean_abs_grad: live.iter().map(|&i| mean.mean(i).abs()).sum::<f64>() / nl,
        coords: live.len(),
        bias_iwae: (e != IWAE).then(|| bias_of(&merged(&acc.vs_iwae, e, None))),
        bias_rws: (e == RWS_DREG).then(|| bias_of(&merged(&acc.vs_rws, e, None))),
    })
}
