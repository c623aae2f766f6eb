//! Host side of shaders/optim.wgsl: the Adam uniform (also read by the gradient norms and the
//! running statistics) and the dispatches of those three kernels.

use super::buffers::ShapeBuffers;
use super::dispatch::{groups_1d, DispatchSpec, Res, UniformArena};
use super::pipelines::PipelineId;
use super::GpuBackend;
use crate::optim::AdamConfig;
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(super) struct AdamU {
    total: u32,
    encoder_len: u32,
    amsgrad: u32,
    batch: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    clip_encoder: f32,
    clip_decoder: f32,
    _pad: f32,
}

impl GpuBackend {
    /// Writes the Adam uniform; `cfg` None leaves the step fields zero (the norms and the
    /// statistics read only the sizes).
    pub(super) fn write_adam(&mut self, cfg: Option<(&AdamConfig, f64)>, batch: usize) {
        let mut u = AdamU {
            total: self.layout.len as u32,
            encoder_len: self.layout.encoder_len as u32,
            batch: batch as u32,
            ..Default::default()
        };
        if let Some((cfg, lr)) = cfg {
            let s = self.adam.begin_step(cfg, lr);
            u.amsgrad = cfg.amsgrad as u32;
            u.beta1 = s.beta1;
            u.beta2 = s.beta2;
            u.eps = s.eps;
            u.step_size = s.step;
            u.inv_sqrt_bc2 = s.inv_sqrt_bc2;
            u.clip_encoder = cfg.clip_encoder.unwrap_or(0.0) as f32;
            u.clip_decoder = cfg.clip_decoder.unwrap_or(0.0) as f32;
        }
        self.ctx
            .queue
            .write_buffer(&self.adam_u, 0, bytemuck::bytes_of(&u));
    }

    fn adam_binding(&self) -> Res<'_> {
        Res::Own(&self.adam_u, 0, std::mem::size_of::<AdamU>() as u64)
    }

    /// The encoder's and the decoder's gradient norms: sums of squares over chunks of the
    /// parameters into `sb.norm_partials` (many workgroups), then one workgroup per norm adds
    /// its partials in order.
    pub(super) fn grad_norms_specs<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
    ) -> Vec<DispatchSpec<'a>> {
        let (chunk, enc_groups, groups) = self.norm_layout();
        let slot = arena.push(&[chunk as u32, enc_groups as u32, groups as u32, 0]);
        let len = self.layout.len;
        vec![
            DispatchSpec {
                pipeline: PipelineId::GradNormPartials,
                bindings: vec![
                    (0, self.adam_binding()),
                    (2, Res::Buf(&self.grad)),
                    (7, Res::Slot(slot.0, slot.1)),
                    (8, Res::Buf(&sb.norm_partials)),
                ],
                count: groups_1d(groups, 1),
                label: format!("gradient norm partials [{groups} chunks of {chunk}]"),
                flops: 2.0 * len as f64,
                bytes: 4.0 * (len + groups) as f64,
            },
            DispatchSpec {
                pipeline: PipelineId::GradNorms,
                bindings: vec![
                    (4, Res::Buf(&self.norms)),
                    (7, Res::Slot(slot.0, slot.1)),
                    (8, Res::Buf(&sb.norm_partials)),
                ],
                count: [2, 1, 1],
                label: format!("gradient norms [sums of {groups} partials]"),
                flops: groups as f64,
                bytes: 4.0 * (groups + 2) as f64,
            },
        ]
    }

    /// (parameters per norm partial, the encoder's partials, all partials).
    pub(super) fn norm_layout(&self) -> (usize, usize, usize) {
        let chunk = self.grid.norm_chunk(self.layout.len);
        let enc = self.layout.encoder_len.div_ceil(chunk);
        (
            chunk,
            enc,
            enc + (self.layout.len - self.layout.encoder_len).div_ceil(chunk),
        )
    }

    /// One Adam step over every parameter, clipping by the norms.
    pub(super) fn adam_spec(&self) -> DispatchSpec<'_> {
        DispatchSpec {
            pipeline: PipelineId::Adam,
            bindings: vec![
                (0, self.adam_binding()),
                (1, Res::Buf(&self.params)),
                (2, Res::Buf(&self.grad)),
                (3, Res::Buf(&self.moments)),
                (4, Res::Buf(&self.norms)),
            ],
            count: groups_1d(self.layout.len, 256),
            label: format!("adam [{} parameters]", self.layout.len),
            flops: 0.0,
            // Parameters, m and v read and written, the gradient read (v_max: AMSGrad).
            bytes: 4.0 * 7.0 * self.layout.len as f64,
        }
    }

    /// A training step's end in one dispatch: the norms from their partials, clipping, Adam,
    /// and the step's objective and norms added to the running statistics.
    pub(super) fn adam_step_spec<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        objective: &'a wgpu::Buffer,
    ) -> DispatchSpec<'a> {
        let (chunk, enc_groups, groups) = self.norm_layout();
        let slot = arena.push(&[chunk as u32, enc_groups as u32, groups as u32, 0]);
        let len = self.layout.len;
        DispatchSpec {
            pipeline: PipelineId::AdamStep,
            bindings: vec![
                (0, self.adam_binding()),
                (1, Res::Buf(&self.params)),
                (2, Res::Buf(&self.grad)),
                (3, Res::Buf(&self.moments)),
                (4, Res::Buf(&self.norms)),
                (5, Res::Buf(&self.stats)),
                (6, Res::Buf(objective)),
                (7, Res::Slot(slot.0, slot.1)),
                (8, Res::Buf(&sb.norm_partials)),
            ],
            count: groups_1d(len, 256),
            label: format!("adam step [{len} parameters, norms and statistics]"),
            flops: 0.0,
            // Parameters, m and v read and written, the gradient read (v_max: AMSGrad); each
            // workgroup's partials and objective come from cache after the first.
            bytes: 4.0 * 7.0 * len as f64 + 4.0 * (groups as f64 + objective.size() as f64 / 4.0),
        }
    }
}
