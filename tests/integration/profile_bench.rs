//! `uvae profile` and `uvae bench` on the CPU backend and on a GPU adapter (lavapipe in CI).

use serde_json::Value;

use crate::common::cli::{arg, run, run_json, run_ok, words};
use crate::common::{backends, TestBackend};

/// Runs a tiny profile; checks the report and that the trace has one event per timed call.
fn profile(backend: &str, must_have: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.json");
    let mut args = words("profile --k 3 --batch 4 --steps 2 --warmup 1 --json --backend");
    args.extend([backend, "--trace", arg(&trace)]);
    let report = run_json(&args);
    let rows = report["rows"].as_array().unwrap();
    let calls: u64 = rows.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
    let shares: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!(
        (shares - 1.0).abs() < 1e-6,
        "{backend}: shares sum to {shares}"
    );
    for kernel in must_have {
        assert!(
            rows.iter().any(|r| r["kernel"] == *kernel),
            "{backend}: no {kernel} row in {rows:?}"
        );
    }
    assert!(
        report["peak_memory_bytes"].as_u64().unwrap() > 0,
        "{backend}: {report}"
    );
    assert!(
        report["wall_ms_per_step"].as_f64().unwrap() > 0.0,
        "{backend}: {report}"
    );
    let trace: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap())
        .unwrap_or_else(|e| panic!("{backend}: trace is valid JSON: {e}"));
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(
        events.len() as u64,
        calls,
        "{backend}: one trace event per timed dispatch or phase"
    );
    for e in events {
        assert_eq!(e["ph"], "X", "{backend}: {e}");
        assert!(
            e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0,
            "{backend}: {e}"
        );
    }
    // GEMM work is counted, so its GFLOP/s is reported.
    assert!(
        rows.iter()
            .any(|r| r["gflops"].as_f64().is_some_and(|g| g > 0.0)),
        "{backend}: {rows:?}"
    );
}

/// Each backend's profile names its own timed calls: phases on the CPU, kernels on the GPU.
#[test]
fn profile_on_every_backend() {
    for backend in backends() {
        let must_have: &[&str] = match backend {
            TestBackend::Cpu => &[
                "encoder forward",
                "decoder forward",
                "coefficients",
                "decoder backward",
                "encoder backward",
                "adam",
            ],
            TestBackend::Gpu => &[
                "binarize",
                // Every GEMM of the default model runs the vec4 kernel (z is padded), and z
                // is drawn inside the first decoder GEMM's loads.
                "gemm_vec4",
                "gemm_vec4_sample",
                "log_weights_partials",
                "coefficients",
                "encoder_upstream",
                "grad_norm_partials",
                "adam_step",
            ],
        };
        profile(backend.name(), must_have);
    }
}

fn bench(backend: &str) {
    let mut args = words(
        "bench --configs iwae:3:4,jvi-dreg:4:2 --steps 2 --repeats 3 --warmup 1 \
         --eval-k 7 --eval-images 3 --json --backend",
    );
    args.push(backend);
    let lines: Vec<Value> = run_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{backend}: JSON line: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{backend}: {lines:?}");
    for l in &lines[..2] {
        let (lo, med, hi) = (
            l["min_datapoints_per_s"].as_f64().unwrap(),
            l["datapoints_per_s"].as_f64().unwrap(),
            l["max_datapoints_per_s"].as_f64().unwrap(),
        );
        assert!(lo > 0.0 && lo <= med && med <= hi, "{backend}: {l}");
        assert_eq!(l["repeats"], 3, "{backend}: {l}");
        assert_eq!(l["warmup"], 1, "{backend}: {l}");
    }
    assert_eq!(lines[1]["estimator"], "jvi-dreg", "{backend}");
    assert_eq!(lines[2]["k"], 7, "{backend}");
    assert!(
        lines[2]["mean_lk"].as_f64().unwrap() < 0.0,
        "{backend}: {}",
        lines[2]
    );
}

#[test]
fn bench_on_every_backend() {
    for backend in backends() {
        bench(backend.name());
    }
}

#[test]
fn bench_times_the_gemm_peak_alone_and_names_the_vector_paths() {
    let out = run_ok(&words(
        "bench --configs none --eval-k 0 --gemm-peak 128 --threads 2 --json",
    ));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "only the peak line: {out}");
    let (gflops, backend) = (
        lines[0]["gflops"].as_f64().unwrap(),
        lines[0]["backend"].as_str().unwrap(),
    );
    assert!(gflops.is_finite() && gflops > 0.0, "{out}");
    assert_eq!(lines[0]["threads"], 2, "{out}");
    assert!(
        backend.contains(" elementwise, ") && backend.contains(" sgemm"),
        "the backend line names no vector paths: {backend}"
    );
}

#[test]
fn bench_rejects_a_malformed_config() {
    let out = run(&["bench", "--backend", "cpu", "--configs", "iwae:50"]);
    assert!(out.code != Some(0));
    let err = out.stderr;
    assert!(
        err.contains("--configs") && err.contains("estimator:k:batch"),
        "{err}"
    );
}

#[test]
fn bench_phases_times_each_decoder_gemm_and_counts_its_flops() {
    let rows = 300;
    let out = run_ok(&words(&format!(
        "bench --configs none --eval-k 0 --phases {rows} --threads 2 --json"
    )));
    let phases: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // 300 rows over 2 workers: pieces of 128 and of the worker's 150 rows.
    for threads in [1, 2] {
        for shape in ["50x200", "200x200", "200x784"] {
            for kind in ["forward", "input-grad", "weight-grad"] {
                let key = format!("gemm-{kind}-{shape}");
                let mine: Vec<&Value> = phases
                    .iter()
                    .filter(|p| p["key"] == key.as_str() && p["threads"] == threads)
                    .collect();
                assert_eq!(mine.len(), 2, "{key} at {threads} threads: {mine:?}");
                let (din, dout) = shape.split_once('x').unwrap();
                let flops = 2.0
                    * (rows * din.parse::<usize>().unwrap() * dout.parse::<usize>().unwrap())
                        as f64;
                for p in mine {
                    let (ms, gflops) = (p["ms"].as_f64().unwrap(), p["gflops"].as_f64().unwrap());
                    assert!(ms > 0.0 && ms.is_finite(), "{p}");
                    let counted = gflops * ms * 1e6;
                    assert!(
                        (counted - flops).abs() <= 1e-6 * flops,
                        "{key}: the rate counts {counted} FLOPs, the shape has {flops}"
                    );
                }
            }
        }
        for key in [
            "tanh",
            "tanh-backward",
            "bernoulli",
            "scale-rows",
            "normals",
            "copy",
        ] {
            let p = phases
                .iter()
                .find(|p| p["key"] == key && p["threads"] == threads)
                .unwrap_or_else(|| panic!("no {key} phase at {threads} threads: {out}"));
            assert!(p["gelems"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let bad = run(&words("bench --configs none --eval-k 0 --phases 100000"));
    assert!(bad.code != Some(0));
    assert!(
        bad.stderr.contains("--phases"),
        "the error names no flag: {}",
        bad.stderr
    );
}
