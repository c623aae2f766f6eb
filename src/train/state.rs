//! The training state a run saves beside its checkpoint, so `uvae train --resume` continues
//! exactly where the run stopped: one safetensors file, `train-state.safetensors`, whose
//! tensors are the parameters, Adam's moments and AMSGrad's maxima (F32) and the epoch's
//! shuffled order (U32), and whose metadata key `uvae-train-state` holds the rest as JSON
//! ([`Position`]): the epoch and the step within it, the Philox step counter, Adam's step
//! count, the word positions of the level and shuffle ChaCha streams, the epoch's partial
//! metric sums and the backend's unread sums, every f64 as its bit pattern.
//!
//! The state carries its own copy of the parameters, so it never depends on the checkpoint
//! beside it: both are written to temporary files first and renamed state first, and the
//! checkpoint's metadata names the step it holds. A kill between the two renames leaves a new
//! state beside an older checkpoint; the resume sees their steps differ and rewrites the
//! checkpoint from the state.

use super::metrics::EpochSums;
use crate::backend::StepStats;
use crate::optim::AdamState;
use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The state file's name in the run directory.
pub const STATE_FILE: &str = "train-state.safetensors";
/// The metadata key holding the JSON part.
const META_KEY: &str = "uvae-train-state";
/// The version of the layout below; a file of another version is refused.
const FORMAT: u32 = 1;

/// Where a run stands, beside its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub format: u32,
    /// Epochs completed (metrics.jsonl has this many lines); the 0-based epoch in progress.
    pub epoch: usize,
    /// Steps done in that epoch; 0: its shuffle has not happened yet.
    pub step_in_epoch: usize,
    /// Training steps done in the whole run: the Philox step counter of the next step.
    pub step: u32,
    /// Adam's step count.
    pub adam_t: u64,
    /// Word positions of the ChaCha8 streams of SUMO's/MLMC's levels and of the shuffle
    /// (decimal strings: they are u128).
    pub level_rng: String,
    pub shuffle_rng: String,
    /// The epoch's sums so far, and the backend's sums since it was last read.
    pub sums: EpochSums,
    pub pending: StepStats,
    /// Seconds of training steps in the epoch so far.
    #[serde(with = "crate::files::f64_bits")]
    pub seconds: f64,
}

/// Everything a resumed run needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TrainState {
    pub pos: Position,
    pub params: Vec<f32>,
    /// m, v, v_max; its `t` equals `pos.adam_t`.
    pub adam: AdamState,
    /// The order of the training datapoints: this epoch's, or the last one's when
    /// `step_in_epoch` is 0 (the next shuffle starts from it).
    pub order: Vec<usize>,
}

