//! A short training run through the library API must improve the validation bound L_K.

use unbiased_vae::config::{BackendChoice, TrainConfig};
use unbiased_vae::data;
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::eval;
use unbiased_vae::model::ModelChoice;
use unbiased_vae::model::{checkpoint, Params};
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::train;

use crate::common::arch;
use crate::common::mc::combined_se;

#[test]
fn short_iwae_run_improves_validation_lk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        model: ModelChoice::Vae,
        data: None,
        binarize: Default::default(),
        image_shape: None,
        valid_size: 400,
        train_limit: Some(3000),
        // A smaller model than Burda's 784-200-200-50 to keep the test fast.
        arch: arch(784, &[100], 20),
        estimator: Estimator::new(EstimatorKind::Iwae, 0.5),
        k: 5,
        epochs: 3,
        batch: 100,
        lr: 1e-3,
        schedule: Schedule::Constant,
        adam: AdamConfig::default(),
        seed: 0,
        threads: 0,
        backend: BackendChoice::Cpu,
        adapter: None,
        val_k: 50,
        output_bias: Default::default(),
        test: None,
        grad_var: None,
        out: dir.path().join("run"),
    };

    // L_K under the initial parameters, built exactly as train::train builds them.
    let mut ds = data::load_or_bundled(cfg.data.as_deref(), cfg.valid_size).unwrap();
    ds.train = ds.train.slice(0..cfg.train_limit.unwrap());
    let mut arch = cfg.arch.clone();
    arch.x_dim = ds.dim();
    let init = Params::init(&arch, cfg.seed, Some(&ds.train_mean()));
    let val_x = data::binarize_eval(&ds.valid);
    let eval_val = |params: &Params| {
        let mut backend = train::make_backend(cfg.backend, params, cfg.threads, None).unwrap();
        eval::log_likelihood(
            backend.as_mut(),
            &val_x,
            ds.valid.count,
            cfg.val_k,
            eval::DEFAULT_EVAL_SEED,
            0,
        )
        .unwrap()
    };
    let initial = eval_val(&init);

    let mut seen = Vec::new();
    let outcome = train::train(&cfg, |m| seen.push(m.epoch)).unwrap();
    let h = &outcome.epochs;
    assert_eq!(h.len(), 3);
    assert_eq!(seen, vec![1, 2, 3], "progress sees every epoch in order");

    println!(
        "initial  val L_{} = {:.3} ± {:.3}",
        cfg.val_k, initial.mean, initial.stderr
    );
    for m in h {
        println!(
            "epoch {}  objective {:.3}  val L_{} = {:.3} ± {:.3}  ({:.2} s)",
            m.epoch, m.train_objective, m.val_k, m.val_lk, m.val_lk_stderr, m.seconds
        );
    }
    let (first, last) = (&h[0], &h[h.len() - 1]);
    for m in h {
        assert!(
            m.val_lk.is_finite() && m.val_lk_stderr.is_finite() && m.train_objective.is_finite(),
            "epoch {}: {m:?}",
            m.epoch
        );
    }

    // Improvement over training: the last epoch's L_K beats the first's by more than 3
    // standard errors. Both are means over the same 400 validation images with the same
    // evaluation noise, so their errors are positively correlated and the paired difference
    // has a smaller standard error than sqrt(se1^2 + se2^2); using that sum is conservative.
    let se = combined_se(first.val_lk_stderr, last.val_lk_stderr);
    let gain = last.val_lk - first.val_lk;
    println!(
        "gain epoch 1 -> {}: {gain:.3} nats (3 SE = {:.3})",
        last.epoch,
        3.0 * se
    );
    assert!(
        gain > 3.0 * se,
        "validation L_K went from {:.3} to {:.3}: a gain of {gain:.3}, not above 3 SE = {:.3}",
        first.val_lk,
        last.val_lk,
        3.0 * se
    );

    // The trained model beats the initial one.
    assert!(
        last.val_lk > initial.mean,
        "final L_K {:.3} is not above the initial {:.3}",
        last.val_lk,
        initial.mean
    );

    // The returned parameters, the checkpoint, and the reported metric agree.
    let (loaded, meta) = checkpoint::load(&cfg.out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(loaded.layout, outcome.params.layout);
    assert!(
        loaded.values == outcome.params.values,
        "the checkpoint's parameters differ from the returned ones"
    );
    let run: serde_json::Value = serde_json::from_str(&meta["uvae"]).unwrap();
    assert_eq!(run["estimator"], "iwae");
    let again = eval_val(&outcome.params);
    println!(
        "re-evaluated final parameters: {:.6} (history {:.6})",
        again.mean, last.val_lk
    );
    assert!(
        (again.mean - last.val_lk).abs() < 1e-9,
        "re-evaluating the final parameters gives {} but the history says {}",
        again.mean,
        last.val_lk
    );
}

