//! `--model hvae` end to end on the CPU: a short two-layer MNIST run improves its
//! validation bound, its checkpoint round-trips with PyTorch's tensor names and shapes,
//! `uvae eval` recovers the architecture from it, and the unbiased and coupled estimators
//! train it (the GPU side: `gpu_hvae.rs`).

use crate::common::cli::{arg, assert_val_lk_improves, run, run_ok, train_metrics, words};
use crate::common::{arch2, pytorch_tensors, tiny};
use safetensors::SafeTensors;
use unbiased_vae::model::checkpoint;

/// x 784 -> 40 -> 30 -> z1 12 -> 20 -> 12 -> z2 6 (and mirrored back): Burda's shape, smaller.
const SMALL: &str = "--model hvae --backend cpu --threads 2 --seed 1 --quiet \
    --hidden 40,30 --latent 12 --hidden2 20,12 --latent2 6";

fn small_run(dir: &std::path::Path, extra: &str) -> Vec<serde_json::Value> {
    train_metrics(dir, &words(SMALL), &words(extra)).0
}

#[test]
fn short_two_layer_run_improves_validation_lk() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_run(
        dir.path(),
        "--train-limit 500 --valid-size 200 --epochs 8 --batch 20 --k 5 --val-k 50 --lr 3e-3",
    );
    assert_val_lk_improves(&m, "two-layer");
}

#[test]
fn checkpoint_round_trips_with_pytorch_names_and_eval_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    small_run(
        dir.path(),
        "--train-limit 60 --valid-size 20 --epochs 1 --batch 20 --k 3 --val-k 5",
    );
    let path = dir.path().join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();

    // The names and shapes as `torch.nn.Sequential(Linear, Tanh, ...)` holds them.
    let mut want = pytorch_tensors("encoder", &[784, 40, 30, 24]);
    want.extend(pytorch_tensors("encoder2", &[12, 20, 12, 12]));
    want.extend(pytorch_tensors("decoder2", &[6, 12, 20, 24]));
    want.extend(pytorch_tensors("decoder", &[12, 30, 40, 784]));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // The architecture comes back from the shapes, and saving again gives the same bytes.
    let (params, meta) = checkpoint::load(&path).unwrap();
    assert_eq!(params.layout.arch, arch2(784, &[40, 30], 12, &[20, 12], 6));
    let again = checkpoint::to_bytes(&params, &meta).unwrap();
    let (reloaded, _) = checkpoint::parse(&again, &path).unwrap();
    assert_eq!(reloaded.values, params.values);
    assert_eq!(reloaded.layout, params.layout);

    // A checkpoint missing decoder2 is an error naming the tensor, not a panic.
    let mut broken = params.clone();
    broken.layout.decoder2.clear();
    let partial = checkpoint::to_bytes(&broken, &meta).unwrap();
    let e = checkpoint::parse(&partial, &path).unwrap_err().to_string();
    assert!(e.contains("decoder2.0.weight"), "{e}");

    // uvae eval runs L_5000 on it with the architecture read from the file.
    let mut eval = words("eval --backend cpu --threads 2 --k 5000 --limit 3 --checkpoint");
    eval.push(arg(&path));
    let out = run_ok(&eval);
    let lk: f64 = out
        .split("L_5000 = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no L_5000 in {out}"));
    assert!(lk.is_finite() && lk < 0.0, "{out}");

    // Prior samples draw z2, then z1 | z2, then decode (sizes follow the checkpoint).
    let png = dir.path().join("s.png");
    run_ok(&["sample", "--checkpoint", arg(&path), "--out", arg(&png)]);
    assert!(std::fs::metadata(&png).unwrap().len() > 100);
}

#[test]
fn unbiased_and_coupled_estimators_train_the_two_layer_model() {
    for est in ["sumo", "mlmc-rr", "coupled-isir", "coupled-pimh"] {
        let dir = tempfile::tempdir().unwrap();
        let m = small_run(
            dir.path(),
            &format!("--estimator {est} --train-limit 60 --valid-size 20 --epochs 1 --batch 20 --k 4 --val-k 5"),
        );
        let obj = m[0]["train_objective"].as_f64().unwrap();
        let lk = m[0]["val_lk"].as_f64().unwrap();
        println!("{est}: objective {obj:.3}, val L_5 {lk:.3}");
        assert!(obj.is_finite() && lk.is_finite(), "{est}: {:?}", m[0]);
        assert!(m[0]["grad_norm_encoder"].as_f64().unwrap() > 0.0, "{est}");
    }
}

/// A tiny two-layer model on 30 binary pixels and its minibatch of `batch` images.
fn tiny_two_layer(batch: usize) -> (unbiased_vae::model::Params, Vec<f32>) {
    tiny(&arch2(30, &[12], 4, &[6], 2), batch)
}

