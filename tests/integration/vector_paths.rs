//! The CPU backend's elementwise kernels run the widest vector path the CPU has unless
//! UVAE_VECTOR_CAP caps it; every path must train to the same bits. On this machine the
//! test runs each path it can (AVX-512, AVX2, the baseline), asserting the path each run
//! reported and that the checkpoints' parameters are identical bit for bit.

use super::common::cli::{arg, run_env, words};
use unbiased_vae::backend::cpu::vector_path::{VectorPath, CAP_VAR};
use unbiased_vae::model::checkpoint;

/// Trains the MNIST model (784 Bernoulli outputs, 200 tanh units: every dispatched kernel)
/// for 6 steps with the path capped at `cap`; returns the reported backend line and the
/// checkpoint's parameters as bits (its metadata names the run's own directory).
fn train_capped(dir: &std::path::Path, cap: &str) -> (String, Vec<u32>) {
    let out = dir.join(cap);
    let line = format!(
        "train --backend cpu --threads 2 --train-limit 700 --valid-size 100 --batch 100 --k 5 --epochs 1 --seed 3 --out {}",
        arg(&out)
    );
    let args = words(&line);
    let o = run_env(&args, &[(CAP_VAR, cap)]);
    assert_eq!(o.code, Some(0), "{}", o.context(&args));
    let reported = o
        .stdout
        .lines()
        .find(|l| l.starts_with("backend: "))
        .unwrap_or_else(|| panic!("no backend line: {}", o.context(&args)))
        .to_string();
    let (params, _) = checkpoint::load(&out.join("checkpoint.safetensors")).expect("checkpoint");
    (
        reported,
        params.values.iter().map(|v| v.to_bits()).collect(),
    )
}

#[test]
fn every_vector_path_trains_to_the_same_checkpoint_and_says_which_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let widest = VectorPath::choose(None).unwrap();
    let caps = [
        ("avx512", VectorPath::Avx512),
        ("avx2", VectorPath::Avx2),
        ("baseline", VectorPath::Baseline),
    ];
    let mut runs = Vec::new();
    for (cap, path) in caps {
        let expect = widest.min(path);
        let (reported, ckpt) = train_capped(dir.path(), cap);
        assert!(
            reported.contains(&format!("{} elementwise", expect.name())),
            "UVAE_VECTOR_CAP={cap}: expected the {} path, the run reported '{reported}'",
            expect.name()
        );
        runs.push((cap, expect, ckpt));
    }
    let distinct: std::collections::BTreeSet<_> = runs.iter().map(|r| r.1).collect();
    println!(
        "paths run on this CPU: {:?}",
        distinct.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
    let (cap0, _, first) = &runs[0];
    for (cap, _, ckpt) in &runs[1..] {
        let differ = first.iter().zip(ckpt).filter(|(a, b)| a != b).count();
        assert!(
            first.len() == ckpt.len() && differ == 0,
            "the parameters with {CAP_VAR}={cap} differ from those with {cap0} in {differ} places (counts {} and {})",
            ckpt.len(),
            first.len()
        );
    }
}

#[test]
fn an_unknown_cap_is_an_error_naming_the_variable_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let line = format!(
        "train --backend cpu --train-limit 300 --valid-size 100 --epochs 1 --out {}",
        arg(&out)
    );
    let args = words(&line);
    let o = run_env(&args, &[(CAP_VAR, "avx1024")]);
    assert_eq!(o.code, Some(1), "{}", o.context(&args));
    assert!(
        o.stderr.contains(CAP_VAR) && o.stderr.contains("avx1024"),
        "{}",
        o.context(&args)
    );
    assert!(!out.exists(), "a run directory was left behind");
}