/// `--test-every 2` over 3 epochs scores the test bound after epochs 2 and 3 (the last) only,
/// `checkpoint-best.safetensors` holds the parameters of the best validation epoch (its
/// validation bound recomputed from the file matches the logged one), and `--output-bias
/// zero` starts the output bias at zero where `data-mean` starts it at the mean's logit.
#[test]
fn test_bound_cadence_best_checkpoint_and_output_bias() {
    use crate::common::cli::{arg, metrics_lines, run_ok, words};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let base = words(
        "train --backend cpu --train-limit 300 --valid-size 100 --hidden 20 --latent 4 \
         --batch 20 --val-k 5 --quiet",
    );
    let mut args = base.to_vec();
    args.extend(words(
        "--lr 0.03 --epochs 3 --test-every 2 --test-k 3 --test-limit 30",
    ));
    args.extend(["--out", arg(&out)]);
    run_ok(&args);
    let lines = metrics_lines(&out);
    let tested: Vec<u64> = lines
        .iter()
        .filter(|m| m.get("test_lk").is_some())
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(tested, vec![2, 3], "test bound after epochs 2 and 3");
    assert!(lines[1]["test_lk"].as_f64().unwrap() < 0.0 && lines[1]["test_k"] == 3);
    let vals: Vec<f64> = lines
        .iter()
        .map(|m| m["val_lk"].as_f64().unwrap())
        .collect();
    let best = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (params, _) = checkpoint::load(&out.join(train::BEST_CHECKPOINT_FILE)).unwrap();
    let ds = data::load_or_bundled(None, 100).unwrap();
    let x = data::binarize_eval(&ds.valid);
    let mut backend = train::make_backend(BackendChoice::Cpu, &params, 0, None).unwrap();
    let r = eval::log_likelihood(
        backend.as_mut(),
        &x,
        ds.valid.count,
        5,
        eval::DEFAULT_EVAL_SEED,
        0,
    )
    .unwrap();
    assert!(
        (r.mean - best).abs() < 1e-9,
        "the best checkpoint scores {} on validation, the best logged epoch {best} (all: {vals:?})",
        r.mean
    );
    // Output bias: after an epoch at lr 1e-30 the last decoder layer's bias is its init.
    let init_bias = |bias: &str, name: &str| -> Vec<f32> {
        let d = dir.path().join(name);
        let mut a = base.to_vec();
        a.extend([
            "--epochs",
            "1",
            "--lr",
            "1e-30",
            "--output-bias",
            bias,
            "--out",
            arg(&d),
        ]);
        run_ok(&a);
        let (p, _) = checkpoint::load(&d.join(train::CHECKPOINT_FILE)).unwrap();
        let last = p.layout.decoder.last().unwrap().clone();
        p.values[last.b..last.b + last.out].to_vec()
    };
    let zero = init_bias("zero", "zero");
    let mean = init_bias("data-mean", "mean");
    assert!(
        zero.iter().all(|b| b.abs() < 1e-6),
        "zero: {:?}",
        &zero[..5]
    );
    assert!(
        mean.iter().any(|b| *b < -5.0),
        "a corner pixel's logit is strongly negative"
    );
}

/// A JVI-DReG run's test curve carries the jackknife estimate J of the test bound's own K
/// samples: recomputed here from the checkpoint's log-weights at the evaluation noise with a
/// leave-one-out written out in f64, it matches metrics.jsonl, and the L_K of the same
/// log-weights matches the logged test bound. An IWAE run logs no J.
#[test]
fn jvi_runs_log_the_jackknife_estimate_on_the_test_images() {
    use crate::common::cli::{arg, metrics_lines, run_ok, words};
    use unbiased_vae::backend::Noise;
    use unbiased_vae::rng::Stream;
    let (k, count) = (6usize, 12usize);
    let dir = tempfile::tempdir().unwrap();
    let run = |estimator: &str| {
        let out = dir.path().join(estimator);
        let mut args = words(
            "train --backend cpu --train-limit 200 --valid-size 100 --hidden 16 --latent 4 \
             --batch 20 --val-k 5 --epochs 1 --test-every 1 --test-k 6 --test-limit 12 --quiet",
        );
        args.extend(["--estimator", estimator, "--out", arg(&out)]);
        run_ok(&args);
        (out.clone(), metrics_lines(&out).remove(0))
    };
    let (_, iwae) = run("iwae");
    assert!(iwae.get("test_lk").is_some() && iwae.get("test_jvi").is_none());
    let (out, m) = run("jvi-dreg");
    let (params, _) = checkpoint::load(&out.join(train::CHECKPOINT_FILE)).unwrap();
    let ds = data::load_or_bundled(None, 100).unwrap();
    let x = data::binarize_eval(&ds.test.slice(0..count));
    let mut be = train::make_backend(BackendChoice::Cpu, &params, 1, None).unwrap();
    let noise = Noise {
        seed: eval::DEFAULT_EVAL_SEED,
        stream: Stream::EvalEps,
        step: 0,
        first_datapoint: 0,
        first_sample: 0,
    };
    let lw: Vec<f64> = be
        .forward(&x, count, k, &noise)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let bound = |l: &[f64]| {
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + (l.iter().map(|v| (v - m).exp()).sum::<f64>() / l.len() as f64).ln()
    };
    let (mut lk, mut jvi) = (0.0, 0.0);
    for l in lw.chunks(k) {
        let loo: f64 = (0..k)
            .map(|i| bound(&[&l[..i], &l[i + 1..]].concat()))
            .sum::<f64>()
            / k as f64;
        lk += bound(l) / count as f64;
        jvi += (k as f64 * bound(l) - (k - 1) as f64 * loo) / count as f64;
    }
    let logged = |key: &str| m[key].as_f64().unwrap();
    println!(
        "L_K {lk} (logged {}), J {jvi} (logged {} ± {})",
        logged("test_lk"),
        logged("test_jvi"),
        logged("test_jvi_stderr")
    );
    assert!((logged("test_lk") - lk).abs() < 1e-4);
    assert!((logged("test_jvi") - jvi).abs() < 1e-6);
    assert!(logged("test_jvi_stderr") > 0.0);
}
