//! Host side of shaders/weights.wgsl: the coefficient-program uniform, subset programs (SUMO,
//! MLMC) with their terms and scratch, and the evaluation log-sum-exp.

use super::pipelines::PipelineId;
use super::plan::{Dispatch, DispatchSpec, Res};
use super::GpuBackend;
use crate::estimators::{CoefficientProgram, EncoderRule};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

wgsl_consts! {
    /// The weights prelude: `ProgramU::mode` and a subset program's encoder rule (`extra.x`).
    pub(super) const WGSL_CONSTS = {
        /// Softmax coefficients, objective L_N.
        MODE_SOFTMAX = 0,
        /// Softmax coefficients, objective mean(l).
        MODE_SOFTMAX_MEAN = 1,
        MODE_JACKKNIFE = 2,
        MODE_JACKKNIFE_DREG = 3,
        /// Subset programs run `subset_coefficients`, not `coefficients`.
        MODE_SUBSETS = 4,
        RULE_DREG_BLOCKS = 0,
        RULE_UNBIASED_RWS = 1,
        RULE_VARIANCE = 2,
        /// IWAE on the last `extra.w` samples (the encoder's own); terms cover the rest.
        RULE_IWAE_TAIL = 3,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(super) struct ProgramU {
    batch: u32,
    n: u32,
    mode: u32,
    n_terms: u32,
    pa: [f32; 4],
    pb: [f32; 4],
    pc: [f32; 4],
    /// Subset programs: (encoder rule, DReG block size, scratch slots per datapoint, the
    /// encoder's own samples at the end).
    extra: [u32; 4],
}

pub(super) fn program_uniform(p: &CoefficientProgram, batch: usize, n: usize) -> ProgramU {
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
            u.mode = if *mean_objective {
                MODE_SOFTMAX_MEAN
            } else {
                MODE_SOFTMAX
            };
            u.pa = v(*a);
            u.pb = v(*b);
            u.pc = v(*c);
        }
        CoefficientProgram::Jackknife { dreg } => {
            u.mode = if *dreg {
                MODE_JACKKNIFE_DREG
            } else {
                MODE_JACKKNIFE
            }
        }
        CoefficientProgram::Subsets { .. } => {
            let (terms, rule, dreg_size, stride) = subset_terms(p, n);
            u.mode = MODE_SUBSETS;
            u.n_terms = terms.len() as u32;
            let tail = match p {
                CoefficientProgram::Subsets { encoder, .. } => encoder.tail(),
                _ => 0,
            };
            u.extra = [rule, dreg_size, stride as u32, tail as u32];
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
    // The terms cover the samples before the encoder's own.
    let n = n - encoder.tail();
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
            (RULE_DREG_BLOCKS, *size)
        }
        EncoderRule::UnbiasedRws => (RULE_UNBIASED_RWS, 0),
        EncoderRule::Variance => (RULE_VARIANCE, 0),
        EncoderRule::IwaeTail { .. } => (RULE_IWAE_TAIL, 0),
    };
    let stride = out
        .iter()
        .map(|t| if t[0] > 0.5 { n / t[1] as usize } else { 1 })
        .sum();
    (out, rule, dreg_size, stride)
}

/// The buffers and dispatch of the subset coefficient kernel for the current program.
pub(super) struct SubsetState {
    pub terms: wgpu::Buffer,
    pub scratch: wgpu::Buffer,
    pub dispatch: Dispatch,
}

/// The coefficient kernel over `lw` [batch, n] into `coef` and `objective`, reading the
/// program uniform.
pub(super) fn coefficients<'a>(
    program_u: &'a wgpu::Buffer,
    lw: &'a wgpu::Buffer,
    coef: &'a wgpu::Buffer,
    objective: &'a wgpu::Buffer,
    batch: usize,
    n: usize,
    label: String,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::Coefficients,
        bindings: vec![
            (
                0,
                Res::Own(program_u, 0, std::mem::size_of::<ProgramU>() as u64),
            ),
            (1, Res::Buf(lw)),
            (2, Res::Buf(coef)),
            (3, Res::Buf(objective)),
        ],
        count: [batch as u32, 1, 1],
        label,
        flops: 0.0,
        bytes: 4.0 * (4 * batch * n + batch) as f64,
    }
}

/// One evaluation chunk's log-weights folded into the running (max, sum) per datapoint.
pub(super) fn lse_accumulate<'a>(
    lse_u: &'a wgpu::Buffer,
    lw: &'a wgpu::Buffer,
    lse_state: &'a wgpu::Buffer,
    batch: usize,
    n: usize,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::LseAccumulate,
        bindings: vec![
            (0, Res::Own(lse_u, 0, 16)),
            (1, Res::Buf(lw)),
            (2, Res::Buf(lse_state)),
        ],
        count: [batch as u32, 1, 1],
        label: format!("lse accumulate [{batch}x{n}]"),
        flops: 0.0,
        bytes: 4.0 * (batch * n + 4 * batch) as f64,
    }
}

impl GpuBackend {
    pub(super) fn write_program(&self, program: &CoefficientProgram, batch: usize, n: usize) {
        self.ctx.queue.write_buffer(
            &self.program_u,
            0,
            bytemuck::bytes_of(&program_uniform(program, batch, n)),
        );
    }

    pub(super) fn active_subsets(&self, full: bool) -> Option<&Dispatch> {
        self.active_subset
            .filter(|k| k.2 == full)
            .map(|k| &self.subsets[&k].dispatch)
    }

    pub(super) fn prepare_subsets(
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
            let state = self.subset_state(batch, n, full, need_terms, need_scratch);
            self.subsets.insert(key, state);
        }
        self.active_subset = Some(key);
        self.ctx
            .queue
            .write_buffer(&self.subsets[&key].terms, 0, bytemuck::cast_slice(&terms));
        Ok(())
    }

    /// New terms and scratch buffers and the subset dispatch bound to them, over the
    /// whole-step buffers when `full`.
    fn subset_state(
        &self,
        batch: usize,
        n: usize,
        full: bool,
        need_terms: u64,
        need_scratch: u64,
    ) -> SubsetState {
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
        let pipeline = self.ctx.pipeline(PipelineId::SubsetCoefficients);
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
                layout: &pipeline.layout,
                entries: &entries,
            });
        let dispatch = Dispatch {
            pipeline: PipelineId::SubsetCoefficients,
            group,
            count: [batch as u32, 1, 1],
            label: format!("subset coefficients [{batch}x{n}]"),
            flops: 0.0,
            bytes: 4.0 * (4 * batch * n + batch) as f64,
        };
        SubsetState {
            terms: terms_buf,
            scratch,
            dispatch,
        }
    }
}
