//! Device buffers whose size follows the batch shape, their (re)allocation with the plans
//! bound to them, the minibatch upload (or its binarization on the device) and the memory
//! accounting.

use super::dispatch::MAX_GROUPS;
use super::GpuBackend;
use crate::backend::{Backend, Minibatch};
use crate::model::{Arch, Linear};
use anyhow::{bail, Result};

/// Buffers whose size follows the batch shape, allocated for the largest shape seen.
pub(super) struct ShapeBuffers {
    pub batch_cap: usize,
    pub rows_cap: usize,
    /// enc[0] is the minibatch x, enc[i] the output of encoder layer i.
    pub enc: Vec<wgpu::Buffer>,
    /// dec[0] is z ([rows, z_ld]), dec[i] the output of decoder layer i (the last: logits,
    /// then x - sigmoid).
    pub dec: Vec<wgpu::Buffer>,
    /// The two-layer model's per-row buffers (None for one layer).
    pub top: Option<TopBuffers>,
    pub cond: Option<CondBuffers>,
    /// [rows, noise_dim]: every row's normals (z_dim, then the top layer's z2_dim).
    pub eps: wgpu::Buffer,
    pub lw: wgpu::Buffer,
    pub coef: wgpu::Buffer,
    pub objective: wgpu::Buffer,
    pub enc_up: wgpu::Buffer,
    pub delta: [wgpu::Buffer; 2],
    pub ones: wgpu::Buffer,
    /// [batch, 2]: running (max, sum) of the evaluation log-sum-exp.
    pub lse_state: wgpu::Buffer,
    /// Split-K GEMMs' partial products and row sums, shared by every split of a plan (one
    /// runs after the other); `splitk_floats` of them.
    pub splitk: wgpu::Buffer,
    pub splitk_floats: usize,
    /// The gradient norms' partial sums of squares (`GpuBackend::norm_layout`).
    pub norm_partials: wgpu::Buffer,
    /// [rows, ceil(x_dim / 64)]: the fused likelihood's row sums per column tile.
    pub lik_part: wgpu::Buffer,
}

/// An MLP's activations: bufs[0] its input, with rows `in_ld` apart (a padded latent's
/// stride, else the input's width), bufs[i] the output of layer i, dense.
#[derive(Clone, Copy)]
pub(super) struct Acts<'a> {
    pub bufs: &'a [wgpu::Buffer],
    pub in_ld: usize,
}

impl<'a> Acts<'a> {
    /// Layer i's input and its row stride.
    pub(super) fn input(&self, i: usize, l: &Linear) -> (&'a wgpu::Buffer, usize) {
        (&self.bufs[i], if i == 0 { self.in_ld } else { l.inp })
    }
}

/// The per-row buffers of the two-stochastic-layer model (`--model hvae`).
pub(super) struct TopBuffers {
    /// q(z2 | z1): enc2[0] is z1 (the same buffer as `dec[0]`), enc2[i] the output of
    /// encoder2 layer i (the last: mu2, log sigma2 per row).
    pub enc2: Vec<wgpu::Buffer>,
    /// p(z1 | z2): dec2[0] is z2, dec2[i] the output of decoder2 layer i (the last: the
    /// mean and log sd of z1, then the gradient of log p(z1 | z2) at them).
    pub dec2: Vec<wgpu::Buffer>,
    /// [rows, z]: grad_z1 [log p(x | z1) + log p(z1 | z2)].
    pub g1: wgpu::Buffer,
    /// [rows, 2 z2]: q(z2 | z1)'s head gradient for its parameters (b P + c S), and for its
    /// input z1.
    pub up2: wgpu::Buffer,
    pub up2_in: wgpu::Buffer,
}

