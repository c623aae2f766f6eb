//! The CPU reference backend: hand-written forward and backward passes over matrixmultiply's
//! sgemm, parallel over rows of the batch with rayon. Rows are split into one contiguous
//! range per worker and each worker owns its gradient accumulator, so results do not depend
//! on scheduling: the same seed gives the same numbers on every run.
//!
//! This file holds the backend's state and the `Backend` impl, which delegates to:
//! `gemm` (sgemm and the linear layers), `forward`, `backward`, `adam` (the optimizer step),
//! `step` (a training step, chunked when it exceeds one pass) and `chains` (coupled chains).

mod adam;
mod backward;
mod chains;
mod cond;
pub mod fastmath;
mod forward;
mod gemm;
mod hier;
mod phases;
mod step;
pub mod vector_path;

pub use gemm::square_sgemm_gflops;
pub use phases::{decoder_phase_rates, PhaseRate};

use super::{
    Backend, ChainOutcome, GradNorms, Minibatch, Noise, PhaseTimer, RunningLse, StepInputs,
    StepStats, Timing,
};
use crate::coupling::CouplingConfig;
use crate::estimators::{CoefficientProgram, Coefficients};
use crate::model::Layout;
use crate::optim::{AdamConfig, AdamState};
use anyhow::{bail, Result};

/// Rows a worker handles at a time. Each of a piece's GEMMs repacks its layer's weights, so a
/// piece must be long enough to amortise that (at 128 rows the decoder's forward GEMMs took
/// 27 to 58 % longer than in one call per worker, `uvae bench --phases`), yet short enough
/// that its activations stay in cache for the elementwise pass after it.
const PIECE_ROWS: usize = 512;

/// Rows per weight-gradient GEMM inside a piece: the gradient sums rows in these groups, in
/// order, so checkpoints are the same for every PIECE_ROWS.
const GRAD_ROWS: usize = 128;

/// Sample rows of one pass: about 360 MB of activations for the MNIST model. Larger steps
/// (a high MLMC level, a long SUMO tail) run in chunks.
const ROWS_PER_PASS: usize = 1 << 16;

/// Per-worker scratch, reused across steps.
#[derive(Default)]
struct Worker {
    grad: Vec<f32>,
    scaled: Vec<f32>,
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
}

/// Activations of one MLP over `rows`: acts[0] is the input, acts[i] the output of layer i
/// (the decoder's output is overwritten by the likelihood's gradient, x - sigmoid(logit) or
/// (x - mean) / s^2).
#[derive(Default)]
struct Acts {
    acts: Vec<Vec<f32>>,
}

/// The backend's worker pool: `threads` workers (0: all cores), each flushing subnormals
/// ([`crate::denormals`]).
pub fn worker_pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| crate::denormals::flush_on_this_thread())
        .build()?)
}

pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
    layout: Layout,
    params: Vec<f32>,
    grad: Vec<f32>,
    adam: AdamState,
    /// Norms of the last gradient, reused for clipping.
    norms: GradNorms,
    coeffs: Coefficients,
    stats: StepStats,
    lse: Vec<RunningLse>,
    /// Values kept by `lse_keep` for `lse_take`.
    lse_kept: Vec<f64>,
    timer: PhaseTimer,
    peak_bytes: u64,
    /// Caps the rows of one pass (tests of chunking); None: ROWS_PER_PASS.
    row_limit: Option<usize>,
    /// Overrides the coupled chains' backward-group overhead (tests of the grouping).
    chain_group_overhead: Option<usize>,
    batch: usize,
    n: usize,
    x: Vec<f32>,
    enc: Acts,
    dec: Acts,
    /// The two-layer model's q(z2 | z1) and p(z1 | z2), per sample row (empty otherwise).
    enc2: Acts,
    dec2: Acts,
    /// The conditional model's prior p(z | c), per datapoint (empty otherwise).
    prior: Acts,
    eps: Vec<f32>,
    log_w: Vec<f32>,
    /// Per-sample encoder upstream [rows, 2 z_dim], summed per datapoint into `enc_up`.
    row_up: Vec<f32>,
    enc_up: Vec<f32>,
    /// The conditional prior's head gradient per sample row [rows, 2 z_dim] (scaled by a),
    /// summed per datapoint into `prior_up`.
    row_prior_up: Vec<f32>,
    prior_up: Vec<f32>,
    workers: Vec<Worker>,
}

