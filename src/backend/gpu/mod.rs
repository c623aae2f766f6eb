//! The wgpu backend: the whole training step in WGSL compute shaders. The host builds, once
//! per batch shape, a plan of dispatches with their bind groups and uniforms; a training step
//! then writes the minibatch and three small uniforms, records the plan into one compute
//! pass and submits once, reading nothing back.

mod chains;
pub mod context;
pub mod shaders;

use super::{Backend, ChainOutcome, GradNorms, Noise, StepStats, Timing};
use crate::coupling::CouplingConfig;
use crate::estimators::{CoefficientProgram, EncoderRule};
use crate::model::{Layout, Likelihood, Linear};
use crate::optim::{AdamConfig, AdamState};
use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};
pub use context::{list_adapters, AdapterChoice, AdapterSummary};
use context::{GpuContext, KernelId};
use std::cell::RefCell;
use std::collections::HashMap;

const FLAG_BIAS: u32 = 1;
const FLAG_TANH: u32 = 2;
const FLAG_SCALE_K: u32 = 4;
const FLAG_TANH_GRAD: u32 = 8;
const FLAG_A_KCONTIG: u32 = 16;
const FLAG_B_KCONTIG: u32 = 32;
/// Largest workgroup count per dimension every adapter supports.
const MAX_GROUPS: u32 = 65_535;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct GemmU {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a_off: u32,
    a_rs: u32,
    a_cs: u32,
    e_off: u32,
    b_off: u32,
    b_rs: u32,
    b_cs: u32,
    e_rs: u32,
    c_off: u32,
    c_rs: u32,
    c_cs: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ShapeU {
    batch: u32,
    n: u32,
    rows: u32,
    x_dim: u32,
    z_dim: u32,
    /// 0 Bernoulli, 1 Gaussian (shaders/vae.wgsl, Shape).
    lik: u32,
    inv_var: f32,
    log_norm: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct NoiseU {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    step: u32,
    first_datapoint: u32,
    first_sample: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ProgramU {
    batch: u32,
    n: u32,
    mode: u32,
    n_terms: u32,
    pa: [f32; 4],
    pb: [f32; 4],
    pc: [f32; 4],
    /// Subset programs: (encoder rule, DReG block size, scratch slots per datapoint, 0).
    extra: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct AdamU {
    total: u32,
    encoder_len: u32,
    amsgrad: u32,
    batch: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    clip_encoder: f32,
    clip_decoder: f32,
    _pad: f32,
}

fn program_uniform(p: &CoefficientProgram, batch: usize, n: usize) -> ProgramU {
    let v = |x: [f32; 3]| [x[0], x[1], x[2], 0.0];
    let mut u = ProgramU {
        batch: batch as u32,
        n: n as u32,
        ..Default::default()
    };
    match p {
        CoefficientProgram::Softmax {
            a,
            b,
            c,
            mean_objective,
        } => {
            u.mode = if *mean_objective { 1 } else { 0 };
            u.pa = v(*a);
            u.pb = v(*b);
            u.pc = v(*c);
        }
        CoefficientProgram::Jackknife { dreg } => u.mode = if *dreg { 3 } else { 2 },
        CoefficientProgram::Subsets { .. } => {
            let (terms, rule, dreg_size, stride) = subset_terms(p, n);
            u.mode = 4;
            u.n_terms = terms.len() as u32;
            u.extra = [rule, dreg_size, stride as u32, 0];
        }
    }
    u
}

/// A subset program as the kernel reads it: (terms as (blocks, size, weight, 0), encoder
/// rule, DReG block size, scratch slots per datapoint). DReG's blocks ride along as a last
/// term of weight 0, so the kernel finds their log-sum-exps where it finds every term's.
fn subset_terms(p: &CoefficientProgram, n: usize) -> (Vec<[f32; 4]>, u32, u32, usize) {
    let CoefficientProgram::Subsets { terms, encoder } = p else {
        return (Vec::new(), 0, 0, 0);
    };
    let mut out: Vec<[f32; 4]> = terms
        .iter()
        .map(|t| {
            [
                if t.blocks { 1.0 } else { 0.0 },
                t.size as f32,
                t.weight as f32,
                0.0,
            ]
        })
        .collect();
    let (rule, dreg_size) = match encoder {
        EncoderRule::DregBlocks { size } => {
            out.push([1.0, *size as f32, 0.0, 0.0]);
            (0, *size)
        }
        EncoderRule::UnbiasedRws => (1, 0),
        EncoderRule::Variance => (2, 0),
    };
    let stride = out
        .iter()
        .map(|t| if t[0] > 0.5 { n / t[1] as usize } else { 1 })
        .sum();
    (out, rule, dreg_size, stride)
}
/// Log-weights and coefficients over all N samples of a chunked training step, with the
/// coefficient dispatch bound to them.
struct FullBuffers {
    batch: usize,
    n: usize,
    lw: wgpu::Buffer,
    coef: wgpu::Buffer,
    coefficients: Dispatch,
}

/// Timing state while profiling: a timestamp query set (two per dispatch) and its resolve
/// buffer, or None where the adapter lacks TIMESTAMP_QUERY (then wall time per submit).
struct GpuProfiler {
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    period_ns: f64,
    origin: std::time::Instant,
    gpu_origin: Option<u64>,
    events: Vec<Timing>,
}

/// Dispatches a profiled submit holds at most (two queries each).
const PROFILE_BATCH: usize = 256;

/// One recorded dispatch.
struct Dispatch {
    kernel: KernelId,
    group: wgpu::BindGroup,
    count: [u32; 3],
    label: String,
    flops: f64,
}

/// The dispatches of one batch shape.
struct Plan {
    forward: Vec<Dispatch>,
    coefficients: Dispatch,
    backward: Vec<Dispatch>,
    norms: Dispatch,
    adam: Dispatch,
    stats: Dispatch,
    lse: Dispatch,
    /// Keeps the plan's static uniforms alive.
    _uniforms: wgpu::Buffer,
}

/// Buffers whose size follows the batch shape, allocated for the largest shape seen.
struct ShapeBuffers {
    batch_cap: usize,
    rows_cap: usize,
    /// enc[0] is the minibatch x, enc[i] the output of encoder layer i.
    enc: Vec<wgpu::Buffer>,
    /// dec[0] is z, dec[i] the output of decoder layer i (the last: logits, then x - sigmoid).
    dec: Vec<wgpu::Buffer>,
    eps: wgpu::Buffer,
    lw: wgpu::Buffer,
    coef: wgpu::Buffer,
    objective: wgpu::Buffer,
    enc_up: wgpu::Buffer,
    delta: [wgpu::Buffer; 2],
    ones: wgpu::Buffer,
    /// [batch, 2]: running (max, sum) of the evaluation log-sum-exp.
    lse_state: wgpu::Buffer,
}

pub struct GpuBackend {
    ctx: GpuContext,
    layout: Layout,
    params: wgpu::Buffer,
    grad: wgpu::Buffer,
    moments: wgpu::Buffer,
    norms: wgpu::Buffer,
    stats: wgpu::Buffer,
    noise_u: wgpu::Buffer,
    program_u: wgpu::Buffer,
    adam_u: wgpu::Buffer,
    adam: AdamState,
    shape: Option<ShapeBuffers>,
    /// Plans by (batch, n, accumulate gradients).
    plans: HashMap<(usize, usize, bool), Plan>,
    lse_u: wgpu::Buffer,
    /// Lowers the rows one pass may hold below the adapter's limit (tests of chunking).
    row_limit: Option<usize>,
    /// Whole-step log-weights and coefficients of a chunked step.
    full: Option<FullBuffers>,
    profiler: RefCell<Option<GpuProfiler>>,
    peak_bytes: u64,
    /// Subset programs (SUMO, MLMC): their terms, scratch, and the dispatch bound to them.
    subsets: HashMap<(usize, usize, bool), SubsetState>,
    /// The key of `subsets` the current program uses; None: the plan's own coefficients.
    active_subset: Option<(usize, usize, bool)>,
    last: Option<(usize, usize)>,
    lw_host: Vec<f32>,
    /// The coupled chains' device state (`chain_step`).
    chains: Option<chains::ChainBuffers>,
    /// Overrides the coupled chains' backward-group overhead (tests of the grouping).
    chain_group_overhead: Option<usize>,
}

/// The buffers and dispatch of the subset coefficient kernel for the current program.
struct SubsetState {
    terms: wgpu::Buffer,
    scratch: wgpu::Buffer,
    dispatch: Dispatch,
}

fn groups_1d(total: usize, per_group: usize) -> [u32; 3] {
    let g = total.div_ceil(per_group).max(1) as u32;
    let x = g.min(MAX_GROUPS);
    [x, g.div_ceil(x), 1]
}

/// Accumulates the static uniforms of a plan in 256-byte-aligned slots.
struct UniformArena {
    bytes: Vec<u8>,
    align: usize,
}

impl UniformArena {
    fn push<T: Pod>(&mut self, v: &T) -> (u64, u64) {
        let off = self.bytes.len().next_multiple_of(self.align);
        self.bytes.resize(off, 0);
        self.bytes.extend_from_slice(bytemuck::bytes_of(v));
        (off as u64, std::mem::size_of::<T>() as u64)
    }
}

/// A binding: a whole buffer, or a uniform slot inside the arena (resolved later).
enum Res<'a> {
    Buf(&'a wgpu::Buffer),
    Slot(u64, u64),
    Own(&'a wgpu::Buffer, u64, u64),
}

/// A dispatch before its bind group exists: kernel, bindings, workgroup counts.
/// (kernel, bindings, workgroups, label for profiles, floating-point operations).
type Step<'a> = (KernelId, Vec<(u32, Res<'a>)>, [u32; 3], String, f64);

/// The GEMM kernel for `u`: the vec4 one, with its layout flags, when each operand is
/// contiguous along one dimension whose extent, other stride and offset are multiples of 4.
fn gemm_kernel(u: &mut GemmU) -> KernelId {
    let a = if u.a_cs == 1 && u.a_rs.is_multiple_of(4) && u.k.is_multiple_of(4) {
        Some(FLAG_A_KCONTIG)
    } else if u.a_rs == 1 && u.a_cs.is_multiple_of(4) && u.m.is_multiple_of(4) {
        Some(0)
    } else {
        None
    };
    let b = if u.b_rs == 1 && u.b_cs.is_multiple_of(4) && u.k.is_multiple_of(4) {
        Some(FLAG_B_KCONTIG)
    } else if u.b_cs == 1 && u.b_rs.is_multiple_of(4) && u.n.is_multiple_of(4) {
        Some(0)
    } else {
        None
    };
    match (a, b) {
        (Some(fa), Some(fb)) if u.a_off.is_multiple_of(4) && u.b_off.is_multiple_of(4) => {
            u.flags |= fa | fb;
            KernelId::GemmVec4
        }
        _ => KernelId::Gemm,
    }
}

fn gemm_count(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1]
}

/// A GEMM dispatch of `u` (scalar or vec4 kernel, whichever its layout allows) over A, B,
/// C and the epilogue operand E, with its uniform slot in the arena.
#[allow(clippy::too_many_arguments)]
fn gemm_step<'a>(
    arena: &mut UniformArena,
    mut u: GemmU,
    a: &'a wgpu::Buffer,
    b: &'a wgpu::Buffer,
    c: &'a wgpu::Buffer,
    e: &'a wgpu::Buffer,
    label: String,
) -> Step<'a> {
    let kernel = gemm_kernel(&mut u);
    let slot = arena.push(&u);
    let count = gemm_count(u.m as usize, u.n as usize);
    let flops = 2.0 * u.m as f64 * u.n as f64 * u.k as f64;
    (
        kernel,
        vec![
            (0, Res::Slot(slot.0, slot.1)),
            (1, Res::Buf(a)),
            (2, Res::Buf(b)),
            (3, Res::Buf(c)),
            (4, Res::Buf(e)),
        ],
        count,
        label,
        flops,
    )
}