impl TopBuffers {
    /// q(z2 | z1)'s activations, from z1.
    pub(super) fn encoder2_acts(&self, a: &Arch) -> Acts<'_> {
        Acts {
            bufs: &self.enc2,
            in_ld: z_ld(a),
        }
    }
    /// p(z1 | z2)'s activations, from z2 (dense).
    pub(super) fn decoder2_acts(&self, a: &Arch) -> Acts<'_> {
        Acts {
            bufs: &self.dec2,
            in_ld: a.noise_dim() - a.z_dim,
        }
    }
    pub(super) fn qhead(&self) -> &wgpu::Buffer {
        self.enc2.last().expect("encoder2 output")
    }
    pub(super) fn phead(&self) -> &wgpu::Buffer {
        self.dec2.last().expect("decoder2 output")
    }
    /// Its own buffers (enc2[0] belongs to the decoder's activations).
    fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.enc2[1..]
            .iter()
            .chain(&self.dec2)
            .chain([&self.g1, &self.up2, &self.up2_in])
    }
}

/// The conditional model's buffers (src/backend/gpu/cond.rs): the prior's activations, its
/// first entry the minibatch x (the prior reads the first c_dim columns), the decoder's first
/// layer's bias row per datapoint c W_c^T + b, the predicted pixels of each datapoint
/// (dense, for the fused likelihood) and the prior head's gradient summed over samples.
pub(super) struct CondBuffers {
    pub prior: Vec<wgpu::Buffer>,
    pub cb: wgpu::Buffer,
    pub xb: wgpu::Buffer,
    pub prior_up: wgpu::Buffer,
}

impl CondBuffers {
    pub(super) fn prior_acts(&self, a: &Arch) -> Acts<'_> {
        Acts {
            bufs: &self.prior,
            in_ld: a.x_dim,
        }
    }
    pub(super) fn prior_head(&self) -> &wgpu::Buffer {
        self.prior.last().expect("prior output")
    }
    fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.prior[1..]
            .iter()
            .chain([&self.cb, &self.xb, &self.prior_up])
    }
}

/// The row stride of z (z1 of the two-layer model) on the device, and of its gradient from
/// the decoder (and from q(z2 | z1)): z_dim rounded up to whole vec4s, so that the GEMMs
/// into and out of the latent (a 50-wide one, say) load it as vec4s. Nothing uses the
/// padding: the GEMMs' vec4 loads zero it, the other kernels skip it. The conditional
/// model's rows are [z, c] (its decoder's input), rounded up likewise.
pub(super) fn z_ld(a: &Arch) -> usize {
    // The conditional model's decoder reads [z, c]: c follows z in each row.
    (a.z_dim + a.c_dim()).next_multiple_of(4)
}

/// The widest layer of `a`, or z's padded row: the per-row width of the backward's delta
/// buffers.
fn widest(a: &Arch) -> usize {
    a.encoder_dims()
        .into_iter()
        .chain(a.decoder_dims())
        .chain(a.encoder2_dims())
        .chain(a.decoder2_dims())
        .chain([z_ld(a)])
        .max()
        .unwrap_or(1)
}

/// Floats of the shape buffers per sample row of `a` (what `GpuBackend::alloc_shape`
/// allocates `rows_cap` times), for sizing evaluation passes.
pub(super) fn row_floats(a: &Arch) -> usize {
    let top = a.top.as_ref().map_or(0, |t| {
        a.encoder2_dims()[1..].iter().sum::<usize>()
            + a.decoder2_dims().iter().sum::<usize>()
            + a.z_dim
            + 4 * t.z_dim
    });
    // Decoder activations, noise, log-weights, 3 coefficients, ones, two deltas, the
    // likelihood's partials.
    a.decoder_dims().iter().sum::<usize>()
        + (z_ld(a) - a.z_dim)
        + a.noise_dim()
        + 5
        + 2 * widest(a)
        + a.x_dim.div_ceil(64)
        + top
}

