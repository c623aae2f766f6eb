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

/// How dispatches are timed. Some Vulkan drivers return timestamps that read zero or run
/// backwards when a query set is resolved in the encoder that wrote it (wgpu issue 6406,
/// where a resolve in a submit of its own worked around it); the profiler checks every
/// batch it reads and, on such ticks, moves to the next way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Clock {
    /// Timestamp queries resolved in the encoder that wrote them.
    Timestamps,
    /// Timestamp queries resolved by a submit of their own, after the dispatches'.
    ResolvedApart,
    /// One submit per dispatch, timed on the host (also where TIMESTAMP_QUERY is missing).
    WallPerSubmit,
}

impl Clock {
    /// The next way after timestamps that failed as `problem` says, and the note saying so.
    pub(super) fn after(self, problem: &str) -> (Clock, String) {
        match self {
            Clock::Timestamps => (
                Clock::ResolvedApart,
                format!("GPU timestamps {problem} when resolved in the encoder that wrote them; resolving them in a submit of their own (wgpu issue 6406)"),
            ),
            _ => (
                Clock::WallPerSubmit,
                format!("GPU timestamps {problem} even when resolved apart; timing each dispatch by the wall time of its own submit instead (includes submit and wait overhead)"),
            ),
        }
    }
}

/// What is wrong with `ticks`, the (start, end) timestamps of dispatches in submission order,
/// if anything: a tick that reads zero, an end before its start, or a start before the start
/// of the dispatch submitted before it.
pub(super) fn bad_ticks(ticks: &[u64]) -> Option<String> {
    let zeros = ticks.iter().filter(|&&t| t == 0).count();
    if zeros > 0 {
        return Some(format!("read zero ({zeros} of {})", ticks.len()));
    }
    let pairs: Vec<&[u64]> = ticks.chunks_exact(2).collect();
    if let Some(i) = pairs.iter().position(|p| p[1] < p[0]) {
        return Some(format!(
            "run backwards (dispatch {i} ends at tick {} before it starts at {})",
            pairs[i][1], pairs[i][0]
        ));
    }
    if let Some(i) = (1..pairs.len()).find(|&i| pairs[i][0] < pairs[i - 1][0]) {
        return Some(format!(
            "run backwards (dispatch {i} starts at tick {}, before dispatch {} at {})",
            pairs[i][0],
            i - 1,
            pairs[i - 1][0]
        ));
    }
    None
}

/// Timing state while profiling: a timestamp query set (two per dispatch) and its resolve
/// buffer where the adapter has TIMESTAMP_QUERY, and how dispatches are timed now.
pub(super) struct GpuProfiler {
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    clock: Clock,
    period_ns: f64,
    origin: std::time::Instant,
    gpu_origin: Option<u64>,
    pub events: Vec<Timing>,
    /// What changed while profiling (a move to another clock), for the report.
    pub notes: Vec<String>,
    /// Dispatches whose timestamps were unusable and are left out of the events.
    pub dropped: usize,
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
        let clock = if timestamps.is_some() {
            Clock::Timestamps
        } else {
            Clock::WallPerSubmit
        };
        let prof = GpuProfiler {
            timestamps,
            clock,
            period_ns,
            origin: std::time::Instant::now(),
            gpu_origin: None,
            events: Vec::new(),
            notes: Vec::new(),
            dropped: 0,
        };
        (prof, how)
    }

    /// What changed while profiling, with the dispatches left out, for the report.
    pub(super) fn report_notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if self.dropped > 0 {
            notes.push(format!(
                "{} dispatches timed by unusable timestamps are left out",
                self.dropped
            ));
        }
        notes
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
            let timestamps = match (&prof.timestamps, prof.clock) {
                (Some((qs, resolve)), clock) if clock != Clock::WallPerSubmit => {
                    Some((qs.clone(), resolve.clone(), clock))
                }
                _ => None,
            };
            if let Some((qs, resolve, clock)) = timestamps {
                let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                for (i, d) in group.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&d.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &qs,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    d.encode(&self.ctx, &mut pass);
                }
                let queries = 2 * group.len() as u32;
                if clock == Clock::ResolvedApart {
                    self.ctx.submit(enc)?;
                    enc = self.ctx.device.create_command_encoder(&Default::default());
                }
                enc.resolve_query_set(&qs, 0..queries, &resolve, 0);
                self.ctx.submit(enc)?;
                let bytes = self.ctx.read_bytes(&resolve, 0, queries as u64 * 8)?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                // The group ran; only its timings are lost, and the next group uses the next clock.
                if let Some(problem) = bad_ticks(&ticks) {
                    let (next, note) = clock.after(&problem);
                    prof.clock = next;
                    prof.notes.push(note);
                    prof.dropped += group.len();
                    continue;
                }
                let origin = *prof.gpu_origin.get_or_insert(ticks[0]);
                let period = prof.period_ns;
                for (i, d) in group.iter().enumerate() {
                    let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1]);
                    let start_us = t0.saturating_sub(origin) as f64 * period / 1e3;
                    push(prof, d, start_us, (t1 - t0) as f64 * period / 1e3);
                }
            } else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_backwards_timestamps_are_noticed_and_good_ones_pass() {
        assert_eq!(bad_ticks(&[100, 150, 160, 200, 200, 200]), None);
        assert_eq!(bad_ticks(&[]), None);
        // What wgpu issue 6406 reports: a resolve in the writing encoder reads zeros.
        let zero = bad_ticks(&[0, 0, 0, 0]).unwrap();
        assert!(zero.contains("read zero (4 of 4)"), "{zero}");
        assert!(bad_ticks(&[100, 150, 0, 200])
            .unwrap()
            .contains("read zero (1 of 4)"));
        let back = bad_ticks(&[100, 150, 300, 250]).unwrap();
        assert!(
            back.contains("backwards") && back.contains("dispatch 1 ends"),
            "{back}"
        );
        let back = bad_ticks(&[500, 600, 100, 200]).unwrap();
        assert!(back.contains("dispatch 1 starts at tick 100"), "{back}");
    }

    #[test]
    fn bad_timestamps_move_to_a_separate_resolve_then_to_wall_time() {
        let (next, note) = Clock::Timestamps.after("read zero (4 of 4)");
        assert_eq!(next, Clock::ResolvedApart);
        assert!(
            note.contains("read zero")
                && note.contains("submit of their own")
                && note.contains("6406"),
            "{note}"
        );
        let (next, note) = next.after("run backwards");
        assert_eq!(next, Clock::WallPerSubmit);
        assert!(note.contains("wall time of its own submit"), "{note}");
        assert_eq!(next.after("x").0, Clock::WallPerSubmit);
    }
}