/// Forward through one Linear over `m` rows: dst = act(inp W^T + b), bias and tanh fused.
#[allow(clippy::too_many_arguments)]
fn linear_fwd<'a>(
    params: &'a wgpu::Buffer,
    arena: &mut UniformArena,
    out: &mut Vec<Step<'a>>,
    l: &Linear,
    m: usize,
    inp: &'a wgpu::Buffer,
    dst: &'a wgpu::Buffer,
    hidden: bool,
) {
    let u = GemmU {
        m: m as u32,
        n: l.out as u32,
        k: l.inp as u32,
        flags: FLAG_BIAS | if hidden { FLAG_TANH } else { 0 },
        a_rs: l.inp as u32,
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
    out.push(gemm_step(
        arena,
        u,
        inp,
        params,
        dst,
        params,
        format!("{} forward [{m}x{} . {}x{}]", l.name, l.inp, l.inp, l.out),
    ));
}

/// Forward through an MLP over `m` rows: acts[i + 1] = tanh(acts[i] W^T + b) for hidden
/// layers, the last layer linear (its output transform is the caller's kernel).
fn mlp_forward<'a>(
    params: &'a wgpu::Buffer,
    arena: &mut UniformArena,
    out: &mut Vec<Step<'a>>,
    layers: &[Linear],
    m: usize,
    acts: &'a [wgpu::Buffer],
) {
    for (i, l) in layers.iter().enumerate() {
        linear_fwd(
            params,
            arena,
            out,
            l,
            m,
            &acts[i],
            &acts[i + 1],
            i + 1 < layers.len(),
        );
    }
}

