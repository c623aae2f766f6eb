//! `uvae profile`: where a training step's time goes, per kernel (GPU timestamp queries) or
//! per phase (CPU wall clock), with achieved GFLOP/s for the GEMMs, working memory, and a
//! Chrome trace (one event per dispatch) that Perfetto and chrome://tracing open.

use crate::backend::{Backend, Timing};
use crate::data::Dataset;
use crate::estimators::Estimator;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;

/// One kernel (or phase) and shape, aggregated over the profiled steps.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub kernel: String,
    pub label: String,
    pub calls: usize,
    pub total_ms: f64,
    pub mean_us: f64,
    /// Fraction of all timed kernel time.
    pub share: f64,
    /// Achieved GFLOP/s where the work is counted (GEMMs).
    pub gflops: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub backend: String,
    pub method: String,
    pub estimator: String,
    pub k: usize,
    pub batch: usize,
    pub steps: usize,
    /// Wall time per step without profiling (the host waits for the device at the end).
    pub wall_ms_per_step: f64,
    /// Host time per step spent preparing the minibatch and recording/submitting the step.
    pub host_ms_per_step: f64,
    /// Sum of the timed kernels per profiled step.
    pub kernel_ms_per_step: f64,
    pub memory_bytes: u64,
    pub peak_memory_bytes: u64,
    pub rows: Vec<KernelRow>,
    #[serde(skip)]
    pub events: Vec<Timing>,
}

/// Profiles `steps` training steps after `warmup` unprofiled ones.
#[allow(clippy::too_many_arguments)]
pub fn profile(
    backend: &mut dyn Backend,
    ds: &Dataset,
    estimator: Estimator,
    k: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
) -> Result<ProfileReport> {
    crate::error::at_least("--steps", steps, 1, "a profile")?;
    let mut driver = crate::bench::StepDriver::new(ds, &estimator, k, batch)?;
    let mut host = std::time::Duration::ZERO;
    let mut one = |backend: &mut dyn Backend, host: &mut std::time::Duration| -> Result<()> {
        let t = std::time::Instant::now();
        driver.step(backend)?;
        *host += t.elapsed();
        Ok(())
    };
    for _ in 0..warmup {
        one(backend, &mut host)?;
    }
    backend.take_stats()?;
    // Unprofiled: wall and host time per step.
    host = std::time::Duration::ZERO;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        one(backend, &mut host)?;
    }
    backend.take_stats()?;
    let wall_ms_per_step = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let host_ms_per_step = host.as_secs_f64() * 1e3 / steps as f64;
    // Profiled.
    let method = backend.set_profiling(true);
    for _ in 0..steps {
        one(backend, &mut host)?;
    }
    backend.take_stats()?;
    let events = backend.take_timings()?;
    backend.set_profiling(false);
    let (memory_bytes, peak_memory_bytes) = backend.memory_bytes();
    let total_us: f64 = events.iter().map(|e| e.dur_us).sum();
    let mut by: HashMap<(String, String), (usize, f64, f64)> = HashMap::new();
    for e in &events {
        let r = by.entry((e.kernel.clone(), e.label.clone())).or_default();
        r.0 += 1;
        r.1 += e.dur_us;
        r.2 += e.flops;
    }
    let mut rows: Vec<KernelRow> = by
        .into_iter()
        .map(|((kernel, label), (calls, us, flops))| KernelRow {
            kernel,
            label,
            calls,
            total_ms: us / 1e3,
            mean_us: us / calls as f64,
            share: if total_us > 0.0 { us / total_us } else { 0.0 },
            gflops: (flops > 0.0 && us > 0.0).then(|| flops / (us * 1e3)),
        })
        .collect();
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    Ok(ProfileReport {
        backend: backend.describe(),
        method,
        estimator: estimator.kind.name().to_string(),
        k,
        batch,
        steps,
        wall_ms_per_step,
        host_ms_per_step,
        kernel_ms_per_step: total_us / 1e3 / steps as f64,
        memory_bytes,
        peak_memory_bytes,
        rows,
        events,
    })
}

/// The report as a table.
pub fn format_table(r: &ProfileReport) -> String {
    let mut out = format!(
        "profile: {} K={} batch={} over {} steps on {}\ntiming: {}\n",
        r.estimator, r.k, r.batch, r.steps, r.backend, r.method
    );
    out += &format!(
        "per step: wall {:.3} ms unprofiled (host {:.3} ms preparing and submitting), timed kernels {:.3} ms\n",
        r.wall_ms_per_step, r.host_ms_per_step, r.kernel_ms_per_step
    );
    out += &format!(
        "working memory: {:.1} MiB now, {:.1} MiB peak\n\n",
        r.memory_bytes as f64 / 1048576.0,
        r.peak_memory_bytes as f64 / 1048576.0
    );
    out += &format!(
        "{:<18} {:<52} {:>6} {:>10} {:>10} {:>6} {:>9}\n",
        "kernel", "what [shape]", "calls", "total ms", "mean us", "share", "GFLOP/s"
    );
    for row in &r.rows {
        out += &format!(
            "{:<18} {:<52} {:>6} {:>10.3} {:>10.1} {:>5.1}% {:>9}\n",
            row.kernel,
            row.label,
            row.calls,
            row.total_ms,
            row.mean_us,
            100.0 * row.share,
            row.gflops.map_or("-".to_string(), |g| format!("{g:.2}"))
        );
    }
    out
}

/// The Chrome trace-event JSON of every timed dispatch or phase.
pub fn chrome_trace(r: &ProfileReport) -> serde_json::Value {
    let events: Vec<serde_json::Value> = r
        .events
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.label, "cat": e.kernel, "ph": "X", "ts": e.start_us, "dur": e.dur_us,
                "pid": 1, "tid": 1, "args": { "kernel": e.kernel, "flops": e.flops },
            })
        })
        .collect();
    serde_json::json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": { "backend": r.backend, "method": r.method, "estimator": r.estimator, "k": r.k, "batch": r.batch, "steps": r.steps },
    })
}
