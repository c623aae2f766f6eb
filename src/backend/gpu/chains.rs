//! Coupled Markov chains on the GPU ([`Backend::chain_step`](crate::backend::Backend)): per
//! time index, one forward pass draws the block of particles of every datapoint and
//! `chain_step` (shaders/coupling.wgsl) advances every datapoint's chains in parallel, one
//! thread each. Several time indices go in one submit ([`submits`]), each index's uniforms
//! copied into place on the device before it, and after each submit the host reads back only
//! the number of datapoints still running: an index past the batch's last is a no-op for
//! every datapoint (done chains draw nothing and keep their state), and none passes the
//! iteration cap. Then one chunked backward over every particle drawn with the coefficients
//! the chains left on the device. While profiling, every dispatch runs in its own timed pass.

use super::dispatch::{groups_1d, record_one, Dispatch};
use super::pipelines::PipelineId;
use super::plan::Part;
use super::shaders::{FLAG_CAPPED, KERNEL_DISIR, KERNEL_ISIR, KERNEL_PIMH, STATE_WORDS};
use super::vae::NoiseU;
use super::GpuBackend;
use crate::backend::{Backend, ChainOutcome, Noise, StepInputs};
use crate::coupling::{chain, ChainKernel, CouplingConfig};
use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};
use std::ops::Range;

/// Time indices one submit of the chains records at most (the default of
/// [`GpuBackend::set_chain_indices_per_submit`]).
pub const CHAIN_INDICES_PER_SUBMIT: usize = 16;

/// The submits of the chains' time loop, in order: (time indices, whether the running count
/// is read back after it). Indices 0 through m = `horizon` go in submits of up to `most`,
/// the count read only after the one ending at m + 1 (no datapoint is done before m + 1
/// indices); then submits of 1, 2, 4, ... indices up to `most`, each read. None passes
/// `max_iters`: the last ends at the cap, where every datapoint is done. `most` = 1 is one
/// index per submit, read from index m on.
pub(super) fn submits(horizon: usize, max_iters: usize, most: usize) -> Vec<(Range<usize>, bool)> {
    let most = most.max(1);
    let mut out = Vec::new();
    let mut t = 0;
    while t <= horizon {
        let end = (t + most).min(horizon + 1);
        out.push((t..end, end == horizon + 1));
        t = end;
    }
    let mut size = 1;
    while t < max_iters {
        let end = (t + size).min(max_iters);
        out.push((t..end, true));
        t = end;
        size = (2 * size).min(most);
    }
    out
}

/// Bytes of one time index's uniforms in [`ChainBuffers::staged`]: its `ChainU`, then its
/// noise address.
const CHAIN_U_BYTES: u64 = std::mem::size_of::<ChainU>() as u64;
const INDEX_BYTES: u64 = CHAIN_U_BYTES + std::mem::size_of::<NoiseU>() as u64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ChainU {
    batch: u32,
    cap: u32,
    kernel: u32,
    kk: u32,
    burn_in: u32,
    horizon: u32,
    lag: u32,
    max_iters: u32,
    t: u32,
    start: u32,
    len: u32,
    step: u32,
    seed_lo: u32,
    seed_hi: u32,
    first_datapoint: u32,
    _pad: u32,
    row0: u32,
    rows: u32,
    scale: f32,
    _pad1: u32,
}

/// The chains' device state for one (batch, particle cap).
pub(super) struct ChainBuffers {
    batch: usize,
    cap: usize,
    /// [batch, cap]: every log-weight drawn so far.
    hist: wgpu::Buffer,
    /// [3, batch, cap]: decoder, path and score coefficients.
    coef: wgpu::Buffer,
    /// [batch, STATE_WORDS] u32.
    state: wgpu::Buffer,
    /// One u32: datapoints still running after the last time index.
    active: wgpu::Buffer,
    /// Its readback, once per submit: allocated once.
    active_staging: wgpu::Buffer,
    uniform: wgpu::Buffer,
    /// The uniforms (`ChainU`, then `NoiseU`) of each time index of one submit, copied into
    /// `uniform` and the noise uniform before the index runs.
    staged: wgpu::Buffer,
}

impl ChainBuffers {
    pub(super) fn bytes(&self) -> u64 {
        [
            &self.hist,
            &self.coef,
            &self.state,
            &self.active,
            &self.active_staging,
            &self.uniform,
            &self.staged,
        ]
        .iter()
        .map(|b| b.size())
        .sum()
    }
}