impl ShapeBuffers {
    /// The encoder's activations, from the minibatch.
    pub(super) fn encoder_acts(&self, a: &Arch) -> Acts<'_> {
        Acts {
            bufs: &self.enc,
            in_ld: a.x_dim,
        }
    }

    /// The decoder's activations, from z.
    pub(super) fn decoder_acts(&self, a: &Arch) -> Acts<'_> {
        Acts {
            bufs: &self.dec,
            in_ld: z_ld(a),
        }
    }

    /// The encoder's output: (mu, log sigma) per datapoint.
    pub(super) fn encoder_output(&self) -> &wgpu::Buffer {
        self.enc.last().expect("encoder output")
    }

    /// The decoder's output: logits, then the likelihood's gradient.
    pub(super) fn decoder_output(&self) -> &wgpu::Buffer {
        self.dec.last().expect("decoder output")
    }

    fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.enc
            .iter()
            .chain(&self.dec)
            .chain([
                &self.eps,
                &self.lw,
                &self.coef,
                &self.objective,
                &self.enc_up,
                &self.ones,
                &self.lse_state,
                &self.splitk,
                &self.norm_partials,
                &self.lik_part,
            ])
            .chain(self.delta.iter())
            .chain(self.top.iter().flat_map(TopBuffers::buffers))
            .chain(self.cond.iter().flat_map(CondBuffers::buffers))
    }
}

impl GpuBackend {
    pub(super) fn widest(&self) -> usize {
        widest(&self.layout.arch)
    }

    /// Shape buffers that hold (batch, n), and the plan for (batch, n, accumulate).
    pub(super) fn ensure_shape(&mut self, batch: usize, n: usize, accumulate: bool) -> Result<()> {
        let rows = batch * n;
        if rows > self.max_rows() {
            bail!(
                "batch x samples = {rows} rows exceeds what this adapter binds at once ({}); lower --batch or --k",
                self.max_rows()
            );
        }
        if batch as u32 > MAX_GROUPS {
            bail!("--batch {batch} exceeds {MAX_GROUPS} datapoints per GPU step");
        }
        let fits = self
            .shape
            .as_ref()
            .is_some_and(|s| s.batch_cap >= batch && s.rows_cap >= rows);
        if !fits {
            let (bc, rc) = match &self.shape {
                Some(s) => (s.batch_cap.max(batch), s.rows_cap.max(rows)),
                None => (batch, rows),
            };
            self.shape = Some(self.alloc_shape(bc, rc));
            // Plans, whole-step and subset dispatches bind the old buffers.
            self.plans.clear();
            self.full = None;
            self.subsets.clear();
        }
        if !self.plans.contains_key(&(batch, n, accumulate)) {
            let plan = self.build_plan(batch, n, accumulate);
            self.plans.insert((batch, n, accumulate), plan);
        }
        self.peak_bytes = self.peak_bytes.max(self.live_bytes());
        Ok(())
    }

