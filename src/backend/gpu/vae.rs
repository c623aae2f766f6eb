//! Host side of shaders/vae.wgsl: the shape and noise uniforms, and the dispatches of the
//! VAE-specific kernels (sampling z, the log-weights, the encoder's upstream gradient).

use super::buffers::ShapeBuffers;
use super::pipelines::PipelineId;
use super::plan::{groups_1d, DispatchSpec, Res};
use super::GpuBackend;
use crate::backend::Noise;
use crate::model::{Arch, Likelihood};
use bytemuck::{Pod, Zeroable};

wgsl_consts! {
    /// The vae prelude: the likelihood codes of `ShapeU::lik`.
    pub(super) const WGSL_CONSTS = {
        LIK_BERNOULLI = 0,
        LIK_GAUSSIAN = 1,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(super) struct ShapeU {
    batch: u32,
    n: u32,
    rows: u32,
    x_dim: u32,
    z_dim: u32,
    /// LIK_BERNOULLI or LIK_GAUSSIAN (shaders/vae.wgsl, Shape).
    lik: u32,
    inv_var: f32,
    log_norm: f32,
}

impl ShapeU {
    pub(super) fn new(arch: &Arch, batch: usize, n: usize) -> ShapeU {
        ShapeU {
            batch: batch as u32,
            n: n as u32,
            rows: (batch * n) as u32,
            x_dim: arch.x_dim as u32,
            z_dim: arch.z_dim as u32,
            lik: match arch.likelihood {
                Likelihood::Bernoulli => LIK_BERNOULLI,
                Likelihood::Gaussian { .. } => LIK_GAUSSIAN,
            },
            inv_var: arch.likelihood.inv_var() as f32,
            log_norm: arch.likelihood.log_norm() as f32,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(super) struct NoiseU {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    step: u32,
    first_datapoint: u32,
    first_sample: u32,
    _pad: [u32; 2],
}

impl GpuBackend {
    pub(super) fn write_noise(&self, noise: &Noise) {
        let u = NoiseU {
            seed_lo: noise.seed as u32,
            seed_hi: (noise.seed >> 32) as u32,
            stream: noise.stream as u32,
            step: noise.step,
            first_datapoint: noise.first_datapoint,
            first_sample: noise.first_sample,
            ..Default::default()
        };
        self.ctx
            .queue
            .write_buffer(&self.noise_u, 0, bytemuck::bytes_of(&u));
    }
}

/// z = mu + sigma eps for every (row, latent dimension), eps drawn from the noise uniform.
pub(super) fn sample_z<'a>(
    shape: (u64, u64),
    noise_u: &'a wgpu::Buffer,
    sb: &'a ShapeBuffers,
    rows: usize,
    zd: usize,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::SampleZ,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (
                1,
                Res::Own(noise_u, 0, std::mem::size_of::<NoiseU>() as u64),
            ),
            (2, Res::Buf(sb.encoder_output())),
            (3, Res::Buf(&sb.eps)),
            (4, Res::Buf(&sb.dec[0])),
        ],
        count: groups_1d(rows * zd, 256),
        label: format!("sample z [{rows}x{zd}]"),
        flops: 0.0,
        // eps and z written, mu and log sigma read, per (row, latent dimension).
        bytes: 4.0 * (4 * rows * zd) as f64,
    }
}

/// The log-weights of every row, leaving the likelihood's gradient in the logits buffer.
pub(super) fn log_weights<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    rows: usize,
    xd: usize,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::LogWeights,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.enc[0])),
            (2, Res::Buf(sb.decoder_output())),
            (3, Res::Buf(&sb.eps)),
            (4, Res::Buf(&sb.dec[0])),
            (5, Res::Buf(sb.encoder_output())),
            (6, Res::Buf(&sb.lw)),
        ],
        count: groups_1d(rows, 1),
        label: format!("log-weights [{rows}x{xd}]"),
        flops: 0.0,
        // Per row: the logits read and their gradient written back, x read, one weight out.
        bytes: 4.0 * (3 * rows * xd + rows) as f64,
    }
}

/// The encoder output's gradient from dz (in `sb.delta[dz]`) and the coefficients b, c.
pub(super) fn encoder_upstream<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    dz: usize,
    batch: usize,
    n: usize,
    zd: usize,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::EncoderUpstream,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.coef)),
            (2, Res::Buf(&sb.eps)),
            (3, Res::Buf(&sb.dec[0])),
            (4, Res::Buf(&sb.delta[dz])),
            (5, Res::Buf(sb.encoder_output())),
            (6, Res::Buf(&sb.enc_up)),
        ],
        count: groups_1d(batch * zd, 256),
        label: format!("encoder upstream [{batch}x{n}x{zd}]"),
        flops: 0.0,
        bytes: 4.0 * (2 * batch * n + 3 * batch * n * zd + 4 * batch * zd) as f64,
    }
}
