//! The conditional model (`--model cvae`) on a tiny shape, on fresh backends: z and the
//! log-weights (the prior p(z | c), the decoder on [z, c] and the likelihood of the pixels
//! after the context) against the CPU, then the shared rows (`model_rows.rs`): the gradient of
//! every estimator family by encoder, prior and decoder, fused and chunked training steps,
//! evaluation and the coupled chains.

use super::model_rows::{fresh, report, shared_rows, Fresh, ModelCase};
use super::{compare, ParityReport, ParityShape};
use crate::backend::gpu::AdapterChoice;
use crate::backend::Backend;
use crate::model::{Arch, Conditional};
use anyhow::Result;

/// A conditional model of `x_dim` pixels, the first `c_dim` of them the context, with
/// `hidden` tanh layers in each network and `z_dim` latents.
pub fn arch(x_dim: usize, c_dim: usize, hidden: &[usize], z_dim: usize) -> Arch {
    Arch {
        x_dim,
        hidden: hidden.to_vec(),
        z_dim,
        likelihood: Default::default(),
        top: None,
        cond: Some(Conditional {
            split_row: None,
            c_dim,
        }),
    }
}

/// Off the GEMM tiles everywhere: x 13 (c its first 6), hidden 9-7, z 3; 3 datapoints of 5
/// samples.
pub fn tiny_shape() -> ParityShape {
    ParityShape {
        arch: arch(13, 6, &[9, 7], 3),
        batch: 3,
        n: 5,
    }
}

/// The rows of the conditional model `shape.arch` (which needs a context), each prefixed
/// "cvae", with the GPU backend's description and the dispatches per kernel of its plans.
pub(super) fn rows(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    let ParityShape { arch, batch, n } = shape.clone();
    if arch.cond.is_none() {
        anyhow::bail!("the conditional parity section needs a model with a context");
    }
    let zd = arch.z_dim;
    let Fresh {
        params,
        mut cpu,
        mut gpu,
        device,
        x,
        noise,
    } = fresh(choice, &arch, batch, (13, 31, 78))?;
    let layout = &params.layout;
    let mut rows = Vec::new();

    // Forward: eps against the reference draws, z = mu + sigma eps from the encoder's head,
    // the log-weights against the CPU.
    let lw_cpu = cpu.forward(&x, batch, n, &noise)?.to_vec();
    let lw_gpu = gpu.forward(&x, batch, n, &noise)?.to_vec();
    let (eps_g, z_g, head_g) = gpu.read_forward_state()?;
    let eps_c = super::forward::reference_eps(&noise, batch, n, zd);
    let z_c: Vec<f32> = (0..batch * n * zd)
        .map(|i| {
            let (r, d) = (i / zd, i % zd);
            let h = &head_g[(r / n) * 2 * zd..(r / n + 1) * 2 * zd];
            h[d] + h[zd + d].exp() * eps_g[i]
        })
        .collect();
    rows.push(compare(
        &format!("cvae rng: eps ({zd} normals per row)"),
        &eps_g,
        &eps_c,
        1e-5,
        1e-5,
    ));
    rows.push(compare(
        "cvae matmul: z drawn in the decoder's first GEMM (c's bias row per datapoint)",
        &z_g,
        &z_c,
        1e-5,
        1e-4,
    ));
    rows.push(compare(
        "cvae vae: conditional log-weights (prior p(z|c), decoder on [z, c])",
        &lw_gpu,
        &lw_cpu,
        1e-4,
        1e-5,
    ));

    let el = layout.encoder_len;
    let dec_start = layout.decoder[0].w;
    let case = ModelCase {
        tag: "cvae",
        groups: vec![
            ("q(z|x,c)", 0..el),
            ("p(z|c)", el..dec_start),
            ("p(x|z,c)", dec_start..layout.len),
        ],
        params: &params,
        x: &x,
        noise,
        batch,
        n,
    };
    rows.extend(shared_rows(&case, &mut cpu, &mut gpu)?);
    Ok(report(&gpu, device, rows))
}
