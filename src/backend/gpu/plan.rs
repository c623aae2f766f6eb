//! The plan of one batch shape: every dispatch of a training step with its bind group and
//! static uniforms, built once, then recorded part by part into compute passes.

use super::buffers::{Acts, ShapeBuffers};
use super::dispatch::{Dispatch, DispatchSpec, UniformArena};
use super::matmul::{LatentDraw, SpecList, SplitK};
use super::mlp::{mlp_backward, mlp_forward, mlp_input_grad, BackwardBuffers, Mlp};
use super::vae::{self, ShapeU};
use super::{cond, weights, GpuBackend};
use crate::model::{Likelihood, Linear};
use anyhow::Result;

/// The dispatches of one batch shape.
pub(super) struct Plan {
    pub forward: Vec<Dispatch>,
    pub coefficients: Dispatch,
    pub backward: Vec<Dispatch>,
    /// The norms' partial sums, then their totals.
    pub norms: Vec<Dispatch>,
    pub adam: Dispatch,
    /// Norm totals, clipping, Adam and the running statistics in one dispatch.
    pub adam_step: Dispatch,
    pub lse: Dispatch,
    /// Keeps the plan's static uniforms alive.
    pub _uniforms: wgpu::Buffer,
}

/// A part of a plan to record.
pub(super) enum Part {
    Lse,
    FullCoefficients,
    Forward,
    /// The forward pass from sampling z on, reusing the encoder output already computed for
    /// this minibatch (the coupled chains' later time indices).
    ForwardFromZ,
    Coefficients,
    /// The gradient (added into the last one when the plan accumulates), with the frozen
    /// ranges zeroed.
    Backward,
    /// The gradient norms: once per step, after its last backward (a chunked step or the
    /// chains' groups run several backwards into one gradient).
    Norms,
    /// Adam alone, with the norms of [`Part::Norms`] (a separate optimizer step).
    Adam,
    /// A training step's end: the norms' partials, then one dispatch that adds them, clips,
    /// steps Adam and accumulates the running statistics.
    Update,
}

impl GpuBackend {
    pub(super) fn build_plan(&self, batch: usize, n: usize, accumulate: bool) -> Plan {
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let mut arena = UniformArena::new(&self.ctx);
        // Specs are collected first: bind groups need the arena's buffer.
        let shape_u = ShapeU::new(&self.layout.arch, batch, n);
        let shape = arena.push(&shape_u);
        let mut forward = self.encoder_forward(sb, &mut arena, batch);
        let backward = if self.layout.arch.cond.is_some() {
            let lik_only = arena.push(&shape_u.likelihood_only());
            forward.extend(self.sampling_cond(sb, &mut arena, shape, lik_only, batch, n));
            self.backward_specs(sb, &mut arena, shape, batch, n, accumulate)
        } else if self.layout.arch.top.is_some() {
            let lik_only = arena.push(&shape_u.likelihood_only());
            forward.extend(self.sampling_two_layer(sb, &mut arena, shape, lik_only, batch, n));
            self.backward_two_layer(sb, &mut arena, shape, batch, n, accumulate)
        } else {
            forward.extend(self.sampling_decoder(sb, &mut arena, shape, batch, n));
            self.backward_specs(sb, &mut arena, shape, batch, n, accumulate)
        };
        let norms = self.grad_norms_specs(sb, &mut arena);
        let adam_step = self.adam_step_spec(sb, &mut arena, &sb.objective);

        let uniforms = arena.upload(&self.ctx, "plan uniforms");
        let bind = |spec: DispatchSpec| self.bind(spec, &uniforms);
        let coefficients = weights::coefficients(
            &self.program_u,
            &sb.lw,
            &sb.coef,
            &sb.objective,
            batch,
            n,
            format!("coefficients [{batch}x{n}]"),
        );
        let lse = weights::lse_accumulate(&self.lse_u, &sb.lw, &sb.lse_state, batch, n);
        let (lse, forward, coefficients, backward) = (
            bind(lse),
            forward.into_iter().map(bind).collect(),
            bind(coefficients),
            backward.into_iter().map(bind).collect(),
        );
        let (norms, adam, adam_step) = (
            norms.into_iter().map(bind).collect(),
            bind(self.adam_spec()),
            bind(adam_step),
        );
        Plan {
            lse,
            forward,
            coefficients,
            backward,
            norms,
            adam,
            adam_step,
            _uniforms: uniforms,
        }
    }

