//! `uvae train` through the binary, for the test files that drive training from the CLI.

use assert_cmd::Command;
use serde_json::Value;

/// Runs `uvae train <base> <extra> --out dir`, asserts success, and returns every line of
/// metrics.jsonl with stderr.
pub fn train_metrics(dir: &std::path::Path, base: &[&str], extra: &[&str]) -> (Vec<Value>, String) {
    let out = Command::cargo_bin("uvae")
        .unwrap()
        .arg("train")
        .args(base)
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}
