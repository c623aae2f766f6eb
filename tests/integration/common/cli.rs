//! The `uvae` binary for the tests that drive it: running it, reading a run's metrics, and
//! the same run on the CPU and the GPU.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

use super::{on_cpu_and_gpu, TestBackend};

/// `uvae`, as cargo built it for the tests.
pub fn uvae() -> Command {
    let mut c = Command::cargo_bin("uvae").expect("binary uvae is built");
    // Short panic reports: the tests look for "panicked", not for the backtrace.
    c.env("RUST_BACKTRACE", "0");
    c
}

/// The words of a command line written as one string: `words("--k 2 --batch 4")`.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// How a failure message shows the run.
    pub fn context(&self, args: &[&str]) -> String {
        format!(
            "uvae {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `uvae args` with the environment variables `env` added.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = uvae();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("uvae runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// Runs `uvae args`, asserting success, and returns its output.
pub fn run_success(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(o.code, Some(0), "{} failed", o.context(args));
    o
}

/// Runs `uvae args`, asserting success, and returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    run_success(args).stdout
}

/// Runs `uvae args`, asserting success, and returns stdout read as JSON.
pub fn run_json(args: &[&str]) -> Value {
    let out = run_ok(args);
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("uvae {} prints JSON: {e}\n{out}", args.join(" ")))
}

/// A number of a metrics line (or any JSON object).
pub fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Every line of `dir`/metrics.jsonl.
pub fn metrics_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts that nothing trained into `out` (no checkpoint there).
pub fn assert_untrained(out: &Path, what: &str) {
    let ckpt = out.join("checkpoint.safetensors");
    assert!(!ckpt.exists(), "{what}");
}

/// Runs `uvae train <base> <extra> --out dir`, asserts success, and returns every line of
/// metrics.jsonl with stderr.
pub fn train_metrics(dir: &Path, base: &[&str], extra: &[&str]) -> (Vec<Value>, String) {
    let out = uvae()
        .arg("train")
        .args(base)
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (metrics_lines(dir), stderr)
}

/// One estimator's run on both backends: (estimator, the CPU's metrics lines, the GPU's).
pub type CpuAndGpu<'a> = (&'a str, Vec<Value>, Vec<Value>);

/// `uvae train <args> --estimator e --backend b` for every one of `estimators`, on the CPU
/// and then on the GPU. None (skipped, before anything runs) without a GPU adapter.
pub fn train_on_cpu_and_gpu<'a>(args: &str, estimators: &[&'a str]) -> Option<Vec<CpuAndGpu<'a>>> {
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpu) = on_cpu_and_gpu(|b: TestBackend| {
        estimators
            .iter()
            .map(|e| {
                let dir = tmp.path().join(format!("{e}-{b}"));
                let extra = ["--estimator", e, "--backend", b.name()];
                train_metrics(&dir, &words(args), &extra).0
            })
            .collect::<Vec<_>>()
    })?;
    Some(
        estimators
            .iter()
            .zip(cpu.into_iter().zip(gpu))
            .map(|(e, (c, g))| (*e, c, g))
            .collect(),
    )
}

/// Asserts that `key` of two metrics lines agrees to `rel` relative, the GPU's against the
/// CPU's.
pub fn assert_agree(what: &str, cpu: &Value, gpu: &Value, key: &str, rel: f64) {
    let (c, g) = (num(cpu, key), num(gpu, key));
    println!("{what} {key}: cpu {c:.6} gpu {g:.6}");
    assert!(((g - c) / c).abs() < rel, "{what} {key}: cpu {c} gpu {g}");
}

/// Same seed, `args` trained with a fixed-size estimator (IWAE-DReG) and with SUMO (its tail
/// lengths drawn on the host, a subset program per minibatch on the device) on both
/// backends: the first epoch's objective and validation bound agree to 1e-3 relative.
pub fn first_epoch_agrees_on_cpu_and_gpu(args: &str) {
    for (estimator, c, g) in train_on_cpu_and_gpu(args, &["iwae-dreg", "sumo"]).unwrap_or_default()
    {
        assert_agree(estimator, &c[0], &g[0], "train_objective", 1e-3);
        assert_agree(estimator, &c[0], &g[0], "val_lk", 1e-3);
    }
}

/// A CPU run of `train_args`, then `uvae eval` of its checkpoint at K = 50 on 20 test images
/// on the CPU and the GPU: the two means agree within 0.01 nats. Skipped without a GPU
/// adapter.
pub fn eval_agrees_on_cpu_and_gpu(what: &str, train_args: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let ckpt = run.join("checkpoint.safetensors");
    let means = on_cpu_and_gpu(|b| {
        if b == TestBackend::Cpu {
            let mut args = vec!["train", "--backend", "cpu", "--out", arg(&run)];
            args.extend(words(train_args));
            run_ok(&args);
        }
        let e = words("eval --k 50 --limit 20 --json --backend");
        let v = run_json(&[&e[..], &[b.name(), "--checkpoint", arg(&ckpt)]].concat());
        num(&v, "mean")
    });
    let Some((cpu, gpu)) = means else { return };
    println!("{what}: cpu {cpu:.6} gpu {gpu:.6}");
    assert!((cpu - gpu).abs() < 0.01, "cpu {cpu} gpu {gpu}");
}

/// The last epoch's validation bound in metrics `m` beats the first's by more than 3 standard
/// errors. Both epochs score the same images on the same evaluation noise, so the paired
/// difference's SE is below sqrt(se1^2 + se2^2): 3 of those is conservative.
pub fn assert_val_lk_improves(m: &[Value], what: &str) {
    let (first, last) = (&m[0], &m[m.len() - 1]);
    let (lk, se) = (
        |v: &Value| num(v, "val_lk"),
        |v: &Value| num(v, "val_lk_stderr"),
    );
    let gain = lk(last) - lk(first);
    let three_se = 3.0 * super::mc::combined_se(se(first), se(last));
    println!(
        "{what}: val L_K {:.3} -> {:.3}, gain {gain:.3} (3 SE = {three_se:.3})",
        lk(first),
        lk(last)
    );
    assert!(
        gain > three_se,
        "{what}: gain {gain:.3} not above 3 SE = {three_se:.3}"
    );
}
