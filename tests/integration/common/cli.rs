//! The `uvae` binary for the tests that drive it: running it, and reading a run's metrics.

use assert_cmd::Command;
use serde_json::Value;

/// `uvae`, as cargo built it for the tests.
pub fn uvae() -> Command {
    let mut c = Command::cargo_bin("uvae").expect("binary uvae is built");
    // Short panic reports: the tests look for "panicked", not for the backtrace.
    c.env("RUST_BACKTRACE", "0");
    c
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &[&str]) -> Output {
    let out = uvae().args(args).output().expect("uvae runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `uvae args`, asserting success, and returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.code,
        Some(0),
        "uvae {} failed\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        o.stdout,
        o.stderr
    );
    o.stdout
}

/// Every line of `dir`/metrics.jsonl.
pub fn metrics_lines(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `uvae train <base> <extra> --out dir`, asserts success, and returns every line of
/// metrics.jsonl with stderr.
pub fn train_metrics(dir: &std::path::Path, base: &[&str], extra: &[&str]) -> (Vec<Value>, String) {
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