impl GpuBackend {
    fn ensure_chains(&mut self, batch: usize, cap: usize, most: usize) -> Result<()> {
        let staged = most as u64 * INDEX_BYTES;
        if self
            .chains
            .as_ref()
            .is_some_and(|c| c.batch == batch && c.cap == cap && c.staged.size() >= staged)
        {
            return Ok(());
        }
        let max_binding = self.ctx.limits.max_storage_buffer_binding_size as usize;
        if 3 * batch * cap * 4 > max_binding {
            bail!(
                "coupled chains with --batch {batch} and up to {cap} particles per datapoint need {} MiB in one binding, more than this adapter's {} MiB; lower --max-iters, --k or --batch",
                (3 * batch * cap * 4) >> 20,
                max_binding >> 20
            );
        }
        let ctx = &self.ctx;
        self.chains = Some(ChainBuffers {
            batch,
            cap,
            hist: ctx.storage("chain log-weights", batch * cap),
            coef: ctx.storage("chain coefficients", 3 * batch * cap),
            state: ctx.storage("chain state", batch * STATE_WORDS as usize),
            active: ctx.storage("chains running", 1),
            active_staging: ctx.staging("chains running readback", 4),
            uniform: ctx.uniform("chain", std::mem::size_of::<ChainU>()),
            staged: ctx.storage("chain uniforms per time index", staged as usize / 4),
        });
        self.peak_bytes = self.peak_bytes.max(self.live_bytes());
        Ok(())
    }

