//! `uvae profile` and `uvae bench` on the CPU backend and on a GPU adapter (lavapipe in CI).

use assert_cmd::Command;
use serde_json::Value;

mod common;
use common::have_gpu;

/// Runs a tiny profile; checks the report and that the trace has one event per timed call.
fn profile(backend: &str, must_have: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.json");
    let out = Command::cargo_bin("uvae")
        .unwrap()
        .args([
            "profile",
            "--backend",
            backend,
            "--k",
            "3",
            "--batch",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("profile --json prints JSON");
    let rows = report["rows"].as_array().unwrap();
    let calls: u64 = rows.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
    let shares: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-6, "shares sum to {shares}");
    for kernel in must_have {
        assert!(
            rows.iter().any(|r| r["kernel"] == *kernel),
            "no {kernel} row in {rows:?}"
        );
    }
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(report["wall_ms_per_step"].as_f64().unwrap() > 0.0);
    let trace: Value =
        serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("trace is valid JSON");
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(
        events.len() as u64,
        calls,
        "one trace event per timed dispatch or phase"
    );
    for e in events {
        assert_eq!(e["ph"], "X");
        assert!(
            e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0,
            "{e}"
        );
    }
    // GEMM work is counted, so its GFLOP/s is reported.
    assert!(
        rows.iter()
            .any(|r| r["gflops"].as_f64().is_some_and(|g| g > 0.0)),
        "{rows:?}"
    );
}

#[test]
fn profile_on_the_cpu() {
    profile(
        "cpu",
        &[
            "encoder forward",
            "decoder forward",
            "coefficients",
            "decoder backward",
            "encoder backward",
            "adam",
        ],
    );
}

#[test]
fn profile_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    profile(
        "gpu",
        &[
            "gemm",
            "sample_z",
            "log_weights",
            "coefficients",
            "encoder_upstream",
            "grad_norms",
            "adam",
            "accumulate_stats",
        ],
    );
}

fn bench(backend: &str) {
    let out = Command::cargo_bin("uvae")
        .unwrap()
        .args([
            "bench",
            "--backend",
            backend,
            "--configs",
            "iwae:3:4,jvi-dreg:4:2",
            "--steps",
            "2",
            "--repeats",
            "3",
            "--warmup",
            "1",
            "--eval-k",
            "7",
            "--eval-images",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines[..2] {
        let (lo, med, hi) = (
            l["min_datapoints_per_s"].as_f64().unwrap(),
            l["datapoints_per_s"].as_f64().unwrap(),
            l["max_datapoints_per_s"].as_f64().unwrap(),
        );
        assert!(lo > 0.0 && lo <= med && med <= hi, "{l}");
        assert_eq!(l["repeats"], 3);
    }
    assert_eq!(lines[1]["estimator"], "jvi-dreg");
    assert_eq!(lines[2]["k"], 7);
    assert!(lines[2]["mean_lk"].as_f64().unwrap() < 0.0);
}

#[test]
fn bench_on_the_cpu() {
    bench("cpu");
}

#[test]
fn bench_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    bench("gpu");
}

#[test]
fn bench_rejects_a_malformed_config() {
    let out = Command::cargo_bin("uvae")
        .unwrap()
        .args(["bench", "--backend", "cpu", "--configs", "iwae:50"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--configs") && err.contains("estimator:k:batch"),
        "{err}"
    );
}
