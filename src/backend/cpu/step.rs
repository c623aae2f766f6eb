//! A training step over batch x N sample rows: one forward and backward when they fit in a
//! pass, else chunks of samples (log-weights first, then each chunk's backward).

use super::CpuBackend;
use crate::backend::{Backend, GradNorms, Noise, StepInputs};
use crate::estimators::{CoefficientProgram, Coefficients};
use anyhow::Result;

impl CpuBackend {
    /// `Backend::train_step`: coefficients from the log-weights, backward, then Adam.
    pub(super) fn train_step_impl(
        &mut self,
        x: &[f32],
        step: &StepInputs,
        n: usize,
        program: &CoefficientProgram,
    ) -> Result<()> {
        let (batch, noise) = (step.batch, &step.noise);
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
        self.optimizer_step(&step.adam, step.lr)?;
        self.stats.push(objective, norms);
        Ok(())
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
        let norms = self.backward_in_chunks(x, noise, &coeffs, false)?;
        let objective = coeffs.objective.iter().sum::<f64>() / batch as f64;
        self.coeffs = coeffs;
        Ok((norms, objective))
    }

    /// The backward of a step with given coefficients `[batch, n]` (their objective unused):
    /// each chunk's forward pass again (same noise, same z), its backward added into the
    /// gradient (the first chunk's too when `accumulate`).
    pub(super) fn backward_in_chunks(
        &mut self,
        x: &[f32],
        noise: &Noise,
        coeffs: &Coefficients,
        accumulate: bool,
    ) -> Result<GradNorms> {
        let (batch, n) = (coeffs.batch, coeffs.n);
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
            for (dst, src) in [
                (&mut ca, &coeffs.a),
                (&mut cb, &coeffs.b),
                (&mut cc, &coeffs.c),
            ] {
                dst.clear();
                for r in 0..batch {
                    dst.extend_from_slice(&src[r * n + s0..r * n + s0 + len]);
                }
            }
            norms = self.backward_impl(&ca, &cb, &cc, accumulate || ci > 0)?;
        }
        Ok(norms)
    }
}