impl CpuBackend {
    /// A backend with `threads` workers (0: all cores).
    pub fn new(layout: &Layout, params: &[f32], threads: usize) -> Result<CpuBackend> {
        crate::backend::check_param_len(layout, params)?;
        crate::error::threads(threads)?;
        vector_path::configured()?;
        let pool = worker_pool(threads)?;
        let threads = pool.current_num_threads();
        Ok(CpuBackend {
            pool,
            threads,
            layout: layout.clone(),
            params: params.to_vec(),
            grad: vec![0.0; layout.len],
            adam: AdamState::new(layout.len),
            norms: GradNorms::default(),
            coeffs: Coefficients::default(),
            stats: StepStats::default(),
            lse: Vec::new(),
            lse_kept: Vec::new(),
            timer: PhaseTimer::default(),
            peak_bytes: 0,
            row_limit: None,
            chain_group_overhead: None,
            batch: 0,
            n: 0,
            x: Vec::new(),
            enc: Acts::default(),
            dec: Acts::default(),
            enc2: Acts::default(),
            dec2: Acts::default(),
            prior: Acts::default(),
            eps: Vec::new(),
            log_w: Vec::new(),
            row_up: Vec::new(),
            enc_up: Vec::new(),
            row_prior_up: Vec::new(),
            prior_up: Vec::new(),
            workers: (0..threads).map(|_| Worker::default()).collect(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Caps the sample rows one pass holds (default 65,536); larger steps run in chunks.
    pub fn set_row_limit(&mut self, rows: Option<usize>) {
        self.row_limit = rows;
    }

    /// Sets the overhead `coupling::chain::backward_groups` charges per backward group of a
    /// coupled step (None: the default; 0 splits wherever it saves a particle, a huge value
    /// keeps one group).
    pub fn set_chain_group_overhead(&mut self, overhead: Option<usize>) {
        self.chain_group_overhead = overhead;
    }

    fn resize(&mut self, batch: usize, n: usize) {
        let rows = batch * n;
        let a = &self.layout.arch;
        let grow = |v: &mut Vec<f32>, len: usize| {
            if v.len() != len {
                v.resize(len, 0.0);
            }
        };
        let enc_dims = a.encoder_dims();
        let dec_dims = a.decoder_dims();
        self.enc.acts.resize_with(enc_dims.len(), Vec::new);
        for (v, d) in self.enc.acts.iter_mut().zip(&enc_dims) {
            grow(v, batch * d);
        }
        self.dec.acts.resize_with(dec_dims.len(), Vec::new);
        for (v, d) in self.dec.acts.iter_mut().zip(&dec_dims) {
            grow(v, rows * d);
        }
        let (enc2_dims, dec2_dims) = (a.encoder2_dims(), a.decoder2_dims());
        for (acts, dims) in [(&mut self.enc2, &enc2_dims), (&mut self.dec2, &dec2_dims)] {
            acts.acts.resize_with(dims.len(), Vec::new);
            for (v, d) in acts.acts.iter_mut().zip(dims) {
                grow(v, rows * d);
            }
        }
        let prior_dims = a.prior_dims();
        self.prior.acts.resize_with(prior_dims.len(), Vec::new);
        for (v, d) in self.prior.acts.iter_mut().zip(&prior_dims) {
            grow(v, batch * d);
        }
        let prior_head = if a.cond.is_some() { 2 * a.z_dim } else { 0 };
        grow(&mut self.row_prior_up, rows * prior_head);
        grow(&mut self.prior_up, batch * prior_head);
        grow(&mut self.eps, rows * a.noise_dim());
        grow(&mut self.log_w, rows);
        grow(&mut self.row_up, rows * 2 * a.z_dim);
        grow(&mut self.enc_up, batch * 2 * a.z_dim);
        let widest = enc_dims
            .iter()
            .chain(&dec_dims)
            .chain(&enc2_dims)
            .chain(&dec2_dims)
            .chain(&prior_dims)
            .copied()
            .max()
            .unwrap_or(1);
        for w in &mut self.workers {
            grow(&mut w.grad, self.layout.len);
            grow(&mut w.scaled, GRAD_ROWS * widest);
            grow(&mut w.delta, PIECE_ROWS * widest);
            grow(&mut w.delta_prev, PIECE_ROWS * widest);
        }
        self.batch = batch;
        self.n = n;
    }

    /// Bytes held by parameters, optimizer state, activations and worker scratch.
    fn working_bytes(&self) -> u64 {
        let acts: usize = self
            .enc
            .acts
            .iter()
            .chain(&self.dec.acts)
            .chain(&self.enc2.acts)
            .chain(&self.dec2.acts)
            .chain(&self.prior.acts)
            .map(Vec::len)
            .sum();
        let workers: usize = self
            .workers
            .iter()
            .map(|w| w.grad.len() + w.scaled.len() + w.delta.len() + w.delta_prev.len())
            .sum();
        let other = self.params.len()
            + self.grad.len()
            + 3 * self.adam.m.len()
            + self.x.len()
            + self.eps.len()
            + self.log_w.len()
            + self.row_up.len()
            + self.enc_up.len()
            + self.row_prior_up.len()
            + self.prior_up.len();
        4 * (acts + workers + other) as u64
    }
}

/// The values of a host minibatch: the CPU binarizes on the host, so it holds no images.
fn host_values(x: Minibatch<'_>) -> Result<&[f32]> {
    match x {
        Minibatch::Host(x) => Ok(x),
        Minibatch::Images(_) => {
            bail!("the CPU backend holds no training images (it declines upload_images): pass binarized values")
        }
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            self.threads,
            vector_path::describe()
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn set_params(&mut self, values: &[f32]) -> Result<()> {
        crate::backend::check_param_len(&self.layout, values)?;
        self.params.copy_from_slice(values);
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    fn forward(&mut self, x: &[f32], batch: usize, n: usize, noise: &Noise) -> Result<&[f32]> {
        self.forward_impl(x, batch, n, noise, true, None)
    }

    fn backward(&mut self, a: &[f32], b: &[f32], c: &[f32]) -> Result<GradNorms> {
        self.backward_impl(a, b, c, false)
    }

    fn gradient(&mut self) -> Result<Vec<f32>> {
        Ok(self.grad.clone())
    }

    fn optimizer_step(&mut self, cfg: &AdamConfig, lr: f64) -> Result<()> {
        self.optimizer_step_impl(cfg, lr)
    }

    fn reset_optimizer(&mut self) {
        self.adam = AdamState::new(self.layout.len);
    }

    fn optimizer_state(&mut self) -> Result<AdamState> {
        Ok(self.adam.clone())
    }

    fn set_optimizer_state(&mut self, state: &AdamState) -> Result<()> {
        super::check_optimizer_state(state, self.layout.len)?;
        self.adam = state.clone();
        Ok(())
    }

    fn peek_stats(&mut self) -> Result<StepStats> {
        Ok(self.stats)
    }

    fn set_stats(&mut self, stats: &StepStats) -> Result<()> {
        self.stats = *stats;
        Ok(())
    }

    fn stats_on_host(&self) -> bool {
        true
    }

    fn train_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()> {
        self.train_step_impl(host_values(x)?, step, n, program)
    }

    fn chain_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome> {
        self.chain_step_impl(host_values(x)?, step, chains)
    }

    fn take_stats(&mut self) -> Result<StepStats> {
        Ok(std::mem::take(&mut self.stats))
    }

    fn lse_chunk(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        first: bool,
    ) -> Result<()> {
        if first {
            self.lse = vec![RunningLse::EMPTY; batch];
        }
        if self.lse.len() != batch {
            bail!(
                "lse_chunk: batch {batch} differs from the accumulation's {}",
                self.lse.len()
            );
        }
        self.forward(x, batch, n, noise)?;
        for (acc, l) in self.lse.iter_mut().zip(self.log_w.chunks(n)) {
            acc.push(l);
        }
        Ok(())
    }

    fn lse_read(&mut self, batch: usize) -> Result<Vec<f64>> {
        if self.lse.len() != batch {
            bail!("lse_read: no accumulation over {batch} datapoints");
        }
        Ok(self.lse.iter().map(RunningLse::value).collect())
    }

    fn lse_keep(&mut self, batch: usize) -> Result<()> {
        let values = self.lse_read(batch)?;
        self.lse_kept.extend(values);
        Ok(())
    }

    fn lse_take(&mut self) -> Result<Vec<f64>> {
        Ok(std::mem::take(&mut self.lse_kept))
    }

    fn max_rows(&self) -> usize {
        self.row_limit.unwrap_or(ROWS_PER_PASS)
    }

    fn set_profiling(&mut self, on: bool) -> String {
        self.timer.set(on);
        format!(
            "wall-clock timers around each phase, {} threads",
            self.threads
        )
    }

    fn take_timings(&mut self) -> Result<Vec<Timing>> {
        Ok(std::mem::take(&mut self.timer.events))
    }

    fn memory_bytes(&self) -> (u64, u64) {
        let now = self.working_bytes();
        (now, self.peak_bytes.max(now))
    }
}