    /// The encoder over the minibatch: one GEMM per layer.
    fn encoder_forward<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        batch: usize,
    ) -> Vec<DispatchSpec<'a>> {
        let mut specs = SpecList::new(arena, self.split_k(sb));
        let encoder = self.mlp(
            &self.layout.encoder,
            sb.encoder_acts(&self.layout.arch),
            batch,
        );
        mlp_forward(&mut specs, &encoder, None, None);
        specs.specs
    }

    /// The MLP of `layers` over `rows` rows of `acts`.
    pub(super) fn mlp<'a>(&'a self, layers: &'a [Linear], acts: Acts<'a>, rows: usize) -> Mlp<'a> {
        Mlp {
            params: &self.params,
            layers,
            acts,
            rows,
        }
    }

    /// The draw of a latent layer whose normals are `eps_off` .. of each row's, from `head`.
    pub(super) fn latent_draw<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        head: &'a wgpu::Buffer,
        head_per_row: bool,
        eps_off: usize,
        n: usize,
    ) -> LatentDraw<'a> {
        LatentDraw {
            noise: &self.noise_u,
            head,
            head_per_row,
            eps: &sb.eps,
            noise_dim: self.layout.arch.noise_dim(),
            eps_off,
            samples: n,
        }
    }

    /// The decoder over every (datapoint, sample) row, z drawn in its first GEMM, and the
    /// log-weights.
    fn sampling_decoder<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        shape: (u64, u64),
        batch: usize,
        n: usize,
    ) -> Vec<DispatchSpec<'a>> {
        let a = &self.layout.arch;
        let rows = batch * n;
        let mut specs = SpecList::new(arena, self.split_k(sb));
        // A Bernoulli likelihood is scored in the last GEMM's epilogue; a Gaussian one (the
        // exact models) by log_weights.
        let fused = matches!(a.likelihood, Likelihood::Bernoulli);
        mlp_forward(
            &mut specs,
            &self.mlp(&self.layout.decoder, sb.decoder_acts(a), rows),
            fused.then_some(n),
            Some(self.latent_draw(sb, sb.encoder_output(), false, 0, n)),
        );
        specs.push(match fused {
            true => vae::log_weights_partials(shape, sb, rows, a.x_dim),
            false => vae::log_weights(shape, sb, rows, a.x_dim),
        });
        specs.specs
    }

    /// The decoder's backward scaled by the coefficients a, the encoder's upstream gradient,
    /// then the encoder's backward (and the conditional model's prior's, src/backend/gpu/
    /// cond.rs); `accumulate` adds into the gradient instead of writing.
    fn backward_specs<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        shape: (u64, u64),
        batch: usize,
        n: usize,
        accumulate: bool,
    ) -> Vec<DispatchSpec<'a>> {
        let (a, l) = (&self.layout.arch, &self.layout);
        let rows = batch * n;
        let mut specs = SpecList::new(arena, self.split_k(sb));
        let bb = self.backward_buffers(sb, batch, accumulate);
        let decoder = self.mlp(&l.decoder, sb.decoder_acts(a), rows);
        let dz = mlp_backward(
            &mut specs,
            &bb,
            &decoder,
            sb.decoder_output(),
            Some(&sb.coef),
            true,
        )
        .expect("decoder backward yields dz");
        specs.push(match &sb.cond {
            // The conditional model's upstream also gives the prior head's gradient.
            Some(_) => cond::cond_upstream(shape, sb, dz, batch, n, a.z_dim),
            None => vae::encoder_upstream(shape, sb, dz, batch, n, a.z_dim),
        });
        let encoder = self.mlp(&l.encoder, sb.encoder_acts(a), batch);
        mlp_backward(&mut specs, &bb, &encoder, &sb.enc_up, None, false);
        if let Some(c) = &sb.cond {
            let prior = self.mlp(&l.prior, c.prior_acts(a), batch);
            mlp_backward(&mut specs, &bb, &prior, &c.prior_up, None, false);
        }
        specs.specs
    }

    /// What the backward GEMMs of a step over `batch` datapoints bind besides their MLP's.
    pub(super) fn backward_buffers<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        batch: usize,
        accumulate: bool,
    ) -> BackwardBuffers<'a> {
        BackwardBuffers {
            grad: &self.grad,
            sb,
            inv_b: 1.0 / batch as f32,
            beta: if accumulate { 1.0 } else { 0.0 },
        }
    }

    /// The two-layer model's forward from the encoder's output on, per sample row: q(z2 | z1)
    /// with z1 drawn in its first GEMM, p(z1 | z2) with z2 drawn in its first, p(x | z1),
    /// then the log-weights (the likelihood by `log_weights` under the `lik_only` shape, the
    /// latent terms added after it).
    fn sampling_two_layer<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        shape: (u64, u64),
        lik_only: (u64, u64),
        batch: usize,
        n: usize,
    ) -> Vec<DispatchSpec<'a>> {
        let a = &self.layout.arch;
        let (d1, d2) = (a.z_dim, a.noise_dim() - a.z_dim);
        let top = sb.top.as_ref().expect("two-layer buffers exist");
        let rows = batch * n;
        let mut specs = SpecList::new(arena, self.split_k(sb));
        let l = &self.layout;
        mlp_forward(
            &mut specs,
            &self.mlp(&l.encoder2, top.encoder2_acts(a), rows),
            None,
            Some(self.latent_draw(sb, sb.encoder_output(), false, 0, n)),
        );
        mlp_forward(
            &mut specs,
            &self.mlp(&l.decoder2, top.decoder2_acts(a), rows),
            None,
            Some(self.latent_draw(sb, top.qhead(), true, d1, n)),
        );
        let decoder = self.mlp(&l.decoder, sb.decoder_acts(a), rows);
        mlp_forward(&mut specs, &decoder, None, None);
        specs.push(vae::log_weights(lik_only, sb, rows, a.x_dim));
        specs.push(vae::latent_log_weights2(shape, sb, rows, d1, d2));
        specs.specs
    }

    /// The two-layer model's backward (src/backend/cpu/hier.rs is the reference): p(x | z1)
    /// and p(z1 | z2) scaled by a, giving grad_z1 and grad_z2 of the p terms; q(z2 | z1)'s
    /// parameters from b P + c S at its head; z1's gradient through q(z2 | z1)'s input; the
    /// encoder's upstream summed over samples, then the encoder.
    fn backward_two_layer<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        shape: (u64, u64),
        batch: usize,
        n: usize,
        accumulate: bool,
    ) -> Vec<DispatchSpec<'a>> {
        let a = &self.layout.arch;
        let (d1, d2) = (a.z_dim, a.noise_dim() - a.z_dim);
        let top = sb.top.as_ref().expect("two-layer buffers exist");
        let rows = batch * n;
        let l = &self.layout;
        let mut specs = SpecList::new(arena, self.split_k(sb));
        let bb = self.backward_buffers(sb, batch, accumulate);
        let coef = Some(&sb.coef);
        let decoder = self.mlp(&l.decoder, sb.decoder_acts(a), rows);
        let dz = mlp_backward(&mut specs, &bb, &decoder, sb.decoder_output(), coef, true)
            .expect("decoder backward yields dz1");
        specs.push(vae::z1_grad_lik(shape, sb, dz, rows, d1));
        let decoder2 = self.mlp(&l.decoder2, top.decoder2_acts(a), rows);
        let dz2 = mlp_backward(&mut specs, &bb, &decoder2, top.phead(), coef, true)
            .expect("decoder2 backward yields dz2");
        specs.push(vae::top_upstream(shape, sb, dz2, rows, d2));
        let encoder2 = self.mlp(&l.encoder2, top.encoder2_acts(a), rows);
        mlp_backward(&mut specs, &bb, &encoder2, &top.up2, None, false);
        let dzq = mlp_input_grad(&mut specs, &bb, &encoder2, &top.up2_in);
        specs.push(vae::encoder_upstream2(shape, sb, dzq, batch, n, d1));
        let encoder = self.mlp(&l.encoder, sb.encoder_acts(a), batch);
        mlp_backward(&mut specs, &bb, &encoder, &sb.enc_up, None, false);
        specs.specs
    }

    /// How this plan's GEMMs split k, into `sb`'s scratch.
    pub(super) fn split_k<'a>(&self, sb: &'a ShapeBuffers) -> SplitK<'a> {
        SplitK {
            grid: self.grid,
            scratch: &sb.splitk,
            floats: sb.splitk_floats,
            // The conditional model scores the pixels after its context.
            x: sb.cond.as_ref().map_or(&sb.enc[0], |c| &c.xb),
            lik_part: &sb.lik_part,
        }
    }

    pub(super) fn record(
        &self,
        enc: &mut wgpu::CommandEncoder,
        key: (usize, usize, bool),
        parts: &[Part],
    ) {
        let list = self.dispatch_list(key, parts);
        let pending = self.pending_input.borrow_mut().take();
        // A clear is a transfer command, so the compute pass ends before it and resumes after.
        for (i, segment) in list.split(Option::is_none).enumerate() {
            if i > 0 {
                self.clear_frozen(enc);
            }
            let mut pass = enc.begin_compute_pass(&Default::default());
            // The minibatch's binarization leads the first pass.
            if let (0, Some(d)) = (i, &pending) {
                d.encode(&self.ctx, &mut pass);
            }
            for d in segment.iter().flatten() {
                d.encode(&self.ctx, &mut pass);
            }
        }
    }

    /// Zeroes the gradient on the layout's frozen ranges (after backward, before the norms),
    /// so norms, clipping and Adam leave those parameters unchanged.
    pub(super) fn clear_frozen(&self, enc: &mut wgpu::CommandEncoder) {
        for r in &self.layout.frozen {
            enc.clear_buffer(&self.grad, (r.start * 4) as u64, Some((r.len() * 4) as u64));
        }
    }

    /// The dispatches `parts` of the plan for `key` stand for, in order; None marks where
    /// the frozen gradient ranges are cleared.
    pub(super) fn dispatch_list(
        &self,
        key: (usize, usize, bool),
        parts: &[Part],
    ) -> Vec<Option<&Dispatch>> {
        let plan = &self.plans[&key];
        let mut list = Vec::new();
        for part in parts {
            match part {
                Part::Forward => list.extend(plan.forward.iter().map(Some)),
                // One GEMM per encoder layer leads the forward list.
                Part::ForwardFromZ => list.extend(
                    plan.forward
                        .iter()
                        .skip(self.layout.encoder.len())
                        .map(Some),
                ),
                Part::Coefficients => list.push(Some(
                    self.active_subsets(false).unwrap_or(&plan.coefficients),
                )),
                Part::FullCoefficients => {
                    let whole = &self.full.as_ref().expect("full buffers exist").coefficients;
                    list.push(Some(self.active_subsets(true).unwrap_or(whole)))
                }
                Part::Backward => {
                    list.extend(plan.backward.iter().map(Some));
                    if !self.layout.frozen.is_empty() {
                        list.push(None);
                    }
                }
                Part::Norms => list.extend(plan.norms.iter().map(Some)),
                Part::Adam => list.push(Some(&plan.adam)),
                Part::Update => {
                    list.push(plan.norms.first());
                    list.push(Some(&plan.adam_step));
                }
                Part::Lse => list.push(Some(&plan.lse)),
            }
        }
        list
    }

    /// Records `parts` of the plan for (batch, n) and submits, or times them when profiling.
    pub(super) fn run(&self, batch: usize, n: usize, parts: &[Part]) -> Result<()> {
        if self.profiling() {
            return self.run_profiled((batch, n, false), parts);
        }
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        self.record(&mut enc, (batch, n, false), parts);
        self.ctx.submit(enc)?;
        Ok(())
    }
}
