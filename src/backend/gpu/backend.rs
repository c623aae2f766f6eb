//! `impl Backend` for the GPU: each trait method uploads its inputs and runs parts of the
//! cached plan for its shape.

use super::buffers::row_floats;
use super::plan::Part;
use super::profiler::GpuProfiler;
use super::{GpuBackend, STATS_LEN};
use crate::backend::{
    Backend, ChainOutcome, DispatchInfo, GradNorms, ImageUpload, Minibatch, Noise, NonFiniteStep,
    StepInputs, StepStats, Timing,
};
use crate::coupling::CouplingConfig;
use crate::data::idx::Images;
use crate::estimators::CoefficientProgram;
use crate::model::Layout;
use crate::optim::{AdamConfig, AdamState};
use anyhow::{bail, Result};

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        let a = &self.ctx.adapter;
        let reductions = if self.ctx.subgroups {
            "subgroup reductions"
        } else {
            "workgroup reductions"
        };
        let checks = if self.ctx.shader_checks {
            "runtime checks in every kernel"
        } else {
            "GEMMs without runtime checks"
        };
        format!(
            "gpu ({}, {}, {}, {reductions}, {checks})",
            a.name, a.backend, a.device_type
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn set_params(&mut self, values: &[f32]) -> Result<()> {
        crate::backend::check_param_len(&self.layout, values)?;
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(values));
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.ctx.read(&self.params, 0, self.layout.len)
    }

    fn forward(&mut self, x: &[f32], batch: usize, n: usize, noise: &Noise) -> Result<&[f32]> {
        if batch == 0 || n == 0 {
            bail!("forward needs at least one datapoint and one sample (batch {batch}, n {n})");
        }
        self.ensure_shape(batch, n, false)?;
        self.upload_x(Minibatch::Host(x), batch)?;
        self.write_noise(noise);
        self.run(batch, n, &[Part::Forward])?;
        self.last = Some((batch, n));
        let sb = self.shape.as_ref().expect("shape buffers exist");
        self.lw_host = self.ctx.read(&sb.lw, 0, batch * n)?;
        Ok(&self.lw_host)
    }

    fn backward(&mut self, a: &[f32], b: &[f32], c: &[f32]) -> Result<GradNorms> {
        let (batch, n) = self
            .last
            .ok_or_else(|| anyhow::anyhow!("backward called before forward"))?;
        let rows = batch * n;
        if a.len() != rows || b.len() != rows || c.len() != rows {
            bail!("coefficients must be [batch {batch}, n {n}] = {rows} values each");
        }
        let sb = self.shape.as_ref().expect("shape buffers exist");
        for (i, v) in [a, b, c].iter().enumerate() {
            self.ctx
                .queue
                .write_buffer(&sb.coef, (i * rows * 4) as u64, bytemuck::cast_slice(v));
        }
        self.write_adam(None, batch);
        self.run(batch, n, &[Part::Backward, Part::Norms])?;
        let norms = self.ctx.read(&self.norms, 0, 2)?;
        Ok(GradNorms {
            encoder: norms[0] as f64,
            decoder: norms[1] as f64,
        })
    }

    fn gradient(&mut self) -> Result<Vec<f32>> {
        self.ctx.read(&self.grad, 0, self.layout.len)
    }

    fn optimizer_step(&mut self, cfg: &AdamConfig, lr: f64) -> Result<()> {
        let (batch, n) = self
            .last
            .ok_or_else(|| anyhow::anyhow!("optimizer step before any forward pass"))?;
        self.write_adam(Some((cfg, lr)), batch);
        self.run(batch, n, &[Part::Adam])?;
        Ok(())
    }

    fn reset_optimizer(&mut self) {
        self.adam = AdamState::default();
        let zeros = vec![0u8; 3 * self.layout.len * 4];
        self.ctx.queue.write_buffer(&self.moments, 0, &zeros);
    }

    fn upload_images(&mut self, images: &Images) -> Result<ImageUpload> {
        self.hold_images(images)
    }

    fn train_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()> {
        let batch = step.batch;
        if batch == 0 || n == 0 {
            bail!("a training step needs at least one datapoint and one sample");
        }
        if batch * n > self.max_rows() {
            return self.train_step_chunked(x, step, n, program);
        }
        self.ensure_shape(batch, n, false)?;
        self.prepare_subsets(program, batch, n, false)?;
        self.upload_x(x, batch)?;
        self.write_noise(&step.noise);
        self.write_program(program, batch, n);
        self.write_adam(Some((&step.adam, step.lr)), batch);
        self.run(
            batch,
            n,
            &[
                Part::Forward,
                Part::Coefficients,
                Part::Backward,
                Part::Update,
            ],
        )?;
        self.last = Some((batch, n));
        Ok(())
    }

    fn chain_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome> {
        self.chain_step_gpu(x, step, chains)
    }

    fn lse_chunk(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        first: bool,
    ) -> Result<()> {
        if batch == 0 || n == 0 {
            bail!("evaluation needs at least one datapoint and one sample");
        }
        self.ensure_shape(batch, n, false)?;
        self.upload_x(Minibatch::Host(x), batch)?;
        self.write_noise(noise);
        let u: [u32; 4] = [batch as u32, n as u32, first as u32, 0];
        self.ctx
            .queue
            .write_buffer(&self.lse_u, 0, bytemuck::cast_slice(&u));
        self.run(batch, n, &[Part::Forward, Part::Lse])?;
        self.last = Some((batch, n));
        Ok(())
    }

    fn lse_read(&mut self, batch: usize) -> Result<Vec<f64>> {
        let sb = self
            .shape
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("lse_read before any lse_chunk"))?;
        let st = self.ctx.read(&sb.lse_state, 0, 2 * batch)?;
        Ok(st
            .chunks(2)
            .map(|p| p[0] as f64 + (p[1] as f64).ln())
            .collect())
    }

    fn lse_keep(&mut self, batch: usize) -> Result<()> {
        let sb = self
            .shape
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("lse_keep before any lse_chunk"))?;
        let (at, need) = (self.lse_kept_len, self.lse_kept_len + batch);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let capacity = self.lse_kept.as_ref().map_or(0, |b| b.size() as usize / 8);
        if need > capacity {
            // Doubling keeps the copies of earlier values to O(total).
            let grown = self
                .ctx
                .storage("kept evaluation values", 2 * need.max(2 * capacity));
            if let Some(old) = self.lse_kept.as_ref().filter(|_| at > 0) {
                enc.copy_buffer_to_buffer(old, 0, &grown, 0, (8 * at) as u64);
            }
            self.lse_kept = Some(grown);
        }
        let kept = self.lse_kept.as_ref().expect("allocated above");
        enc.copy_buffer_to_buffer(&sb.lse_state, 0, kept, (8 * at) as u64, (8 * batch) as u64);
        self.ctx.submit(enc)?;
        self.lse_kept_len = need;
        Ok(())
    }

    fn lse_take(&mut self) -> Result<Vec<f64>> {
        let n = std::mem::take(&mut self.lse_kept_len);
        let Some(kept) = &self.lse_kept else {
            return Ok(Vec::new());
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let st = self.ctx.read(kept, 0, 2 * n)?;
        Ok(st
            .chunks(2)
            .map(|p| p[0] as f64 + (p[1] as f64).ln())
            .collect())
    }

    fn take_stats(&mut self) -> Result<StepStats> {
        let s = self.peek_stats()?;
        self.ctx
            .queue
            .write_buffer(&self.stats, 0, &[0u8; 4 * STATS_LEN]);
        Ok(s)
    }

    fn peek_stats(&mut self) -> Result<StepStats> {
        let s = self.ctx.read(&self.stats, 0, STATS_LEN)?;
        Ok(StepStats {
            steps: s[3] as usize,
            objective: s[0] as f64,
            grad_norm_encoder: s[1] as f64,
            grad_norm_decoder: s[2] as f64,
            nonfinite: s[4] as usize,
            first_nonfinite: (s[5] > 0.0)
                .then(|| NonFiniteStep::from_mask(s[5] as usize, s[6] as u32)),
        })
    }

    fn set_stats(&mut self, st: &StepStats) -> Result<()> {
        let first = st.first_nonfinite.unwrap_or_default();
        let mask =
            first.objective as u32 | (first.encoder as u32) << 1 | (first.decoder as u32) << 2;
        // The sums came from this buffer's f32s, so the narrowing is exact.
        let s: [f32; STATS_LEN] = [
            st.objective as f32,
            st.grad_norm_encoder as f32,
            st.grad_norm_decoder as f32,
            st.steps as f32,
            st.nonfinite as f32,
            first.index as f32,
            mask as f32,
            0.0,
        ];
        self.ctx
            .queue
            .write_buffer(&self.stats, 0, bytemuck::cast_slice(&s));
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<AdamState> {
        let len = self.layout.len;
        let all = self.ctx.read(&self.moments, 0, 3 * len)?;
        Ok(AdamState {
            m: all[..len].to_vec(),
            v: all[len..2 * len].to_vec(),
            v_max: all[2 * len..].to_vec(),
            t: self.adam.t,
        })
    }

    fn set_optimizer_state(&mut self, state: &AdamState) -> Result<()> {
        crate::backend::check_optimizer_state(state, self.layout.len)?;
        for (i, v) in [&state.m, &state.v, &state.v_max].into_iter().enumerate() {
            self.ctx.queue.write_buffer(
                &self.moments,
                (i * self.layout.len * 4) as u64,
                bytemuck::cast_slice(v),
            );
        }
        self.adam = AdamState {
            t: state.t,
            ..AdamState::default()
        };
        Ok(())
    }

    fn max_rows(&self) -> usize {
        let bytes = self
            .ctx
            .limits
            .max_storage_buffer_binding_size
            .min(self.ctx.limits.max_buffer_size) as usize;
        let adapter = bytes / (4 * self.widest());
        self.row_limit.map_or(adapter, |l| l.min(adapter))
    }

    fn eval_rows(&self) -> usize {
        let budget = eval_budget_bytes(&self.ctx.adapter.device_type);
        let rows = budget / (4 * row_floats(&self.layout.arch) as u64).max(1);
        (rows as usize).clamp(1, self.max_rows())
    }

    fn set_profiling(&mut self, on: bool) -> String {
        if !on {
            *self.profiler.borrow_mut() = None;
            return "off".to_string();
        }
        let (profiler, how) = GpuProfiler::new(&self.ctx);
        *self.profiler.borrow_mut() = Some(profiler);
        how
    }

    fn take_timings(&mut self) -> Result<Vec<Timing>> {
        Ok(self
            .profiler
            .borrow_mut()
            .as_mut()
            .map(|p| std::mem::take(&mut p.events))
            .unwrap_or_default())
    }

    fn profiling_notes(&self) -> Vec<String> {
        self.profiler
            .borrow()
            .as_ref()
            .map(|p| p.report_notes())
            .unwrap_or_default()
    }

    fn memory_bytes(&self) -> (u64, u64) {
        let now = self.live_bytes();
        (now, self.peak_bytes.max(now))
    }

    fn step_dispatches(&mut self, batch: usize, n: usize) -> Result<Vec<DispatchInfo>> {
        self.plan_dispatches(batch, n)
    }

    fn set_compute_units(&mut self, units: usize) {
        self.set_grid(super::GridConfig {
            compute_units: units.max(1),
            ..self.grid()
        });
    }
}

/// Working memory an evaluation pass may take on an adapter of `device_type` (as
/// `AdapterSummary` spells it): 1 GiB on a discrete GPU, so that a pass at K = 5,000 holds
/// 18 MNIST datapoints and its GEMMs fill a large GPU; 256 MiB on an integrated or
/// virtual one, which shares the host's memory; on a software adapter (lavapipe) and
/// anything else the rows of `backend::EVAL_ROWS` at about 11 KB each.
fn eval_budget_bytes(device_type: &str) -> u64 {
    let is = |t: wgpu::DeviceType| device_type == format!("{t:?}");
    if is(wgpu::DeviceType::DiscreteGpu) {
        1 << 30
    } else if is(wgpu::DeviceType::IntegratedGpu) || is(wgpu::DeviceType::VirtualGpu) {
        256 << 20
    } else {
        (crate::backend::EVAL_ROWS * 11 * 1024) as u64
    }
}

#[cfg(test)]
mod eval_pass_tests {
    use super::{eval_budget_bytes, row_floats};
    use crate::model::Arch;

    #[test]
    fn evaluation_passes_grow_with_the_kind_of_device() {
        let discrete = eval_budget_bytes("DiscreteGpu");
        let integrated = eval_budget_bytes("IntegratedGpu");
        let software = eval_budget_bytes("Cpu");
        assert!(
            discrete > integrated && integrated > software,
            "{discrete} {integrated} {software}"
        );
        assert_eq!(eval_budget_bytes("Other"), software);
        // An MNIST row is 52 (z padded to whole vec4s) + 200 + 200 + 784 decoder floats, 50
        // normals, 5, two 784-wide deltas and 13 likelihood partials: about 11 KB, so a
        // discrete GPU's pass holds 18 datapoints at K = 5000 (93,466 rows), lavapipe's 3
        // (the rows of `EVAL_ROWS`).
        let row = 4 * row_floats(&Arch::burda_mnist()) as u64;
        assert_eq!(row, 4 * (1236 + 50 + 5 + 2 * 784 + 13));
        assert_eq!(discrete / row / 5_000, 18);
        assert_eq!(software / row / 5_000, 3);
        let two_layer = 4 * row_floats(&Arch::burda_mnist_two_layer()) as u64;
        assert!(two_layer > row, "{two_layer} {row}");
    }
}
