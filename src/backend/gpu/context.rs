//! One wgpu context built once: adapter, device, queue, and every compute pipeline with an
//! explicit bind-group layout (wgpu examples' style), plus the one readback helper.

use super::shaders::Family;
use anyhow::{bail, Context, Result};

/// How a kernel uses one binding slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// A compute pipeline and its bind-group layout; `slots` lists (binding, use).
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub slots: Vec<(u32, Slot)>,
}

/// Every kernel the backend launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    Gemm,
    GemmVec4,
    ColumnSums,
    SampleZ,
    LogWeights,
    EncoderUpstream,
    Coefficients,
    GradNorms,
    Adam,
    AccumulateStats,
    LseAccumulate,
    SubsetCoefficients,
    ChainStep,
    ChainEncoder,
    ChainGather,
}

impl KernelId {
    pub const ALL: [KernelId; 15] = [
        KernelId::Gemm,
        KernelId::GemmVec4,
        KernelId::ColumnSums,
        KernelId::SampleZ,
        KernelId::LogWeights,
        KernelId::EncoderUpstream,
        KernelId::Coefficients,
        KernelId::GradNorms,
        KernelId::Adam,
        KernelId::AccumulateStats,
        KernelId::LseAccumulate,
        KernelId::SubsetCoefficients,
        KernelId::ChainStep,
        KernelId::ChainEncoder,
        KernelId::ChainGather,
    ];

    /// (family, entry point, bindings as the WGSL declares them).
    fn spec(self) -> (Family, &'static str, Vec<(u32, Slot)>) {
        use Slot::*;
        let seq = |s: &[Slot]| {
            s.iter()
                .enumerate()
                .map(|(i, &k)| (i as u32, k))
                .collect::<Vec<_>>()
        };
        match self {
            KernelId::Gemm => (
                Family::Matmul,
                "gemm",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            KernelId::SampleZ => (
                Family::Vae,
                "sample_z",
                seq(&[Uniform, Uniform, Read, ReadWrite, ReadWrite]),
            ),
            KernelId::LogWeights => (
                Family::Vae,
                "log_weights",
                seq(&[Uniform, Read, ReadWrite, Read, Read, Read, ReadWrite]),
            ),
            KernelId::EncoderUpstream => (
                Family::Vae,
                "encoder_upstream",
                seq(&[Uniform, Read, Read, Read, Read, Read, ReadWrite]),
            ),
            KernelId::Coefficients => (
                Family::Weights,
                "coefficients",
                seq(&[Uniform, Read, ReadWrite, ReadWrite]),
            ),
            KernelId::GradNorms => (
                Family::Optim,
                "grad_norms",
                vec![(0, Uniform), (2, Read), (4, ReadWrite)],
            ),
            KernelId::Adam => (
                Family::Optim,
                "adam",
                vec![
                    (0, Uniform),
                    (1, ReadWrite),
                    (2, Read),
                    (3, ReadWrite),
                    (4, ReadWrite),
                ],
            ),
            KernelId::AccumulateStats => (
                Family::Optim,
                "accumulate_stats",
                vec![(0, Uniform), (4, ReadWrite), (5, ReadWrite), (6, Read)],
            ),
            KernelId::GemmVec4 => (
                Family::Matmul,
                "gemm_vec4",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            KernelId::ColumnSums => (
                Family::Matmul,
                "column_sums",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            KernelId::SubsetCoefficients => (
                Family::Weights,
                "subset_coefficients",
                seq(&[Uniform, Read, ReadWrite, ReadWrite, Read, ReadWrite]),
            ),
            KernelId::LseAccumulate => (
                Family::Weights,
                "lse_accumulate",
                seq(&[Uniform, Read, ReadWrite]),
            ),
            KernelId::ChainStep => (
                Family::Coupling,
                "chain_step",
                seq(&[Uniform, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite]),
            ),
            KernelId::ChainEncoder => (
                Family::Coupling,
                "chain_encoder",
                vec![(0, Uniform), (2, ReadWrite), (4, ReadWrite), (6, ReadWrite)],
            ),
            KernelId::ChainGather => (
                Family::Coupling,
                "chain_gather",
                vec![(0, Uniform), (4, ReadWrite), (7, ReadWrite)],
            ),
        }
    }
}

/// A description of an adapter for `uvae devices` and run logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timestamp_query: bool,
    pub subgroup: bool,
    pub max_storage_binding_mib: u64,
}

fn summarize(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let f = a.features();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
        subgroup: f.contains(wgpu::Features::SUBGROUP),
        max_storage_binding_mib: a.limits().max_storage_buffer_binding_size >> 20,
    }
}

/// Vulkan, Metal and DX12 (WGPU_BACKEND overrides): the GL path adds nothing for compute
/// and probes displays on headless machines.
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc.with_env())
}

/// Every adapter wgpu can see, in its order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let adapters =
        pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY.with_env()));
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// Which adapter to open.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Case-insensitive substring of the adapter name; None: the best one.
    pub name: Option<String>,
    /// Accept software adapters (lavapipe, WARP) when choosing the best one.
    pub allow_software: bool,
    /// Use the workgroup-memory reductions even where the adapter has subgroups.
    pub disable_subgroups: bool,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Whether the reductions use subgroup operations.
    pub subgroups: bool,
    kernels: Vec<(KernelId, Kernel)>,
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl GpuContext {
    /// Opens the chosen adapter and compiles every kernel.
    pub fn new(choice: &AdapterChoice) -> Result<GpuContext> {
        let adapters =
            pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY.with_env()));
        let picked = match &choice.name {
            Some(name) => {
                let want = name.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .with_context(|| format!("no GPU adapter name contains '{name}' (--adapter); `uvae devices` lists them"))?
            }
            None => {
                let software: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                match adapters
                    .into_iter()
                    .filter(|a| choice.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
                    .min_by_key(|a| rank(a.get_info().device_type))
                {
                    Some(a) => a,
                    None if software.is_empty() => bail!(
                        "no GPU adapter found (wgpu sees no Vulkan, Metal or DX12 device); install a driver \
                         (on Debian: mesa-vulkan-drivers) or use --backend cpu"
                    ),
                    None => bail!(
                        "only software adapters found ({}); --backend gpu uses them, auto prefers the CPU backend",
                        software.join(", ")
                    ),
                }
            }
        };
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
        let mut ctx = GpuContext {
            device,
            queue,
            adapter: summary,
            limits,
            features,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            kernels: Vec::new(),
        };
        ctx.build_kernels()?;
        Ok(ctx)
    }

    fn build_kernels(&mut self) -> Result<()> {
        let mut modules = std::collections::HashMap::new();
        let subgroups = self.subgroups;
        for id in KernelId::ALL {
            let (family, entry, slots) = id.spec();
            let module = modules.entry(family).or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(family.file()),
                        source: wgpu::ShaderSource::Wgsl(family.source(subgroups).into()),
                    })
            });
            let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
                .iter()
                .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: match slot {
                        Slot::Uniform => wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        Slot::Read => wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: true },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        Slot::ReadWrite => wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: false },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                    },
                    count: None,
                })
                .collect();
            let layout = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(entry),
                    entries: &entries,
                });
            let pl = self
                .device
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(entry),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pl),
                    module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                });
            self.kernels.push((
                id,
                Kernel {
                    name: entry,
                    pipeline,
                    layout,
                    slots,
                },
            ));
        }
        Ok(())
    }

    pub fn kernel(&self, id: KernelId) -> &Kernel {
        &self
            .kernels
            .iter()
            .find(|(k, _)| *k == id)
            .expect("every kernel is built")
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
