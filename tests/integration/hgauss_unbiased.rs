//! Unbiasedness on the exact two-layer model (`--model hgauss`), through the CPU backend's
//! two-layer forward and backward: for datapoint 0 of `HGauss::new(1)` with both encoders at
//! the diagonal posterior (sds 1.2x), each replication draws an estimator's level and fresh
//! noise, runs forward -> coefficients -> backward at batch 1, and records the theta-gradient
//! (decoder2's mean rows = (A, a), decoder = (B, b): 35 coordinates) and the estimate. The
//! replication mean is compared with `HGauss::exact_grad_theta` and `exact_log_px` per
//! coordinate, |z| < 4 (docs of `unbiased`).
//!
//! Confidence: 36 coordinates at a two-sided 4-SE false-alarm rate of 6.3e-5 each give at
//! most 2.3e-3 per check by the union bound, 4.6e-3 for the two checks that must pass. Power:
//! IWAE(K = 2)'s bias must be >= 6 of each passing check's SEs, and IWAE(2) must fail.

use crate::common::mc::{self, max_abs, Merge, Welford, MIN_POWER, Z_MAX};
use rand::Rng;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::{Backend, Noise};
use unbiased_vae::estimators::sumo::SumoTail;
use unbiased_vae::estimators::{Coefficients, EncoderChoice, Estimator, EstimatorKind, StepPlan};
use unbiased_vae::exact::HGauss;
use unbiased_vae::model::exact_training::{hgauss_to_params_at_posterior, params_to_hgauss};
use unbiased_vae::model::Params;
use unbiased_vae::rng::Stream;

/// Replications per check: IWAE(2) stays >100 SEs away at 64,000, so a quarter keeps the
/// power ratio far above 6 and the test a few seconds long.
const R: usize = 16_000;
/// Replications of the SUMO check.
const R_SUMO: usize = 64_000;

struct Acc {
    be: Option<CpuBackend>,
    w: Welford,
}

impl Merge for Acc {
    fn merge(&mut self, o: &Self) {
        self.w.merge(&o.w);
    }
}

/// The flat positions of theta = (A, a, B, b) in the backend layout.
fn theta_positions(p: &Params) -> Vec<usize> {
    let (d1, d2) = (
        p.layout.arch.z_dim,
        p.layout.arch.noise_dim() - p.layout.arch.z_dim,
    );
    let dx = p.layout.arch.x_dim;
    let (dec2, dec) = (&p.layout.decoder2[0], &p.layout.decoder[0]);
    (dec2.w..dec2.w + d1 * d2)
        .chain(dec2.b..dec2.b + d1)
        .chain(dec.w..dec.w + dx * d1)
        .chain(dec.b..dec.b + dx)
        .collect()
}

struct Check {
    label: String,
    w: Welford,
    exact: Vec<f64>,
}

impl Check {
    fn run(est: Estimator, k: usize, seed: u64) -> Check {
        let plan = est.plan(k).unwrap();
        Self::run_plan(&format!("{} (k {k})", est.kind), plan, R, seed)
    }

    /// `reps` replications of `plan` (fixed-size or random-size).
    fn run_plan(label: &str, plan: StepPlan, reps: usize, seed: u64) -> Check {
        let params = hgauss_to_params_at_posterior(&HGauss::new(1), 1.2);
        let model = params_to_hgauss(&params, HGauss::new(1).data().to_vec()).unwrap();
        let x64 = model.data()[0].clone();
        let x: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let mut exact = model.exact_grad_theta(&x64);
        exact.push(model.exact_log_px(&x64));
        let pos = theta_positions(&params);
        let d = exact.len();
        let w = mc::replicate(
            reps,
            seed,
            || Acc {
                be: None,
                w: Welford::new(d),
            },
            |acc, rng| {
                let be = acc.be.get_or_insert_with(|| {
                    CpuBackend::new(&params.layout, &params.values, 1).unwrap()
                });
                let dr = plan.draw(rng).expect("a coefficient-program plan");
                let (n, program) = (dr.n, dr.program);
                let noise = Noise {
                    seed: 7,
                    stream: Stream::Eps,
                    step: rng.random(),
                    first_datapoint: rng.random(),
                    first_sample: 0,
                };
                let lw = be.forward(&x, 1, n, &noise).unwrap().to_vec();
                let mut co = Coefficients::default();
                program.coefficients_into(&lw, 1, n, &mut co);
                be.backward(&co.a, &co.b, &co.c).unwrap();
                let g = be.gradient().unwrap();
                let mut v: Vec<f64> = pos.iter().map(|&i| g[i] as f64).collect();
                v.push(co.objective[0]);
                acc.w.push(&v);
            },
        )
        .w;
        let label = label.to_string();
        let c = Check { label, w, exact };
        println!(
            "hgauss {}: max |z| grad {:.2}, estimate z {:.2}, max SE {:.3e}",
            c.label,
            c.max_abs_z_grad(),
            c.w.z(&c.exact)[d - 1],
            c.w.max_se(d - 1)
        );
        c
    }

    fn max_abs_z_grad(&self) -> f64 {
        let z = self.w.z(&self.exact);
        max_abs(&z[..z.len() - 1])
    }

    fn assert_unbiased(&self) {
        let z = self.w.z(&self.exact);
        assert!(
            max_abs(&z) < Z_MAX,
            "{}: max |z| {:.2} over gradient and estimate",
            self.label,
            max_abs(&z)
        );
    }

    fn assert_powered(&self, biased: &Check) {
        let d = self.exact.len() - 1;
        let power = self.w.power_ratio(&biased.w, &self.exact, d);
        println!("    power ratio against IWAE(2): {power:.1}");
        assert!(power >= MIN_POWER, "{}: power ratio {power:.2}", self.label);
    }
}

#[test]
fn mlmc_and_sumo_are_unbiased_on_hgauss_and_iwae2_is_not() {
    let iwae2 = Check::run(Estimator::new(EstimatorKind::Iwae, 0.0), 2, 301);
    assert!(
        iwae2.max_abs_z_grad() > Z_MAX,
        "IWAE(2)'s bias went undetected (max |z| {:.2})",
        iwae2.max_abs_z_grad()
    );
    for (kind, seed) in [(EstimatorKind::MlmcRr, 302), (EstimatorKind::MlmcSs, 303)] {
        let c = Check::run(Estimator::new(kind, 0.0), 1, seed);
        c.assert_powered(&iwae2);
        c.assert_unbiased();
    }
    // SUMO with the heavy 1/(k+1) part of its tail extended to k < 10000, whose variance is
    // finite in practice (tests/integration/unbiased.rs, "SUMO caveat"); more replications,
    // its variance being larger.
    let sumo = StepPlan::Sumo {
        m: 1,
        tail: SumoTail::new(10_000, 0.9).unwrap(),
        encoder: EncoderChoice::Dreg,
        encoder_k: 0,
    };
    let c = Check::run_plan("sumo (m 1, heavy tail to 10000)", sumo, R_SUMO, 304);
    c.assert_powered(&iwae2);
    c.assert_unbiased();
}
