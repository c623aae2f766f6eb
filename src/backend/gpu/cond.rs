//! The conditional model's plan (`--model cvae`, docs/design.md §2; src/backend/cpu/cond.rs
//! is the reference). Forward: the prior p(z | c) over the minibatch (its first layer reads
//! the first c_dim columns of x); the decoder's first layer split as [z, c] W^T + b =
//! z W_z^T + (c W_c^T + b), the second term once per datapoint (`cb`) and added per sample
//! row as a bias row in the epilogue of the GEMM that draws z; the rest of the decoder with
//! the Bernoulli likelihood fused on the predicted pixels; then the latent terms
//! log p(z | c) - log q(z | x, c). `cond_split` also writes c after z in every decoder input
//! row, so the decoder's backward runs on whole [z, c] rows unchanged. Backward (plan.rs,
//! `backward_specs`): the decoder scaled by a, `cond_upstream` (the encoder's upstream and
//! the prior head's gradient in one kernel), then the encoder and the prior.

use super::buffers::{z_ld, Acts, CondBuffers, ShapeBuffers};
use super::dispatch::{groups_1d, DispatchSpec, Res, UniformArena};
use super::matmul::{GemmOperands, GemmU, SpecList};
use super::mlp::mlp_forward;
use super::pipelines::PipelineId;
use super::shaders::{FLAG_BIAS, FLAG_LIK_BERNOULLI, FLAG_TANH};
use super::{vae, GpuBackend};

fn cond(sb: &ShapeBuffers) -> &CondBuffers {
    sb.cond.as_ref().expect("conditional buffers exist")
}

impl GpuBackend {
    /// The conditional model's forward from the encoder's output on, and its log-weights
    /// (the likelihood's partials under the `lik_only` shape, the latent terms after them).
    pub(super) fn sampling_cond<'a>(
        &'a self,
        sb: &'a ShapeBuffers,
        arena: &mut UniformArena,
        shape: (u64, u64),
        lik_only: (u64, u64),
        batch: usize,
        n: usize,
    ) -> Vec<DispatchSpec<'a>> {
        let (a, l) = (&self.layout.arch, &self.layout);
        let cb = cond(sb);
        let (zd, cd) = (a.z_dim, a.c_dim());
        let rows = batch * n;
        let mut specs = SpecList::new(arena, self.split_k(sb));
        mlp_forward(
            &mut specs,
            &self.mlp(&l.prior, cb.prior_acts(a), batch),
            None,
            None,
        );
        let first = &l.decoder[0];
        let single = l.decoder.len() == 1;
        // c W_c^T + b per datapoint: W_c is W's columns after z's.
        let u = GemmU {
            m: batch as u32,
            n: first.out as u32,
            k: cd as u32,
            flags: FLAG_BIAS,
            a_rs: a.x_dim as u32,
            a_cs: 1,
            b_off: (first.w + zd) as u32,
            b_rs: 1,
            b_cs: first.inp as u32,
            c_rs: first.out as u32,
            c_cs: 1,
            e_off: first.b as u32,
            alpha: 1.0,
            ..Default::default()
        };
        let ops = GemmOperands {
            a: &sb.enc[0],
            b: &self.params,
            c: &cb.cb,
            e: &self.params,
        };
        let label = format!("{} context [{batch}x{cd} . {cd}x{}]", first.name, first.out);
        specs.gemm(u, ops, label, None, None);
        specs.push(cond_split(shape, sb, batch, n, (cd, a.out_dim())));
        // z W_z^T + the datapoint's bias row, z drawn in the GEMM.
        let u = GemmU {
            m: rows as u32,
            n: first.out as u32,
            k: zd as u32,
            flags: FLAG_BIAS
                | if single {
                    FLAG_LIK_BERNOULLI
                } else {
                    FLAG_TANH
                },
            samples: n as u32,
            a_rs: z_ld(a) as u32,
            a_cs: 1,
            b_off: first.w as u32,
            b_rs: 1,
            b_cs: first.inp as u32,
            c_rs: first.out as u32,
            c_cs: 1,
            e_rs: first.out as u32,
            alpha: 1.0,
            ..Default::default()
        };
        let ops = GemmOperands {
            a: &sb.dec[0],
            b: &self.params,
            c: &sb.dec[1],
            e: &cb.cb,
        };
        let label = format!("{} forward [{rows}x{zd} . {zd}x{}]", first.name, first.out);
        let draw = self.latent_draw(sb, sb.encoder_output(), false, 0, n);
        specs.gemm(u, ops, label, None, Some(&draw));
        if !single {
            let rest = self.mlp(
                &l.decoder[1..],
                Acts {
                    bufs: &sb.dec[1..],
                    in_ld: first.out,
                },
                rows,
            );
            mlp_forward(&mut specs, &rest, Some(n), None);
        }
        specs.push(vae::log_weights_partials(lik_only, sb, rows, a.out_dim()));
        specs.push(cond_log_weights(shape, sb, rows, zd));
        specs.specs
    }
}

