//! The chunked training step, for batch x N rows beyond what one pass binds: log-weights
//! chunk by chunk, coefficients over all N samples, then each chunk's backward again.

use super::dispatch::{record_one, Dispatch, UniformArena};
use super::pipelines::PipelineId;
use super::plan::Part;
use super::weights::{self, ColumnsU};
use super::GpuBackend;
use crate::backend::{Backend, Noise, StepInputs};
use crate::estimators::CoefficientProgram;
use anyhow::{bail, Result};

/// Log-weights and coefficients over all N samples of a chunked training step, with the
/// coefficient dispatch bound to them and each chunk's gathers.
pub(super) struct FullBuffers {
    pub batch: usize,
    pub n: usize,
    /// Samples per chunk (the last may hold fewer).
    pub per: usize,
    pub lw: wgpu::Buffer,
    pub coef: wgpu::Buffer,
    pub coefficients: Dispatch,
    pub chunks: Vec<ChunkGathers>,
    /// The gathers' uniforms, one slot each.
    pub uniforms: wgpu::Buffer,
}

/// One chunk's two `copy_columns` dispatches (its samples [s0, s0 + len) in the labels).
pub(super) struct ChunkGathers {
    /// Pass 1: the chunk's log-weights [batch, len] into the whole step's at column s0.
    pub log_weights: Dispatch,
    /// Pass 2: the whole step's coefficient columns (a, b and c) into the chunk's.
    pub coefficients: Dispatch,
}

/// The chunks (first sample, samples) of N = `n` samples at `per` a pass.
pub(super) fn chunks(n: usize, per: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(per.max(1))
        .map(|s0| (s0, per.min(n - s0)))
        .collect()
}

impl GpuBackend {
    /// A training step whose batch x N rows exceed one pass: pass 1 computes the log-weights
    /// chunk by chunk into whole-step buffers, then the coefficients over all N samples;
    /// pass 2 recomputes each chunk's forward pass (same noise, so the same z) and adds its
    /// backward into the gradient. Memory stays that of one chunk whatever N is.
    pub(super) fn train_step_chunked(
        &mut self,
        x: crate::backend::Minibatch<'_>,
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()> {
        let (batch, noise) = (step.batch, &step.noise);
        let per = (self.max_rows() / batch).max(1);
        if self.max_rows() < batch {
            bail!("--batch {batch} alone exceeds the rows this adapter binds at once ({}); lower --batch", self.max_rows());
        }
        let chunks = chunks(n, per);
        for &(_, len) in &chunks {
            self.ensure_shape(batch, len, false)?;
            self.ensure_shape(batch, len, true)?;
        }
        self.ensure_full(batch, n, per)?;
        self.prepare_subsets(program, batch, n, true)?;
        self.upload_x(x, batch)?;
        self.write_program(program, batch, n);
        // Pass 1: log-weights of every chunk into the whole-step buffer.
        for (ci, &(s0, len)) in chunks.iter().enumerate() {
            self.write_noise(&Noise {
                first_sample: noise.first_sample + s0 as u32,
                ..*noise
            });
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            self.record(&mut enc, (batch, len, false), &[Part::Forward]);
            let full = self.full.as_ref().expect("full");
            record_one(&self.ctx, &mut enc, &full.chunks[ci].log_weights);
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
            let full = self.full.as_ref().expect("full");
            record_one(&self.ctx, &mut enc, &full.chunks[ci].coefficients);
            self.record(&mut enc, (batch, len, ci > 0), &[Part::Backward]);
            self.ctx.submit(enc)?;
        }
        self.write_adam(Some((&step.adam, step.lr)), batch);
        // The norms once, over the whole gradient.
        self.run(batch, chunks[0].1, &[Part::Update])?;
        self.last = None;
        Ok(())
    }

    /// Whole-step log-weight and coefficient buffers for (batch, n), with their dispatch and
    /// the gathers of chunks of `per` samples.
    pub(super) fn ensure_full(&mut self, batch: usize, n: usize, per: usize) -> Result<()> {
        if self
            .full
            .as_ref()
            .is_some_and(|f| f.batch == batch && f.n == n && f.per == per)
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
        // Each chunk's gathers, their uniforms in one arena.
        let mut arena = UniformArena::new(&self.ctx);
        let specs: Vec<_> = chunks(n, per)
            .into_iter()
            .map(|(s0, len)| {
                let scatter = ColumnsU::scatter_log_weights(batch, n, s0, len);
                let gather = ColumnsU::gather_coefficients(batch, n, s0, len);
                (
                    s0,
                    len,
                    (arena.push(&scatter), scatter),
                    (arena.push(&gather), gather),
                )
            })
            .collect();
        let uniforms = arena.upload(&self.ctx, "chunk gathers");
        let chunks = specs
            .into_iter()
            .map(|(s0, len, (ls, lu), (cs, cu))| {
                let (range, whole) = (format!("{s0}..{}", s0 + len), format!("{batch}x{n}"));
                ChunkGathers {
                    log_weights: self.bind(
                        weights::copy_columns(
                            ls,
                            &lu,
                            &sb.lw,
                            &lw,
                            format!("gather log-weights [{batch}x{len}] into columns {range} of [{whole}]"),
                        ),
                        &uniforms,
                    ),
                    coefficients: self.bind(
                        weights::copy_columns(
                            cs,
                            &cu,
                            &coef,
                            &sb.coef,
                            format!("gather coefficients: columns {range} of [3x{whole}]"),
                        ),
                        &uniforms,
                    ),
                }
            })
            .collect();
        self.subsets.retain(|k, _| !k.2);
        self.full = Some(FullBuffers {
            batch,
            n,
            per,
            lw,
            coef,
            coefficients,
            chunks,
            uniforms,
        });
        Ok(())
    }
}
