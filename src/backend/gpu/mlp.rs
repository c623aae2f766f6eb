//! The dispatches of an MLP's forward and backward passes over device buffers: one GEMM per
//! layer forward (bias and tanh fused), and per layer backward the weight gradient (its bias
//! gradient folded into a split, else `column_sums`) and the input gradient.

use super::buffers::{Acts, ShapeBuffers};
use super::dispatch::{DispatchSpec, Res, UniformArena};
use super::matmul::{check_extent, last_element, GemmOperands, GemmU, LatentDraw, SpecList};
use super::pipelines::PipelineId;
use super::shaders::{FLAG_BIAS, FLAG_LIK_BERNOULLI, FLAG_SCALE_K, FLAG_TANH, FLAG_TANH_GRAD};
use crate::model::Linear;

/// An MLP over `rows` rows on the device: its layers (offsets into `params`) and the
/// buffers of its activations.
#[derive(Clone, Copy)]
pub(super) struct Mlp<'a> {
    pub params: &'a wgpu::Buffer,
    pub layers: &'a [Linear],
    pub acts: Acts<'a>,
    pub rows: usize,
}

/// Forward through layer `i` of `mlp`: its output = act(input W^T + b), bias and tanh
/// fused (tanh on hidden layers); with `lik` (sample rows per datapoint) the Bernoulli
/// likelihood too; with `draw`, the input is drawn in the GEMM (and stored).
fn linear_fwd<'a>(
    specs: &mut SpecList<'a, '_>,
    mlp: &Mlp<'a>,
    i: usize,
    lik: Option<usize>,
    draw: Option<&LatentDraw<'a>>,
) {
    let (l, m) = (&mlp.layers[i], mlp.rows);
    let hidden = i + 1 < mlp.layers.len();
    let (inp, inp_ld) = mlp.acts.input(i, l);
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
    let ops = GemmOperands {
        a: inp,
        b: mlp.params,
        c: &mlp.acts.bufs[i + 1],
        e: mlp.params,
    };
    let label = format!("{} forward [{m}x{} . {}x{}]", l.name, l.inp, l.inp, l.out);
    specs.gemm(u, ops, label, None, draw);
}

/// Forward through an MLP: acts[i + 1] = tanh(acts[i] W^T + b) for hidden layers, the last
/// layer linear (its output transform is the caller's kernel, unless `lik`: then its GEMM
/// also scores the Bernoulli likelihood with `lik` rows per datapoint). With `draw`, the
/// input acts[0] is a latent layer the first GEMM draws.
pub(super) fn mlp_forward<'a>(
    specs: &mut SpecList<'a, '_>,
    mlp: &Mlp<'a>,
    lik: Option<usize>,
    draw: Option<LatentDraw<'a>>,
) {
    for i in 0..mlp.layers.len() {
        let last = i + 1 == mlp.layers.len();
        linear_fwd(
            specs,
            mlp,
            i,
            lik.filter(|_| last),
            draw.as_ref().filter(|_| i == 0),
        );
    }
}

/// What every backward GEMM binds besides its MLP's buffers and its own operands.
pub(super) struct BackwardBuffers<'a> {
    pub grad: &'a wgpu::Buffer,
    pub sb: &'a ShapeBuffers,
    pub inv_b: f32,
    /// 0 to overwrite the gradient, 1 to add to it (later chunks of a chunked step).
    pub beta: f32,
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
pub(super) fn mlp_backward<'a>(
    specs: &mut SpecList<'a, '_>,
    bb: &BackwardBuffers<'a>,
    mlp: &Mlp<'a>,
    delta0: &'a wgpu::Buffer,
    scale: Option<&'a wgpu::Buffer>,
    want_input: bool,
) -> Option<usize> {
    let (sb, m) = (bb.sb, mlp.rows);
    let mut cur: Option<usize> = None; // None: delta0, Some(i): sb.delta[i]
    for (i, l) in mlp.layers.iter().enumerate().rev() {
        let delta = bb.delta(delta0, cur);
        // Column weights of the bias gradient: a per sample, or ones.
        let (flags, e_buf) = match scale {
            Some(s) => (FLAG_SCALE_K, s),
            None => (0, &sb.ones),
        };
        let (act, act_ld) = mlp.acts.input(i, l);
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
        let ops = GemmOperands {
            a: delta,
            b: act,
            c: bb.grad,
            e: e_buf,
        };
        let label = format!("{} weight grad [{}x{m} . {m}x{}]", l.name, l.out, l.inp);
        let folded = specs.gemm(wg, ops, label, Some(l.b), None);
        // Split, the weight gradient's reduce wrote the bias gradient too.
        if !folded {
            let spec = bias_grad(bb, specs.arena, l, m, delta, e_buf, scale.is_some());
            specs.push(spec);
        }
        if i > 0 || want_input {
            cur = Some(input_grad(specs, bb, mlp, i, delta, cur));
        }
    }
    cur
}

/// The gradient at the input of layer `i` of `mlp` from `delta` at its output, back
/// through the tanh before it when `i > 0`, into the ping-pong buffer `cur` does not hold,
/// with the input's row stride; returns that buffer's index.
fn input_grad<'a>(
    specs: &mut SpecList<'a, '_>,
    bb: &BackwardBuffers<'a>,
    mlp: &Mlp<'a>,
    i: usize,
    delta: &'a wgpu::Buffer,
    cur: Option<usize>,
) -> usize {
    let (l, m) = (&mlp.layers[i], mlp.rows);
    let (act, act_ld) = mlp.acts.input(i, l);
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
    let ops = GemmOperands {
        a: delta,
        b: mlp.params,
        c: &bb.sb.delta[next],
        e: act,
    };
    let label = format!(
        "{} input grad [{m}x{} . {}x{}]",
        l.name, l.out, l.out, l.inp
    );
    specs.gemm(ig, ops, label, None, None);
    next
}

/// The gradient at an MLP's input from `delta0` at its (linear) output, its parameters
/// fixed: input-gradient GEMMs only, no weight gradients (the two-layer model's path from
/// z2 back into z1 through q(z2 | z1)). Returns the ping-pong buffer holding it.
pub(super) fn mlp_input_grad<'a>(
    specs: &mut SpecList<'a, '_>,
    bb: &BackwardBuffers<'a>,
    mlp: &Mlp<'a>,
    delta0: &'a wgpu::Buffer,
) -> usize {
    let mut cur: Option<usize> = None;
    for i in (0..mlp.layers.len()).rev() {
        let delta = bb.delta(delta0, cur);
        cur = Some(input_grad(specs, bb, mlp, i, delta, cur));
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
