//! `--model cvae` (the DReG paper's structured prediction, §6.3) end to end on the CPU: a
//! short MNIST run improves its validation bound on log p(bottom | top), every estimator
//! trains it, its checkpoint holds PyTorch's tensor names and shapes (the prior as prior.*)
//! and `uvae eval` recovers it, eval's L_K equals the log-sum-exp of the reference model's
//! log-weights on the same noise, and the flags and commands that do not apply say so. The
//! gradients: `gradient_check_cvae.rs`.

use crate::common::cli::{arg, assert_val_lk_improves, run, run_ok, train_metrics, words};
use crate::common::{arch, pytorch_tensors};
use crate::gradient_check_cvae::cvae_arch;
use safetensors::SafeTensors;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::model::{checkpoint, reference, Arch, Conditional, Params};
use unbiased_vae::rng::{self, Stream};

/// x 784 (c: the top 14 rows) -> 40 -> 30 -> z 12; the prior 392 -> 40 -> 30 -> 24.
const SMALL: &str = "--model cvae --backend cpu --threads 2 --seed 1 --quiet \
    --hidden 40,30 --latent 12";

fn small_run(dir: &std::path::Path, extra: &str) -> Vec<serde_json::Value> {
    train_metrics(dir, &words(SMALL), &words(extra)).0
}

#[test]
fn short_conditional_run_improves_validation_lk() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_run(
        dir.path(),
        "--train-limit 500 --valid-size 200 --epochs 6 --batch 20 --k 5 --val-k 50 --lr 3e-3",
    );
    assert_val_lk_improves(&m, "log p(bottom | top)");
}

#[test]
fn every_estimator_trains_the_conditional_model() {
    for est in [
        "iwae",
        "iwae-dreg",
        "rws",
        "rws-dreg",
        "stl",
        "dreg --alpha 0.2",
        "jvi-dreg",
        "sumo",
        "coupled-pimh",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = small_run(
            dir.path(),
            &format!("--estimator {est} --train-limit 60 --valid-size 20 --epochs 1 --batch 20 --k 4 --val-k 5"),
        );
        let obj = m[0]["train_objective"].as_f64().unwrap();
        let lk = m[0]["val_lk"].as_f64().unwrap();
        println!("{est}: objective {obj:.3}, val L_5 {lk:.3}");
        assert!(obj.is_finite() && lk.is_finite(), "{est}: {:?}", m[0]);
        for group in ["grad_norm_encoder", "grad_norm_decoder"] {
            assert!(m[0][group].as_f64().unwrap() > 0.0, "{est}: {group}");
        }
    }
}

#[test]
fn checkpoint_round_trips_with_pytorch_names_and_eval_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    // Ten rows of context: 280 pixels given, 504 modelled.
    small_run(
        dir.path(),
        "--split-row 10 --train-limit 60 --valid-size 20 --epochs 1 --batch 20 --k 3 --val-k 5",
    );
    let path = dir.path().join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();

    // The names and shapes as `torch.nn.Sequential(Linear, Tanh, ...)` holds them: the
    // decoder reads torch.cat([z, c], -1) and writes the 504 bottom pixels' logits.
    let mut want = pytorch_tensors("encoder", &[784, 40, 30, 24]);
    want.extend(pytorch_tensors("prior", &[280, 40, 30, 24]));
    want.extend(pytorch_tensors("decoder", &[12 + 280, 30, 40, 504]));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // The architecture comes back from the shapes (the split row from the metadata), and
    // saving again gives the same values.
    let (params, meta) = checkpoint::load(&path).unwrap();
    let want_arch = Arch {
        cond: Some(Conditional {
            split_row: Some(10),
            c_dim: 280,
        }),
        ..arch(784, &[40, 30], 12)
    };
    assert_eq!(params.layout.arch, want_arch);
    let again = checkpoint::to_bytes(&params, &meta).unwrap();
    let (reloaded, _) = checkpoint::parse(&again, &path).unwrap();
    assert_eq!(reloaded.values, params.values);
    assert_eq!(reloaded.layout, params.layout);

    // A checkpoint whose prior reads every pixel is an error naming the tensor.
    let mut whole = params.clone();
    whole.layout = unbiased_vae::model::Layout::new(&Arch {
        cond: Some(Conditional {
            split_row: None,
            c_dim: 784,
        }),
        ..arch(784, &[40, 30], 12)
    });
    whole.values = vec![0.0; whole.layout.len];
    let e = checkpoint::parse(&checkpoint::to_bytes(&whole, &meta).unwrap(), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("prior.0.weight") && e.contains("784"), "{e}");

    // uvae eval scores log p(bottom | top) with the architecture read from the file.
    let mut eval = words("eval --backend cpu --threads 2 --k 500 --limit 3 --checkpoint");
    eval.push(arg(&path));
    let out = run_ok(&eval);
    let lk: f64 = out
        .split("L_500 of log p(bottom | top 280 pixels) = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no L_500 of log p(bottom | top) in {out}"));
    assert!(lk.is_finite() && lk < 0.0, "{out}");

    // Pictures of whole images do not apply to it: an error naming the model.
    let png = dir.path().join("s.png");
    let o = run(&["sample", "--checkpoint", arg(&path), "--out", arg(&png)]);
    assert!(
        o.code != Some(0) && o.stderr.contains("cvae"),
        "{}",
        o.stderr
    );
}

