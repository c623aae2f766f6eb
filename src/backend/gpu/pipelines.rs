//! The pipeline registry: every compute pipeline the backend launches, each with an explicit
//! bind-group layout (wgpu examples' style), compiled once per context.

use super::shaders::Family;
use anyhow::{bail, Result};
use std::collections::HashMap;

/// How a kernel uses one binding slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// A compute pipeline and its bind-group layout; `slots` lists (binding, use).
pub struct Pipeline {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub slots: Vec<(u32, Slot)>,
}

/// Every compute pipeline the backend launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelineId {
    Gemm,
    GemmVec4,
    ColumnSums,
    SplitkReduce,
    SampleZ,
    LogWeights,
    EncoderUpstream,
    Coefficients,
    GradNormPartials,
    GradNorms,
    Adam,
    AccumulateStats,
    LseAccumulate,
    SubsetCoefficients,
    ChainStep,
    ChainEncoder,
    ChainGather,
    SampleZ1,
    SampleZ2,
    LatentLogWeights2,
    Z1GradLik,
    TopUpstream,
    EncoderUpstream2,
    CopyColumns,
}

impl PipelineId {
    pub const ALL: [PipelineId; 24] = [
        PipelineId::Gemm,
        PipelineId::GemmVec4,
        PipelineId::ColumnSums,
        PipelineId::SplitkReduce,
        PipelineId::SampleZ,
        PipelineId::LogWeights,
        PipelineId::EncoderUpstream,
        PipelineId::Coefficients,
        PipelineId::GradNormPartials,
        PipelineId::GradNorms,
        PipelineId::Adam,
        PipelineId::AccumulateStats,
        PipelineId::LseAccumulate,
        PipelineId::SubsetCoefficients,
        PipelineId::ChainStep,
        PipelineId::ChainEncoder,
        PipelineId::ChainGather,
        PipelineId::SampleZ1,
        PipelineId::SampleZ2,
        PipelineId::LatentLogWeights2,
        PipelineId::Z1GradLik,
        PipelineId::TopUpstream,
        PipelineId::EncoderUpstream2,
        PipelineId::CopyColumns,
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
            PipelineId::Gemm => (
                Family::Matmul,
                "gemm",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            PipelineId::SampleZ => (
                Family::Vae,
                "sample_z",
                seq(&[Uniform, Uniform, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::SampleZ1 => (
                Family::Vae,
                "sample_z1",
                seq(&[Uniform, Uniform, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::SampleZ2 => (
                Family::Vae,
                "sample_z2",
                seq(&[Uniform, Uniform, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::LatentLogWeights2 => (
                Family::Vae,
                "latent_log_weights2",
                seq(&[Uniform, Read, Read, Read, Read, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::Z1GradLik => (
                Family::Vae,
                "z1_grad_lik",
                seq(&[Uniform, Read, Read, ReadWrite]),
            ),
            PipelineId::TopUpstream => (
                Family::Vae,
                "top_upstream",
                seq(&[Uniform, Read, Read, Read, Read, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::EncoderUpstream2 => (
                Family::Vae,
                "encoder_upstream2",
                seq(&[Uniform, Read, Read, Read, Read, Read, ReadWrite]),
            ),
            PipelineId::LogWeights => (
                Family::Vae,
                "log_weights",
                seq(&[Uniform, Read, ReadWrite, Read, Read, Read, ReadWrite]),
            ),
            PipelineId::EncoderUpstream => (
                Family::Vae,
                "encoder_upstream",
                seq(&[Uniform, Read, Read, Read, Read, Read, ReadWrite]),
            ),
            PipelineId::Coefficients => (
                Family::Weights,
                "coefficients",
                seq(&[Uniform, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::GradNormPartials => (
                Family::Optim,
                "grad_norm_partials",
                vec![(0, Uniform), (2, Read), (7, Uniform), (8, ReadWrite)],
            ),
            PipelineId::GradNorms => (
                Family::Optim,
                "grad_norms",
                vec![(4, ReadWrite), (7, Uniform), (8, ReadWrite)],
            ),
            PipelineId::Adam => (
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
            PipelineId::AccumulateStats => (
                Family::Optim,
                "accumulate_stats",
                vec![(0, Uniform), (4, ReadWrite), (5, ReadWrite), (6, Read)],
            ),
            PipelineId::GemmVec4 => (
                Family::Matmul,
                "gemm_vec4",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            PipelineId::ColumnSums => (
                Family::Matmul,
                "column_sums",
                seq(&[Uniform, Read, Read, ReadWrite, Read]),
            ),
            PipelineId::SplitkReduce => (
                Family::Matmul,
                "splitk_reduce",
                vec![(0, Uniform), (1, Read), (3, ReadWrite), (4, Read)],
            ),
            PipelineId::SubsetCoefficients => (
                Family::Weights,
                "subset_coefficients",
                seq(&[Uniform, Read, ReadWrite, ReadWrite, Read, ReadWrite]),
            ),
            PipelineId::LseAccumulate => (
                Family::Weights,
                "lse_accumulate",
                seq(&[Uniform, Read, ReadWrite]),
            ),
            PipelineId::CopyColumns => (
                Family::Weights,
                "copy_columns",
                seq(&[Uniform, Read, ReadWrite]),
            ),
            PipelineId::ChainStep => (
                Family::Coupling,
                "chain_step",
                seq(&[Uniform, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite]),
            ),
            PipelineId::ChainEncoder => (
                Family::Coupling,
                "chain_encoder",
                vec![(0, Uniform), (2, ReadWrite), (4, ReadWrite), (6, ReadWrite)],
            ),
            PipelineId::ChainGather => (
                Family::Coupling,
                "chain_gather",
                vec![(0, Uniform), (4, ReadWrite), (7, ReadWrite)],
            ),
        }
    }
}

fn layout_entry(binding: u32, slot: Slot) -> wgpu::BindGroupLayoutEntry {
    let ty = match slot {
        Slot::Uniform => wgpu::BufferBindingType::Uniform,
        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
        Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
    };
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Compiles every pipeline of [`PipelineId::ALL`], one shader module per family.
pub(super) fn build_pipelines(
    device: &wgpu::Device,
    subgroups: bool,
) -> Result<Vec<(PipelineId, Pipeline)>> {
    build_pipelines_from(device, |family| family.source(subgroups))
}

/// [`build_pipelines`] with the WGSL of each family from `source`. A module or pipeline that
/// fails validation (a shader that does not compile on this adapter, an entry point or
/// binding it lacks) is an error naming the shader file and entry point, caught in an error
/// scope instead of reaching wgpu's panicking default handler.
pub(super) fn build_pipelines_from(
    device: &wgpu::Device,
    source: impl Fn(Family) -> String,
) -> Result<Vec<(PipelineId, Pipeline)>> {
    let mut modules = HashMap::new();
    let mut out = Vec::new();
    for id in PipelineId::ALL {
        let (family, entry, slots) = id.spec();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = modules.entry(family).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.file()),
                source: wgpu::ShaderSource::Wgsl(source(family).into()),
            })
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .map(|&(binding, slot)| layout_entry(binding, slot))
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            let detail = e.to_string();
            let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
            bail!(
                "the GPU kernels of shaders/{} (entry point {entry}) fail to compile: {detail}; \
                 use --backend cpu, or another --adapter",
                family.file()
            );
        }
        out.push((
            id,
            Pipeline {
                name: entry,
                pipeline,
                layout,
                slots,
            },
        ));
    }
    Ok(out)
}