/// What every backward GEMM binds besides its own operands.
struct BackwardBuffers<'a> {
    params: &'a wgpu::Buffer,
    grad: &'a wgpu::Buffer,
    sb: &'a ShapeBuffers,
    inv_b: f32,
    /// 0 to overwrite the gradient, 1 to add to it (later chunks of a chunked step).
    beta: f32,
}

/// Backward through an MLP whose output gradient is in `delta0`; weight gradients averaged
/// over the batch and, for the decoder, scaled per sample by `scale` (the coefficients a).
/// Returns which ping-pong buffer holds the input gradient, when one was computed.
#[allow(clippy::too_many_arguments)]
fn mlp_backward<'a>(
    bb: &BackwardBuffers<'a>,
    arena: &mut UniformArena,
    out: &mut Vec<Step<'a>>,
    layers: &[Linear],
    acts: &'a [wgpu::Buffer],
    delta0: &'a wgpu::Buffer,
    m: usize,
    scale: Option<&'a wgpu::Buffer>,
    want_input: bool,
) -> Option<usize> {
    let sb = bb.sb;
    let mut cur: Option<usize> = None; // None: delta0, Some(i): sb.delta[i]
    for (i, l) in layers.iter().enumerate().rev() {
        let delta = match cur {
            None => delta0,
            Some(j) => &sb.delta[j],
        };
        // Column weights of the bias gradient: a per sample, or ones.
        let (flags, e_buf) = match scale {
            Some(s) => (FLAG_SCALE_K, s),
            None => (0, &sb.ones),
        };
        let wg = GemmU {
            m: l.out as u32,
            n: l.inp as u32,
            k: m as u32,
            flags,
            a_rs: 1,
            a_cs: l.out as u32,
            b_rs: l.inp as u32,
            b_cs: 1,
            c_off: l.w as u32,
            c_rs: l.inp as u32,
            c_cs: 1,
            alpha: bb.inv_b,
            beta: bb.beta,
            ..Default::default()
        };
        out.push(gemm_step(
            arena,
            wg,
            delta,
            &acts[i],
            bb.grad,
            e_buf,
            format!("{} weight grad [{}x{m} . {m}x{}]", l.name, l.out, l.inp),
        ));
        // Bias gradient: column sums of delta [m, out], weighted by a where the weight
        // gradient is (the ones buffer otherwise, so the flag alone decides).
        let bg = GemmU {
            m: m as u32,
            n: l.out as u32,
            flags: if scale.is_some() { FLAG_SCALE_K } else { 0 },
            a_rs: l.out as u32,
            a_cs: 1,
            c_off: l.b as u32,
            c_cs: 1,
            alpha: bb.inv_b,
            beta: bb.beta,
            ..Default::default()
        };
        let slot = arena.push(&bg);
        out.push((
            KernelId::ColumnSums,
            vec![
                (0, Res::Slot(slot.0, slot.1)),
                (1, Res::Buf(delta)),
                (2, Res::Buf(e_buf)),
                (3, Res::Buf(bb.grad)),
                (4, Res::Buf(e_buf)),
            ],
            [l.out.div_ceil(64) as u32, 1, 1],
            format!("{} bias grad [column sums of {m}x{}]", l.name, l.out),
            2.0 * (m * l.out) as f64,
        ));
        if i > 0 || want_input {
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
                c_rs: l.inp as u32,
                c_cs: 1,
                e_rs: l.inp as u32,
                alpha: 1.0,
                ..Default::default()
            };
            out.push(gemm_step(
                arena,
                ig,
                delta,
                bb.params,
                &sb.delta[next],
                &acts[i],
                format!(
                    "{} input grad [{m}x{} . {}x{}]",
                    l.name, l.out, l.out, l.inp
                ),
            ));
            cur = Some(next);
        }
    }
    cur
}

