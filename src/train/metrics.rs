//! What a run reports: one line of metrics.jsonl per epoch, and the running sums a run
//! keeps between them.

use crate::backend::ChainOutcome;
use crate::coupling::CouplingConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub steps: usize,
    pub lr: f64,
    /// Mean over the epoch's minibatches of the estimator's objective (nats per datapoint).
    pub train_objective: f64,
    /// Validation L_K, mean and standard error over the validation images.
    pub val_lk: f64,
    pub val_lk_stderr: f64,
    pub val_k: usize,
    /// --test-every: the test bound L_K after this epoch, mean and standard error over the
    /// test images scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_lk: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_lk_stderr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_k: Option<usize>,
    /// JVI and JVI-DReG runs: the jackknife estimate J from the test bound's K samples (not
    /// a bound), mean and standard error over the same test images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_jvi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_jvi_stderr: Option<f64>,
    /// Seconds of training steps in this epoch (validation excluded).
    pub seconds: f64,
    pub datapoints_per_s: f64,
    /// Mean L2 norm of the minibatch gradients, encoder (phi) and decoder (theta).
    pub grad_norm_encoder: f64,
    pub grad_norm_decoder: f64,
    /// Mean samples per datapoint per step this epoch (the cost), and its expectation (None
    /// for the coupled chains, whose cost follows the meeting time: `samples_per_datapoint` is
    /// then its running estimate and `chains` the meeting-time distribution).
    pub samples_per_datapoint: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_samples_per_datapoint: Option<f64>,
    /// SUMO's tail lengths K or MLMC's levels drawn this epoch: value -> minibatches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<std::collections::BTreeMap<u32, usize>>,
    /// Coupled chains: meeting times and cost this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chains: Option<ChainMetrics>,
    /// --on-nonfinite skip: the steps of this epoch left out because their objective or a
    /// gradient norm was NaN or infinite (the means above are over the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonfinite_steps: Option<usize>,
    /// --grad-var-every: the gradient's spread on the fixed minibatch, measured after
    /// every N-th run step that fell in this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_var: Option<Vec<super::GradVarPoint>>,
    /// --model toy / ppca: the exact mean log p(x) over the training data under the current
    /// decoder (closed form, f64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_log_px: Option<f64>,
    /// --model toy: the maximum-likelihood optimum's mean log p(x) (mu* = the data mean).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimum_log_px: Option<f64>,
}

/// A coupled-chain epoch: one meeting time per datapoint and step.
#[derive(Clone, Debug, Serialize)]
pub struct ChainMetrics {
    pub meeting_time_mean: f64,
    pub meeting_time_p90: usize,
    pub meeting_time_max: usize,
    /// Datapoint-steps stopped by the iteration cap before meeting: their gradients are
    /// truncated, hence biased.
    pub capped: usize,
    /// Mean time indices per step: the batch runs until its slowest datapoint is done.
    pub iterations_mean: f64,
    /// Mean particles per datapoint per step the batch computed (every datapoint draws until
    /// the slowest is done); `samples_per_datapoint` counts only those each estimate used.
    pub computed_samples_per_datapoint: f64,
}

/// The sums one epoch collects step by step, turned into its metrics when it ends.
/// A resumed run restores them from its training state, f64s as bit patterns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EpochSums {
    pub steps: usize,
    /// Sums of the backend's per-step objective and gradient norms (read every few steps),
    /// over the steps whose numbers were finite.
    #[serde(with = "crate::files::f64_bits")]
    pub objective: f64,
    #[serde(with = "crate::files::f64_bits")]
    pub grad_norm_encoder: f64,
    #[serde(with = "crate::files::f64_bits")]
    pub grad_norm_decoder: f64,
    /// Steps the backend found non-finite (and did not apply).
    pub nonfinite: usize,
    #[serde(with = "crate::files::f64_bits")]
    pub samples: f64,
    pub levels: BTreeMap<u32, usize>,
    pub meeting_times: Vec<usize>,
    pub capped: Vec<bool>,
    pub iterations: usize,
    pub computed: usize,
    /// --grad-var-every's measurements this epoch (absent in states written before it).
    #[serde(default, with = "super::grad_var::bits")]
    pub grad_var: Vec<super::GradVarPoint>,
}

impl EpochSums {
    /// Adds one step's draw and, for coupled chains, what the chains did.
    pub fn push_step(&mut self, info: super::StepInfo, chains: Option<&CouplingConfig>) {
        self.steps += 1;
        self.samples += info.samples;
        if let Some(level) = info.level {
            *self.levels.entry(level).or_default() += 1;
        }
        if let (Some(o), Some(c)) = (info.chains, chains) {
            self.push_chains(&o, c);
        }
    }

    fn push_chains(&mut self, o: &ChainOutcome, c: &CouplingConfig) {
        self.meeting_times
            .extend(o.meeting_times.iter().map(|&t| t as usize));
        self.capped.extend(&o.capped);
        self.iterations += o.iterations;
        self.computed += c.particles_through(o.iterations);
    }

    /// Adds the backend's sums since its last read.
    pub fn push_stats(&mut self, s: &crate::backend::StepStats) {
        self.objective += s.objective;
        self.grad_norm_encoder += s.grad_norm_encoder;
        self.grad_norm_decoder += s.grad_norm_decoder;
        self.nonfinite += s.nonfinite;
    }

    /// The chains' meeting-time summary, if the epoch ran coupled chains.
    pub fn chain_metrics(&self) -> Option<ChainMetrics> {
        let s = self.steps as f64;
        (!self.meeting_times.is_empty()).then(|| {
            let m = crate::coupling::MeetingStats::from_times(&self.meeting_times, &self.capped);
            ChainMetrics {
                meeting_time_mean: m.mean,
                meeting_time_p90: m.p90,
                meeting_time_max: m.max,
                capped: m.capped,
                iterations_mean: self.iterations as f64 / s,
                computed_samples_per_datapoint: self.computed as f64 / s,
            }
        })
    }
}
