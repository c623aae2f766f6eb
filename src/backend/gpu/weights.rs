//! Host side of shaders/weights.wgsl: the coefficient-program uniform, subset programs (SUMO,
//! MLMC) with their terms and scratch, and the evaluation log-sum-exp.

use super::dispatch::{groups_1d, Dispatch, DispatchSpec, Res};
use super::pipelines::PipelineId;
use super::shaders::{
    MODE_JACKKNIFE, MODE_JACKKNIFE_DREG, MODE_SOFTMAX, MODE_SOFTMAX_MEAN, MODE_SUBSETS,
    RULE_DREG_BLOCKS, RULE_IWAE_TAIL, RULE_UNBIASED_RWS, RULE_VARIANCE,
};
use super::GpuBackend;
use crate::estimators::{CoefficientProgram, EncoderRule};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

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

/// One strided copy of `copy_columns` (shaders/weights.wgsl): `planes` x `rows` x `len`
/// words, from `src` to `dst`, each side (offset, row stride, plane stride) in words. The
/// chunked step's gather (src/backend/gpu/chunked.rs): one dispatch where a copy per
/// datapoint (and per coefficient array) was.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug, PartialEq, Eq)]
pub(super) struct ColumnsU {
    rows: u32,
    len: u32,
    planes: u32,
    _p0: u32,
    src: [u32; 3],
    _p1: u32,
    dst: [u32; 3],
    _p2: u32,
}

impl ColumnsU {
    /// A chunk's log-weights [batch, len] into the whole step's [batch, n] at column `s0`.
    pub(super) fn scatter_log_weights(batch: usize, n: usize, s0: usize, len: usize) -> ColumnsU {
        ColumnsU {
            rows: batch as u32,
            len: len as u32,
            planes: 1,
            src: [0, len as u32, 0],
            dst: [s0 as u32, n as u32, 0],
            ..Default::default()
        }
    }

    /// Columns [s0, s0 + len) of the whole step's coefficients [3, batch, n] (a, b, c) into
    /// the chunk's [3, batch, len].
    pub(super) fn gather_coefficients(batch: usize, n: usize, s0: usize, len: usize) -> ColumnsU {
        let (whole, chunk) = ((batch * n) as u32, (batch * len) as u32);
        ColumnsU {
            rows: batch as u32,
            len: len as u32,
            planes: 3,
            src: [s0 as u32, n as u32, whole],
            dst: [0, len as u32, chunk],
            ..Default::default()
        }
    }

    /// Words copied.
    pub(super) fn words(&self) -> usize {
        (self.planes * self.rows * self.len) as usize
    }

    /// What the kernel does, on the host: (source, destination) word index of every word.
    #[cfg(test)]
    pub(super) fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let at = |side: [u32; 3], p: u32, r: u32, j: u32| {
            (side[0] + p * side[2] + r * side[1] + j) as usize
        };
        (0..self.planes).flat_map(move |p| {
            (0..self.rows).flat_map(move |r| {
                (0..self.len).map(move |j| (at(self.src, p, r, j), at(self.dst, p, r, j)))
            })
        })
    }
}

/// The `copy_columns` dispatch of `u` (its uniform in slot `slot` of a plan's arena).
pub(super) fn copy_columns<'a>(
    slot: (u64, u64),
    u: &ColumnsU,
    src: &'a wgpu::Buffer,
    dst: &'a wgpu::Buffer,
    label: String,
) -> DispatchSpec<'a> {
    DispatchSpec {
        pipeline: PipelineId::CopyColumns,
        bindings: vec![
            (0, Res::Slot(slot.0, slot.1)),
            (1, Res::Buf(src)),
            (2, Res::Buf(dst)),
        ],
        count: groups_1d(u.words(), 256),
        label,
        flops: 0.0,
        bytes: 8.0 * u.words() as f64,
    }
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

#[cfg(test)]
mod tests {
    use super::super::chunked::chunks;
    use super::*;

    /// Each chunk's two gathers move the words the copies per datapoint moved before them
    /// (one per datapoint for the log-weights, three per datapoint for a, b and c), and the
    /// chunks together cover the whole step once: even and uneven last chunks, one sample a
    /// chunk, one datapoint.
    #[test]
    fn gathers_move_each_chunks_columns() {
        for (batch, n) in [(1, 2), (3, 7), (5, 11), (4, 16)] {
            for per in 1..n {
                let (mut lw_hits, mut coef_hits) = (vec![0; batch * n], vec![0; 3 * batch * n]);
                for (s0, len) in chunks(n, per) {
                    let mut copies = Vec::new();
                    for b in 0..batch {
                        copies.extend((0..len).map(|j| (b * len + j, b * n + s0 + j)));
                    }
                    let scatter = ColumnsU::scatter_log_weights(batch, n, s0, len);
                    assert_eq!(scatter.pairs().collect::<Vec<_>>(), copies);
                    let (whole, chunk) = (batch * n, batch * len);
                    let mut copies = Vec::new();
                    for part in 0..3 {
                        for b in 0..batch {
                            copies.extend((0..len).map(|j| {
                                (part * whole + b * n + s0 + j, part * chunk + b * len + j)
                            }));
                        }
                    }
                    let gather = ColumnsU::gather_coefficients(batch, n, s0, len);
                    assert_eq!(gather.pairs().collect::<Vec<_>>(), copies);
                    assert_eq!(gather.words(), 3 * scatter.words());
                    scatter.pairs().for_each(|(_, d)| lw_hits[d] += 1);
                    gather.pairs().for_each(|(s, _)| coef_hits[s] += 1);
                }
                assert!(lw_hits.iter().all(|&h| h == 1), "{batch}x{n} per {per}");
                assert!(coef_hits.iter().all(|&h| h == 1), "{batch}x{n} per {per}");
            }
        }
    }
}
