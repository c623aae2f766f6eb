//! The dispatches of an MLP's forward and backward passes over device buffers: one GEMM per
//! layer forward (bias and tanh fused), and per layer backward the weight gradient (its bias
//! gradient folded into a split, else `column_sums`) and the input gradient.

use super::buffers::{Acts, ShapeBuffers};
use super::dispatch::{DispatchSpec, Res, UniformArena};
use super::matmul::{check_extent, gemm_step, last_element, GemmU, LatentDraw, SplitK};
use super::pipelines::PipelineId;
use super::shaders::{FLAG_BIAS, FLAG_LIK_BERNOULLI, FLAG_SCALE_K, FLAG_TANH, FLAG_TANH_GRAD};
use crate::model::Linear;

/// Forward through one Linear over `m` rows: dst = act(inp W^T + b), bias and tanh fused;
/// with `lik` (sample rows per datapoint) the Bernoulli likelihood too; with `draw`, `inp`
/// is drawn in the GEMM (and stored). `inp_ld`: the row stride of `inp`.
#[allow(clippy::too_many_arguments)]
fn linear_fwd<'a>(
    params: &'a wgpu::Buffer,
    arena: &mut UniformArena,
    split: &SplitK<'a>,
    out: &mut Vec<DispatchSpec<'a>>,
    l: &Linear,
    m: usize,
    (inp, inp_ld): (&'a wgpu::Buffer, usize),
    dst: &'a wgpu::Buffer,
    hidden: bool,
    lik: Option<usize>,
    draw: Option<&LatentDraw<'a>>,
) {
    let u = GemmU {
        m: m as u32,
        n: l.out as u32,
        k: l.inp as u32,
        flags: FLAG_BIAS
            | if hidden { FLAG_TANH } else { 0 }
            | if lik.is_some() { FLAG_LIK_BERNOULLI } else { 0 },
        samples: lik.unwrap_or(1) as u32,
        a_rs: inp_ld as u32,
        a_cs: 1,
        b_off: l.w as u32,
        b_rs: 1,
        b_cs: l.inp as u32,
        c_rs: l.out as u32,
        c_cs: 1,
        e_off: l.b as u32,
        alpha: 1.0,
        ..Default::default()
    };
    gemm_step(
        arena,
        split,
        out,
        u,
        inp,
        params,
        dst,
        params,
        format!("{} forward [{m}x{} . {}x{}]", l.name, l.inp, l.inp, l.out),
        None,
        draw,
    );
}

/// Forward through an MLP over `m` rows: acts[i + 1] = tanh(acts[i] W^T + b) for hidden
/// layers, the last layer linear (its output transform is the caller's kernel, unless
/// `lik`: then its GEMM also scores the Bernoulli likelihood with `lik` rows per datapoint).
/// With `draw`, the input acts[0] is a latent layer the first GEMM draws.
#[allow(clippy::too_many_arguments)]
pub(super) fn mlp_forward<'a>(
    params: &'a wgpu::Buffer,
    arena: &mut UniformArena,
    split: SplitK<'a>,
    out: &mut Vec<DispatchSpec<'a>>,
    layers: &[Linear],
    m: usize,
    acts: Acts<'a>,
    lik: Option<usize>,
    draw: Option<LatentDraw<'a>>,
) {
    for (i, l) in layers.iter().enumerate() {
        let last = i + 1 == layers.len();
        linear_fwd(
            params,
            arena,
            &split,
            out,
            l,
            m,
            acts.input(i, l),
            &acts.bufs[i + 1],
            !last,
            lik.filter(|_| last),
            draw.as_ref().filter(|_| i == 0),
        );
    }
}

/// What every backward GEMM binds besides its own operands.
pub(super) struct BackwardBuffers<'a> {
    pub params: &'a wgpu::Buffer,
    pub grad: &'a wgpu::Buffer,
    pub sb: &'a ShapeBuffers,
    pub inv_b: f32,
    /// 0 to overwrite the gradient, 1 to add to it (later chunks of a chunked step).
    pub beta: f32,
    pub split: SplitK<'a>,
}

impl<'a> BackwardBuffers<'a> {
    /// The gradient at a layer's output: `delta0` for the last layer (`cur` None), else
    /// the ping-pong buffer `cur` the layer after it wrote.
    fn delta(&self, delta0: &'a wgpu::Buffer, cur: Option<usize>) -> &'a wgpu::Buffer {
        cur.map_or(delta0, |j| &self.sb.delta[j])
    }
}

/// Backward through an MLP whose output gradient is in `delta0`; weight gradients averaged
/// over the batch and, for the decoder, scaled per sample by `scale` (the coefficients a).
/// Returns which ping-pong buffer holds the input gradient (rows `acts.in_ld` apart), when
/// one was computed.
#[allow(clippy::too_many_arguments)]
pub(super) fn mlp_backward<'a>(
    bb: &BackwardBuffers<'a>,
    arena: &mut UniformArena,
    out: &mut Vec<DispatchSpec<'a>>,
    layers: &[Linear],
    acts: Acts<'a>,
    delta0: &'a wgpu::Buffer,
    m: usize,
    scale: Option<&'a wgpu::Buffer>,
    want_input: bool,
) -> Option<usize> {
    let sb = bb.sb;
    let mut cur: Option<usize> = None; // None: delta0, Some(i): sb.delta[i]
    for (i, l) in layers.iter().enumerate().rev() {
        let delta = bb.delta(delta0, cur);
        // Column weights of the bias gradient: a per sample, or ones.
        let (flags, e_buf) = match scale {
            Some(s) => (FLAG_SCALE_K, s),
            None => (0, &sb.ones),
        };
        let (act, act_ld) = acts.input(i, l);
        let wg = GemmU {
            m: l.out as u32,
            n: l.inp as u32,
            k: m as u32,
            flags,
            a_rs: 1,
            a_cs: l.out as u32,
            b_rs: act_ld as u32,
            b_cs: 1,
            c_off: l.w as u32,
            c_rs: l.inp as u32,
            c_cs: 1,
            alpha: bb.inv_b,
            beta: bb.beta,
            ..Default::default()
        };
        let folded = gemm_step(
            arena,
            &bb.split,
            out,
            wg,
            delta,
            act,
            bb.grad,
            e_buf,
            format!("{} weight grad [{}x{m} . {m}x{}]", l.name, l.out, l.inp),
            Some(l.b),
            None,
        );
        // Split, the weight gradient's reduce wrote the bias gradient too.
        if !folded {
            out.push(bias_grad(bb, arena, l, m, delta, e_buf, scale.is_some()));
        }
        if i > 0 || want_input {
            cur = Some(input_grad(
                bb,
                arena,
                out,
                l,
                i,
                m,
                delta,
                (act, act_ld),
                cur,
            ));
        }
    }
    cur
}

