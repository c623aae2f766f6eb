//! The general dispatch plumbing every kernel family's host side builds on: a dispatch before
//! and after its bind group exists, the arena of static uniforms, workgroup counts, and
//! recording. It knows no kernel, so the families and the training step's plan sit above it.

use super::context::GpuContext;
use super::pipelines::PipelineId;
use super::GpuBackend;
use bytemuck::Pod;

/// Largest workgroup count per dimension every adapter supports.
pub(super) const MAX_GROUPS: u32 = 65_535;

pub(super) fn groups_1d(total: usize, per_group: usize) -> [u32; 3] {
    let g = total.div_ceil(per_group).max(1) as u32;
    let x = g.min(MAX_GROUPS);
    [x, g.div_ceil(x), 1]
}

/// Accumulates the static uniforms of a plan in 256-byte-aligned slots.
pub(super) struct UniformArena {
    bytes: Vec<u8>,
    align: usize,
}

impl UniformArena {
    /// An empty arena whose slots follow the adapter's uniform offset alignment.
    pub(super) fn new(ctx: &GpuContext) -> UniformArena {
        UniformArena {
            bytes: Vec::new(),
            align: ctx.limits.min_uniform_buffer_offset_alignment as usize,
        }
    }

    /// A uniform buffer holding every slot pushed so far.
    pub(super) fn upload(&self, ctx: &GpuContext, label: &str) -> wgpu::Buffer {
        let buf = ctx.uniform(label, self.bytes.len());
        ctx.queue.write_buffer(&buf, 0, &self.bytes);
        buf
    }

    pub(super) fn push<T: Pod>(&mut self, v: &T) -> (u64, u64) {
        let off = self.bytes.len().next_multiple_of(self.align);
        self.bytes.resize(off, 0);
        self.bytes.extend_from_slice(bytemuck::bytes_of(v));
        (off as u64, std::mem::size_of::<T>() as u64)
    }
}

/// A binding: a whole buffer, or a uniform slot inside the arena (resolved later).
pub(super) enum Res<'a> {
    Buf(&'a wgpu::Buffer),
    Slot(u64, u64),
    Own(&'a wgpu::Buffer, u64, u64),
}

/// A dispatch before its bind group exists.
pub(super) struct DispatchSpec<'a> {
    pub pipeline: PipelineId,
    /// (binding, resource) as the pipeline's layout declares them.
    pub bindings: Vec<(u32, Res<'a>)>,
    /// Workgroups per dimension.
    pub count: [u32; 3],
    /// Label for profiles.
    pub label: String,
    /// Floating-point operations, for profiles.
    pub flops: f64,
    /// Compulsory bytes moved (each operand read, each result written once), for profiles.
    pub bytes: f64,
}

/// One recorded dispatch.
pub(super) struct Dispatch {
    pub pipeline: PipelineId,
    pub group: wgpu::BindGroup,
    pub count: [u32; 3],
    pub label: String,
    pub flops: f64,
    pub bytes: f64,
}

impl Dispatch {
    /// Sets the pipeline and bind group and dispatches, inside `pass`.
    pub(super) fn encode(&self, ctx: &GpuContext, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&ctx.pipeline(self.pipeline).pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        pass.dispatch_workgroups(self.count[0], self.count[1], self.count[2]);
    }
}

/// Records one dispatch in its own compute pass.
pub(super) fn record_one(ctx: &GpuContext, enc: &mut wgpu::CommandEncoder, d: &Dispatch) {
    let mut pass = enc.begin_compute_pass(&Default::default());
    d.encode(ctx, &mut pass);
}

impl GpuBackend {
    /// Creates the bind group of `spec`, its arena slots resolved in `uniforms`.
    pub(super) fn bind(&self, spec: DispatchSpec, uniforms: &wgpu::Buffer) -> Dispatch {
        let pipeline = self.ctx.pipeline(spec.pipeline);
        let entries: Vec<wgpu::BindGroupEntry> = spec
            .bindings
            .iter()
            .map(|(binding, r)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: match r {
                    Res::Buf(b) => b.as_entire_binding(),
                    Res::Slot(off, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: uniforms,
                        offset: *off,
                        size: wgpu::BufferSize::new(*size),
                    }),
                    Res::Own(b, off, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: *off,
                        size: wgpu::BufferSize::new(*size),
                    }),
                },
            })
            .collect();
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(pipeline.name),
                layout: &pipeline.layout,
                entries: &entries,
            });
        Dispatch {
            pipeline: spec.pipeline,
            group,
            count: spec.count,
            label: spec.label,
            flops: spec.flops,
            bytes: spec.bytes,
        }
    }
}
