//! Backends compute log-weights and gradients for given per-sample coefficients; they know
//! no estimator (docs/design.md §1, §4). The CPU backend is the reference every GPU kernel is
//! checked against (docs/design.md §5.1).

pub mod cpu;
pub mod gpu;
mod input;

pub use input::{ImageRows, ImageUpload, Minibatch};

use crate::coupling::CouplingConfig;
use crate::data::idx::Images;
use crate::estimators::CoefficientProgram;
use crate::model::Layout;
use crate::optim::{AdamConfig, AdamState};
use crate::rng::Stream;
use anyhow::Result;

/// Where the reparameterisation noise of a forward pass comes from: row `r` of the batch
/// uses Philox counter (stream, step, first_datapoint + r, block), and its samples are
/// normals number (first_sample + s) * z_dim + d of that counter, so a chunked evaluation
/// draws the same numbers as an unchunked one.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    pub seed: u64,
    pub stream: Stream,
    pub step: u32,
    pub first_datapoint: u32,
    pub first_sample: u32,
}

/// What every training step takes besides its minibatch and its estimator (a coefficient
/// program with its N, or coupled chains): the rows of the minibatch, where their noise
/// comes from, and the Adam step that ends it.
#[derive(Clone, Copy, Debug)]
pub struct StepInputs {
    /// Datapoints in the minibatch.
    pub batch: usize,
    pub noise: Noise,
    pub adam: AdamConfig,
    /// Adam's learning rate for this step.
    pub lr: f64,
}

/// L2 norms of the last gradient (ascent direction, mean over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GradNorms {
    pub encoder: f64,
    pub decoder: f64,
}

/// One timed piece of work: a GPU dispatch (timestamp queries) or a CPU phase (wall clock).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timing {
    /// The kernel (GPU entry point) or phase (CPU).
    pub kernel: String,
    /// What it computed, with its shape, e.g. "decoder.4 forward [5000x200 . 200x784]".
    pub label: String,
    /// Microseconds since profiling was switched on.
    pub start_us: f64,
    pub dur_us: f64,
    /// Floating-point operations (2 m n k for a GEMM; 0 when not counted).
    pub flops: f64,
}

/// The compute units a GPU backend sizes its grids for unless told otherwise (`uvae profile
/// --compute-units`, `UVAE_COMPUTE_UNITS`): an H100/H200's 132 SMs.
pub const DEFAULT_COMPUTE_UNITS: usize = 132;

/// Sample rows per evaluation pass on a backend that does not size its own passes
/// ([`Backend::eval_rows`]): bounds memory (about 11 KB a row for the MNIST model on a GPU).
/// Here, not in `crate::eval`, because the backends size their passes from it.
pub const EVAL_ROWS: usize = 16_384;

/// One dispatch of a recorded GPU plan, known without timing it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DispatchInfo {
    /// The kernel (GPU entry point).
    pub kernel: String,
    /// What it computes, with its shape.
    pub label: String,
    /// Workgroups per dimension, and their product.
    pub count: [u32; 3],
    pub workgroups: u64,
    /// Floating-point operations (2 m n k for a GEMM, one per term for a reduction; 0 when
    /// not counted).
    pub flops: f64,
    /// Approximate bytes read and written: each operand element once per use, GEMM
    /// operands once (not once per tile that loads them).
    pub bytes: f64,
}

/// Records CPU phases with wall-clock timers while switched on.
#[derive(Debug, Default)]
pub struct PhaseTimer {
    origin: Option<std::time::Instant>,
    pub events: Vec<Timing>,
}

impl PhaseTimer {
    pub fn set(&mut self, on: bool) {
        self.origin = on.then(std::time::Instant::now);
        self.events.clear();
    }

    /// A start mark (None while profiling is off).
    pub fn start(&self) -> Option<std::time::Instant> {
        self.origin.map(|_| std::time::Instant::now())
    }