impl TrainState {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let order: Vec<u32> = self
            .order
            .iter()
            .map(|&i| u32::try_from(i).context("more than 2^32 training datapoints"))
            .collect::<Result<_>>()?;
        let f32s = [
            ("params", &self.params),
            ("adam.m", &self.adam.m),
            ("adam.v", &self.adam.v),
            ("adam.v_max", &self.adam.v_max),
        ];
        let mut views: Vec<(String, TensorView)> = f32s
            .iter()
            .map(|(name, v)| {
                let bytes: &[u8] = bytemuck::cast_slice(v.as_slice());
                Ok((
                    name.to_string(),
                    TensorView::new(Dtype::F32, vec![v.len()], bytes)?,
                ))
            })
            .collect::<Result<_>>()?;
        views.push((
            "order".into(),
            TensorView::new(Dtype::U32, vec![order.len()], bytemuck::cast_slice(&order))?,
        ));
        let mut pos = self.pos.clone();
        pos.adam_t = self.adam.t;
        let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&pos)?)]);
        safetensors::tensor::serialize(views, Some(meta)).context("serializing the training state")
    }

    /// Reads a state written by `to_bytes`; any other bytes give an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrainState> {
        let st = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
        let (_, meta) = SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .with_context(|| format!("no '{META_KEY}' metadata: not a uvae training state"))?;
        let pos: Position =
            serde_json::from_str(json).context("unreadable training position in the metadata")?;
        ensure!(
            pos.format == FORMAT,
            "training state format {} (this uvae reads format {FORMAT})",
            pos.format
        );
        for (name, rng) in [("level", &pos.level_rng), ("shuffle", &pos.shuffle_rng)] {
            rng.parse::<u128>()
                .with_context(|| format!("the {name} stream position '{rng}' is not a number"))?;
        }
        let vector = |name: &str, dtype: Dtype| -> Result<Vec<[u8; 4]>> {
            let t = st
                .tensor(name)
                .with_context(|| format!("the training state has no tensor {name}"))?;
            ensure!(
                t.dtype() == dtype && t.shape().len() == 1,
                "tensor {name} is {:?} {:?}, expected {dtype:?} of one dimension",
                t.dtype(),
                t.shape()
            );
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect())
        };
        let f32s = |name: &str| -> Result<Vec<f32>> {
            Ok(vector(name, Dtype::F32)?
                .into_iter()
                .map(f32::from_le_bytes)
                .collect())
        };
        let params = f32s("params")?;
        let adam = AdamState {
            m: f32s("adam.m")?,
            v: f32s("adam.v")?,
            v_max: f32s("adam.v_max")?,
            t: pos.adam_t,
        };
        crate::backend::check_optimizer_state(&adam, params.len())?;
        let order: Vec<usize> = vector("order", Dtype::U32)?
            .into_iter()
            .map(|b| u32::from_le_bytes(b) as usize)
            .collect();
        let mut seen = vec![false; order.len()];
        for &i in &order {
            ensure!(
                i < order.len() && !std::mem::replace(&mut seen[i], true),
                "the stored order is not a permutation of the training datapoints"
            );
        }
        Ok(TrainState {
            pos,
            params,
            adam,
            order,
        })
    }

    /// Checks the state fits the run it resumes: its parameter count, datapoints, steps per
    /// epoch and epochs.
    pub fn check_fits(
        &self,
        params: usize,
        datapoints: usize,
        steps_per_epoch: usize,
    ) -> Result<()> {
        let p = &self.pos;
        if self.params.len() != params {
            bail!(
                "the training state holds {} parameters, the run's model {params}",
                self.params.len()
            );
        }
        if self.order.len() != datapoints {
            bail!(
                "the training state orders {} datapoints, the run trains on {datapoints}",
                self.order.len()
            );
        }
        let expected = (p.epoch as u64) * steps_per_epoch as u64 + p.step_in_epoch as u64;
        if p.step_in_epoch >= steps_per_epoch.max(1) || u64::from(p.step) != expected {
            bail!(
                "the training state's position (epoch {}, step {} of {steps_per_epoch}, run step {}) is inconsistent",
                p.epoch,
                p.step_in_epoch,
                p.step
            );
        }
        if p.sums.steps != p.step_in_epoch {
            bail!("the training state's epoch sums do not match its step");
        }
        Ok(())
    }

    pub fn level_rng(&self) -> u128 {
        self.pos.level_rng.parse().unwrap_or(0)
    }

    pub fn shuffle_rng(&self) -> u128 {
        self.pos.shuffle_rng.parse().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> TrainState {
        let mut sums = EpochSums {
            steps: 3,
            objective: -123.456_789_012_345_67,
            grad_norm_encoder: 1.0 / 3.0,
            samples: 15.0,
            ..Default::default()
        };
        sums.levels.insert(4, 2);
        sums.meeting_times = vec![1, 5, 2];
        sums.capped = vec![false, true, false];
        TrainState {
            pos: Position {
                format: FORMAT,
                epoch: 2,
                step_in_epoch: 3,
                step: 23,
                adam_t: 23,
                level_rng: (u64::MAX as u128 * 7 + 3).to_string(),
                shuffle_rng: "96".into(),
                sums,
                pending: StepStats {
                    steps: 3,
                    objective: -0.1,
                    grad_norm_encoder: f64::MIN_POSITIVE,
                    grad_norm_decoder: 2.5,
                    nonfinite: 1,
                    first_nonfinite: Some(crate::backend::NonFiniteStep::from_mask(2, 5)),
                },
                seconds: 0.25,
            },
            params: vec![0.5, -1.25, f32::MIN_POSITIVE, 3.0e-39],
            adam: AdamState {
                m: vec![0.1, 0.2, 0.3, 0.4],
                v: vec![1e-8, 2e-8, 0.0, 4.0],
                v_max: vec![1e-7, 2e-8, 0.0, 5.0],
                t: 23,
            },
            order: vec![3, 0, 4, 1, 2],
        }
    }

    #[test]
    fn the_state_round_trips_bit_for_bit() {
        let s = sample();
        let bytes = s.to_bytes().unwrap();
        let back = TrainState::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.pos.sums.objective.to_bits(),
            s.pos.sums.objective.to_bits()
        );
        assert_eq!(back.level_rng(), u64::MAX as u128 * 7 + 3);
        // Deterministic: the same state gives the same bytes.
        assert_eq!(s.to_bytes().unwrap(), bytes);
        back.check_fits(4, 5, 10).unwrap();
        let e = back.check_fits(5, 5, 10).unwrap_err().to_string();
        assert!(e.contains("parameters"), "{e}");
        let e = back.check_fits(4, 5, 3).unwrap_err().to_string();
        assert!(e.contains("inconsistent"), "{e}");
    }

    #[test]
    fn broken_states_are_refused_with_a_reason() {
        let mut s = sample();
        s.order = vec![0, 0, 1, 2, 3];
        let e = TrainState::from_bytes(&s.to_bytes().unwrap()).unwrap_err();
        assert!(e.to_string().contains("permutation"), "{e}");
        let mut s = sample();
        s.adam.v.pop();
        let e = TrainState::from_bytes(&s.to_bytes().unwrap()).unwrap_err();
        assert!(e.to_string().contains("optimizer state"), "{e}");
        let e = TrainState::from_bytes(b"{}").unwrap_err();
        assert!(e.to_string().contains("safetensors"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TrainState::from_bytes(&bytes);
        }

        #[test]
        fn mutated_states_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sample().to_bytes().unwrap();
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let _ = TrainState::from_bytes(&bytes);
        }
    }
}
