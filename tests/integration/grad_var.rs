//! `train --grad-var-every`: the logging leaves a run's trajectory as it was (bit for bit on
//! the CPU, within the parity tolerance on the GPU), its variance matches R explicit f64
//! gradients of the estimator's surrogate, and bad flags are refused by name.

use std::path::Path;

use serde_json::Value;
use unbiased_vae::backend::Noise;
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::rng::Stream;
use unbiased_vae::train::GradVarProbe;

use crate::common::cli::{arg, metrics_lines, run, run_ok, words};
use crate::common::{have_gpu, TestBackend};
use crate::gradient_check::{finite_difference_gradient, Fixture, ATOL, N, RTOL};

/// 10 steps per epoch, 2 epochs; a measurement after every 3rd step: 3, 6, 9 | 12, 15, 18.
const RUN: &str = "train --threads 2 --train-limit 200 --valid-size 100 --batch 20 --k 4 --epochs 2 --hidden 16 --latent 4 --val-k 4 --quiet";

fn train(dir: &Path, backend: &str, estimator: &str, extra: &str) -> Vec<Value> {
    let mut args = words(RUN);
    args.extend([
        "--backend",
        backend,
        "--estimator",
        estimator,
        "--out",
        arg(dir),
    ]);
    args.extend(words(extra));
    run_ok(&args);
    metrics_lines(dir)
}

fn params(dir: &Path) -> Vec<f32> {
    unbiased_vae::model::checkpoint::load(&dir.join("checkpoint.safetensors"))
        .unwrap()
        .0
        .values
}

/// The steps of every measurement in the run's metrics, and each one's encoder variance.
fn points(lines: &[Value]) -> Vec<(u64, f64, f64)> {
    lines
        .iter()
        .flat_map(|l| l["grad_var"].as_array().expect("grad_var logged").clone())
        .map(|p| {
            let var = |g: &str| p[g]["mean_variance"].as_f64().unwrap();
            (p["step"].as_u64().unwrap(), var("encoder"), var("decoder"))
        })
        .collect()
}

/// Runs with and without the logging on `backend`: (parameters without, with; metrics with).
fn with_and_without(backend: &str, estimator: &str) -> (Vec<f32>, Vec<f32>, Vec<Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let (off, on) = (tmp.path().join("off"), tmp.path().join("on"));
    let plain = train(&off, backend, estimator, "");
    let logged = train(
        &on,
        backend,
        estimator,
        "--grad-var-every 3 --grad-var-reps 4",
    );
    for (a, b) in plain.iter().zip(&logged) {
        assert!(a.get("grad_var").is_none(), "logged without the flag");
        if backend == "cpu" {
            for key in ["train_objective", "val_lk", "grad_norm_encoder"] {
                assert_eq!(a[key], b[key], "{estimator} {key} changed by the logging");
            }
        }
    }
    (params(&off), params(&on), logged)
}

#[test]
fn the_logging_leaves_cpu_parameters_bit_identical() {
    // SUMO also draws its sizes: the measurements' draws come from a stream of their own.
    for estimator in ["iwae", "jvi-dreg", "sumo"] {
        let (off, on, lines) = with_and_without("cpu", estimator);
        let diff = off
            .iter()
            .zip(&on)
            .filter(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(diff.count(), 0, "{estimator}: parameters differ");
        let pts = points(&lines);
        let steps: Vec<u64> = pts.iter().map(|p| p.0).collect();
        assert_eq!(steps, [3, 6, 9, 12, 15, 18], "{estimator}");
        for (step, enc, dec) in pts {
            assert!(
                enc > 0.0 && dec > 0.0,
                "{estimator} step {step}: {enc} {dec}"
            );
        }
    }
}

/// Both GPU runs against each other within `uvae check`'s tolerance for parameters after
/// Adam steps (|a - b| <= 1e-4 + 1e-4 |a|), and the GPU's variances against the CPU's to 0.1 %
/// (the two trajectories differ by f32 rounding only).
#[test]
fn the_logging_leaves_gpu_parameters_within_parity_tolerance() {
    if !have_gpu() {
        return;
    }
    let (off, on, gpu_lines) = with_and_without(TestBackend::Gpu.name(), "iwae-dreg");
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &b)) in off.iter().zip(&on).enumerate() {
        let r = f64::from((a - b).abs()) / (1e-4 + 1e-4 * f64::from(a.abs()));
        if r > worst.0 {
            worst = (r, i);
        }
    }
    println!(
        "worst |with - without| / tol: {:.3} at parameter {} ({} vs {})",
        worst.0, worst.1, off[worst.1], on[worst.1]
    );
    assert!(worst.0 <= 1.0);
    let tmp = tempfile::tempdir().unwrap();
    let cpu = points(&train(
        &tmp.path().join("cpu"),
        "cpu",
        "iwae-dreg",
        "--grad-var-every 3 --grad-var-reps 4",
    ));
    for (c, g) in cpu.iter().zip(points(&gpu_lines)) {
        println!(
            "step {}: encoder cpu {} gpu {}, decoder cpu {} gpu {}",
            c.0, c.1, g.1, c.2, g.2
        );
        assert_eq!(c.0, g.0);
        assert!((c.1 - g.1).abs() <= 1e-3 * c.1 && (c.2 - g.2).abs() <= 1e-3 * c.2);
    }
}