    /// Shape buffers for up to `bc` datapoints and `rc` rows.
    fn alloc_shape(&self, bc: usize, rc: usize) -> ShapeBuffers {
        let a = &self.layout.arch;
        let ctx = &self.ctx;
        let widest = self.widest();
        let ones = ctx.storage("ones", rc.max(bc));
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size) as usize;
        let splitk_floats = self.grid.scratch_floats(limit / 4);
        ctx.queue
            .write_buffer(&ones, 0, bytemuck::cast_slice(&vec![1.0f32; rc.max(bc)]));
        let mut dims = a.decoder_dims();
        dims[0] = z_ld(a);
        let dec: Vec<wgpu::Buffer> = dims
            .iter()
            .map(|&d| ctx.storage("decoder activations", rc * d))
            .collect();
        let top = a.top.as_ref().map(|t| {
            let mut enc2 = vec![dec[0].clone()];
            enc2.extend(
                a.encoder2_dims()[1..]
                    .iter()
                    .map(|&d| ctx.storage("encoder2 activations", rc * d)),
            );
            TopBuffers {
                enc2,
                dec2: a
                    .decoder2_dims()
                    .iter()
                    .map(|&d| ctx.storage("decoder2 activations", rc * d))
                    .collect(),
                g1: ctx.storage("z1 gradient", rc * a.z_dim),
                up2: ctx.storage("encoder2 upstream", rc * 2 * t.z_dim),
                up2_in: ctx.storage("encoder2 input upstream", rc * 2 * t.z_dim),
            }
        });
        let enc: Vec<wgpu::Buffer> = a
            .encoder_dims()
            .iter()
            .map(|&d| ctx.storage("encoder activations", bc * d))
            .collect();
        let cond = a.cond.map(|_| {
            let mut prior = vec![enc[0].clone()];
            prior.extend(
                a.prior_dims()[1..]
                    .iter()
                    .map(|&d| ctx.storage("prior activations", bc * d)),
            );
            CondBuffers {
                prior,
                cb: ctx.storage("decoder context bias", bc * a.decoder_dims()[1]),
                xb: ctx.storage("predicted pixels", bc * a.out_dim()),
                prior_up: ctx.storage("prior upstream", bc * 2 * a.z_dim),
            }
        });
        ShapeBuffers {
            batch_cap: bc,
            rows_cap: rc,
            enc,
            dec,
            top,
            cond,
            eps: ctx.storage("eps", rc * a.noise_dim()),
            lw: ctx.storage("log-weights", rc),
            coef: ctx.storage("coefficients", 3 * rc),
            objective: ctx.storage("objective", bc),
            enc_up: ctx.storage("encoder upstream", bc * 2 * a.z_dim),
            delta: [
                ctx.storage("delta 0", rc.max(bc) * widest),
                ctx.storage("delta 1", rc.max(bc) * widest),
            ],
            ones,
            lse_state: ctx.storage("lse state", 2 * bc),
            splitk: ctx.storage("split-k partials", splitk_floats),
            splitk_floats,
            norm_partials: ctx.storage("gradient norm partials", self.norm_layout().2.max(1)),
            lik_part: ctx.storage("likelihood partials", rc * a.x_dim.div_ceil(64)),
        }
    }

    /// The minibatch into the encoder's input: the host's values uploaded, or the held
    /// training images binarized on the device (`input.rs`).
    pub(super) fn upload_x(&self, x: Minibatch<'_>, batch: usize) -> Result<()> {
        // A binarization still pending would overwrite these values when it runs.
        self.flush_input()?;
        let x = match x {
            Minibatch::Host(x) => x,
            Minibatch::Images(rows) => return self.binarize_rows(&rows, batch),
        };
        let xd = self.layout.arch.x_dim;
        if x.len() != batch * xd {
            bail!(
                "input has {} values, expected batch {batch} x {xd}",
                x.len()
            );
        }
        let sb = self.shape.as_ref().expect("shape buffers exist");
        self.ctx
            .queue
            .write_buffer(&sb.enc[0], 0, bytemuck::cast_slice(x));
        Ok(())
    }

    /// Bytes of every live device buffer.
    pub(super) fn live_bytes(&self) -> u64 {
        let mut total: u64 = [
            &self.params,
            &self.grad,
            &self.moments,
            &self.norms,
            &self.stats,
            &self.noise_u,
            &self.program_u,
            &self.adam_u,
            &self.lse_u,
        ]
        .iter()
        .map(|b| b.size())
        .sum();
        if let Some(sb) = &self.shape {
            total += sb.buffers().map(|b| b.size()).sum::<u64>();
        }
        if let Some(f) = &self.full {
            total += f.lw.size() + f.coef.size() + f.uniforms.size();
        }
        if let Some(c) = &self.chains {
            total += c.bytes();
        }
        if let Some(im) = &self.images {
            total += im.bytes();
        }
        total += self
            .subsets
            .values()
            .map(|s| s.terms.size() + s.scratch.size())
            .sum::<u64>();
        total + self.plans.values().map(|p| p._uniforms.size()).sum::<u64>()
    }
}
