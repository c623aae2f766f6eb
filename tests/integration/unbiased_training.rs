//! Training with SUMO and MLMC through the CLI: level draws logged with their cost, the
//! warnings a user must see, both backends agreeing, and chunked steps equal to whole ones.

use serde_json::Value;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::{Backend, Noise, StepInputs};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::optim::AdamConfig;
use unbiased_vae::rng::Stream;

use crate::common::cli::{assert_agree, run, train_metrics, train_on_cpu_and_gpu, words};
use crate::common::{self, arch};

/// A small MNIST run of `epochs` epochs.
fn tiny(epochs: usize) -> String {
    format!(
        "--train-limit 200 --valid-size 40 --epochs {epochs} --batch 20 --hidden 48 --latent 8 --val-k 8"
    )
}

/// The first epoch's metrics of a one-epoch [`tiny`] run, with stderr.
fn train(dir: &std::path::Path, extra: &str) -> (Value, String) {
    let (mut lines, stderr) = train_metrics(dir, &words(&tiny(1)), &words(extra));
    (lines.swap_remove(0), stderr)
}

#[test]
fn random_size_estimators_log_levels_and_cost() {
    let tmp = tempfile::tempdir().unwrap();
    for (est, expect_levels) in [
        ("sumo", true),
        ("mlmc-ss", true),
        ("mlmc-rr", true),
        ("iwae", false),
    ] {
        let (m, _) = train(
            &tmp.path().join(est),
            &format!("--backend cpu --estimator {est}"),
        );
        let steps = m["steps"].as_u64().unwrap();
        let mean = m["samples_per_datapoint"].as_f64().unwrap();
        let expected = m["expected_samples_per_datapoint"].as_f64().unwrap();
        assert!(m["train_objective"].as_f64().unwrap().is_finite(), "{m}");
        match m.get("levels") {
            Some(levels) => {
                assert!(expect_levels, "{est} logged levels: {m}");
                let draws: u64 = levels
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap())
                    .sum();
                assert_eq!(draws, steps, "one level draw per minibatch: {m}");
                assert!(mean >= 1.0 && expected > 1.0, "{m}");
            }
            None => {
                assert!(!expect_levels, "{est} logged no levels: {m}");
                assert_eq!((mean, expected), (5.0, 5.0), "{m}");
            }
        }
    }
}

#[test]
fn mlmc_outside_the_p_range_warns_and_a_capped_run_states_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name| tmp.path().join(name);
    let (_, err) = train(&dir("p"), "--backend cpu --estimator mlmc-ss --mlmc-p 0.45");
    assert!(
        err.contains("warning") && err.contains("infinite expected cost"),
        "{err}"
    );
    let (_, err) = train(&dir("v"), "--backend cpu --estimator mlmc-rr --mlmc-p 0.8");
    assert!(err.contains("infinite variance"), "{err}");
    let capped = "--backend cpu --estimator mlmc-ss --mlmc-cap 1 --mlmc-i0 1";
    let (m, err) = train(&dir("cap"), capped);
    assert!(
        err.contains("L_8") && err.contains("NOT for log p(x)"),
        "{err}"
    );
    let levels = m["levels"].as_object().unwrap();
    assert!(
        levels.keys().all(|k| k.parse::<u32>().unwrap() <= 1),
        "capped levels: {levels:?}"
    );
    let (_, err) = train(&dir("ok"), "--backend cpu --estimator mlmc-ss");
    assert!(
        !err.contains("warning"),
        "the default p = 0.6 is in range: {err}"
    );
}

#[test]
fn bad_unbiased_settings_name_their_flag() {
    for (args, flag) in [
        ("--estimator mlmc-ss --mlmc-p 1.5", "--mlmc-p"),
        ("--estimator iwae --encoder rws", "--encoder"),
    ] {
        let line = format!("train {} {args} --out /tmp/uvae-never-written", tiny(1));
        let o = run(&words(&line));
        let err = o.stderr;
        assert!(
            o.code != Some(0) && err.contains(flag) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// Same seed, same level draws: the GPU's objectives equal the CPU's, over two epochs so
/// that validation (which reallocates the GPU's buffers) falls between training steps.
#[test]
fn gpu_and_cpu_agree_for_sumo_and_mlmc() {
    let runs = train_on_cpu_and_gpu(&tiny(2), &["sumo", "mlmc-ss", "mlmc-rr"]);
    for (est, cpu, gpu) in runs.unwrap_or_default() {
        assert_eq!((cpu.len(), gpu.len()), (2, 2));
        for (c, g) in cpu.iter().zip(&gpu) {
            assert_agree(
                &format!("{est} epoch {}", c["epoch"]),
                c,
                g,
                "train_objective",
                1e-3,
            );
            assert_eq!(c["levels"], g["levels"], "{est}: the same level draws");
        }
    }
}

/// A step too large for one pass runs in chunks on the CPU and gives the same parameters.
#[test]
fn chunked_cpu_steps_equal_whole_steps() {
    let (params, x) = common::tiny(&arch(30, &[12], 3), 4);
    let noise = Noise {
        seed: 5,
        stream: Stream::Eps,
        step: 0,
        first_datapoint: 0,
        first_sample: 0,
    };
    let est = Estimator::new(EstimatorKind::MlmcRr, 0.0);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
    let draw = est.plan(1).unwrap().draw(&mut rng).unwrap();
    for (program, n) in [
        (draw.program.clone(), draw.n),
        (Estimator::new(EstimatorKind::JviDreg, 0.0).program(), 8),
    ] {
        let mut whole = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        let mut chunked = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        chunked.set_row_limit(Some(4 * 3)); // 3 samples per datapoint per pass
        for b in [&mut whole, &mut chunked] {
            b.reset_optimizer();
            b.train_step(
                &x,
                &StepInputs {
                    batch: 4,
                    noise,
                    adam: AdamConfig::default(),
                    lr: 1e-3,
                },
                n,
                &program,
            )
            .unwrap();
        }
        let (pw, pc) = (whole.params().unwrap(), chunked.params().unwrap());
        let worst = pw
            .iter()
            .zip(&pc)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let (sw, sc) = (whole.take_stats().unwrap(), chunked.take_stats().unwrap());
        println!(
            "n = {n}: worst parameter difference {worst:e}; objective {} vs {}",
            sw.objective, sc.objective
        );
        // Adam's first step is lr sign(g) except where |g| ~ eps; a tenth of a step bounds
        // what summation order can change.
        assert!(worst < 1e-4, "chunked step differs by {worst}");
        assert!(
            (sw.objective - sc.objective).abs() < 1e-9 * sw.objective.abs().max(1.0),
            "{} vs {}",
            sw.objective,
            sc.objective
        );
        assert!(
            (sw.grad_norm_decoder - sc.grad_norm_decoder).abs() < 1e-5 * sw.grad_norm_decoder,
            "{sw:?} {sc:?}"
        );
    }
}
