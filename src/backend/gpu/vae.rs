//! Host side of shaders/vae.wgsl: the shape and noise uniforms (the noise is drawn by the
//! GEMMs that first read z, matmul.rs), and the dispatches of the VAE-specific kernels (the
//! log-weights, the encoder's upstream gradient), and those of the two-layer model (its
//! latent log-weight terms, the upstream gradients of q(z2 | z1) and of the encoder;
//! docs/design.md §4).

use super::buffers::{z_ld, ShapeBuffers};
use super::dispatch::{groups_1d, DispatchSpec, Res};
use super::pipelines::PipelineId;
use super::shaders::{LIK_BERNOULLI, LIK_GAUSSIAN};
use super::GpuBackend;
use crate::backend::Noise;
use crate::model::{Arch, Likelihood};
use bytemuck::{Pod, Zeroable};

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
    /// The two-layer model's z2 dimension (0 for one layer).
    z2_dim: u32,
    /// Normals drawn per sample row: z_dim + z2_dim.
    noise_dim: u32,
    /// The row stride of z (z1) and of its gradients on the device (`buffers::z_ld`).
    z_ld: u32,
    /// The conditional model's context pixels (0 otherwise).
    c_dim: u32,
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
            z2_dim: (arch.noise_dim() - arch.z_dim) as u32,
            noise_dim: arch.noise_dim() as u32,
            z_ld: z_ld(arch) as u32,
            c_dim: arch.c_dim() as u32,
        }
    }

    /// The same shape with no latent terms: `log_weights` then writes log p(x | z) alone
    /// (the two-layer model adds its latent terms in `latent_log_weights2`).
    pub(super) fn likelihood_only(self) -> ShapeU {
        ShapeU { z_dim: 0, ..self }
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

impl NoiseU {
    /// The uniform of the noise address `noise`.
    pub(super) fn new(noise: &Noise) -> NoiseU {
        NoiseU {
            seed_lo: noise.seed as u32,
            seed_hi: (noise.seed >> 32) as u32,
            stream: noise.stream as u32,
            step: noise.step,
            first_datapoint: noise.first_datapoint,
            first_sample: noise.first_sample,
            ..Default::default()
        }
    }
}

impl GpuBackend {
    pub(super) fn write_noise(&self, noise: &Noise) {
        self.ctx
            .queue
            .write_buffer(&self.noise_u, 0, bytemuck::bytes_of(&NoiseU::new(noise)));
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

/// [`log_weights`] after the decoder's last GEMM scored the Bernoulli likelihood
/// (shaders.rs FLAG_LIK_BERNOULLI): its row sums per column tile, plus the latent terms.
pub(super) fn log_weights_partials<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    rows: usize,
    xd: usize,
) -> DispatchSpec<'a> {
    let tiles = xd.div_ceil(64);
    DispatchSpec {
        pipeline: PipelineId::LogWeightsPartials,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.enc[0])),
            (2, Res::Buf(&sb.lik_part)),
            (3, Res::Buf(&sb.eps)),
            (4, Res::Buf(&sb.dec[0])),
            (5, Res::Buf(sb.encoder_output())),
            (6, Res::Buf(&sb.lw)),
        ],
        count: groups_1d(rows, 1),
        label: format!("log-weights [{rows}x{tiles} partials]"),
        flops: 0.0,
        bytes: 4.0 * (rows * (tiles + 1)) as f64,
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

/// The two-layer model's top buffers of `sb`.
fn top(sb: &ShapeBuffers) -> &super::buffers::TopBuffers {
    sb.top.as_ref().expect("two-layer buffers exist")
}

/// The binding of the noise uniform (the GEMMs that draw z bind it).
pub(super) fn noise_binding(noise_u: &wgpu::Buffer) -> Res<'_> {
    Res::Own(noise_u, 0, std::mem::size_of::<NoiseU>() as u64)
}

