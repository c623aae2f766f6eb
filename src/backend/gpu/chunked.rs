//! The chunked training step, for batch x N rows beyond what one pass binds: log-weights
//! chunk by chunk, coefficients over all N samples, then each chunk's backward again.

use super::pipelines::PipelineId;
use super::plan::{Dispatch, Part};
use super::GpuBackend;
use crate::backend::{Backend, Noise};
use crate::estimators::CoefficientProgram;
use crate::optim::AdamConfig;
use anyhow::{bail, Result};

/// Log-weights and coefficients over all N samples of a chunked training step, with the
/// coefficient dispatch bound to them.
pub(super) struct FullBuffers {
    pub batch: usize,
    pub n: usize,
    pub lw: wgpu::Buffer,
    pub coef: wgpu::Buffer,
    pub coefficients: Dispatch,
}

impl GpuBackend {
    /// A training step whose batch x N rows exceed one pass: pass 1 computes the log-weights
    /// chunk by chunk into whole-step buffers, then the coefficients over all N samples;
    /// pass 2 recomputes each chunk's forward pass (same noise, so the same z) and adds its
    /// backward into the gradient. Memory stays that of one chunk whatever N is.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_step_chunked(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        program: &CoefficientProgram,
        cfg: &AdamConfig,
        lr: f64,
    ) -> Result<()> {
        let per = (self.max_rows() / batch).max(1);
        if self.max_rows() < batch {
            bail!("--batch {batch} alone exceeds the rows this adapter binds at once ({}); lower --batch", self.max_rows());
        }
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(per)
            .map(|s0| (s0, per.min(n - s0)))
            .collect();
        for &(_, len) in &chunks {
            self.ensure_shape(batch, len, false)?;
            self.ensure_shape(batch, len, true)?;
        }
        self.ensure_full(batch, n)?;
        self.prepare_subsets(program, batch, n, true)?;
        self.upload_x(x, batch)?;
        self.write_program(program, batch, n);
        let rows = batch * n;
        // Pass 1: log-weights of every chunk into the whole-step buffer.
        for &(s0, len) in &chunks {
            self.write_noise(&Noise {
                first_sample: noise.first_sample + s0 as u32,
                ..*noise
            });
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            self.record(&mut enc, (batch, len, false), &[Part::Forward]);
            let (sb, full) = (
                self.shape.as_ref().expect("shape"),
                self.full.as_ref().expect("full"),
            );
            for b in 0..batch {
                enc.copy_buffer_to_buffer(
                    &sb.lw,
                    (b * len * 4) as u64,
                    &full.lw,
                    ((b * n + s0) * 4) as u64,
                    (len * 4) as u64,
                );
            }
            self.ctx.submit(enc)?;
        }
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        self.record(
            &mut enc,
            (batch, chunks[0].1, false),
            &[Part::FullCoefficients],
        );
        self.ctx.submit(enc)?;
        // Pass 2: each chunk's backward, added into the gradient after the first.
        self.write_adam(None, batch);
        for (ci, &(s0, len)) in chunks.iter().enumerate() {
            self.write_noise(&Noise {
                first_sample: noise.first_sample + s0 as u32,
                ..*noise
            });
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            self.record(&mut enc, (batch, len, false), &[Part::Forward]);
            let (sb, full) = (
                self.shape.as_ref().expect("shape"),
                self.full.as_ref().expect("full"),
            );
            let chunk_rows = batch * len;
            for part in 0..3 {
                for b in 0..batch {
                    enc.copy_buffer_to_buffer(
                        &full.coef,
                        ((part * rows + b * n + s0) * 4) as u64,
                        &sb.coef,
                        ((part * chunk_rows + b * len) * 4) as u64,
                        (len * 4) as u64,
                    );
                }
            }
            self.record(&mut enc, (batch, len, ci > 0), &[Part::Backward]);
            self.ctx.submit(enc)?;
        }
        self.write_adam(Some((cfg, lr)), batch);
        // The norms once, over the whole gradient.
        self.run(batch, chunks[0].1, &[Part::Update])?;
        self.last = None;
        Ok(())
    }

    /// Whole-step log-weight and coefficient buffers for (batch, n), with their dispatch.
    pub(super) fn ensure_full(&mut self, batch: usize, n: usize) -> Result<()> {
        if self
            .full
            .as_ref()
            .is_some_and(|f| f.batch == batch && f.n == n)
        {
            return Ok(());
        }
        let rows = batch * n;
        // The coefficients of every sample are bound at once: check before allocating.
        self.ctx.check_binding(
            (3 * rows * 4) as u64,
            &format!("the coefficients of --batch {batch} x {n} samples (--k)"),
        )?;
        let lw = self.ctx.storage("whole-step log-weights", rows);
        let coef = self.ctx.storage("whole-step coefficients", 3 * rows);
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let pipeline = self.ctx.pipeline(PipelineId::Coefficients);
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("whole-step coefficients"),
                layout: &pipeline.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: self.program_u.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: lw.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: coef.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: sb.objective.as_entire_binding(),
                    },
                ],
            });
        let coefficients = Dispatch {
            label: format!("coefficients, whole step [{batch}x{n}]"),
            flops: 0.0,
            bytes: 4.0 * (4 * batch * n + batch) as f64,
            pipeline: PipelineId::Coefficients,
            group,
            count: [batch as u32, 1, 1],
        };
        self.subsets.retain(|k, _| !k.2);
        self.full = Some(FullBuffers {
            batch,
            n,
            lw,
            coef,
            coefficients,
        });
        Ok(())
    }
}