impl GpuBackend {
    pub fn new(layout: &Layout, params: &[f32], choice: &AdapterChoice) -> Result<GpuBackend> {
        if params.len() != layout.len {
            bail!(
                "parameter vector has {} values, the layout needs {}",
                params.len(),
                layout.len
            );
        }
        let ctx = GpuContext::new(choice)?;
        let max_binding = ctx.limits.max_storage_buffer_binding_size as usize;
        if 3 * layout.len * 4 > max_binding {
            bail!(
                "the model's {} parameters exceed this adapter's largest storage binding ({} MiB)",
                layout.len,
                max_binding >> 20
            );
        }
        let p = layout.len;
        let params_buf = ctx.storage("params", p);
        ctx.queue
            .write_buffer(&params_buf, 0, bytemuck::cast_slice(params));
        let b = GpuBackend {
            grad: ctx.storage("grad", p),
            moments: ctx.storage("adam moments", 3 * p),
            norms: ctx.storage("grad norms", 4),
            stats: ctx.storage("stats", 4),
            noise_u: ctx.uniform("noise", std::mem::size_of::<NoiseU>()),
            program_u: ctx.uniform("program", std::mem::size_of::<ProgramU>()),
            adam_u: ctx.uniform("adam", std::mem::size_of::<AdamU>()),
            params: params_buf,
            adam: AdamState::default(),
            layout: layout.clone(),
            shape: None,
            plans: HashMap::new(),
            lse_u: ctx.uniform("lse chunk", 16),
            row_limit: None,
            full: None,
            profiler: RefCell::new(None),
            peak_bytes: 0,
            subsets: HashMap::new(),
            active_subset: None,
            last: None,
            lw_host: Vec::new(),
            chains: None,
            chain_group_overhead: None,
            ctx,
        };
        Ok(b)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }

    fn widest(&self) -> usize {
        let a = &self.layout.arch;
        a.encoder_dims()
            .into_iter()
            .chain(a.decoder_dims())
            .max()
            .unwrap_or(1)
    }

