//! The backward pass: the decoder's and encoder's gradients and their norms.

use super::{compare, ParityRow, Suite};
use crate::backend::Backend;
use crate::estimators::{Estimator, EstimatorKind};
use anyhow::Result;

/// Backward with IWAE-DReG's coefficients (a, b, c all different, so routing shows).
pub(super) fn rows(suite: &mut Suite, lw_cpu: &[f32]) -> Result<Vec<ParityRow>> {
    let (batch, n, noise) = (suite.batch, suite.n, suite.noise);
    let mut rows = Vec::new();
    let est = Estimator::new(EstimatorKind::IwaeDreg, 0.0);
    let co = est.coefficients(lw_cpu, batch, n);
    // Re-run the GPU forward so backward uses its own activations.
    suite.gpu.forward(&suite.x, batch, n, &noise)?;
    let ng = suite.gpu.backward(&co.a, &co.b, &co.c)?;
    let nc = suite.cpu.backward(&co.a, &co.b, &co.c)?;
    let gg = suite.gpu.gradient()?;
    let gc = suite.cpu.gradient()?;
    let el = suite.params.layout.encoder_len;
    rows.push(compare(
        "matmul+vae: decoder gradient (scaled by a)",
        &gg[el..],
        &gc[el..],
        1e-5,
        1e-3,
    ));
    rows.push(compare(
        "matmul+vae: encoder gradient (b P + c S)",
        &gg[..el],
        &gc[..el],
        1e-5,
        1e-3,
    ));
    rows.push(compare(
        "optim: gradient norms",
        &[ng.encoder as f32, ng.decoder as f32],
        &[nc.encoder as f32, nc.decoder as f32],
        1e-5,
        1e-4,
    ));
    Ok(rows)
}
