//! `uvae grad-stats --model hgauss --dreg-check`: the doubly reparameterised identity on the
//! two-layer model's hierarchical q(z1|x) q(z2|z1). IWAE and IWAE-DReG are unbiased for the
//! gradient of the same bound L_K, so their mean encoder gradients must agree; likewise RWS
//! and RWS-DReG for the RWS wake-phi update (Tucker et al. 2019, eq. 5-7). The check draws
//! `reps` replications, each one forward at K samples and one backward per estimator on the
//! same samples (as training computes them: the CPU backend's two-layer passes), and tests
//! the paired differences coordinate by coordinate on both encoders' learned parameters
//! (frozen log-sd weight rows left out). STL's difference from IWAE is reported beside them:
//! STL drops the score term, which is biased for K > 1.
//!
//! Confidence: a two-sided z-test per coordinate, Bonferroni over every coordinate of the two
//! pairs that must agree (both layers), at family-wise [`DREG_CHECK_CONFIDENCE`].

use crate::backend::{cpu::CpuBackend, Backend, Noise};
use crate::estimators::{Coefficients, Estimator, EstimatorKind};
use crate::exact::HGauss;
use crate::model::exact_training::hgauss_to_params_at_posterior;
use crate::rng::Stream;
use crate::stats::{normal_quantile, Moments};
use anyhow::{bail, Result};
use serde::Serialize;

/// Added to both encoders' mean biases (q off the posterior; the identity holds for any q).
pub const ENCODER_MEAN_SHIFT: f64 = 1.0;

/// Family-wise confidence of the pairs that must agree.
pub const DREG_CHECK_CONFIDENCE: f64 = 0.99;

/// (estimator, reference, must agree): the paired differences the check reports.
const PAIRS: [(EstimatorKind, EstimatorKind, bool); 3] = [
    (EstimatorKind::IwaeDreg, EstimatorKind::Iwae, true),
    (EstimatorKind::RwsDreg, EstimatorKind::Rws, true),
    (EstimatorKind::Stl, EstimatorKind::Iwae, false),
];

