//! The forward pass: Philox + Box-Muller noise, the encoder's GEMMs with fused bias/tanh,
//! sampling z and the log-weights.

use super::{compare, ParityRow, Suite};
use crate::backend::Backend;
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
    let zd = suite.arch.z_dim;
    let mut eps_c = vec![0.0f32; batch * n * zd];
    for b in 0..batch {
        for s in 0..n {
            let first = (noise.first_sample as usize + s) * zd;
            let r = b * n + s;
            rng::fill_normals_from(
                noise.seed,
                noise.stream,
                noise.step,
                noise.first_datapoint + b as u32,
                first,
                &mut eps_c[r * zd..(r + 1) * zd],
            );
        }
    }
    rows.push(compare(
        "rng: Philox + Box-Muller eps",
        &eps_g,
        &eps_c,
        1e-5,
        1e-5,
    ));
    let enc_c = crate::model::reference::encode_batch(&suite.params, x, batch);
    rows.push(compare(
        "matmul: encoder (bias+tanh fused)",
        &enc_g,
        &enc_c,
        1e-5,
        1e-4,
    ));
    let mut z_c = vec![0.0f32; batch * n * zd];
    for r in 0..batch * n {
        let b = r / n;
        for d in 0..zd {
            z_c[r * zd + d] =
                enc_c[b * 2 * zd + d] + enc_c[b * 2 * zd + zd + d].exp() * eps_c[r * zd + d];
        }
    }
    rows.push(compare("vae: sample z", &z_g, &z_c, 1e-5, 1e-4));
    rows.push(compare("vae: log-weights", &lw_gpu, &lw_cpu, 1e-4, 1e-5));
    Ok((rows, lw_cpu))
}
