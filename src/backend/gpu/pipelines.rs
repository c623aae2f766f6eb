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
    /// The GEMMs with 32-row tiles.
    GemmHalf,
    GemmVec4Half,
    /// The GEMMs with 128-row tiles.
    GemmBig,
    GemmVec4Big,
    /// The vec4 GEMMs whose A, the latent z, is drawn in their loads (each tile).
    GemmVec4Sampled,
    GemmVec4SampledHalf,
    GemmVec4SampledBig,
    ColumnSums,
    SplitkReduce,
    LogWeights,
    LogWeightsPartials,
    EncoderUpstream,
    Coefficients,
    GradNormPartials,
    GradNorms,
    Adam,
    AdamStep,
    LseAccumulate,
    SubsetCoefficients,
    ChainStep,
    ChainEncoder,
    ChainGather,
    LatentLogWeights2,
    Z1GradLik,
    TopUpstream,
    EncoderUpstream2,
    CopyColumns,
    Binarize,
    CondSplit,
    CondLogWeights,
    CondUpstream,
}

impl PipelineId {
    pub const ALL: [PipelineId; 33] = [
        PipelineId::Gemm,
        PipelineId::GemmVec4,
        PipelineId::GemmHalf,
        PipelineId::GemmVec4Half,
        PipelineId::GemmBig,
        PipelineId::GemmVec4Big,
        PipelineId::GemmVec4Sampled,
        PipelineId::GemmVec4SampledHalf,
        PipelineId::GemmVec4SampledBig,
        PipelineId::ColumnSums,
        PipelineId::SplitkReduce,
        PipelineId::LogWeights,
        PipelineId::LogWeightsPartials,
        PipelineId::EncoderUpstream,
        PipelineId::Coefficients,
        PipelineId::GradNormPartials,
        PipelineId::GradNorms,
        PipelineId::Adam,
        PipelineId::AdamStep,
        PipelineId::LseAccumulate,
        PipelineId::SubsetCoefficients,
        PipelineId::ChainStep,
        PipelineId::ChainEncoder,
        PipelineId::ChainGather,
        PipelineId::LatentLogWeights2,
        PipelineId::Z1GradLik,
        PipelineId::TopUpstream,
        PipelineId::EncoderUpstream2,
        PipelineId::CopyColumns,
        PipelineId::Binarize,
        PipelineId::CondSplit,
        PipelineId::CondLogWeights,
        PipelineId::CondUpstream,
    ];

