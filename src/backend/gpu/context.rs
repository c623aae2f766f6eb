//! One wgpu context built once: the device and queue of the chosen adapter, its pipelines,
//! the buffer constructors and the one readback helper.

use super::adapters::{pick_adapter, summarize, AdapterChoice, AdapterSummary};
use super::pipelines::{build_pipelines, env_switch, shader_checks_forced, Pipeline, PipelineId};
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The most submissions the host queues ahead of the device. Past it, a submit waits for the
/// oldest to finish, so the host never piles up an epoch of steps and their uploads.
pub const MAX_IN_FLIGHT: usize = 3;

/// The first fault the device reported through its callbacks (device lost, or an error no
/// error scope caught, such as running out of memory); every later operation fails with it.
/// A lost device is reported before the errors it causes.
#[derive(Clone, Default)]
pub struct FaultSlot(Arc<Mutex<[Option<String>; 2]>>);

impl FaultSlot {
    const LOST: usize = 0;
    const ERROR: usize = 1;

    fn record(&self, which: usize, what: String) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // One line: wgpu's descriptions span several.
        let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
        slot[which].get_or_insert(what);
    }

    /// (lost, first uncaught error).
    fn get(&self) -> (Option<String>, Option<String>) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (slot[Self::LOST].clone(), slot[Self::ERROR].clone())
    }
}

/// The environment variable that keeps the kernels off subgroup operations even where the
/// adapter has them (the workgroup-memory reductions instead), as
/// [`AdapterChoice::disable_subgroups`] does; CI runs `uvae check` both ways.
pub const NO_SUBGROUPS_VAR: &str = "UVAE_NO_SUBGROUPS";

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Whether the reductions use subgroup operations.
    pub subgroups: bool,
    /// Whether every module keeps wgpu's runtime checks ([`shader_checks_forced`]); when
    /// false the GEMM family runs without them.
    pub shader_checks: bool,
    pipelines: Vec<(PipelineId, Pipeline)>,
    fault: FaultSlot,
    /// Submissions not yet known to be finished, oldest first.
    in_flight: Mutex<VecDeque<wgpu::SubmissionIndex>>,
}

impl GpuContext {
    /// Opens the chosen adapter and compiles every pipeline.
    pub fn new(choice: &AdapterChoice) -> Result<GpuContext> {
        let picked = pick_adapter(choice)?;
        let summary = summarize(0, &picked);
        let limits = picked.limits();
        let mut wanted = wgpu::Features::TIMESTAMP_QUERY;
        if !choice.disable_subgroups && !env_switch(NO_SUBGROUPS_VAR, "no subgroup operations")? {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = picked.features() & wanted;
        let (device, queue) = pollster::block_on(picked.request_device(&wgpu::DeviceDescriptor {
            label: Some("uvae"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("cannot open a device on adapter {}", summary.name))?;
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        // Without these, wgpu panics on an error no scope catches, and a lost device is
        // only noticed when a poll fails; with them, the next operation returns the fault.
        let fault = FaultSlot::default();
        let slot = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            slot.record(FaultSlot::ERROR, format!("GPU error: {e}"))
        }));
        let slot = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            slot.record(
                FaultSlot::LOST,
                format!("the GPU device was lost ({reason:?}: {message})"),
            )
        });
        let shader_checks = shader_checks_forced()?;
        let pipelines = build_pipelines(&device, subgroups, shader_checks)
            .with_context(|| format!("on adapter {}", summary.name))?;
        Ok(GpuContext {
            pipelines,
            fault,
            in_flight: Mutex::new(VecDeque::new()),
            device,
            queue,
            adapter: summary,
            limits,
            features,
            subgroups,
            shader_checks,
        })
    }

    /// `Ok(())` unless the device reported a fault (lost, out of memory, an uncaught error).
    pub fn check(&self) -> Result<()> {
        let (lost, error) = match self.fault.get() {
            (None, None) => return Ok(()),
            // An error may be the first sign of a loss that wgpu reports at its next poll.
            (None, Some(_)) => {
                let _ = self.device.poll(wgpu::PollType::Poll);
                self.fault.get()
            }
            faults => faults,
        };
        match lost.or(error) {
            None => Ok(()),
            Some(f) => bail!(
                "{f} on adapter {}; the run cannot continue on it: rerun with --backend cpu, or another --adapter",
                self.adapter.name
            ),
        }
    }

    /// Submits `enc`'s commands, then, with more than [`MAX_IN_FLIGHT`] submissions
    /// unfinished, waits for the oldest. Fails once the device has reported a fault.
    pub fn submit(&self, enc: wgpu::CommandEncoder) -> Result<()> {
        self.check()?;
        let index = self.queue.submit([enc.finish()]);
        let mut queue = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(index);
        while queue.len() > MAX_IN_FLIGHT {
            let oldest = queue.pop_front().expect("longer than MAX_IN_FLIGHT");
            self.wait(Some(oldest))?;
        }
        drop(queue);
        self.check()
    }

    /// Blocks until submission `index` (None: every submission) has finished.
    fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: None,
        });
        self.check()?;
        waited.context("waiting for the GPU")?;
        Ok(())
    }

    /// `Ok(())` when one buffer of `bytes` can be allocated and bound on this adapter, else
    /// an error naming `what` (the flags that set its size) and the limit.
    pub fn check_binding(&self, bytes: u64, what: &str) -> Result<()> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            bail!(
                "{what} need {} MiB in one buffer, beyond this adapter's limit of {} MiB ({}); lower --batch or --k",
                bytes >> 20,
                limit >> 20,
                self.adapter.name
            );
        }
        Ok(())
    }

    /// Submissions queued and not yet known to be finished (at most [`MAX_IN_FLIGHT`]).
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn pipeline(&self, id: PipelineId) -> &Pipeline {
        &self
            .pipelines
            .iter()
            .find(|(k, _)| *k == id)
            .expect("every pipeline is built")
            .1
    }

    /// A storage buffer of at least `floats` floats, rounded up to whole vec4s so that the
    /// GEMM's vec4 view of it (`mat_a4`, `mat_b4`) reaches every float.
    pub fn storage(&self, label: &str, floats: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (floats.max(4).next_multiple_of(4) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub fn uniform(&self, label: &str, bytes: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copies `len` floats from `buf` at float `offset` to the host (submits and waits).
    pub fn read(&self, buf: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buf, (offset * 4) as u64, (len * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The one readback helper: copies `len` bytes at `offset` into a mappable buffer, submits,
    /// waits, and returns them.
    pub fn read_bytes(&self, buf: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let staging = self.staging("readback", len);
        self.read_bytes_via(buf, offset, len, &staging)
    }

    /// A mappable buffer of `len` bytes for [`GpuContext::read_bytes_via`].
    pub fn staging(&self, label: &str, len: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: len.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// `read_bytes` through a caller's staging buffer (at least `len` bytes, unmapped), for
    /// readbacks repeated within a step.
    pub fn read_bytes_via(
        &self,
        buf: &wgpu::Buffer,
        offset: u64,
        len: u64,
        staging: &wgpu::Buffer,
    ) -> Result<Vec<u8>> {
        self.check()?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset, staging, 0, len);
        self.submit(enc)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait(None)?;
        // Everything submitted so far has finished.
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        match rx.try_recv() {
            Ok(Ok(())) => {}
            _ => {
                self.check()?;
                bail!(
                    "mapping a readback buffer failed on adapter {}",
                    self.adapter.name
                )
            }
        }
        let out = staging.get_mapped_range(..len)?.to_vec();
        staging.unmap();
        Ok(out)
    }
}
