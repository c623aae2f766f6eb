//! Profiling: every dispatch timed on its own, by timestamp queries around its compute pass
//! or, without TIMESTAMP_QUERY, by the wall time of its own submit.

use super::context::GpuContext;
use super::dispatch::{record_one, Dispatch};
use super::plan::Part;
use super::GpuBackend;
use crate::backend::Timing;
use anyhow::Result;

/// Dispatches a profiled submit holds at most (two queries each).
const PROFILE_BATCH: usize = 256;

/// Timing state while profiling: a timestamp query set (two per dispatch) and its resolve
/// buffer, or None where the adapter lacks TIMESTAMP_QUERY (then wall time per submit).
pub(super) struct GpuProfiler {
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    period_ns: f64,
    origin: std::time::Instant,
    gpu_origin: Option<u64>,
    pub events: Vec<Timing>,
}

impl GpuProfiler {
    /// A profiler for `ctx`, and how it times dispatches (for the profile's header).
    pub(super) fn new(ctx: &GpuContext) -> (GpuProfiler, String) {
        let timestamps = ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * PROFILE_BATCH as u32,
                });
                let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile resolve"),
                    size: (2 * PROFILE_BATCH * 8) as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (qs, resolve)
            });
        let period_ns = ctx.queue.get_timestamp_period() as f64;
        let how = if timestamps.is_some() {
            format!("GPU timestamp queries around each dispatch, one compute pass per dispatch (tick = {period_ns} ns)")
        } else {
            "this adapter has no TIMESTAMP_QUERY: falling back to per-submit wall-clock timing, one submit per dispatch (includes submit and wait overhead)".to_string()
        };
        let prof = GpuProfiler {
            timestamps,
            period_ns,
            origin: std::time::Instant::now(),
            gpu_origin: None,
            events: Vec::new(),
        };
        (prof, how)
    }
}

impl GpuBackend {
    /// Like `run`, timing every dispatch: each in its own compute pass with timestamp writes
    /// at its start and end, or, without TIMESTAMP_QUERY, in its own submit timed on the host.
    pub(super) fn run_profiled(&self, key: (usize, usize, bool), parts: &[Part]) -> Result<()> {
        self.profile_dispatches(&self.dispatch_list(key, parts))
    }

    pub(super) fn profiling(&self) -> bool {
        self.profiler.borrow().is_some()
    }

    /// Runs and times `list` (see `run_profiled`).
    pub(super) fn profile_dispatches(&self, list: &[Option<&Dispatch>]) -> Result<()> {
        let mut guard = self.profiler.borrow_mut();
        let prof = guard.as_mut().expect("profiling is on");
        let push = |prof: &mut GpuProfiler, d: &Dispatch, start_us: f64, dur_us: f64| {
            prof.events.push(Timing {
                kernel: self.ctx.pipeline(d.pipeline).name.to_string(),
                label: d.label.clone(),
                start_us,
                dur_us,
                flops: d.flops,
            });
        };
        // Submits follow the queue's order, so a clear submitted between two segments lands
        // between them, as in `record`.
        let segments: Vec<Vec<&Dispatch>> = list
            .split(Option::is_none)
            .map(|seg| seg.iter().flatten().copied().collect())
            .collect();
        for (si, segment) in segments.iter().enumerate() {
            if si > 0 {
                let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                self.clear_frozen(&mut enc);
                self.ctx.submit(enc)?;
            }
            self.profile_segment(prof, segment, &push)?;
        }
        Ok(())
    }

    fn profile_segment(
        &self,
        prof: &mut GpuProfiler,
        list: &[&Dispatch],
        push: &impl Fn(&mut GpuProfiler, &Dispatch, f64, f64),
    ) -> Result<()> {
        for group in list.chunks(PROFILE_BATCH) {
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            if let Some((qs, resolve)) = &prof.timestamps {
                for (i, d) in group.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&d.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    d.encode(&self.ctx, &mut pass);
                }
                let queries = 2 * group.len() as u32;
                enc.resolve_query_set(qs, 0..queries, resolve, 0);
                self.ctx.submit(enc)?;
                let bytes = self.ctx.read_bytes(resolve, 0, queries as u64 * 8)?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                let origin = *prof.gpu_origin.get_or_insert(ticks[0]);
                let period = prof.period_ns;
                for (i, d) in group.iter().enumerate() {
                    let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1].max(ticks[2 * i]));
                    let start_us = t0.saturating_sub(origin) as f64 * period / 1e3;
                    push(prof, d, start_us, (t1 - t0) as f64 * period / 1e3);
                }
            } else {
                drop(enc);
                for d in group {
                    let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                    record_one(&self.ctx, &mut enc, d);
                    let t0 = std::time::Instant::now();
                    self.ctx.submit(enc)?;
                    self.ctx.device.poll(wgpu::PollType::wait_indefinitely())?;
                    let start_us = (t0 - prof.origin).as_secs_f64() * 1e6;
                    push(prof, d, start_us, t0.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        Ok(())
    }
}
