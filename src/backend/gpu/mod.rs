//! The wgpu backend: the whole training step in WGSL compute shaders. The host builds, once
//! per batch shape, a plan of dispatches with their bind groups and uniforms; a training step
//! then writes the minibatch and three small uniforms, records the plan into one compute
//! pass and submits once, reading nothing back.
//!
//! Layout, from the bottom up: `adapters` (listing and picking), `shaders` (the WGSL sources
//! as compiled, with the constants Rust shares with them), `pipelines` (the compute-pipeline
//! registry), `context` (device, buffers, readback), `dispatch` (a dispatch, its uniforms and
//! recording), `grid`, `buffers` (shape-sized buffers); per WGSL family its host side (`vae`,
//! `matmul` and the `mlp` passes built from it, `optim`, `weights`, `input`); `plan` (the
//! training step's dispatches), `chains` (coupling.wgsl), `chunked` (steps beyond one pass),
//! `profiler`, and `backend` (`impl Backend`). A file uses only files listed before it, and
//! what this module declares (docs/design.md §4).

mod adapters;
mod backend;
mod buffers;
mod chains;
mod chunked;
mod cond;
pub mod context;
mod dispatch;
mod grid;
mod input;
mod matmul;
mod mlp;
mod optim;
mod pipelines;
mod plan;
mod profiler;
pub mod shaders;
mod vae;
mod weights;

#[cfg(test)]
mod fault_tests;

use crate::backend::{Backend, DispatchInfo};
use crate::estimators::CoefficientProgram;
use crate::model::{Layout, Likelihood};
use crate::optim::AdamState;
pub use adapters::{list_adapters, AdapterChoice, AdapterSummary};
use anyhow::{bail, Result};
use buffers::ShapeBuffers;
pub use chains::CHAIN_INDICES_PER_SUBMIT;
use chunked::FullBuffers;
use context::GpuContext;
pub use grid::{GridConfig, MIN_SLICE};
use optim::AdamU;
use plan::{Part, Plan};
use profiler::GpuProfiler;
use std::cell::RefCell;
use std::collections::HashMap;
use vae::NoiseU;
use weights::{ProgramU, SubsetState};

/// Floats of the running statistics (shaders/optim.wgsl): objective, |g_enc|, |g_dec|,
/// steps, non-finite steps, the first non-finite step's index and its mask, one spare.
const STATS_LEN: usize = 8;

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
    /// Evaluation values kept on the device by `lse_keep` ((max, sum) per datapoint), and
    /// how many datapoints they hold.
    lse_kept: Option<wgpu::Buffer>,
    lse_kept_len: usize,
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
    /// Overrides the time indices per submit of the coupled chains (tests of the grouping).
    chain_indices_per_submit: Option<usize>,
    /// How grids are sized: split-K slices and norm partials, for `grid.compute_units`.
    grid: grid::GridConfig,
    /// The training images held on the device (`Backend::upload_images`).
    images: Option<input::DeviceImages>,
    /// A binarization recorded but not yet submitted: the step's first recorded pass runs it,
    /// so that a step stays one submit (`input.rs`).
    pending_input: std::cell::RefCell<Option<dispatch::Dispatch>>,
}

impl GpuBackend {
    pub fn new(layout: &Layout, params: &[f32], choice: &AdapterChoice) -> Result<GpuBackend> {
        crate::backend::check_param_len(layout, params)?;
        if layout.arch.cond.is_some() && layout.arch.likelihood != Likelihood::Bernoulli {
            bail!(
                "the GPU backend runs the conditional model (--model cvae) with the Bernoulli likelihood only; use --backend cpu"
            );
        }
        let ctx = GpuContext::new(choice)?;
        let max_binding = ctx.limits.max_storage_buffer_binding_size as usize;
        if 3 * layout.len * 4 > max_binding {
            bail!(
                "the model's {} parameters (Adam's moments: {} MiB) exceed this adapter's largest storage binding ({} MiB); use smaller --hidden/--latent, or --backend cpu",
                layout.len,
                (3 * layout.len * 4) >> 20,
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
            stats: ctx.storage("stats", STATS_LEN),
            noise_u: ctx.uniform("noise", std::mem::size_of::<NoiseU>()),
            program_u: ctx.uniform("program", std::mem::size_of::<ProgramU>()),
            adam_u: ctx.uniform("adam", std::mem::size_of::<AdamU>()),
            params: params_buf,
            adam: AdamState::default(),
            layout: layout.clone(),
            shape: None,
            plans: HashMap::new(),
            lse_u: ctx.uniform("lse chunk", 16),
            lse_kept: None,
            lse_kept_len: 0,
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
            chain_indices_per_submit: None,
            grid: grid::GridConfig::from_env(),
            images: None,
            pending_input: Default::default(),
            ctx,
        };
        Ok(b)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }

    /// Fills z's buffer for (batch, n) with NaN, its row padding included (sampling rewrites
    /// the rest), so that a parity check sees any GEMM that lets the padding in.
    pub fn poison_latent_padding(&mut self, batch: usize, n: usize) -> Result<()> {
        self.ensure_shape(batch, n, false)?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let nan = vec![f32::NAN; (sb.dec[0].size() / 4) as usize];
        self.ctx
            .queue
            .write_buffer(&sb.dec[0], 0, bytemuck::cast_slice(&nan));
        Ok(())
    }

    /// After a forward pass: (eps [rows, noise_dim], z (z1 of the two-layer model), encoder
    /// output) of the last shape, for parity checks.
    pub fn read_forward_state(&self) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (batch, n) = self
            .last
            .ok_or_else(|| anyhow::anyhow!("no forward pass yet"))?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let a = &self.layout.arch;
        let (zd, nd, ld) = (a.z_dim, a.noise_dim(), buffers::z_ld(a));
        // z's rows are padded to `ld`: keep the first zd of each.
        let z_padded = self.ctx.read(&sb.dec[0], 0, batch * n * ld)?;
        Ok((
            self.ctx.read(&sb.eps, 0, batch * n * nd)?,
            z_padded
                .chunks(ld)
                .flat_map(|row| &row[..zd])
                .copied()
                .collect(),
            self.ctx
                .read(sb.enc.last().expect("encoder output"), 0, batch * 2 * zd)?,
        ))
    }