/// The gradient at the input of layer `i` (`l`) over `m` rows from `delta` at its output,
/// back through the tanh before it when `i > 0`, into the ping-pong buffer `cur` does not
/// hold, with the input's row stride `act_ld`; returns that buffer's index.
#[allow(clippy::too_many_arguments)]
fn input_grad<'a>(
    bb: &BackwardBuffers<'a>,
    arena: &mut UniformArena,
    out: &mut Vec<DispatchSpec<'a>>,
    l: &Linear,
    i: usize,
    m: usize,
    delta: &'a wgpu::Buffer,
    (act, act_ld): (&'a wgpu::Buffer, usize),
    cur: Option<usize>,
) -> usize {
    let next = match cur {
        Some(0) => 1,
        _ => 0,
    };
    let ig = GemmU {
        m: m as u32,
        n: l.inp as u32,
        k: l.out as u32,
        flags: if i > 0 { FLAG_TANH_GRAD } else { 0 },
        a_rs: l.out as u32,
        a_cs: 1,
        b_off: l.w as u32,
        b_rs: l.inp as u32,
        b_cs: 1,
        c_rs: act_ld as u32,
        c_cs: 1,
        // The activations of a tanh backward (i > 0) are dense.
        e_rs: l.inp as u32,
        alpha: 1.0,
        ..Default::default()
    };
    gemm_step(
        arena,
        &bb.split,
        out,
        ig,
        delta,
        bb.params,
        &bb.sb.delta[next],
        act,
        format!(
            "{} input grad [{m}x{} . {}x{}]",
            l.name, l.out, l.out, l.inp
        ),
        None,
        None,
    );
    next
}

/// The gradient at an MLP's input over `m` rows from `delta0` at its (linear) output, its
/// parameters fixed: input-gradient GEMMs only, no weight gradients (the two-layer model's
/// path from z2 back into z1 through q(z2 | z1)). Returns the ping-pong buffer holding it.
pub(super) fn mlp_input_grad<'a>(
    bb: &BackwardBuffers<'a>,
    arena: &mut UniformArena,
    out: &mut Vec<DispatchSpec<'a>>,
    layers: &[Linear],
    acts: Acts<'a>,
    delta0: &'a wgpu::Buffer,
    m: usize,
) -> usize {
    let mut cur: Option<usize> = None;
    for (i, l) in layers.iter().enumerate().rev() {
        let delta = bb.delta(delta0, cur);
        cur = Some(input_grad(
            bb,
            arena,
            out,
            l,
            i,
            m,
            delta,
            acts.input(i, l),
            cur,
        ));
    }
    cur.expect("an MLP has layers")
}

/// Bias gradient: column sums of delta [m, out], weighted by a where the weight gradient is
/// (the ones buffer otherwise, so the flag alone decides).
fn bias_grad<'a>(
    bb: &BackwardBuffers<'a>,
    arena: &mut UniformArena,
    l: &Linear,
    m: usize,
    delta: &'a wgpu::Buffer,
    e_buf: &'a wgpu::Buffer,
    scaled: bool,
) -> DispatchSpec<'a> {
    let bg = GemmU {
        m: m as u32,
        n: l.out as u32,
        flags: if scaled { FLAG_SCALE_K } else { 0 },
        a_rs: l.out as u32,
        a_cs: 1,
        c_off: l.b as u32,
        c_cs: 1,
        alpha: bb.inv_b,
        beta: bb.beta,
        ..Default::default()
    };
    let label = format!("{} bias grad [column sums of {m}x{}]", l.name, l.out);
    check_extent(&label, "A", delta, last_element(0, bg.m, bg.a_rs, bg.n, 1));
    if scaled {
        check_extent(
            &label,
            "scale",
            e_buf,
            last_element(bg.e_off, bg.m, 1, 1, 0),
        );
    }
    check_extent(
        &label,
        "C",
        bb.grad,
        last_element(bg.c_off, 1, 0, bg.n, bg.c_cs),
    );
    let slot = arena.push(&bg);
    DispatchSpec {
        pipeline: PipelineId::ColumnSums,
        bindings: vec![
            (0, Res::Slot(slot.0, slot.1)),
            (1, Res::Buf(delta)),
            (2, Res::Buf(e_buf)),
            (3, Res::Buf(bb.grad)),
            (4, Res::Buf(e_buf)),
        ],
        count: [l.out.div_ceil(64) as u32, 1, 1],
        label,
        flops: 2.0 * (m * l.out) as f64,
        bytes: 4.0 * (m * l.out + m + l.out * (1 + bb.beta as usize)) as f64,
    }
}