/// One pair on one encoder layer.
#[derive(Clone, Debug, Serialize)]
pub struct PairLayer {
    /// "iwae-dreg - iwae".
    pub pair: String,
    /// "encoder (q(z1|x))" or "encoder2 (q(z2|z1))".
    pub layer: String,
    pub coords: usize,
    /// Largest |mean difference| / standard error over the layer's coordinates.
    pub max_abs_z: f64,
    /// Mean over coordinates of |mean difference|, and of |mean reference gradient|.
    pub mean_abs_diff: f64,
    pub mean_abs_reference: f64,
    /// Whether the pair must agree (the identity), or is reported (STL).
    pub must_agree: bool,
    pub significant: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DregCheck {
    pub seed: u64,
    pub datapoint: usize,
    pub k: usize,
    pub reps: usize,
    pub confidence: f64,
    /// Two-sided Bonferroni critical |z| over every coordinate of the pairs that must agree.
    pub critical_z: f64,
    pub rows: Vec<PairLayer>,
    /// No pair that must agree differs significantly.
    pub passed: bool,
}

/// Runs the check at datapoint `datapoint` of `HGauss::new(seed)` with both encoders at 1.2
/// times the posterior's standard deviations (as `grad_stats_hgauss`).
pub fn dreg_check_hgauss(seed: u64, datapoint: usize, k: usize, reps: usize) -> Result<DregCheck> {
    if k < 2 {
        bail!("--k {k}: the DReG check needs K >= 2 (at K = 1 RWS-DReG is identically zero)");
    }
    if reps < 2 {
        bail!("--reps must be at least 2");
    }
    let base = HGauss::new(seed);
    if datapoint >= base.data().len() {
        bail!(
            "--datapoint {datapoint} is out of range: --model hgauss has {} datapoints",
            base.data().len()
        );
    }
    let mut params = hgauss_to_params_at_posterior(&base, 1.2);
    let l = &params.layout;
    // Near the posterior E_q[grad_z2 log p(z1, z2)] is near zero, and with it the mean of
    // every term through z2: shifting both encoders' means makes the check see them.
    let (b1, b2) = (l.encoder[0].b, l.encoder2[0].b);
    let (d1, d2) = (l.arch.z_dim, l.arch.noise_dim() - l.arch.z_dim);
    for i in (b1..b1 + d1).chain(b2..b2 + d2) {
        params.values[i] += ENCODER_MEAN_SHIFT as f32;
    }
    let l = &params.layout;
    let learned = |layer: &crate::model::Linear| -> Vec<usize> {
        (layer.w..layer.b + layer.out)
            .filter(|i| !l.frozen.iter().any(|r| r.contains(i)))
            .collect()
    };
    let layers = [
        ("encoder (q(z1|x))", learned(&l.encoder[0])),
        ("encoder2 (q(z2|z1))", learned(&l.encoder2[0])),
    ];
    let positions: Vec<usize> = layers.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let n = positions.len();
    let x: Vec<f32> = base.data()[datapoint].iter().map(|&v| v as f32).collect();
    let mut backend = CpuBackend::new(l, &params.values, 1)?;
    let kinds = [
        EstimatorKind::Iwae,
        EstimatorKind::IwaeDreg,
        EstimatorKind::Rws,
        EstimatorKind::RwsDreg,
        EstimatorKind::Stl,
    ];
    let programs: Vec<_> = kinds
        .iter()
        .map(|&k| Estimator::new(k, 0.0).program())
        .collect();
    let mut grads = vec![vec![0.0; n]; kinds.len()];
    let mut diffs = vec![Moments::new(n); PAIRS.len()];
    let mut refs = vec![Moments::new(n); PAIRS.len()];
    let mut coeffs = Coefficients::default();
    let mut d = vec![0.0; n];
    for r in 0..reps {
        let noise = Noise {
            seed,
            stream: Stream::Eps,
            step: r as u32,
            first_datapoint: datapoint as u32,
            first_sample: 0,
        };
        let lw = backend.forward(&x, 1, k, &noise)?.to_vec();
        for (e, program) in programs.iter().enumerate() {
            program.coefficients_into(&lw, 1, k, &mut coeffs);
            backend.backward(&coeffs.a, &coeffs.b, &coeffs.c)?;
            let g = backend.gradient()?;
            for (v, &i) in grads[e].iter_mut().zip(&positions) {
                *v = g[i] as f64;
            }
        }
        let at = |kind: EstimatorKind| kinds.iter().position(|&k| k == kind).expect("listed");
        for (p, &(a, b, _)) in PAIRS.iter().enumerate() {
            let (ga, gb) = (&grads[at(a)], &grads[at(b)]);
            for i in 0..n {
                d[i] = ga[i] - gb[i];
            }
            diffs[p].push(&d);
            refs[p].push(gb);
        }
    }
    let tested = PAIRS.iter().filter(|p| p.2).count() * n;
    let critical_z = normal_quantile(1.0 - (1.0 - DREG_CHECK_CONFIDENCE) / (2.0 * tested as f64));
    let mut rows = Vec::new();
    for (p, &(a, b, must_agree)) in PAIRS.iter().enumerate() {
        let mut at = 0;
        for (name, pos) in &layers {
            let range = at..at + pos.len();
            at += pos.len();
            let m = &diffs[p];
            let max_abs_z = range
                .clone()
                .filter(|&i| m.var(i) > 0.0)
                .map(|i| m.mean(i).abs() / m.stderr(i))
                .fold(0.0, f64::max);
            let len = range.len() as f64;
            rows.push(PairLayer {
                pair: format!("{} - {}", a.name(), b.name()),
                layer: name.to_string(),
                coords: range.len(),
                max_abs_z,
                mean_abs_diff: range.clone().map(|i| m.mean(i).abs()).sum::<f64>() / len,
                mean_abs_reference: range.map(|i| refs[p].mean(i).abs()).sum::<f64>() / len,
                must_agree,
                significant: max_abs_z > critical_z,
            });
        }
    }
    let passed = rows.iter().all(|r| !(r.must_agree && r.significant));
    Ok(DregCheck {
        seed,
        datapoint,
        k,
        reps,
        confidence: DREG_CHECK_CONFIDENCE,
        critical_z,
        rows,
        passed,
    })
}

/// The check as text: one line per pair and layer, then the verdict.
pub fn format_dreg_check(c: &DregCheck) -> String {
    let mut s = format!(
        "DReG on two layers (--model hgauss, seed {}, datapoint {}, K = {}, {} replications): paired encoder-gradient differences; critical |z| {:.2} (Bonferroni, {}% family-wise over the pairs that must agree)\n",
        c.seed, c.datapoint, c.k, c.reps, c.critical_z, c.confidence * 100.0
    );
    for r in &c.rows {
        s += &format!(
            "  {:<20} {:<20} coords {:>3}  max|z| {:>7.2}  mean|diff| {:.3e}  mean|ref| {:.3e}  {}\n",
            r.pair,
            r.layer,
            r.coords,
            r.max_abs_z,
            r.mean_abs_diff,
            r.mean_abs_reference,
            match (r.must_agree, r.significant) {
                (true, false) => "agree",
                (true, true) => "DIFFER",
                (false, true) => "differ (expected: STL is biased)",
                (false, false) => "no significant difference",
            }
        );
    }
    s += if c.passed {
        "passed: the DReG estimators' means equal IWAE's and RWS's on both encoders\n"
    } else {
        "FAILED: a DReG estimator's mean differs from its reference's\n"
    };
    s
}
