//! `--grad-var-every`: the spread of the training gradient estimator as training goes (the
//! DReG paper's Figure 2, top row). After every N-th step, R independent estimates of the
//! run's estimator on one fixed minibatch, at the current parameters, summarised per group
//! by the same [`Moments::spread`] that `uvae grad-stats` reports.
//!
//! The estimates touch neither the parameters nor Adam's state nor the running sums, and
//! draw their noise from Philox stream `GradVar` and their sizes (SUMO, MLMC) from a ChaCha
//! stream of their own, so a run with the logging follows the trajectory of one without.

use crate::backend::{Backend, Noise};
use crate::estimators::{Coefficients, StepPlan};
use crate::model::Layout;
use crate::rng::Stream;
use crate::stats::{Moments, Spread};
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Seeds the measurements' size draws (SUMO, MLMC) apart from training's.
const SIZE_STREAM: u64 = 0x6EAD_7A12_5EED_0001;

/// One measurement: the parameters after run step `step`, and the spread of the R estimates
/// of the encoder's (phi) and the decoder's (theta) gradient.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradVarPoint {
    pub step: u32,
    pub encoder: Spread,
    pub decoder: Spread,
}

/// What a measurement needs besides the backend: the estimator, the fixed minibatch
/// `x` [batch, dim], and the run seed that keys the noise.
pub struct GradVarProbe<'a> {
    pub plan: &'a StepPlan,
    pub x: &'a [f32],
    pub batch: usize,
    pub seed: u64,
    pub reps: usize,
}

impl GradVarProbe<'_> {
    /// The spread of `reps` independent gradient estimates at the backend's parameters after
    /// run step `step`. Replication r takes noise (GradVar, step, row, samples from r n); a
    /// batch too large for one pass runs in sub-batches of rows, weighted by their size.
    pub fn measure(&self, backend: &mut dyn Backend, step: u32) -> Result<GradVarPoint> {
        let layout = backend.layout().clone();
        let mut moments = Moments::new(layout.len);
        let mut sizes = ChaCha8Rng::seed_from_u64(self.seed ^ SIZE_STREAM);
        sizes.set_stream(u64::from(step));
        let dim = self.x.len() / self.batch.max(1);
        let mut coeffs = Coefficients::default();
        let mut first_sample = 0u32;
        for _ in 0..self.reps {
            let Some(draw) = self.plan.draw(&mut sizes) else {
                bail!("--grad-var-every needs a coefficient estimator, not coupled chains");
            };
            let n = draw.n;
            let per_pass = backend.max_rows() / n;
            if per_pass == 0 {
                bail!(
                    "--grad-var-every: {n} samples per datapoint exceed the {} rows one pass of this backend holds",
                    backend.max_rows()
                );
            }
            let mut grad = vec![0.0f64; layout.len];
            for d0 in (0..self.batch).step_by(per_pass) {
                let rows = per_pass.min(self.batch - d0);
                let noise = Noise {
                    seed: self.seed,
                    stream: Stream::GradVar,
                    step,
                    first_datapoint: d0 as u32,
                    first_sample,
                };
                let lw = backend.forward(&self.x[d0 * dim..(d0 + rows) * dim], rows, n, &noise)?;
                draw.program.coefficients_into(lw, rows, n, &mut coeffs);
                backend.backward(&coeffs.a, &coeffs.b, &coeffs.c)?;
                let share = rows as f64 / self.batch as f64;
                for (g, v) in grad.iter_mut().zip(backend.gradient()?) {
                    *g += share * f64::from(v);
                }
            }
            moments.push(&grad);
            first_sample += n as u32;
        }
        let (enc, dec) = learned(&layout);
        Ok(GradVarPoint {
            step,
            encoder: moments.spread(enc),
            decoder: moments.spread(dec),
        })
    }
}

/// The learned coordinates of the encoder and of the decoder (frozen ones left out).
fn learned(layout: &Layout) -> (Vec<usize>, Vec<usize>) {
    let free = |i: &usize| !layout.frozen.iter().any(|r| r.contains(i));
    (
        (0..layout.encoder_len).filter(free).collect(),
        (layout.encoder_len..layout.len).filter(free).collect(),
    )
}

/// Serde for a training state's measurements, f64s as bit patterns, so a resumed run
/// writes exactly the numbers the uninterrupted one does.
pub(crate) mod bits {
    use super::{GradVarPoint, Spread};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Raw = (u32, [u64; 6]);

    fn raw(s: &Spread) -> [u64; 3] {
        [s.mean_variance, s.mean_norm, s.snr].map(f64::to_bits)
    }

    fn spread(b: &[u64]) -> Spread {
        Spread {
            mean_variance: f64::from_bits(b[0]),
            mean_norm: f64::from_bits(b[1]),
            snr: f64::from_bits(b[2]),
        }
    }

    pub fn serialize<S: Serializer>(v: &[GradVarPoint], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<Raw> = v
            .iter()
            .map(|p| {
                let (e, d) = (raw(&p.encoder), raw(&p.decoder));
                (p.step, [e[0], e[1], e[2], d[0], d[1], d[2]])
            })
            .collect();
        raw.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<GradVarPoint>, D::Error> {
        let raw = Vec::<Raw>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(step, b)| GradVarPoint {
                step,
                encoder: spread(&b[..3]),
                decoder: spread(&b[3..]),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Held(#[serde(with = "bits")] Vec<GradVarPoint>);

    /// A training state's measurements come back bit for bit through JSON, NaN included.
    #[test]
    fn measurements_round_trip_through_a_state_exactly() {
        let s = |a: f64| Spread {
            mean_variance: a,
            mean_norm: a / 3.0,
            snr: a.sqrt(),
        };
        let pts = vec![
            GradVarPoint {
                step: 7,
                encoder: s(0.1 + 0.2),
                decoder: s(1e-300),
            },
            GradVarPoint {
                step: u32::MAX,
                encoder: s(f64::NAN),
                decoder: s(std::f64::consts::PI),
            },
        ];
        let json = serde_json::to_string(&Held(pts.clone())).unwrap();
        let back: Held = serde_json::from_str(&json).unwrap();
        let bits = |p: &GradVarPoint| {
            [p.encoder, p.decoder].map(|s| [s.mean_variance, s.mean_norm, s.snr].map(f64::to_bits))
        };
        assert_eq!(back.0.len(), 2);
        for (a, b) in pts.iter().zip(&back.0) {
            assert_eq!((a.step, bits(a)), (b.step, bits(b)));
        }
    }
}
