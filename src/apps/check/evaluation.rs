//! Evaluation: L_K from a log-sum-exp accumulated on the device over chunks of samples.

use super::{compare, ParityRow, Suite};
use crate::backend::Backend;
use crate::eval;
use anyhow::Result;

/// L_K per datapoint, the GPU's in chunks of 5 samples.
pub(super) fn rows(suite: &mut Suite) -> Result<Vec<ParityRow>> {
    let (batch, n) = (suite.batch, suite.n);
    let (cpu, gpu, x) = (&mut suite.cpu, &mut suite.gpu, &suite.x);
    let mut rows = Vec::new();
    gpu.set_row_limit(Some(5));
    gpu.set_params(&suite.params.values)?;
    cpu.set_params(&suite.params.values)?;
    let k = 2 * n + 3;
    let eg = eval::log_likelihood(gpu, x, batch, k, 7, 0)?;
    let ec = eval::log_likelihood(cpu, x, batch, k, 7, 0)?;
    gpu.set_row_limit(None);
    let per_g: Vec<f32> = eg.per_point.iter().map(|&v| v as f32).collect();
    let per_c: Vec<f32> = ec.per_point.iter().map(|&v| v as f32).collect();
    rows.push(compare(
        &format!("eval: L_{k} per datapoint (chunks of 5 samples)"),
        &per_g,
        &per_c,
        1e-4,
        1e-5,
    ));
    Ok(rows)
}
