//! One wgpu context built once: the device and queue of the chosen adapter, its pipelines,
//! the buffer constructors and the one readback helper.

// The adapter types keep the paths `gpu::context::*` they had before the adapter split.
pub use super::adapters::{list_adapters, AdapterChoice, AdapterSummary};
use super::adapters::{pick_adapter, summarize};
use super::pipelines::{build_pipelines, Pipeline, PipelineId};
use anyhow::{bail, Context, Result};

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Whether the reductions use subgroup operations.
    pub subgroups: bool,
    pipelines: Vec<(PipelineId, Pipeline)>,
}

impl GpuContext {
    /// Opens the chosen adapter and compiles every pipeline.
    pub fn new(choice: &AdapterChoice) -> Result<GpuContext> {
        let picked = pick_adapter(choice)?;
        let summary = summarize(0, &picked);
        let limits = picked.limits();
        let mut wanted = wgpu::Features::TIMESTAMP_QUERY;
        if !choice.disable_subgroups {
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
        Ok(GpuContext {
            pipelines: build_pipelines(&device, subgroups),
            device,
            queue,
            adapter: summary,
            limits,
            features,
            subgroups,
        })
    }

    pub fn pipeline(&self, id: PipelineId) -> &Pipeline {
        &self
            .pipelines
            .iter()
            .find(|(k, _)| *k == id)
            .expect("every pipeline is built")
            .1
    }

    pub fn storage(&self, label: &str, floats: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (floats.max(4) * 4) as u64,
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
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset, staging, 0, len);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .context("waiting for the GPU")?;
        match rx.recv() {
            Ok(Ok(())) => {}
            _ => bail!("mapping a readback buffer failed"),
        }
        let out = staging.get_mapped_range(..len)?.to_vec();
        staging.unmap();
        Ok(out)
    }
}