/// The two backends hold the same gradient: only the summation order differs, so f32
/// roundoff of the largest entry bounds the difference.
pub(crate) fn assert_same_gradient(
    label: &str,
    whole: &mut unbiased_vae::backend::cpu::CpuBackend,
    chunked: &mut unbiased_vae::backend::cpu::CpuBackend,
) {
    use unbiased_vae::backend::Backend;
    let (gw, gc) = (whole.gradient().unwrap(), chunked.gradient().unwrap());
    let scale = gw.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = gw
        .iter()
        .zip(&gc)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{label}: worst gradient difference {worst:e} (max |g| {scale:e})");
    assert!(
        scale > 1e-2 && worst <= 1e-5 * scale,
        "{label}: {worst} vs {scale}"
    );
}

/// Steps too large for one pass run in chunks (the same noise addresses, so the same z1, z2)
/// and give the gradient of the whole step; coupled chains (which pass over the datapoints
/// still running only) give the same outcome chunked or not.
#[test]
fn two_layer_chunked_steps_and_chains_equal_whole_ones() {
    use unbiased_vae::backend::cpu::CpuBackend;
    use unbiased_vae::backend::{Backend, Noise, StepInputs};
    use unbiased_vae::coupling::{ChainKernel, CouplingConfig};
    use unbiased_vae::estimators::{Estimator, EstimatorKind};
    use unbiased_vae::optim::AdamConfig;
    use unbiased_vae::rng::Stream;
    let batch = 4;
    let (params, x) = tiny_two_layer(batch);
    let noise = Noise {
        seed: 5,
        stream: Stream::Eps,
        step: 1,
        first_datapoint: 3,
        first_sample: 0,
    };
    let adam = AdamConfig::default();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
    let draw = Estimator::new(EstimatorKind::MlmcRr, 0.0)
        .plan(1)
        .unwrap()
        .draw(&mut rng)
        .unwrap();
    for (label, program, n) in [
        ("mlmc-rr", draw.program.clone(), draw.n),
        (
            "jvi-dreg",
            Estimator::new(EstimatorKind::JviDreg, 0.0).program(),
            8,
        ),
    ] {
        let mut whole = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        let mut chunked = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        chunked.set_row_limit(Some(batch * 3));
        for b in [&mut whole, &mut chunked] {
            b.train_step(
                &x,
                &StepInputs {
                    batch,
                    noise,
                    adam,
                    lr: 1e-3,
                },
                n,
                &program,
            )
            .unwrap();
        }
        assert_same_gradient(&format!("{label} n = {n}"), &mut whole, &mut chunked);
    }
    for kernel in [ChainKernel::Isir, ChainKernel::Pimh] {
        let chains = CouplingConfig {
            horizon: 3,
            ..CouplingConfig::new(kernel, 4)
        };
        let mut whole = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        let mut chunked = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        chunked.set_row_limit(Some(batch * chains.particles_through(1)));
        let inputs = StepInputs {
            batch,
            noise,
            adam,
            lr: 1e-3,
        };
        let ow = whole.chain_step(&x, &inputs, &chains).unwrap();
        let oc = chunked.chain_step(&x, &inputs, &chains).unwrap();
        assert_eq!(ow, oc, "{kernel}: chunking changed the chains");
        println!("{kernel}: {ow:?}");
        assert_same_gradient(&kernel.to_string(), &mut whole, &mut chunked);
    }
}

/// `uvae profile --model hvae` times the two-layer step on the CPU; bad second-layer sizes
/// and second-layer flags on a one-layer model are errors naming the flag.
#[test]
fn profile_runs_and_bad_second_layer_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let mut profile = words(
        "profile --model hvae --backend cpu --threads 2 --k 2 --batch 4 --steps 1 --warmup 0",
    );
    profile.extend(["--trace", arg(&trace)]);
    let out = run_ok(&profile);
    assert!(out.contains("sample z1, z2"), "{out}");
    for (args, flag) in [
        (vec!["--model", "hvae", "--hidden2", "0"], "--hidden2"),
        (vec!["--model", "hvae", "--latent2", "0"], "--latent2"),
        (vec!["--model", "vae", "--hidden2", "8"], "--hidden2"),
    ] {
        let out_dir = dir.path().join("run");
        let mut a = vec!["train", "--backend", "cpu", "--out", arg(&out_dir)];
        a.extend(args.iter());
        let o = run(&a);
        assert_eq!(o.code, Some(1), "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(flag) && !o.stderr.contains("panicked"),
            "{}",
            o.stderr
        );
    }
}
