//! The coupled-chain step: the chains advance over blocks of fresh particles until every
//! datapoint's pair has met, then the backward over the particles each datapoint used.

use super::CpuBackend;
use crate::backend::{Backend, ChainOutcome, GradNorms, Noise, StepInputs};
use crate::coupling::chain::{self, ChainState};
use crate::coupling::CouplingConfig;
use crate::estimators::Coefficients;
use crate::rng::{self, Stream};
use anyhow::{bail, Result};

impl CpuBackend {
    /// `Backend::chain_step`: one step of the coupled chains' estimator.
    pub(super) fn chain_step_impl(
        &mut self,
        x: &[f32],
        step: &StepInputs,
        chains: &CouplingConfig,
    ) -> Result<ChainOutcome> {
        let (batch, noise) = (step.batch, &step.noise);
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
            let group = Coefficients {
                batch: gb,
                n,
                a,
                b,
                c: vec![0.0f32; gb * n],
                objective: Vec::new(),
            };
            let group_noise = Noise {
                first_datapoint: noise.first_datapoint + rows.start as u32,
                ..*noise
            };
            let xs = &x[rows.start * xd..rows.end * xd];
            norms = self.backward_in_chunks(xs, &group_noise, &group, gi > 0)?;
        }
        self.optimizer_step(&step.adam, step.lr)?;
        self.stats.push(objective / batch as f64, norms);
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
}