    fn ensure_shape(&mut self, batch: usize, n: usize, accumulate: bool) -> Result<()> {
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
            let a = self.layout.arch.clone();
            let ctx = &self.ctx;
            let widest = self.widest();
            let ones = ctx.storage("ones", rc.max(bc));
            ctx.queue
                .write_buffer(&ones, 0, bytemuck::cast_slice(&vec![1.0f32; rc.max(bc)]));
            self.shape = Some(ShapeBuffers {
                batch_cap: bc,
                rows_cap: rc,
                enc: a
                    .encoder_dims()
                    .iter()
                    .map(|&d| ctx.storage("encoder activations", bc * d))
                    .collect(),
                dec: a
                    .decoder_dims()
                    .iter()
                    .map(|&d| ctx.storage("decoder activations", rc * d))
                    .collect(),
                eps: ctx.storage("eps", rc * a.z_dim),
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
            });
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

    fn build_plan(&self, batch: usize, n: usize, accumulate: bool) -> Plan {
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let a = &self.layout.arch;
        let rows = batch * n;
        let (xd, zd) = (a.x_dim, a.z_dim);
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as usize;
        let mut arena = UniformArena {
            bytes: Vec::new(),
            align,
        };
        // (kernel, bindings, count) collected first; bind groups need the arena's buffer.
        let mut forward: Vec<Step> = Vec::new();
        let mut backward: Vec<Step> = Vec::new();
        let inv_b = 1.0 / batch as f32;
        let shape = arena.push(&ShapeU {
            batch: batch as u32,
            n: n as u32,
            rows: rows as u32,
            x_dim: xd as u32,
            z_dim: zd as u32,
            lik: match a.likelihood {
                Likelihood::Bernoulli => 0,
                Likelihood::Gaussian { .. } => 1,
            },
            inv_var: a.likelihood.inv_var() as f32,
            log_norm: a.likelihood.log_norm() as f32,
        });

        mlp_forward(
            &self.params,
            &mut arena,
            &mut forward,
            &self.layout.encoder,
            batch,
            &sb.enc,
        );
        let enc_out = sb.enc.last().expect("encoder output");
        forward.push((
            KernelId::SampleZ,
            vec![
                (0, Res::Slot(shape.0, shape.1)),
                (
                    1,
                    Res::Own(&self.noise_u, 0, std::mem::size_of::<NoiseU>() as u64),
                ),
                (2, Res::Buf(enc_out)),
                (3, Res::Buf(&sb.eps)),
                (4, Res::Buf(&sb.dec[0])),
            ],
            groups_1d(rows * zd, 256),
            format!("sample z [{rows}x{zd}]"),
            0.0,
        ));
        mlp_forward(
            &self.params,
            &mut arena,
            &mut forward,
            &self.layout.decoder,
            rows,
            &sb.dec,
        );
        let logits = sb.dec.last().expect("decoder output");
        forward.push((
            KernelId::LogWeights,
            vec![
                (0, Res::Slot(shape.0, shape.1)),
                (1, Res::Buf(&sb.enc[0])),
                (2, Res::Buf(logits)),
                (3, Res::Buf(&sb.eps)),
                (4, Res::Buf(&sb.dec[0])),
                (5, Res::Buf(enc_out)),
                (6, Res::Buf(&sb.lw)),
            ],
            groups_1d(rows, 1),
            format!("log-weights [{rows}x{xd}]"),
            0.0,
        ));

        let ctx = BackwardBuffers {
            params: &self.params,
            grad: &self.grad,
            sb,
            inv_b,
            beta: if accumulate { 1.0 } else { 0.0 },
        };
        let dz = mlp_backward(
            &ctx,
            &mut arena,
            &mut backward,
            &self.layout.decoder,
            &sb.dec,
            logits,
            rows,
            Some(&sb.coef),
            true,
        )
        .expect("decoder backward yields dz");
        backward.push((
            KernelId::EncoderUpstream,
            vec![
                (0, Res::Slot(shape.0, shape.1)),
                (1, Res::Buf(&sb.coef)),
                (2, Res::Buf(&sb.eps)),
                (3, Res::Buf(&sb.dec[0])),
                (4, Res::Buf(&sb.delta[dz])),
                (5, Res::Buf(enc_out)),
                (6, Res::Buf(&sb.enc_up)),
            ],
            groups_1d(batch * zd, 256),
            format!("encoder upstream [{batch}x{n}x{zd}]"),
            0.0,
        ));
        mlp_backward(
            &ctx,
            &mut arena,
            &mut backward,
            &self.layout.encoder,
            &sb.enc,
            &sb.enc_up,
            batch,
            None,
            false,
        );

        let uniforms = self.ctx.uniform("plan uniforms", arena.bytes.len());
        self.ctx.queue.write_buffer(&uniforms, 0, &arena.bytes);
        let make = |(k, res, count, label, flops): Step| -> Dispatch {
            let kernel = self.ctx.kernel(k);
            let entries: Vec<wgpu::BindGroupEntry> = res
                .iter()
                .map(|(binding, r)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: match r {
                        Res::Buf(b) => b.as_entire_binding(),
                        Res::Slot(off, size) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &uniforms,
                                offset: *off,
                                size: wgpu::BufferSize::new(*size),
                            })
                        }
                        Res::Own(b, off, size) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: b,
                                offset: *off,
                                size: wgpu::BufferSize::new(*size),
                            })
                        }
                    },
                })
                .collect();
            let group = self
                .ctx
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.name),
                    layout: &kernel.layout,
                    entries: &entries,
                });
            Dispatch {
                kernel: k,
                group,
                count,
                label,
                flops,
            }
        };
        let adam_u = Res::Own(&self.adam_u, 0, std::mem::size_of::<AdamU>() as u64);
        let prog = (
            KernelId::Coefficients,
            vec![
                (
                    0,
                    Res::Own(&self.program_u, 0, std::mem::size_of::<ProgramU>() as u64),
                ),
                (1, Res::Buf(&sb.lw)),
                (2, Res::Buf(&sb.coef)),
                (3, Res::Buf(&sb.objective)),
            ],
            [batch as u32, 1, 1],
            format!("coefficients [{batch}x{n}]"),
            0.0,
        );
        let norms = (
            KernelId::GradNorms,
            vec![
                (
                    0,
                    Res::Own(&self.adam_u, 0, std::mem::size_of::<AdamU>() as u64),
                ),
                (2, Res::Buf(&self.grad)),
                (4, Res::Buf(&self.norms)),
            ],
            [2, 1, 1],
            "gradient norms".to_string(),
            0.0,
        );
        let adam = (
            KernelId::Adam,
            vec![
                (
                    0,
                    Res::Own(&self.adam_u, 0, std::mem::size_of::<AdamU>() as u64),
                ),
                (1, Res::Buf(&self.params)),
                (2, Res::Buf(&self.grad)),
                (3, Res::Buf(&self.moments)),
                (4, Res::Buf(&self.norms)),
            ],
            groups_1d(self.layout.len, 256),
            format!("adam [{} parameters]", self.layout.len),
            0.0,
        );
        let stats = (
            KernelId::AccumulateStats,
            vec![
                (0, adam_u),
                (4, Res::Buf(&self.norms)),
                (5, Res::Buf(&self.stats)),
                (6, Res::Buf(&sb.objective)),
            ],
            [1, 1, 1],
            "running statistics".to_string(),
            0.0,
        );
        let lse = (
            KernelId::LseAccumulate,
            vec![
                (0, Res::Own(&self.lse_u, 0, 16)),
                (1, Res::Buf(&sb.lw)),
                (2, Res::Buf(&sb.lse_state)),
            ],
            [batch as u32, 1, 1],
            format!("lse accumulate [{batch}x{n}]"),
            0.0,
        );
        Plan {
            lse: make(lse),
            forward: forward.into_iter().map(make).collect(),
            coefficients: make(prog),
            backward: backward.into_iter().map(make).collect(),
            norms: make(norms),
            adam: make(adam),
            stats: make(stats),
            _uniforms: uniforms,
        }
    }

    fn write_noise(&self, noise: &Noise) {
        let u = NoiseU {
            seed_lo: noise.seed as u32,
            seed_hi: (noise.seed >> 32) as u32,
            stream: noise.stream as u32,
            step: noise.step,
            first_datapoint: noise.first_datapoint,
            first_sample: noise.first_sample,
            ..Default::default()
        };
        self.ctx
            .queue
            .write_buffer(&self.noise_u, 0, bytemuck::bytes_of(&u));
    }

    fn write_adam(&mut self, cfg: Option<(&AdamConfig, f64)>, batch: usize) {
        let mut u = AdamU {
            total: self.layout.len as u32,
            encoder_len: self.layout.encoder_len as u32,
            batch: batch as u32,
            ..Default::default()
        };
        if let Some((cfg, lr)) = cfg {
            let s = self.adam.begin_step(cfg, lr);
            u.amsgrad = cfg.amsgrad as u32;
            u.beta1 = s.beta1;
            u.beta2 = s.beta2;
            u.eps = s.eps;
            u.step_size = s.step;
            u.inv_sqrt_bc2 = s.inv_sqrt_bc2;
            u.clip_encoder = cfg.clip_encoder.unwrap_or(0.0) as f32;
            u.clip_decoder = cfg.clip_decoder.unwrap_or(0.0) as f32;
        }
        self.ctx
            .queue
            .write_buffer(&self.adam_u, 0, bytemuck::bytes_of(&u));
    }

    fn record(&self, enc: &mut wgpu::CommandEncoder, key: (usize, usize, bool), parts: &[Part]) {
        let list = self.dispatch_list(key, parts);
        // A clear is a transfer command, so the compute pass ends before it and resumes after.
        for (i, segment) in list.split(Option::is_none).enumerate() {
            if i > 0 {
                self.clear_frozen(enc);
            }
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in segment.iter().flatten() {
                pass.set_pipeline(&self.ctx.kernel(d.kernel).pipeline);
                pass.set_bind_group(0, &d.group, &[]);
                pass.dispatch_workgroups(d.count[0], d.count[1], d.count[2]);
            }
        }
    }

    /// Zeroes the gradient on the layout's frozen ranges (after backward, before the norms),
    /// so norms, clipping and Adam leave those parameters unchanged.
    fn clear_frozen(&self, enc: &mut wgpu::CommandEncoder) {
        for r in &self.layout.frozen {
            enc.clear_buffer(&self.grad, (r.start * 4) as u64, Some((r.len() * 4) as u64));
        }
    }

    /// The dispatches `parts` of the plan for `key` stand for, in order; None marks where
    /// the frozen gradient ranges are cleared.
    fn dispatch_list(&self, key: (usize, usize, bool), parts: &[Part]) -> Vec<Option<&Dispatch>> {
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
                    list.push(Some(&plan.norms));
                }
                Part::Adam => list.push(Some(&plan.adam)),
                Part::Stats => list.push(Some(&plan.stats)),
                Part::Lse => list.push(Some(&plan.lse)),
            }
        }
        list
    }

    /// Like `run`, timing every dispatch: each in its own compute pass with timestamp writes
    /// at its start and end, or, without TIMESTAMP_QUERY, in its own submit timed on the host.
    fn run_profiled(&self, key: (usize, usize, bool), parts: &[Part]) -> Result<()> {
        self.profile_dispatches(&self.dispatch_list(key, parts))
    }

    fn profiling(&self) -> bool {
        self.profiler.borrow().is_some()
    }

    /// Runs and times `list` (see `run_profiled`).
    fn profile_dispatches(&self, list: &[Option<&Dispatch>]) -> Result<()> {
        let mut guard = self.profiler.borrow_mut();
        let prof = guard.as_mut().expect("profiling is on");
        let push = |prof: &mut GpuProfiler, d: &Dispatch, start_us: f64, dur_us: f64| {
            prof.events.push(Timing {
                kernel: self.ctx.kernel(d.kernel).name.to_string(),
                label: d.label.clone(),
                start_us,
                dur_us,
                flops: d.flops,
            });
        };
        // Submits follow the queue's order, so a clear submitted between two segments lands
        // between them, as in `record`.
        let segments: Vec<Vec<&Dispatch>> = list
            .split(Option::is_none)
            .map(|seg| seg.iter().flatten().copied().collect())
            .collect();
        for (si, segment) in segments.iter().enumerate() {
            if si > 0 {
                let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                self.clear_frozen(&mut enc);
                self.ctx.queue.submit([enc.finish()]);
            }
            self.profile_segment(prof, segment, &push)?;
        }
        Ok(())
    }

    fn profile_segment(
        &self,
        prof: &mut GpuProfiler,
        list: &[&Dispatch],
        push: &impl Fn(&mut GpuProfiler, &Dispatch, f64, f64),
    ) -> Result<()> {
        for group in list.chunks(PROFILE_BATCH) {
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            if let Some((qs, resolve)) = &prof.timestamps {
                for (i, d) in group.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&d.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    pass.set_pipeline(&self.ctx.kernel(d.kernel).pipeline);
                    pass.set_bind_group(0, &d.group, &[]);
                    pass.dispatch_workgroups(d.count[0], d.count[1], d.count[2]);
                }
                let queries = 2 * group.len() as u32;
                enc.resolve_query_set(qs, 0..queries, resolve, 0);
                self.ctx.queue.submit([enc.finish()]);
                let bytes = self.ctx.read_bytes(resolve, 0, queries as u64 * 8)?;
                let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
                let origin = *prof.gpu_origin.get_or_insert(ticks[0]);
                let period = prof.period_ns;
                for (i, d) in group.iter().enumerate() {
                    let (t0, t1) = (ticks[2 * i], ticks[2 * i + 1].max(ticks[2 * i]));
                    let start_us = t0.saturating_sub(origin) as f64 * period / 1e3;
                    push(prof, d, start_us, (t1 - t0) as f64 * period / 1e3);
                }
            } else {
                drop(enc);
                for d in group {
                    let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        pass.set_pipeline(&self.ctx.kernel(d.kernel).pipeline);
                        pass.set_bind_group(0, &d.group, &[]);
                        pass.dispatch_workgroups(d.count[0], d.count[1], d.count[2]);
                    }
                    let t0 = std::time::Instant::now();
                    self.ctx.queue.submit([enc.finish()]);
                    self.ctx.device.poll(wgpu::PollType::wait_indefinitely())?;
                    let start_us = (t0 - prof.origin).as_secs_f64() * 1e6;
                    push(prof, d, start_us, t0.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        Ok(())
    }

    fn active_subsets(&self, full: bool) -> Option<&Dispatch> {
        self.active_subset
            .filter(|k| k.2 == full)
            .map(|k| &self.subsets[&k].dispatch)
    }

    fn prepare_subsets(
        &mut self,
        program: &CoefficientProgram,
        batch: usize,
        n: usize,
        full: bool,
    ) -> Result<()> {
        if !matches!(program, CoefficientProgram::Subsets { .. }) {
            self.active_subset = None;
            return Ok(());
        }
        program.validate(n).map_err(|e| anyhow::anyhow!(e))?;
        let (terms, _, _, stride) = subset_terms(program, n);
        let key = (batch, n, full);
        let need_terms = (terms.len().max(1) * 16) as u64;
        let need_scratch = (batch * stride.max(1) * 4) as u64;
        // Cached per shape: SUMO and MLMC revisit the same N often. Entries bind the shape
        // and whole-step buffers, so reallocating those clears them (ensure_shape, ensure_full).
        let fits = self
            .subsets
            .get(&key)
            .is_some_and(|s| s.terms.size() >= need_terms && s.scratch.size() >= need_scratch);
        if !fits {
            let terms_buf = self.ctx.storage(
                "subset terms",
                (need_terms as usize / 4).next_power_of_two(),
            );
            let scratch = self.ctx.storage(
                "subset scratch",
                (need_scratch as usize / 4).next_power_of_two(),
            );
            let sb = self.shape.as_ref().expect("shape buffers exist");
            let (lw, coef) = match (&self.full, full) {
                (Some(f), true) => (&f.lw, &f.coef),
                _ => (&sb.lw, &sb.coef),
            };
            let kernel = self.ctx.kernel(KernelId::SubsetCoefficients);
            let resources = [
                &self.program_u,
                lw,
                coef,
                &sb.objective,
                &terms_buf,
                &scratch,
            ];
            let entries: Vec<wgpu::BindGroupEntry> = resources
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect();
            let group = self
                .ctx
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("subset coefficients"),
                    layout: &kernel.layout,
                    entries: &entries,
                });
            let dispatch = Dispatch {
                kernel: KernelId::SubsetCoefficients,
                group,
                count: [batch as u32, 1, 1],
                label: format!("subset coefficients [{batch}x{n}]"),
                flops: 0.0,
            };
            self.subsets.insert(
                key,
                SubsetState {
                    terms: terms_buf,
                    scratch,
                    dispatch,
                },
            );
        }
        self.active_subset = Some(key);
        self.ctx
            .queue
            .write_buffer(&self.subsets[&key].terms, 0, bytemuck::cast_slice(&terms));
        Ok(())
    }

    /// Bytes of every live device buffer.
    fn live_bytes(&self) -> u64 {
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
            let bufs = sb
                .enc
                .iter()
                .chain(&sb.dec)
                .chain([
                    &sb.eps,
                    &sb.lw,
                    &sb.coef,
                    &sb.objective,
                    &sb.enc_up,
                    &sb.ones,
                    &sb.lse_state,
                ])
                .chain(sb.delta.iter());
            total += bufs.map(|b| b.size()).sum::<u64>();
        }
        if let Some(f) = &self.full {
            total += f.lw.size() + f.coef.size();
        }
        if let Some(c) = &self.chains {
            total += c.bytes();
        }
        total += self
            .subsets
            .values()
            .map(|s| s.terms.size() + s.scratch.size())
            .sum::<u64>();
        total + self.plans.values().map(|p| p._uniforms.size()).sum::<u64>()
    }

    fn run(&self, batch: usize, n: usize, parts: &[Part]) -> Result<()> {
        if self.profiler.borrow().is_some() {
            return self.run_profiled((batch, n, false), parts);
        }
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        self.record(&mut enc, (batch, n, false), parts);
        self.ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    fn upload_x(&self, x: &[f32], batch: usize) -> Result<()> {
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

    /// After a forward pass: (eps, z, encoder output) of the last shape, for parity checks.
    pub fn read_forward_state(&self) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (batch, n) = self
            .last
            .ok_or_else(|| anyhow::anyhow!("no forward pass yet"))?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let zd = self.layout.arch.z_dim;
        Ok((
            self.ctx.read(&sb.eps, 0, batch * n * zd)?,
            self.ctx.read(&sb.dec[0], 0, batch * n * zd)?,
            self.ctx
                .read(sb.enc.last().expect("encoder output"), 0, batch * 2 * zd)?,
        ))
    }

    /// Runs the coefficient kernel on given log-weights [batch, n]: (a, b, c, objective).
    pub fn coefficients_on_device(
        &mut self,
        lw: &[f32],
        batch: usize,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<DeviceCoefficients> {
        self.ensure_shape(batch, n, false)?;
        self.prepare_subsets(program, batch, n, false)?;
        let rows = batch * n;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        self.ctx
            .queue
            .write_buffer(&sb.lw, 0, bytemuck::cast_slice(lw));
        self.ctx.queue.write_buffer(
            &self.program_u,
            0,
            bytemuck::bytes_of(&program_uniform(program, batch, n)),
        );
        self.run(batch, n, &[Part::Coefficients])?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let coef = self.ctx.read(&sb.coef, 0, 3 * rows)?;
        let obj = self.ctx.read(&sb.objective, 0, batch)?;
        Ok((
            coef[..rows].to_vec(),
            coef[rows..2 * rows].to_vec(),
            coef[2 * rows..].to_vec(),
            obj,
        ))
    }
}

impl GpuBackend {
    /// How many dispatches of each kernel the cached plans hold (which GEMM variant ran).
    pub fn plan_kernel_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for plan in self.plans.values() {
            let all = plan.forward.iter().chain(&plan.backward).chain([
                &plan.coefficients,
                &plan.norms,
                &plan.adam,
                &plan.stats,
                &plan.lse,
            ]);
            for d in all {
                *counts.entry(self.ctx.kernel(d.kernel).name).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// Caps the sample rows of one pass below the adapter's limit, so tests can exercise
    /// chunked steps on small shapes.
    pub fn set_row_limit(&mut self, rows: Option<usize>) {
        self.row_limit = rows;
    }

    /// Sets the overhead `coupling::chain::backward_groups` charges per backward group of a
    /// coupled step (None: the default; 0 splits wherever it saves a particle).
    pub fn set_chain_group_overhead(&mut self, overhead: Option<usize>) {
        self.chain_group_overhead = overhead;
    }

    /// A training step whose batch x N rows exceed one pass: pass 1 computes the log-weights
    /// chunk by chunk into whole-step buffers, then the coefficients over all N samples;
    /// pass 2 recomputes each chunk's forward pass (same noise, so the same z) and adds its
    /// backward into the gradient. Memory stays that of one chunk whatever N is.
    #[allow(clippy::too_many_arguments)]
    fn train_step_chunked(
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
        self.ensure_full(batch, n);
        self.prepare_subsets(program, batch, n, true)?;
        self.upload_x(x, batch)?;
        self.ctx.queue.write_buffer(
            &self.program_u,
            0,
            bytemuck::bytes_of(&program_uniform(program, batch, n)),
        );
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
            self.ctx.queue.submit([enc.finish()]);
        }
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        self.record(
            &mut enc,
            (batch, chunks[0].1, false),
            &[Part::FullCoefficients],
        );
        self.ctx.queue.submit([enc.finish()]);
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
            self.ctx.queue.submit([enc.finish()]);
        }
        self.write_adam(Some((cfg, lr)), batch);
        self.run(batch, chunks[0].1, &[Part::Adam, Part::Stats])?;
        self.last = None;
        Ok(())
    }

    /// Whole-step log-weight and coefficient buffers for (batch, n), with their dispatch.
    fn ensure_full(&mut self, batch: usize, n: usize) {
        if self
            .full
            .as_ref()
            .is_some_and(|f| f.batch == batch && f.n == n)
        {
            return;
        }
        let rows = batch * n;
        let lw = self.ctx.storage("whole-step log-weights", rows);
        let coef = self.ctx.storage("whole-step coefficients", 3 * rows);
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let kernel = self.ctx.kernel(KernelId::Coefficients);
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("whole-step coefficients"),
                layout: &kernel.layout,
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
            kernel: KernelId::Coefficients,
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
    }
}

/// Coefficients read back from the device: (a, b, c, objective).
pub type DeviceCoefficients = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

enum Part {
    Lse,
    FullCoefficients,
    Forward,
    /// The forward pass from sampling z on, reusing the encoder output already computed for
    /// this minibatch (the coupled chains' later time indices).
    ForwardFromZ,
    Coefficients,
    Backward,
    Adam,
    Stats,
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        let a = &self.ctx.adapter;
        let reductions = if self.ctx.subgroups {
            "subgroup reductions"
        } else {
            "workgroup reductions"
        };
        format!(
            "gpu ({}, {}, {}, {reductions})",
            a.name, a.backend, a.device_type
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn set_params(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.layout.len {
            bail!(
                "parameter vector has {} values, the layout needs {}",
                values.len(),
                self.layout.len
            );
        }
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
        self.upload_x(x, batch)?;
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
        self.run(batch, n, &[Part::Backward])?;
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

    fn train_step(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        program: &CoefficientProgram,
        cfg: &AdamConfig,
        lr: f64,
    ) -> Result<()> {
        if batch == 0 || n == 0 {
            bail!("a training step needs at least one datapoint and one sample");
        }
        if batch * n > self.max_rows() {
            return self.train_step_chunked(x, batch, n, noise, program, cfg, lr);
        }
        self.ensure_shape(batch, n, false)?;
        self.prepare_subsets(program, batch, n, false)?;
        self.upload_x(x, batch)?;
        self.write_noise(noise);
        self.ctx.queue.write_buffer(
            &self.program_u,
            0,
            bytemuck::bytes_of(&program_uniform(program, batch, n)),
        );
        self.write_adam(Some((cfg, lr)), batch);
        self.run(
            batch,
            n,
            &[
                Part::Forward,
                Part::Coefficients,
                Part::Backward,
                Part::Adam,
                Part::Stats,
            ],
        )?;
        self.last = Some((batch, n));
        Ok(())
    }

    fn chain_step(
        &mut self,
        x: &[f32],
        batch: usize,
        noise: &Noise,
        chains: &CouplingConfig,
        cfg: &AdamConfig,
        lr: f64,
    ) -> Result<ChainOutcome> {
        self.chain_step_gpu(x, batch, noise, chains, cfg, lr)
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
        self.upload_x(x, batch)?;
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

    fn take_stats(&mut self) -> Result<StepStats> {
        let s = self.ctx.read(&self.stats, 0, 4)?;
        self.ctx.queue.write_buffer(&self.stats, 0, &[0u8; 16]);
        Ok(StepStats {
            steps: s[3] as usize,
            objective: s[0] as f64,
            grad_norm_encoder: s[1] as f64,
            grad_norm_decoder: s[2] as f64,
        })
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

    fn set_profiling(&mut self, on: bool) -> String {
        if !on {
            *self.profiler.borrow_mut() = None;
            return "off".to_string();
        }
        let timestamps = self
            .ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let qs = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * PROFILE_BATCH as u32,
                });
                let resolve = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile resolve"),
                    size: (2 * PROFILE_BATCH * 8) as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (qs, resolve)
            });
        let period_ns = self.ctx.queue.get_timestamp_period() as f64;
        let how = if timestamps.is_some() {
            format!("GPU timestamp queries around each dispatch, one compute pass per dispatch (tick = {period_ns} ns)")
        } else {
            "this adapter has no TIMESTAMP_QUERY: falling back to per-submit wall-clock timing, one submit per dispatch (includes submit and wait overhead)".to_string()
        };
        *self.profiler.borrow_mut() = Some(GpuProfiler {
            timestamps,
            period_ns,
            origin: std::time::Instant::now(),
            gpu_origin: None,
            events: Vec::new(),
        });
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

    fn memory_bytes(&self) -> (u64, u64) {
        let now = self.live_bytes();
        (now, self.peak_bytes.max(now))
    }
}