/// Two layers: adds log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1) to each row's
/// log-weight (log p(x | z1) already there), leaving log p(z1 | z2)'s head gradient in place.
pub(super) fn latent_log_weights2<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    rows: usize,
    d1: usize,
    d2: usize,
) -> DispatchSpec<'a> {
    let t = top(sb);
    DispatchSpec {
        pipeline: PipelineId::LatentLogWeights2,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.eps)),
            (2, Res::Buf(&sb.dec[0])),
            (3, Res::Buf(&t.dec2[0])),
            (4, Res::Buf(sb.encoder_output())),
            (5, Res::Buf(t.qhead())),
            (6, Res::Buf(t.phead())),
            (7, Res::Buf(&sb.lw)),
        ],
        count: groups_1d(rows, 64),
        label: format!("latent log-weights [{rows}x({d1}+{d2})]"),
        flops: 0.0,
        // eps, z1, the p head (read and written) per z1 dimension; eps, z2, log sigma2 per
        // z2 dimension; the log-weight read and written.
        bytes: 4.0 * (rows * (6 * d1 + 3 * d2 + 2)) as f64,
    }
}

/// Two layers: g1 = grad_z1 [log p(x|z1) + log p(z1|z2)] from the decoder's input gradient
/// (in `sb.delta[dz]`) and p(z1 | z2)'s head gradient.
pub(super) fn z1_grad_lik<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    dz: usize,
    rows: usize,
    d1: usize,
) -> DispatchSpec<'a> {
    let t = top(sb);
    DispatchSpec {
        pipeline: PipelineId::Z1GradLik,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.delta[dz])),
            (2, Res::Buf(t.phead())),
            (3, Res::Buf(&t.g1)),
        ],
        count: groups_1d(rows * d1, 256),
        label: format!("z1 gradient [{rows}x{d1}]"),
        flops: 0.0,
        bytes: 4.0 * (3 * rows * d1) as f64,
    }
}

/// Two layers: q(z2 | z1)'s head gradients, for its parameters (b P + c S) and for its input,
/// from grad_z2 log p(z1 | z2) (in `sb.delta[dz2]`).
pub(super) fn top_upstream<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    dz2: usize,
    rows: usize,
    d2: usize,
) -> DispatchSpec<'a> {
    let t = top(sb);
    DispatchSpec {
        pipeline: PipelineId::TopUpstream,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.coef)),
            (2, Res::Buf(&sb.eps)),
            (3, Res::Buf(&t.dec2[0])),
            (4, Res::Buf(&sb.delta[dz2])),
            (5, Res::Buf(t.qhead())),
            (6, Res::Buf(&t.up2)),
            (7, Res::Buf(&t.up2_in)),
        ],
        count: groups_1d(rows * d2, 256),
        label: format!("encoder2 upstream [{rows}x{d2}]"),
        flops: 0.0,
        bytes: 4.0 * (2 * rows + 8 * rows * d2) as f64,
    }
}

/// Two layers: the encoder output's gradient from g1 and z1's gradient through q(z2 | z1)'s
/// input (in `sb.delta[dzq]`), summed over each datapoint's samples with b and c.
pub(super) fn encoder_upstream2<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    dzq: usize,
    batch: usize,
    n: usize,
    d1: usize,
) -> DispatchSpec<'a> {
    let t = top(sb);
    DispatchSpec {
        pipeline: PipelineId::EncoderUpstream2,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.coef)),
            (2, Res::Buf(&sb.eps)),
            (3, Res::Buf(&t.g1)),
            (4, Res::Buf(&sb.delta[dzq])),
            (5, Res::Buf(sb.encoder_output())),
            (6, Res::Buf(&sb.enc_up)),
        ],
        count: groups_1d(batch * d1, 256),
        label: format!("encoder upstream [{batch}x{n}x{d1}]"),
        flops: 0.0,
        bytes: 4.0 * (2 * batch * n + 3 * batch * n * d1 + 4 * batch * d1) as f64,
    }
}