    /// After a forward pass of the two-layer model: z2 [rows, z2] and q(z2 | z1)'s head
    /// [rows, 2 z2] of the last shape, for parity checks.
    pub fn read_top_state(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (batch, n) = self
            .last
            .ok_or_else(|| anyhow::anyhow!("no forward pass yet"))?;
        let sb = self.shape.as_ref().expect("shape buffers exist");
        let top = sb
            .top
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the model has one stochastic layer"))?;
        let a = &self.layout.arch;
        let d2 = a.noise_dim() - a.z_dim;
        Ok((
            self.ctx.read(&top.dec2[0], 0, batch * n * d2)?,
            self.ctx.read(top.qhead(), 0, batch * n * 2 * d2)?,
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
        self.write_program(program, batch, n);
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

    /// How many dispatches of each kernel the cached plans hold (which GEMM variant ran).
    pub fn plan_kernel_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for plan in self.plans.values() {
            let all = plan
                .forward
                .iter()
                .chain(&plan.backward)
                .chain(&plan.norms)
                .chain([&plan.coefficients, &plan.adam, &plan.adam_step, &plan.lse]);
            for d in all {
                *counts
                    .entry(self.ctx.pipeline(d.pipeline).name)
                    .or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// The dispatches of one unchunked training step at (batch, n) in recording order, from
    /// the plan (built here if needed, nothing run): workgroups, FLOPs and bytes of each,
    /// led by the binarization where the device holds the training images. Empty when
    /// batch x n rows exceed one pass (the step runs in chunks).
    pub fn plan_dispatches(&mut self, batch: usize, n: usize) -> Result<Vec<DispatchInfo>> {
        if batch == 0 || n == 0 || batch * n > self.max_rows() {
            return Ok(Vec::new());
        }
        self.ensure_shape(batch, n, false)?;
        let parts = [
            Part::Forward,
            Part::Coefficients,
            Part::Backward,
            Part::Update,
        ];
        let input = self.binarize_dispatch_info(batch);
        Ok(input
            .into_iter()
            .chain(
                self.dispatch_list((batch, n, false), &parts)
                    .into_iter()
                    .flatten()
                    .map(|d| self.dispatch_info(d)),
            )
            .collect())
    }

    fn dispatch_info(&self, d: &dispatch::Dispatch) -> DispatchInfo {
        DispatchInfo {
            kernel: self.ctx.pipeline(d.pipeline).name.to_string(),
            label: d.label.clone(),
            count: d.count,
            workgroups: d.count.iter().map(|&c| c as u64).product(),
            flops: d.flops,
            bytes: d.bytes,
        }
    }

    /// How grids are sized (compute units aimed at, split-K slices, norm partials).
    pub fn grid(&self) -> GridConfig {
        self.grid
    }

    /// Sizes grids by `grid` from now on: shape buffers, plans and dispatches bound to them
    /// are rebuilt at the next step.
    pub fn set_grid(&mut self, grid: GridConfig) {
        if grid != self.grid {
            self.grid = grid;
            self.shape = None;
            self.plans.clear();
            self.full = None;
            self.subsets.clear();
            self.last = None;
        }
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

    /// Sets how many time indices of the coupled chains one submit records at most (None:
    /// [`CHAIN_INDICES_PER_SUBMIT`]; 1: one index per submit, the count read after each
    /// from index m on). The chains' outcome and the step do not depend on it.
    pub fn set_chain_indices_per_submit(&mut self, most: Option<usize>) {
        self.chain_indices_per_submit = most;
    }
}

/// Coefficients read back from the device: (a, b, c, objective).
pub type DeviceCoefficients = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