/// The probe's spread against R explicit gradients computed independently in f64 (central
/// finite differences of each estimator's surrogate, tests/integration/gradient_check.rs) at
/// the noise the probe's replications draw. Each f64 gradient coordinate is within
/// ATOL + RTOL |g| of the backend's (the gradient checks' bound), so the per-coordinate
/// variance is within the bound propagated through it, averaged over coordinates. Run once
/// whole and once in one-datapoint passes (a row limit of N): both must meet it.
#[test]
fn the_variance_matches_r_explicit_f64_gradients() {
    const R: usize = 5;
    const STEP: u32 = 7;
    for kind in [
        EstimatorKind::Iwae,
        EstimatorKind::IwaeDreg,
        EstimatorKind::Rws,
        EstimatorKind::JviDreg,
    ] {
        let mut f = Fixture::new();
        let seed = f.noise.seed;
        let grads: Vec<Vec<f64>> = (0..R)
            .map(|r| {
                f.noise = Noise {
                    seed,
                    stream: Stream::GradVar,
                    step: STEP,
                    first_datapoint: 0,
                    first_sample: (r * N) as u32,
                };
                finite_difference_gradient(&f, kind, 0.0)
            })
            .collect();
        let plan = Estimator::new(kind, 0.0).plan(N).unwrap();
        let probe = GradVarProbe {
            plan: &plan,
            x: &f.x,
            batch: f.batch,
            seed,
            reps: R,
        };
        let el = f.layout.encoder_len;
        for row_limit in [None, Some(N)] {
            let mut be = TestBackend::Cpu.create(&f.layout, &f.values, 2, row_limit);
            let got = probe.measure(be.as_mut(), STEP).unwrap();
            for (group, coords, spread) in [
                ("encoder", 0..el, got.encoder),
                ("decoder", el..f.layout.len, got.decoder),
            ] {
                let (want, bound, norm) = variance_and_bound(&grads, coords);
                println!(
                    "{kind:?} {group} rows {row_limit:?}: got {:.6e} want {want:.6e} (bound {bound:.2e}); mean norm {:.6} want {norm:.6}",
                    spread.mean_variance, spread.mean_norm
                );
                assert!(want > 0.0);
                assert!(
                    (spread.mean_variance - want).abs() <= bound,
                    "{kind:?} {group}"
                );
                assert!(
                    (spread.mean_norm - norm).abs() <= 1e-3 * norm + 1e-5,
                    "{kind:?} {group}"
                );
            }
        }
    }
}

/// Over `coords`: the mean per-coordinate sample variance of `g` (two passes in f64), the
/// bound on its error when every value is off by up to ATOL + RTOL |g|, and the norm of the
/// mean gradient.
fn variance_and_bound(g: &[Vec<f64>], coords: std::ops::Range<usize>) -> (f64, f64, f64) {
    let r = g.len() as f64;
    let (mut var, mut bound, mut norm_sq) = (0.0, 0.0, 0.0);
    let dims = coords.len() as f64;
    for i in coords {
        let mean = g.iter().map(|v| v[i]).sum::<f64>() / r;
        var += g.iter().map(|v| (v[i] - mean).powi(2)).sum::<f64>() / (r - 1.0);
        let dev = g.iter().map(|v| (v[i] - mean).abs()).fold(0.0, f64::max);
        let err = g
            .iter()
            .map(|v| ATOL + RTOL * v[i].abs())
            .fold(0.0, f64::max);
        // Each deviation moves by at most 2 err: (d + 2e)^2 - d^2 = 4 d e + 4 e^2.
        bound += r / (r - 1.0) * (4.0 * dev * err + 4.0 * err * err);
        norm_sq += mean * mean;
    }
    (var / dims, bound / dims, norm_sq.sqrt())
}

#[test]
fn bad_grad_var_flags_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (extra, flag) in [
        ("--grad-var-reps 5", "--grad-var-reps"),
        ("--grad-var-every 0", "--grad-var-every"),
        ("--grad-var-every 5 --grad-var-reps 1", "--grad-var-reps"),
        (
            "--grad-var-every 5 --estimator coupled-isir",
            "--grad-var-every",
        ),
    ] {
        let mut args = words("train --backend cpu --epochs 1 --out");
        args.push(arg(&out));
        args.extend(words(extra));
        let o = run(&args);
        assert_eq!(o.code, Some(1), "{}", o.context(&args));
        assert!(o.stderr.contains(flag), "{}", o.context(&args));
        assert!(!out.exists(), "{extra}: wrote {}", out.display());
    }
}
