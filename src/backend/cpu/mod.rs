//! The CPU reference backend: hand-written forward and backward passes over matrixmultiply's
//! sgemm, parallel over rows of the batch with rayon. Rows are split into one contiguous
//! range per worker and each worker owns its gradient accumulator, so results do not depend
//! on scheduling: the same seed gives the same numbers on every run.

mod backward;
pub mod fastmath;
mod forward;
mod gemm;

use super::{Backend, ChainOutcome, GradNorms, Noise, PhaseTimer, RunningLse, StepStats, Timing};
use crate::coupling::chain::{self, ChainState};
use crate::coupling::CouplingConfig;
use crate::estimators::{CoefficientProgram, Coefficients};
use crate::model::Layout;
use crate::optim::{self, AdamConfig, AdamState};
use crate::rng::{self, Stream};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Rows a worker handles at a time: small enough that a piece's activations stay in L2.
const PIECE_ROWS: usize = 128;

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
    eps: Vec<f32>,
    log_w: Vec<f32>,
    /// Per-sample encoder upstream [rows, 2 z_dim], summed per datapoint into `enc_up`.
    row_up: Vec<f32>,
    enc_up: Vec<f32>,
    workers: Vec<Worker>,
}

impl CpuBackend {
    /// A backend with `threads` workers (0: all cores).
    pub fn new(layout: &Layout, params: &[f32], threads: usize) -> Result<CpuBackend> {
        if params.len() != layout.len {
            bail!(
                "parameter vector has {} values, the layout needs {}",
                params.len(),
                layout.len
            );
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
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
            timer: PhaseTimer::default(),
            peak_bytes: 0,
            row_limit: None,
            chain_group_overhead: None,
            batch: 0,
            n: 0,
            x: Vec::new(),
            enc: Acts::default(),
            dec: Acts::default(),
            eps: Vec::new(),
            log_w: Vec::new(),
            row_up: Vec::new(),
            enc_up: Vec::new(),
            workers: (0..threads).map(|_| Worker::default()).collect(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
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
        grow(&mut self.eps, rows * a.z_dim);
        grow(&mut self.log_w, rows);
        grow(&mut self.row_up, rows * 2 * a.z_dim);
        grow(&mut self.enc_up, batch * 2 * a.z_dim);
        let widest = enc_dims.iter().chain(&dec_dims).copied().max().unwrap_or(1);
        for w in &mut self.workers {
            grow(&mut w.grad, self.layout.len);
            grow(&mut w.scaled, PIECE_ROWS * widest);
            grow(&mut w.delta, PIECE_ROWS * widest);
            grow(&mut w.delta_prev, PIECE_ROWS * widest);
        }
        self.batch = batch;
        self.n = n;
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads)
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
        let t_adam = self.timer.start();
        let el = self.layout.encoder_len;
        let scales = [
            optim::clip_factor(self.norms.encoder, cfg.clip_encoder),
            optim::clip_factor(self.norms.decoder, cfg.clip_decoder),
        ];
        let step = self.adam.begin_step(cfg, lr);
        let st = &mut self.adam;
        let (grad, params) = (&self.grad, &mut self.params);
        self.pool.install(|| {
            params
                .par_chunks_mut(ADAM_CHUNK)
                .zip(grad.par_chunks(ADAM_CHUNK))
                .zip(
                    st.m.par_chunks_mut(ADAM_CHUNK)
                        .zip(st.v.par_chunks_mut(ADAM_CHUNK))
                        .zip(st.v_max.par_chunks_mut(ADAM_CHUNK)),
                )
                .enumerate()
                .for_each(|(ci, ((p, g), ((m, v), vm)))| {
                    // A chunk that straddles the encoder/decoder boundary is split there.
                    let off = ci * ADAM_CHUNK;
                    let cut = el.saturating_sub(off).min(p.len());
                    let (p0, p1) = p.split_at_mut(cut);
                    let (m0, m1) = m.split_at_mut(cut);
                    let (v0, v1) = v.split_at_mut(cut);
                    let (vm0, vm1) = vm.split_at_mut(cut);
                    optim::adam_update(&step, p0, &g[..cut], scales[0], m0, v0, vm0);
                    optim::adam_update(&step, p1, &g[cut..], scales[1], m1, v1, vm1);
                })
        });
        let len = self.layout.len;
        self.timer
            .stop(t_adam, "adam", || format!("adam [{len} parameters]"), 0.0);
        Ok(())
    }

    fn reset_optimizer(&mut self) {
        self.adam = AdamState::new(self.layout.len);
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
        let (norms, objective) = if batch * n > self.max_rows() {
            self.chunked_coefficients_and_backward(x, batch, n, noise, program)?
        } else {
            self.forward(x, batch, n, noise)?;
            let mut coeffs = std::mem::take(&mut self.coeffs);
            let t_coef = self.timer.start();
            program.coefficients_into(&self.log_w[..batch * n], batch, n, &mut coeffs);
            self.timer.stop(
                t_coef,
                "coefficients",
                || format!("coefficients [{batch} x {n}]"),
                0.0,
            );
            let norms = self.backward(&coeffs.a, &coeffs.b, &coeffs.c);
            let objective = coeffs.objective.iter().sum::<f64>() / batch as f64;
            self.coeffs = coeffs;
            (norms?, objective)
        };
        self.optimizer_step(cfg, lr)?;
        self.stats.steps += 1;
        self.stats.objective += objective;
        self.stats.grad_norm_encoder += norms.encoder;
        self.stats.grad_norm_decoder += norms.decoder;
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
        chains.validate().map_err(anyhow::Error::msg)?;
        if batch == 0 {
            bail!("a training step needs at least one datapoint");
        }
        let kk = chains.particles;
        // Per datapoint: every log-weight drawn so far and the chains' coefficients, by id.
        let mut hist: Vec<Vec<f64>> = vec![Vec::new(); batch];
        let mut coef: Vec<Vec<f64>> = vec![Vec::new(); batch];
        let mut states = vec![ChainState::default(); batch];
        let mut t = 0;
        while states.iter().any(|s| !s.done) {
            let block = chains.step_block(t);
            let first = if t == 0 { 0 } else { block.start };
            // Only datapoints still running draw this index's block (their own noise).
            let running: Vec<u32> = (0..batch as u32)
                .filter(|&r| !states[r as usize].done)
                .collect();
            let pick = (running.len() < batch).then_some(&running[..]);
            let per = (self.max_rows() / running.len()).max(1);
            for s0 in (first..block.end).step_by(per) {
                let l = per.min(block.end - s0);
                // The encoder runs once per minibatch: its output stays in place.
                let lw = self.forward_impl(
                    x,
                    batch,
                    l,
                    &Noise {
                        first_sample: noise.first_sample + s0 as u32,
                        ..*noise
                    },
                    t == 0 && s0 == first,
                    pick,
                )?;
                for (i, &r) in running.iter().enumerate() {
                    hist[r as usize].extend(lw[i * l..(i + 1) * l].iter().map(|&v| v as f64));
                }
            }
            for &r in &running {
                let r = r as usize;
                debug_assert_eq!(hist[r].len(), block.end);
                coef[r].resize(block.end, 0.0);
                let u = rng::uniforms4(
                    noise.seed,
                    Stream::Coupling,
                    noise.step,
                    noise.first_datapoint + r as u32,
                    t as u32,
                )
                .map(|v| v as f64);
                chain::step(chains, &mut states[r], &hist[r], u, &mut coef[r]);
            }
            t += 1;
        }
        // Decoder: the chains' coefficients; encoder: IWAE-DReG on the first K particles. The
        // backward runs per group of rows over the particles its rows used (beyond them the
        // coefficients are zero), each group's coefficients scaled by |group| / batch since a
        // pass averages over its own rows.
        let dreg =
            crate::estimators::Estimator::new(crate::estimators::EstimatorKind::IwaeDreg, 0.0);
        let (mut wa, mut wb, mut wc) = (vec![0.0; kk], vec![0.0; kk], vec![0.0; kk]);
        let mut objective = 0.0;
        let mut encoder_b = Vec::with_capacity(batch);
        for h in &hist {
            objective += dreg.coefficients_row(&h[..kk], &mut wa, &mut wb, &mut wc);
            encoder_b.push(wb.clone());
        }
        let used: Vec<usize> = states.iter().map(|s| s.particles).collect();
        let overhead = self.chain_group_overhead.unwrap_or(chain::GROUP_OVERHEAD);
        let xd = self.layout.arch.x_dim;
        let mut norms = GradNorms::default();
        for (gi, (rows, n)) in chain::backward_groups(&used, overhead)
            .into_iter()
            .enumerate()
        {
            let gb = rows.len();
            let scale = gb as f64 / batch as f64;
            let (mut a, mut b) = (vec![0.0f32; gb * n], vec![0.0f32; gb * n]);
            for (i, r) in rows.clone().enumerate() {
                for (dst, &v) in a[i * n..(i + 1) * n].iter_mut().zip(&coef[r]) {
                    *dst = (v * scale) as f32;
                }
                for (dst, &v) in b[i * n..i * n + kk].iter_mut().zip(&encoder_b[r]) {
                    *dst = (v * scale) as f32;
                }
            }
            let c = vec![0.0f32; gb * n];
            let group_noise = Noise {
                first_datapoint: noise.first_datapoint + rows.start as u32,
                ..*noise
            };
            let xs = &x[rows.start * xd..rows.end * xd];
            norms = self.backward_in_chunks(xs, gb, n, &group_noise, &a, &b, &c, gi > 0)?;
        }
        self.optimizer_step(cfg, lr)?;
        self.stats.steps += 1;
        self.stats.objective += objective / batch as f64;
        self.stats.grad_norm_encoder += norms.encoder;
        self.stats.grad_norm_decoder += norms.decoder;
        Ok(ChainOutcome {
            iterations: t,
            meeting_times: states
                .iter()
                .map(|s| s.meeting_time(chains) as u32)
                .collect(),
            capped: states.iter().map(|s| s.capped).collect(),
            particles: states.iter().map(|s| s.particles as u32).collect(),
        })
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

impl CpuBackend {
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

    /// A step whose batch x N rows exceed one pass: log-weights chunk by chunk, the
    /// coefficients over all N, then each chunk's forward again (same noise, same z) and its
    /// backward added into the gradient. Memory stays that of one chunk.
    fn chunked_coefficients_and_backward(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        program: &CoefficientProgram,
    ) -> Result<(GradNorms, f64)> {
        let per = (self.max_rows() / batch).max(1);
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(per)
            .map(|s0| (s0, per.min(n - s0)))
            .collect();
        let mut full = vec![0.0f32; batch * n];
        for &(s0, len) in &chunks {
            let lw = self.forward(
                x,
                batch,
                len,
                &Noise {
                    first_sample: noise.first_sample + s0 as u32,
                    ..*noise
                },
            )?;
            for b in 0..batch {
                full[b * n + s0..b * n + s0 + len].copy_from_slice(&lw[b * len..(b + 1) * len]);
            }
        }
        let mut coeffs = std::mem::take(&mut self.coeffs);
        program.coefficients_into(&full, batch, n, &mut coeffs);
        let norms =
            self.backward_in_chunks(x, batch, n, noise, &coeffs.a, &coeffs.b, &coeffs.c, false)?;
        let objective = coeffs.objective.iter().sum::<f64>() / batch as f64;
        self.coeffs = coeffs;
        Ok((norms, objective))
    }

    /// The backward of a step over `n` samples with given coefficients `[batch, n]`: each
    /// chunk's forward pass again (same noise, same z), its backward added into the gradient
    /// (the first chunk's too when `accumulate`).
    #[allow(clippy::too_many_arguments)]
    fn backward_in_chunks(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        accumulate: bool,
    ) -> Result<GradNorms> {
        let per = (self.max_rows() / batch).max(1);
        let mut norms = GradNorms::default();
        let (mut ca, mut cb, mut cc) = (Vec::new(), Vec::new(), Vec::new());
        for (ci, s0) in (0..n).step_by(per).enumerate() {
            let len = per.min(n - s0);
            self.forward(
                x,
                batch,
                len,
                &Noise {
                    first_sample: noise.first_sample + s0 as u32,
                    ..*noise
                },
            )?;
            for (dst, src) in [(&mut ca, a), (&mut cb, b), (&mut cc, c)] {
                dst.clear();
                for r in 0..batch {
                    dst.extend_from_slice(&src[r * n + s0..r * n + s0 + len]);
                }
            }
            norms = self.backward_impl(&ca, &cb, &cc, accumulate || ci > 0)?;
        }
        Ok(norms)
    }

    /// Bytes held by parameters, optimizer state, activations and worker scratch.
    fn working_bytes(&self) -> u64 {
        let acts: usize = self
            .enc
            .acts
            .iter()
            .chain(&self.dec.acts)
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
            + self.enc_up.len();
        4 * (acts + workers + other) as u64
    }
}

/// Sample rows of one pass: about 360 MB of activations for the MNIST model. Larger steps
/// (a high MLMC level, a long SUMO tail) run in chunks.
const ROWS_PER_PASS: usize = 1 << 16;

/// Parameters per parallel chunk of the optimizer step.
const ADAM_CHUNK: usize = 16_384;