    pub fn stop(
        &mut self,
        start: Option<std::time::Instant>,
        kernel: &str,
        label: impl FnOnce() -> String,
        flops: f64,
    ) {
        if let (Some(origin), Some(t0)) = (self.origin, start) {
            let end = std::time::Instant::now();
            self.events.push(Timing {
                kernel: kernel.to_string(),
                label: label(),
                start_us: (t0 - origin).as_secs_f64() * 1e6,
                dur_us: (end - t0).as_secs_f64() * 1e6,
                flops,
            });
        }
    }
}

/// Sums over the training steps since the last `take_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub steps: usize,
    /// Sum over steps of the minibatch mean of the estimator's objective (finite steps only;
    /// kept as bit patterns in files so a resumed run adds the same numbers).
    #[serde(with = "crate::files::f64_bits")]
    pub objective: f64,
    #[serde(with = "crate::files::f64_bits")]
    pub grad_norm_encoder: f64,
    #[serde(with = "crate::files::f64_bits")]
    pub grad_norm_decoder: f64,
    /// Steps whose objective or a gradient norm was NaN or infinite: they are left out of
    /// the sums, and Adam left the parameters and moments alone (its step count advanced).
    #[serde(default)]
    pub nonfinite: usize,
    /// The first such step since the last read.
    #[serde(default)]
    pub first_nonfinite: Option<NonFiniteStep>,
}

impl StepStats {
    /// Adds one step's objective and gradient norms, or counts the step as non-finite.
    pub fn push(&mut self, objective: f64, norms: GradNorms) {
        self.steps += 1;
        let nf = NonFiniteStep {
            index: self.steps,
            objective: !objective.is_finite(),
            encoder: !norms.encoder.is_finite(),
            decoder: !norms.decoder.is_finite(),
        };
        if nf.any() {
            self.nonfinite += 1;
            self.first_nonfinite.get_or_insert(nf);
        } else {
            self.objective += objective;
            self.grad_norm_encoder += norms.encoder;
            self.grad_norm_decoder += norms.decoder;
        }
    }
}

/// A training step whose numbers were not finite: which of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NonFiniteStep {
    /// 1-based among the steps since the backend's sums were last read.
    pub index: usize,
    pub objective: bool,
    /// The encoder's (phi) gradient norm.
    pub encoder: bool,
    /// The decoder's (theta) gradient norm.
    pub decoder: bool,
}

impl NonFiniteStep {
    pub fn any(&self) -> bool {
        self.objective || self.encoder || self.decoder
    }

    /// Bits 1 (objective), 2 (encoder), 4 (decoder), as the GPU's statistics hold them.
    pub fn from_mask(index: usize, mask: u32) -> Self {
        NonFiniteStep {
            index,
            objective: mask & 1 != 0,
            encoder: mask & 2 != 0,
            decoder: mask & 4 != 0,
        }
    }

    /// The parameter groups whose gradient was not finite, in words.
    pub fn groups(&self) -> &'static str {
        match (self.encoder, self.decoder) {
            (true, true) => "encoder and decoder",
            (true, false) => "encoder",
            (false, true) => "decoder",
            (false, false) => "neither (the objective alone)",
        }
    }
}

/// What one coupled-chain training step did ([`Backend::chain_minibatch`]), per datapoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChainOutcome {
    /// Time indices the batch ran: its slowest datapoint's.
    pub iterations: usize,
    /// Meeting time per datapoint (`max_iters`, a lower bound, where capped).
    pub meeting_times: Vec<u32>,
    /// Datapoints stopped by `max_iters` before meeting: their estimates are biased.
    pub capped: Vec<bool>,
    /// Particles each datapoint's estimate used (its cost); the batch computed
    /// `particles_through(iterations)` for every datapoint.
    pub particles: Vec<u32>,
}

/// Checks that an optimizer state fits a parameter vector of `len` values.
pub fn check_optimizer_state(state: &AdamState, len: usize) -> Result<()> {
    for (name, v) in [("m", &state.m), ("v", &state.v), ("v_max", &state.v_max)] {
        if v.len() != len {
            anyhow::bail!(
                "optimizer state {name} has {} values, the layout needs {len}",
                v.len()
            );
        }
    }
    Ok(())
}