    fn chain_group(
        &self,
        pipeline: PipelineId,
        entries: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let layout = &self.ctx.pipeline(pipeline).layout;
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, buf)| wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            })
            .collect();
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("coupled chains"),
                layout,
                entries: &entries,
            })
    }

    pub(super) fn chain_step_gpu(
        &mut self,
        x: crate::backend::Minibatch<'_>,
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome> {
        let (batch, noise) = (step.batch, &step.noise);
        chains.validate().map_err(anyhow::Error::msg)?;
        if chains.rb_set != crate::coupling::RbSet::Built {
            bail!("the GPU runs the correct test function only (RbSet::Built)");
        }
        if batch == 0 {
            bail!("a training step needs at least one datapoint");
        }
        let first_len = chains.particles_through(1);
        let per_step = chains.particles_per_step();
        if batch * first_len > self.max_rows() {
            bail!(
                "--batch {batch} x {first_len} initial particles exceeds the rows this adapter binds at once ({}); lower --batch or --k",
                self.max_rows()
            );
        }
        self.ensure_shape(batch, first_len, false)?;
        self.ensure_shape(batch, per_step, false)?;
        let cap = chains.particle_cap();
        let most = self
            .chain_indices_per_submit
            .unwrap_or(CHAIN_INDICES_PER_SUBMIT)
            .max(1);
        self.ensure_chains(batch, cap, most)?;
        self.upload_x(x, batch)?;
        let base = ChainU {
            batch: batch as u32,
            cap: cap as u32,
            kernel: match chains.kernel {
                ChainKernel::Pimh => KERNEL_PIMH,
                ChainKernel::Isir => KERNEL_ISIR,
                ChainKernel::Disir => KERNEL_DISIR,
            },
            kk: chains.particles as u32,
            burn_in: chains.burn_in as u32,
            horizon: chains.horizon as u32,
            lag: chains.lag as u32,
            max_iters: chains.max_iters as u32,
            step: noise.step,
            seed_lo: noise.seed as u32,
            seed_hi: (noise.seed >> 32) as u32,
            first_datapoint: noise.first_datapoint,
            ..Default::default()
        };
        let cb = self.chains.as_ref().expect("chain buffers");
        let sb = self.shape.as_ref().expect("shape buffers");
        let step_group = self.chain_group(
            PipelineId::ChainStep,
            &[
                (0, &cb.uniform),
                (1, &sb.lw),
                (2, &cb.hist),
                (3, &cb.state),
                (4, &cb.coef),
                (5, &cb.active),
            ],
        );
        let step_dispatch = Dispatch {
            pipeline: PipelineId::ChainStep,
            group: step_group,
            count: groups_1d(batch, 64),
            label: format!("chain step [{batch} datapoints, K = {}]", chains.particles),
            flops: 0.0,
            bytes: 0.0,
        };
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&cb.state, 0, None);
        enc.clear_buffer(&cb.coef, 0, None);
        self.ctx.submit(enc)?;
        let mut last = None;
        for (indices, read) in submits(chains.horizon, chains.max_iters, most) {
            // Every index's uniforms at once, each copied into place before its index runs.
            let mut staged = Vec::with_capacity(indices.len() * INDEX_BYTES as usize);
            let mut lens = Vec::with_capacity(indices.len());
            for t in indices.clone() {
                let block = chains.step_block(t);
                let first = if t == 0 { 0 } else { block.start };
                let len = block.end - first;
                let u = ChainU {
                    t: t as u32,
                    start: first as u32,
                    len: len as u32,
                    ..base
                };
                staged.extend_from_slice(bytemuck::bytes_of(&u));
                staged.extend_from_slice(bytemuck::bytes_of(&NoiseU::new(&Noise {
                    first_sample: noise.first_sample + first as u32,
                    ..*noise
                })));
                lens.push(len);
            }
            let cb = self.chains.as_ref().expect("chain buffers");
            self.ctx.queue.write_buffer(&cb.staged, 0, &staged);
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            for (i, (t, len)) in indices.clone().zip(lens).enumerate() {
                let at = i as u64 * INDEX_BYTES;
                enc.copy_buffer_to_buffer(&cb.staged, at, &cb.uniform, 0, CHAIN_U_BYTES);
                enc.copy_buffer_to_buffer(
                    &cb.staged,
                    at + CHAIN_U_BYTES,
                    &self.noise_u,
                    0,
                    INDEX_BYTES - CHAIN_U_BYTES,
                );
                enc.clear_buffer(&cb.active, 0, None);
                // The encoder runs once per minibatch: its output stays in place between indices.
                let forward = if t == 0 {
                    Part::Forward
                } else {
                    Part::ForwardFromZ
                };
                if self.profiling() {
                    let copies = std::mem::replace(
                        &mut enc,
                        self.ctx.device.create_command_encoder(&Default::default()),
                    );
                    self.ctx.submit(copies)?;
                    self.run_profiled((batch, len, false), &[forward])?;
                    self.profile_dispatches(&[Some(&step_dispatch)])?;
                } else {
                    self.record(&mut enc, (batch, len, false), &[forward]);
                    record_one(&self.ctx, &mut enc, &step_dispatch);
                }
            }
            self.ctx.submit(enc)?;
            if read {
                let running: u32 = bytemuck::pod_read_unaligned(&self.ctx.read_bytes_via(
                    &cb.active,
                    0,
                    4,
                    &cb.active_staging,
                )?);
                if running == 0 {
                    last = Some(indices);
                    break;
                }
            }
        }
        let Some(last) = last else {
            bail!("coupled chains still running at the iteration cap --max-iters {} (a GPU kernel fault)", chains.max_iters);
        };
        // The chains' state: meeting times, caps and the particles each datapoint used.
        let cb = self.chains.as_ref().expect("chain buffers");
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&self.ctx.read_bytes(
            &cb.state,
            0,
            (batch * STATE_WORDS as usize * 4) as u64,
        )?);
        // The batch's iterations: its slowest datapoint's, the time index after the one that
        // finished it (a done datapoint's t stays where it stopped).
        let iterations = words
            .chunks_exact(STATE_WORDS as usize)
            .map(|s| s[0] as usize)
            .max()
            .unwrap_or(0);
        if !(last.start + 1..=last.end).contains(&iterations) {
            bail!(
                "coupled chains finished after {iterations} time indices, outside the last submit's {last:?} (a GPU kernel fault)"
            );
        }
        let mut out = ChainOutcome {
            iterations,
            ..Default::default()
        };
        for s in words.chunks_exact(STATE_WORDS as usize) {
            let capped = s[2] & FLAG_CAPPED != 0;
            out.meeting_times.push(if s[1] == 0 {
                chains.max_iters as u32
            } else {
                s[1]
            });
            out.capped.push(capped);
            out.particles.push(s[5]);
        }
        // The backward per group of rows over the particles its rows used (beyond them the
        // coefficients are zero), chunk by chunk; the gather scales each group's coefficients
        // by |group| / batch, since a pass averages over its own rows.
        let used: Vec<usize> = out.particles.iter().map(|&p| p as usize).collect();
        let overhead = self.chain_group_overhead.unwrap_or(chain::GROUP_OVERHEAD);
        let mut passes: Vec<(Range<usize>, usize, usize)> = Vec::new();
        for (rows, n) in chain::backward_groups(&used, overhead) {
            let per = (self.max_rows() / rows.len()).max(1);
            for s0 in (0..n).step_by(per) {
                passes.push((rows.clone(), s0, per.min(n - s0)));
            }
        }
        // The largest shape first: a reallocation drops the plans built before it.
        let mut shapes: Vec<(usize, usize)> =
            passes.iter().map(|(r, _, l)| (r.len(), *l)).collect();
        shapes.sort_by_key(|&(b, l)| std::cmp::Reverse(b * l));
        for (gb, len) in shapes {
            self.ensure_shape(gb, len, false)?;
            self.ensure_shape(gb, len, true)?;
        }
        // Adam and the running statistics run over the whole batch.
        self.ensure_shape(batch, per_step, false)?;
        let cb = self.chains.as_ref().expect("chain buffers");
        let sb = self.shape.as_ref().expect("shape buffers");
        let encoder_group = self.chain_group(
            PipelineId::ChainEncoder,
            &[
                (0, &cb.uniform),
                (2, &cb.hist),
                (4, &cb.coef),
                (6, &sb.objective),
            ],
        );
        let gather_group = self.chain_group(
            PipelineId::ChainGather,
            &[(0, &cb.uniform), (4, &cb.coef), (7, &sb.coef)],
        );
        let encoder_dispatch = Dispatch {
            pipeline: PipelineId::ChainEncoder,
            group: encoder_group,
            count: groups_1d(batch, 64),
            label: format!("chain encoder coefficients [{batch} datapoints]"),
            flops: 0.0,
            bytes: 0.0,
        };
        if self.profiling() {
            self.profile_dispatches(&[Some(&encoder_dispatch)])?;
        } else {
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            record_one(&self.ctx, &mut enc, &encoder_dispatch);
            self.ctx.submit(enc)?;
        }
        self.write_adam(None, batch);
        let xd = self.layout.arch.x_dim;
        let mut uploaded = None;
        for (pi, (rows, s0, len)) in passes.iter().enumerate() {
            let (gb, s0, len) = (rows.len(), *s0, *len);
            if uploaded != Some(rows.start) {
                self.upload_x(x.rows(rows.clone(), xd), gb)?;
                uploaded = Some(rows.start);
            }
            self.write_noise(&Noise {
                first_datapoint: noise.first_datapoint + rows.start as u32,
                first_sample: noise.first_sample + s0 as u32,
                ..*noise
            });
            let cb = self.chains.as_ref().expect("chain buffers");
            let u = ChainU {
                start: s0 as u32,
                len: len as u32,
                row0: rows.start as u32,
                rows: gb as u32,
                scale: gb as f32 / batch as f32,
                ..base
            };
            self.ctx
                .queue
                .write_buffer(&cb.uniform, 0, bytemuck::bytes_of(&u));
            let gather = Dispatch {
                pipeline: PipelineId::ChainGather,
                group: gather_group.clone(),
                count: groups_1d(gb * len, 256),
                label: format!("chain coefficients gather [{gb}x{len}]"),
                flops: 0.0,
                bytes: 0.0,
            };
            if self.profiling() {
                self.profile_dispatches(&[Some(&gather)])?;
                self.run_profiled((gb, len, false), &[Part::Forward])?;
                self.run_profiled((gb, len, pi > 0), &[Part::Backward])?;
            } else {
                let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                record_one(&self.ctx, &mut enc, &gather);
                self.record(&mut enc, (gb, len, false), &[Part::Forward]);
                self.record(&mut enc, (gb, len, pi > 0), &[Part::Backward]);
                self.ctx.submit(enc)?;
            }
        }
        self.write_adam(Some((&step.adam, step.lr)), batch);
        // The norms once, over the gradient of every group.
        self.run(batch, per_step, &[Part::Update])?;
        self.last = None;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The submits cover time indices 0..max_iters in order, none longer than `most`; the
    /// count is read after the submit ending at m + 1 and every later one, never before;
    /// after m the submits grow 1, 2, 4, ... to `most` (cut at the cap); `most` = 1 is one
    /// index per submit, read from index m on.
    #[test]
    fn submits_cover_every_index_to_the_cap_and_read_from_m_on() {
        for (horizon, max_iters) in [(0, 1), (0, 7), (2, 3), (2, 9), (2, 60), (4, 1000), (20, 40)] {
            for most in [1, 2, 3, 16] {
                let s = submits(horizon, max_iters, most);
                let mut t = 0;
                let mut sizes_after = Vec::new();
                for (r, read) in &s {
                    assert_eq!(r.start, t, "{s:?}");
                    assert!(!r.is_empty() && r.len() <= most, "{s:?}");
                    assert_eq!(*read, r.end > horizon, "{s:?}");
                    if r.start > horizon {
                        sizes_after.push(r.len());
                    }
                    t = r.end;
                }
                assert_eq!(t, max_iters, "{s:?}");
                for (i, &len) in sizes_after.iter().enumerate() {
                    let grown = (1usize << i.min(30)).min(most);
                    let last = i + 1 == sizes_after.len();
                    assert!(len == grown || (last && len < grown), "{s:?}");
                }
                if most == 1 {
                    let one: Vec<_> = (0..max_iters).map(|t| (t..t + 1, t >= horizon)).collect();
                    assert_eq!(s, one);
                }
            }
        }
        assert_eq!(
            submits(2, 9, 16),
            vec![(0..3, true), (3..4, true), (4..6, true), (6..9, true)]
        );
    }
}