    /// The name profiles and plans show: the entry point, with the tile for the 32- and
    /// 128-row GEMMs and `sample` for those that draw A (whose entry points are those of the
    /// 64-row ones).
    fn name(self, entry: &'static str) -> &'static str {
        match self {
            PipelineId::GemmHalf => "gemm_32",
            PipelineId::GemmVec4Half => "gemm_vec4_32",
            PipelineId::GemmBig => "gemm_128",
            PipelineId::GemmVec4Big => "gemm_vec4_128",
            PipelineId::GemmVec4Sampled => "gemm_vec4_sample",
            PipelineId::GemmVec4SampledHalf => "gemm_vec4_sample_32",
            PipelineId::GemmVec4SampledBig => "gemm_vec4_sample_128",
            _ => entry,
        }
    }

    /// (family, entry point, bindings as the WGSL declares them).
    fn spec(self) -> (Family, &'static str, Vec<(u32, Slot)>) {
        use Slot::*;
        let seq = |s: &[Slot]| {
            s.iter()
                .enumerate()
                .map(|(i, &k)| (i as u32, k))
                .collect::<Vec<_>>()
        };
        // Every GEMM kernel (each tile variant, scalar and vec4) binds the same slots: the
        // uniform, A, B, C, the epilogue operand, and x and the partials of the fused likelihood.
        let gemm = || seq(&[Uniform, Read, Read, ReadWrite, Read, Read, ReadWrite]);
        // A sampled GEMM binds no A; it adds the noise address, the head (mu, log sigma)
        // and the z and eps it writes.
        let sampled = || {
            let mut s = gemm();
            s.remove(1);
            s.extend([(7, Uniform), (8, Read), (9, ReadWrite), (10, ReadWrite)]);
            s
        };
        match self {
            PipelineId::Gemm => (Family::Matmul, "gemm", gemm()),
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
            PipelineId::CondSplit => (
                Family::Vae,
                "cond_split",
                seq(&[Uniform, Read, ReadWrite, ReadWrite]),
            ),
            PipelineId::CondLogWeights => (
                Family::Vae,
                "cond_log_weights",
                seq(&[Uniform, Read, Read, Read, Read, ReadWrite]),
            ),
            PipelineId::CondUpstream => (
                Family::Vae,
                "cond_upstream",
                seq(&[
                    Uniform, Read, Read, Read, Read, Read, Read, ReadWrite, ReadWrite,
                ]),
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
            PipelineId::LogWeightsPartials => (
                Family::Vae,
                "log_weights_partials",
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
            PipelineId::AdamStep => (
                Family::Optim,
                "adam_step",
                vec![
                    (0, Uniform),
                    (1, ReadWrite),
                    (2, Read),
                    (3, ReadWrite),
                    (4, ReadWrite),
                    (5, ReadWrite),
                    (6, Read),
                    (7, Uniform),
                    (8, ReadWrite),
                ],
            ),
            PipelineId::GemmVec4 => (Family::Matmul, "gemm_vec4", gemm()),
            PipelineId::GemmHalf => (Family::MatmulHalf, "gemm", gemm()),
            PipelineId::GemmVec4Half => (Family::MatmulHalf, "gemm_vec4", gemm()),
            PipelineId::GemmBig => (Family::MatmulBig, "gemm", gemm()),
            PipelineId::GemmVec4Big => (Family::MatmulBig, "gemm_vec4", gemm()),
            PipelineId::GemmVec4Sampled => (Family::MatmulSampled, "gemm_vec4", sampled()),
            PipelineId::GemmVec4SampledHalf => (Family::MatmulSampledHalf, "gemm_vec4", sampled()),
            PipelineId::GemmVec4SampledBig => (Family::MatmulSampledBig, "gemm_vec4", sampled()),
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
            PipelineId::Binarize => (
                Family::Input,
                "binarize",
                seq(&[Uniform, Read, Read, Read, ReadWrite]),
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

/// The environment variable that compiles every module with wgpu's runtime checks, the
/// GEMM family's included (CI's parity suite sets it).
pub const SHADER_CHECKS_VAR: &str = "UVAE_SHADER_CHECKS";

/// Whether [`SHADER_CHECKS_VAR`] asks for runtime checks everywhere: 1/on/true/yes or
/// 0/off/false/no (unset or empty: off); anything else is an error naming the variable.
pub fn shader_checks_forced() -> Result<bool> {
    env_switch(SHADER_CHECKS_VAR, "runtime checks in every kernel")
}

/// The on/off environment variable `var` (unset or empty: off); `on_means` says what 1 does
/// in the error for a value that is neither.
pub(super) fn env_switch(var: &str, on_means: &str) -> Result<bool> {
    parse_switch(var, &std::env::var(var).unwrap_or_default(), on_means)
}

fn parse_switch(var: &str, value: &str, on_means: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "" | "0" | "off" | "false" | "no" => Ok(false),
        other => bail!(
            "environment variable {var}={other:?} is neither on nor off; \
             set it to 1 ({on_means}) or 0, or unset it"
        ),
    }
}

/// Compiles every pipeline of [`PipelineId::ALL`], one shader module per family; with
/// `checks` false the families that guard every access themselves ([`Family::trusted`])
/// are compiled without wgpu's runtime checks.
pub(super) fn build_pipelines(
    device: &wgpu::Device,
    subgroups: bool,
    checks: bool,
) -> Result<Vec<(PipelineId, Pipeline)>> {
    build_pipelines_from(device, checks, |family| family.source(subgroups))
}

/// [`build_pipelines`] with the WGSL of each family from `source`. A module or pipeline that
/// fails validation (a shader that does not compile on this adapter, an entry point or
/// binding it lacks) is an error naming the shader file and entry point, caught in an error
/// scope instead of reaching wgpu's panicking default handler.
pub(super) fn build_pipelines_from(
    device: &wgpu::Device,
    checks: bool,
    source: impl Fn(Family) -> String,
) -> Result<Vec<(PipelineId, Pipeline)>> {
    let mut modules = HashMap::new();
    let mut out = Vec::new();
    for id in PipelineId::ALL {
        let (family, entry, slots) = id.spec();
        let trusted = !checks && family.trusted();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = modules.entry(family).or_insert_with(|| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(family.label()),
                source: wgpu::ShaderSource::Wgsl(source(family).into()),
            };
            if trusted {
                // SAFETY: a trusted family guards every buffer access by the shape in its
                // uniform, the host checks each operand's extent against its buffer when it
                // records a dispatch (matmul.rs, `check_extent`), every loop is bounded by
                // uniform values, and no divisor is zero (constants, or n > 0 under i < m n).
                unsafe {
                    device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                device.create_shader_module(desc)
            }
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
            // A trusted family writes every shared-memory element it reads before its first
            // barrier, so the zero fill wgpu would add is pure latency.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: !trusted,
                ..Default::default()
            },
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
                name: id.name(entry),
                pipeline,
                layout,
                slots,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_checks_switch_parses_on_off_and_names_itself_otherwise() {
        let parse_shader_checks = |v| parse_switch(SHADER_CHECKS_VAR, v, "checks");
        for on in ["1", "on", "TRUE", " yes "] {
            assert!(parse_shader_checks(on).unwrap(), "{on}");
        }
        for off in ["", "0", "off", "False", "no"] {
            assert!(!parse_shader_checks(off).unwrap(), "{off}");
        }
        let e = parse_shader_checks("2").unwrap_err().to_string();
        assert!(e.contains(SHADER_CHECKS_VAR) && e.contains("\"2\""), "{e}");
    }

    #[test]
    fn only_the_gemm_families_are_trusted() {
        let trusted: Vec<Family> = Family::ALL.into_iter().filter(|f| f.trusted()).collect();
        assert_eq!(
            trusted,
            vec![
                Family::Matmul,
                Family::MatmulHalf,
                Family::MatmulBig,
                Family::MatmulSampled,
                Family::MatmulSampledHalf,
                Family::MatmulSampledBig
            ]
        );
    }
}