/// One training backend. A training step is `train_minibatch` (`train_step` with values
/// from the host): forward (log-weights), the estimator's coefficients from its
/// [`CoefficientProgram`], backward, and Adam, with no readback; `take_stats` reads the
/// running sums. Its minibatch is values from the host, or, after `upload_images`, rows of
/// the training images that the backend binarizes itself. The separate `forward`, `backward` and
/// `optimizer_step` serve evaluation, tests and parity checks.
pub trait Backend {
    /// A one-line description (device, threads).
    fn describe(&self) -> String;
    fn layout(&self) -> &Layout;
    fn set_params(&mut self, values: &[f32]) -> Result<()>;
    fn params(&mut self) -> Result<Vec<f32>>;
    /// Encodes x [batch, x_dim], draws n samples per datapoint and returns the log-weights
    /// [batch, n]. Keeps what `backward` needs.
    fn forward(&mut self, x: &[f32], batch: usize, n: usize, noise: &Noise) -> Result<&[f32]>;
    /// The ascent gradient, mean over the batch, of the last forward pass for coefficients
    /// a (decoder), b (path) and c (score), each [batch, n].
    fn backward(&mut self, a: &[f32], b: &[f32], c: &[f32]) -> Result<GradNorms>;
    /// The last gradient, flat in `layout()` order.
    fn gradient(&mut self) -> Result<Vec<f32>>;
    /// One Adam step on the last gradient, clipping encoder and decoder separately.
    fn optimizer_step(&mut self, cfg: &AdamConfig, lr: f64) -> Result<()>;
    /// Resets the optimizer's moments (shapes follow `layout()`).
    fn reset_optimizer(&mut self);
    /// Adam's moments, AMSGrad's maxima and the step count (a GPU reads them back).
    fn optimizer_state(&mut self) -> Result<AdamState>;
    /// Replaces the optimizer's state (lengths must follow `layout()`).
    fn set_optimizer_state(&mut self, state: &AdamState) -> Result<()>;
    /// The sums since the last `take_stats`, leaving them in place.
    fn peek_stats(&mut self) -> Result<StepStats>;
    /// Replaces the running sums (a resumed run restores those of its last save).
    fn set_stats(&mut self, stats: &StepStats) -> Result<()>;
    /// Whether `peek_stats` is free (no device readback), so a loop may call it every step.
    fn stats_on_host(&self) -> bool {
        false
    }
    /// Takes the training images once, so that training steps may pass
    /// [`Minibatch::Images`] (indices, seed and step) instead of binarized values. The
    /// default declines: the host binarizes, the CPU backend's fastest path.
    fn upload_images(&mut self, _images: &Images) -> Result<ImageUpload> {
        Ok(ImageUpload::Declined)
    }
    /// One whole training step on minibatch x [batch, x_dim] with `n` samples per datapoint
    /// and the estimator's coefficients from `program`.
    fn train_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()>;
    /// [`Backend::train_minibatch`] on values prepared on the host.
    fn train_step(
        &mut self,
        x: &[f32],
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()> {
        self.train_minibatch(Minibatch::Host(x), step, n, program)
    }
    /// One training step with coupled Markov chains. The program `chains` is interpreted as
    /// `crate::coupling::chain::step` defines it (the GPU runs its WGSL twin), with the
    /// uniforms of Philox stream `Coupling` at (`noise.step`, datapoint, time index): every
    /// time index draws one block of particles for the whole batch (noise sample = particle
    /// id) and advances each datapoint's chains, until every datapoint is done or capped.
    /// Then one backward over every particle drawn: decoder coefficients from the chains,
    /// encoder coefficients IWAE-DReG on the first `K` particles (independent draws from q);
    /// then Adam. The objective in the stats is the IWAE bound of those `K` particles.
    fn chain_minibatch(
        &mut self,
        x: Minibatch<'_>,
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome>;
    /// [`Backend::chain_minibatch`] on values prepared on the host.
    fn chain_step(
        &mut self,
        x: &[f32],
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome> {
        self.chain_minibatch(Minibatch::Host(x), step, chains)
    }
    /// The sums since the last call, then resets them.
    fn take_stats(&mut self) -> Result<StepStats>;
    /// The most sample rows (batch x n) one forward pass may hold.
    fn max_rows(&self) -> usize;
    /// The sample rows an evaluation pass should hold: as many as fill the device without
    /// holding more working memory than it can spare (at most `max_rows`).
    fn eval_rows(&self) -> usize {
        self.max_rows().min(EVAL_ROWS)
    }
    /// Evaluation: a forward pass over one chunk of samples whose log-weights are folded into
    /// a running log-sum-exp per datapoint (`first` starts afresh); nothing is read back.
    fn lse_chunk(
        &mut self,
        x: &[f32],
        batch: usize,
        n: usize,
        noise: &Noise,
        first: bool,
    ) -> Result<()>;
    /// log sum_k exp(l_k) per datapoint over every chunk since the last `first`.
    fn lse_read(&mut self, batch: usize) -> Result<Vec<f64>>;
    /// Keeps that value of each of the `batch` datapoints after those kept before, without
    /// reading it back (a GPU copies it on the device), so an evaluation waits for the device
    /// once, in [`Backend::lse_take`], not once per group of datapoints.
    fn lse_keep(&mut self, batch: usize) -> Result<()>;
    /// Every value kept since the last call, in order, then forgets them.
    fn lse_take(&mut self) -> Result<Vec<f64>>;
    /// Switches per-kernel timing on or off; returns how this backend measures time.
    fn set_profiling(&mut self, on: bool) -> String;
    /// The timings recorded since profiling was switched on or last taken.
    fn take_timings(&mut self) -> Result<Vec<Timing>>;
    /// What changed in how time was measured since profiling was switched on (a GPU whose
    /// timestamps read zero or ran backwards moves to another way), for the report.
    fn profiling_notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// (bytes held now, most bytes held since creation) of working memory: device buffers
    /// for a GPU, activation and gradient buffers for the CPU.
    fn memory_bytes(&self) -> (u64, u64);
    /// The dispatches of one training step at (batch, n) as recorded (building the plan if
    /// needed), in order, led by the binarization where the backend holds the images; empty for a backend without recorded plans (the CPU) or a step
    /// that runs in chunks.
    fn step_dispatches(&mut self, _batch: usize, _n: usize) -> Result<Vec<DispatchInfo>> {
        Ok(Vec::new())
    }
    /// The compute units (SMs, CUs) the backend sizes its grids for (split-K GEMMs, partial
    /// reductions); adapters do not report it. Ignored by backends without grids (the CPU).
    fn set_compute_units(&mut self, _units: usize) {}
}

/// A parameter vector for `layout`, or an error saying how long it must be.
pub(crate) fn check_param_len(layout: &Layout, values: &[f32]) -> Result<()> {
    if values.len() != layout.len {
        anyhow::bail!(
            "parameter vector has {} values, the layout needs {}",
            values.len(),
            layout.len
        );
    }
    Ok(())
}

/// A log-sum-exp merged chunk by chunk: (max, sum of exp(l - max)).
#[derive(Clone, Copy, Debug)]
pub struct RunningLse {
    pub max: f64,
    pub sum: f64,
}

impl RunningLse {
    pub const EMPTY: RunningLse = RunningLse {
        max: f64::NEG_INFINITY,
        sum: 0.0,
    };

    pub fn push(&mut self, l: &[f32]) {
        let m = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        if m == f64::NEG_INFINITY {
            return;
        }
        if m > self.max {
            self.sum *= (self.max - m).exp();
            self.max = m;
        }
        self.sum += l.iter().map(|&v| (v as f64 - self.max).exp()).sum::<f64>();
    }

    pub fn value(&self) -> f64 {
        self.max + self.sum.ln()
    }
}