/// c after z in every decoder input row, and each datapoint's predicted pixels (dense).
fn cond_split<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    batch: usize,
    n: usize,
    (cd, od): (usize, usize),
) -> DispatchSpec<'a> {
    let c = cond(sb);
    let total = batch * n * cd + batch * od;
    DispatchSpec {
        pipeline: PipelineId::CondSplit,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.enc[0])),
            (2, Res::Buf(&sb.dec[0])),
            (3, Res::Buf(&c.xb)),
        ],
        count: groups_1d(total, 256),
        label: format!("context split [{batch}x{n}x{cd}]"),
        flops: 0.0,
        bytes: 8.0 * total as f64,
    }
}

/// Adds log p(z | c) - log q(z | x, c) to each row's log-weight.
fn cond_log_weights<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    rows: usize,
    zd: usize,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::CondLogWeights,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.eps)),
            (2, Res::Buf(&sb.dec[0])),
            (3, Res::Buf(sb.encoder_output())),
            (4, Res::Buf(cond(sb).prior_head())),
            (5, Res::Buf(&sb.lw)),
        ],
        count: groups_1d(rows, 64),
        label: format!("conditional latent log-weights [{rows}x{zd}]"),
        flops: 0.0,
        // eps, z, log sigma and the prior's head per dimension; the log-weight read and written.
        bytes: 4.0 * (rows * (5 * zd + 2)) as f64,
    }
}

/// The encoder output's gradient from dz (in `sb.delta[dz]`) and b, c with the prior's path
/// term, and the prior head's gradient sum_n a_n (r / sd, r^2 - 1).
pub(super) fn cond_upstream<'a>(
    shape: (u64, u64),
    sb: &'a ShapeBuffers,
    dz: usize,
    batch: usize,
    n: usize,
    zd: usize,
) -> DispatchSpec<'a> {
    let c = cond(sb);
    DispatchSpec {
        pipeline: PipelineId::CondUpstream,
        bindings: vec![
            (0, Res::Slot(shape.0, shape.1)),
            (1, Res::Buf(&sb.coef)),
            (2, Res::Buf(&sb.eps)),
            (3, Res::Buf(&sb.dec[0])),
            (4, Res::Buf(&sb.delta[dz])),
            (5, Res::Buf(sb.encoder_output())),
            (6, Res::Buf(c.prior_head())),
            (7, Res::Buf(&sb.enc_up)),
            (8, Res::Buf(&c.prior_up)),
        ],
        count: groups_1d(batch * zd, 256),
        label: format!("conditional encoder upstream [{batch}x{n}x{zd}]"),
        flops: 0.0,
        bytes: 4.0 * (3 * batch * n + 3 * batch * n * zd + 8 * batch * zd) as f64,
    }
}
