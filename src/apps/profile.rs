//! `uvae profile`: where a training step's time goes, per kernel (GPU timestamp queries) or
//! per phase (CPU wall clock), with achieved GFLOP/s for the GEMMs, working memory, and a
//! Chrome trace (one event per dispatch) that Perfetto and chrome://tracing open.

use crate::apps::bench::{BenchConfig, StepDriver};
use crate::backend::{Backend, DispatchInfo, Timing};
use crate::data::Dataset;
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
    /// The dispatch structure of one step, from the recorded plan (GPU; empty on the CPU).
    pub structure: DispatchStructure,
    #[serde(skip)]
    pub events: Vec<Timing>,
}

/// One step's dispatches as the plan records them, judged against a GPU with
/// `compute_units` compute units (SMs, CUs): how many leave some of them without a
/// workgroup. Known without timing anything.
#[derive(Clone, Debug, Serialize)]
pub struct DispatchStructure {
    pub compute_units: usize,
    pub dispatches: Vec<DispatchInfo>,
    /// Dispatches launching fewer workgroups than compute units (less than one per unit).
    pub below_one_per_unit: usize,
    /// Dispatches of at least `BIG_FLOPS` (200 MFLOP).
    pub big: usize,
    /// Of those, the ones launching fewer than 4 workgroups per compute unit.
    pub big_below_four_per_unit: usize,
    /// The fewest workgroups any dispatch of at least 200 MFLOP launches.
    pub big_min_workgroups: Option<u64>,
}

/// What counts as a big dispatch in [`DispatchStructure`]: 200 MFLOP.
pub const BIG_FLOPS: f64 = 2e8;

impl DispatchStructure {
    pub fn new(dispatches: Vec<DispatchInfo>, compute_units: usize) -> DispatchStructure {
        let cu = compute_units as u64;
        let big: Vec<&DispatchInfo> = dispatches.iter().filter(|d| d.flops >= BIG_FLOPS).collect();
        DispatchStructure {
            compute_units,
            below_one_per_unit: dispatches.iter().filter(|d| d.workgroups < cu).count(),
            big: big.len(),
            big_below_four_per_unit: big.iter().filter(|d| d.workgroups < 4 * cu).count(),
            big_min_workgroups: big.iter().map(|d| d.workgroups).min(),
            dispatches,
        }
    }

    /// The per-dispatch table and its summary.
    pub fn format_table(&self) -> String {
        let d = &self.dispatches;
        if d.is_empty() {
            return "dispatch structure: none recorded (CPU backend, or a step in chunks)\n"
                .to_string();
        }
        let cu = self.compute_units;
        let flops: f64 = d.iter().map(|x| x.flops).sum();
        let bytes: f64 = d.iter().map(|x| x.bytes).sum();
        let mut out = format!(
            "dispatch structure of one step (recorded plan, nothing timed): {} dispatches, {:.3} GFLOP, {:.1} MB moved\n",
            d.len(),
            flops / 1e9,
            bytes / 1e6
        );
        out += &format!(
            "{:>3} {:<20} {:<60} {:>10} {:>10} {:>9} {:>9}\n",
            "#",
            "kernel",
            "what [shape]",
            "workgroups",
            "MFLOP",
            "MB",
            format!("per {cu} CU")
        );
        for (i, x) in d.iter().enumerate() {
            let per = x.workgroups as f64 / cu as f64;
            out += &format!(
                "{:>3} {:<20} {:<60} {:>10} {:>10} {:>9.3} {:>7.2}{}\n",
                i + 1,
                x.kernel,
                x.label,
                x.workgroups,
                if x.flops > 0.0 {
                    format!("{:.1}", x.flops / 1e6)
                } else {
                    "-".to_string()
                },
                x.bytes / 1e6,
                per,
                if per < 1.0 { " <" } else { "  " }
            );
        }
        out += &format!(
            "on a GPU with {cu} compute units: {} of {} dispatches launch fewer workgroups than units (<: less than one per unit); {} of the {} dispatches of at least 200 MFLOP launch fewer than 4 x {cu} = {}{}\n",
            self.below_one_per_unit,
            d.len(),
            self.big_below_four_per_unit,
            self.big,
            4 * cu,
            self.big_min_workgroups
                .map_or(String::new(), |m| format!(" (fewest: {m} workgroups)"))
        );
        out
    }
}

/// Profiles `steps` training steps of `config` after `warmup` unprofiled ones, and reads the
/// dispatch structure of a (batch, k) step from the plan, judged against `compute_units`.
pub fn profile(
    backend: &mut dyn Backend,
    ds: &Dataset,
    config: &BenchConfig,
    steps: usize,
    warmup: usize,
    compute_units: usize,
) -> Result<ProfileReport> {
    crate::error::at_least("--steps", steps, 1, "a profile")?;
    let BenchConfig {
        estimator,
        k,
        batch,
    } = *config;
    let mut driver = StepDriver::new(ds, config)?;
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
    let mut method = backend.set_profiling(true);
    for _ in 0..steps {
        one(backend, &mut host)?;
    }
    backend.take_stats()?;
    let events = backend.take_timings()?;
    // A GPU whose timestamps proved unusable says how it timed the rest instead.
    for note in backend.profiling_notes() {
        method = format!("{method}; then: {note}");
    }
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
    let structure = DispatchStructure::new(backend.step_dispatches(batch, k)?, compute_units);
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
        structure,
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
        "{:<20} {:<52} {:>6} {:>10} {:>10} {:>6} {:>9}\n",
        "kernel", "what [shape]", "calls", "total ms", "mean us", "share", "GFLOP/s"
    );
    for row in &r.rows {
        out += &format!(
            "{:<20} {:<52} {:>6} {:>10.3} {:>10.1} {:>5.1}% {:>9}\n",
            row.kernel,
            row.label,
            row.calls,
            row.total_ms,
            row.mean_us,
            100.0 * row.share,
            row.gflops.map_or("-".to_string(), |g| format!("{g:.2}"))
        );
    }
    out.push('\n');
    out += &r.structure.format_table();
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
