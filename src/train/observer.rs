//! What a training run tells whoever watches it (the CLI's console), as it happens.

use super::EpochMetrics;

/// Hooks a run calls; every one has a default that does nothing.
pub trait TrainObserver {
    /// The backend is made: what it is (device or threads, and the CPU's vector paths).
    fn on_backend(&mut self, _description: &str) {}
    /// The run begins: `epochs` of `steps_per_epoch` minibatches of `batch` datapoints.
    fn on_start(&mut self, _epochs: usize, _steps_per_epoch: usize, _batch: usize) {}
    /// Step `step` (from 1) of `epoch` (from 1) is submitted; `running_objective` is the
    /// epoch's mean objective so far when the backend's sums were just read, else None.
    fn on_step(&mut self, _epoch: usize, _step: usize, _running_objective: Option<f64>) {}
    /// The epoch's training steps are done; its validation bound over `images` begins.
    fn on_validation(&mut self, _epoch: usize, _images: usize) {}
    /// The epoch's metrics, once written to metrics.jsonl and the checkpoint saved.
    fn on_epoch(&mut self, _metrics: &EpochMetrics) {}
}

/// An observer that only hears about finished epochs.
pub(super) struct EpochCallback<F>(pub F);

impl<F: FnMut(&EpochMetrics)> TrainObserver for EpochCallback<F> {
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        (self.0)(metrics)
    }
}
