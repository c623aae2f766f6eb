//! A short training run through the library API must improve the validation bound L_K.

use unbiased_vae::config::{BackendChoice, TrainConfig};
use unbiased_vae::data;
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::eval;
use unbiased_vae::model::ModelChoice;
use unbiased_vae::model::{checkpoint, Arch, Params};
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::train;

use crate::common::mc::combined_se;

#[test]
fn short_iwae_run_improves_validation_lk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        model: ModelChoice::Vae,
        data: None,
        valid_size: 400,
        train_limit: Some(3000),
        // A smaller model than Burda's 784-200-200-50 to keep the test fast.
        arch: Arch {
            x_dim: 784,
            hidden: vec![100],
            z_dim: 20,
            likelihood: Default::default(),
            top: None,
        },
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