/// eval's L_K per datapoint is log (1/K) sum_k w_k over the reference model's log-weights
/// log p(x | z, c) + log p(z | c) - log q(z | x, c) at the evaluation noise, also when the
/// K samples run in chunks (a row limit of 4 splits K = 7 into 4 + 3).
#[test]
fn eval_is_the_log_mean_weight_of_the_reference_model() {
    let a = Arch {
        x_dim: 30,
        ..cvae_arch()
    };
    let (params, x) = crate::common::tiny(&a, 3);
    let params = Params {
        values: params.values.iter().map(|v| v * 1.5).collect(),
        ..params
    };
    let (k, seed, first) = (7, 21, 4);
    let mut be = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
    be.set_row_limit(Some(4));
    let got = unbiased_vae::eval::log_likelihood(&mut be, &x, 3, k, seed, first).unwrap();
    let p: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let zd = a.z_dim;
    for (i, &g) in got.per_point.iter().enumerate() {
        let mut eps = vec![0.0f32; k * zd];
        rng::fill_normals_from(seed, Stream::EvalEps, 0, first + i as u32, 0, &mut eps);
        let eps: Vec<f64> = eps.iter().map(|&v| v as f64).collect();
        let xi: Vec<f64> = x[i * 30..(i + 1) * 30].iter().map(|&v| v as f64).collect();
        let l = reference::log_weights(&params.layout, &p, &p, &p, &xi, &eps);
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let want = m + (l.iter().map(|v| (v - m).exp()).sum::<f64>() / k as f64).ln();
        println!("datapoint {i}: eval {g:.6}, reference {want:.6}");
        assert!(
            (g - want).abs() <= 1e-4 + 1e-5 * want.abs(),
            "{g} vs {want}"
        );
    }
}

#[test]
fn flags_and_backends_that_do_not_apply_say_so() {
    for (line, needle) in [
        ("--model vae --split-row 3", "--split-row"),
        ("--model cvae --split-row 28", "1 to 27"),
        ("--model cvae --split-row 0", "--split-row"),
        ("--model cvae --latent2 3", "--latent2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args =
            words("train --train-limit 40 --valid-size 20 --batch 20 --epochs 1 --quiet");
        args.extend(words(line));
        args.extend(["--out", arg(dir.path())]);
        let o = run(&args);
        println!("{line}: {}", o.stderr);
        assert!(
            o.code != Some(0) && o.stderr.contains(needle),
            "{line}: {}",
            o.stderr
        );
        assert!(
            !dir.path().join("checkpoint.safetensors").exists(),
            "{line}"
        );
    }
}

/// A step too large for one pass runs in chunks of samples (the same noise addresses, so the
/// same z) and gives the whole step's gradient, the prior's (summed over a datapoint's
/// samples in every chunk) included.
#[test]
fn chunked_conditional_step_equals_whole_one() {
    use unbiased_vae::backend::{Backend, Noise, StepInputs};
    use unbiased_vae::estimators::{Estimator, EstimatorKind};
    let batch = 3;
    let a = Arch {
        x_dim: 30,
        cond: Some(Conditional {
            split_row: None,
            c_dim: 12,
        }),
        ..arch(30, &[10], 4)
    };
    let (params, x) = crate::common::tiny(&a, batch);
    let inputs = StepInputs {
        batch,
        noise: Noise {
            seed: 5,
            stream: Stream::Eps,
            step: 1,
            first_datapoint: 3,
            first_sample: 0,
        },
        adam: Default::default(),
        lr: 1e-3,
    };
    for kind in [EstimatorKind::IwaeDreg, EstimatorKind::Rws] {
        let program = Estimator::new(kind, 0.0).program();
        let mut whole = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        let mut chunked = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        chunked.set_row_limit(Some(batch * 3));
        for b in [&mut whole, &mut chunked] {
            b.train_step(&x, &inputs, 8, &program).unwrap();
        }
        crate::hvae::assert_same_gradient(&kind.to_string(), &mut whole, &mut chunked);
        let prior = params.layout.prior[0].w..params.layout.decoder[0].w;
        let g = whole.gradient().unwrap();
        assert!(
            g[prior].iter().any(|v| v.abs() > 1e-3),
            "{kind}: prior gradient ~0"
        );
    }
}
