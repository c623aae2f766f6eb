//! The forward pass: Philox + Box-Muller noise, the encoder's GEMMs with fused bias/tanh,
//! z sampled (inside the first decoder GEMM on the GPU) and the log-weights.

use super::{compare, ParityRow, Suite};
use crate::backend::{Backend, Noise};
use crate::rng;
use anyhow::Result;

/// The rows of the forward pass, and the CPU's log-weights, which later sections reuse.
pub(super) fn rows(suite: &mut Suite) -> Result<(Vec<ParityRow>, Vec<f32>)> {
    let (batch, n, noise) = (suite.batch, suite.n, suite.noise);
    let x = &suite.x;
    let mut rows = Vec::new();
    let lw_cpu = suite.cpu.forward(x, batch, n, &noise)?.to_vec();
    let lw_gpu = suite.gpu.forward(x, batch, n, &noise)?.to_vec();
    let (eps_g, z_g, enc_g) = suite.gpu.read_forward_state()?;
    let enc_c = crate::model::reference::encode_batch(&suite.params, x, batch);
    let (eps_c, z_c) = reference_latent(&enc_c, suite.arch.z_dim, batch, n, &noise);
    rows.push(compare(
        "rng: Philox + Box-Muller eps, drawn in decoder.0's GEMM",
        &eps_g,
        &eps_c,
        1e-5,
        1e-5,
    ));
    rows.push(compare(
        "matmul: encoder (bias+tanh fused)",
        &enc_g,
        &enc_c,
        1e-5,
        1e-4,
    ));
    rows.push(compare(
        "matmul: z drawn in decoder.0's GEMM",
        &z_g,
        &z_c,
        1e-5,
        1e-4,
    ));
    rows.push(compare("vae: log-weights", &lw_gpu, &lw_cpu, 1e-4, 1e-5));
    Ok((rows, lw_cpu))
}

/// The CPU's normals of every (datapoint, sample) row, [batch n, width]: row (b, s) holds
/// numbers (first_sample + s) width .. of datapoint b's counter.
pub(super) fn reference_eps(noise: &Noise, batch: usize, n: usize, width: usize) -> Vec<f32> {
    let mut eps = vec![0.0f32; batch * n * width];
    for (r, row) in eps.chunks_mut(width).enumerate() {
        let (b, s) = (r / n, r % n);
        rng::fill_normals_from(
            noise.seed,
            noise.stream,
            noise.step,
            noise.first_datapoint + b as u32,
            (noise.first_sample as usize + s) * width,
            row,
        );
    }
    eps
}

/// The CPU's eps and z = mu + sigma eps of every (datapoint, sample) row, [rows, zd] each,
/// from the encoder's output `enc` ([batch, 2 zd]) and the noise address.
pub(super) fn reference_latent(
    enc: &[f32],
    zd: usize,
    batch: usize,
    n: usize,
    noise: &Noise,
) -> (Vec<f32>, Vec<f32>) {
    let eps = reference_eps(noise, batch, n, zd);
    let z = eps
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let (b, d) = (i / zd / n, i % zd);
            enc[b * 2 * zd + d] + enc[b * 2 * zd + zd + d].exp() * e
        })
        .collect();
    (eps, z)
}
