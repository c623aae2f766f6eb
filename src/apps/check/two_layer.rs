//! The two-stochastic-layer model (`--model hvae`) on a tiny shape, on fresh backends: the
//! noise_dim normals per row, z1 and z2 against the f64 reference, the log-weights and the
//! gradient of every estimator family (plain softmax, DReG, STL, a subset program) against
//! the CPU, fused training steps (one chunked), evaluation and the coupled chains.

use super::model_rows::{fresh, report, shared_rows, Fresh, ModelCase};
use super::{compare, ParityReport, ParityShape};
use crate::backend::gpu::AdapterChoice;
use crate::backend::Backend;
use crate::model::{reference, Arch, TopLayer};
use anyhow::Result;

/// A two-layer model off the GEMM tiles everywhere: x 13, hidden 9-6, z1 3, top hidden 5,
/// z2 2; 3 datapoints of 5 samples.
pub fn tiny_shape() -> ParityShape {
    ParityShape {
        arch: Arch {
            x_dim: 13,
            hidden: vec![9, 6],
            z_dim: 3,
            likelihood: Default::default(),
            top: Some(TopLayer {
                hidden: vec![5],
                z_dim: 2,
            }),
            cond: None,
        },
        batch: 3,
        n: 5,
    }
}

/// The rows of the two-layer model `shape.arch` (which needs a top layer), each prefixed
/// "hvae", with the GPU backend's description and the dispatches per kernel of its plans.
pub(super) fn rows(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    let ParityShape { arch, batch, n } = shape.clone();
    if arch.top.is_none() {
        anyhow::bail!("the two-layer parity section needs a model with a top layer");
    }
    let (xd, d1, nd) = (arch.x_dim, arch.z_dim, arch.noise_dim());
    let d2 = nd - d1;
    let Fresh {
        params,
        mut cpu,
        mut gpu,
        device,
        x,
        noise,
    } = fresh(choice, &arch, batch, (11, 29, 77))?;
    let layout = &params.layout;
    let mut rows = Vec::new();

    // Forward: noise, z1, z2 against the f64 reference; log-weights against the CPU.
    let lw_cpu = cpu.forward(&x, batch, n, &noise)?.to_vec();
    let lw_gpu = gpu.forward(&x, batch, n, &noise)?.to_vec();
    let (eps_g, z1_g, _) = gpu.read_forward_state()?;
    let (z2_g, _) = gpu.read_top_state()?;
    let p64: Vec<f64> = params.values.iter().map(|&v| v as f64).collect();
    let eps_c = super::forward::reference_eps(&noise, batch, n, nd);
    let (mut z1_c, mut z2_c) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let xb: Vec<f64> = x[b * xd..(b + 1) * xd].iter().map(|&v| v as f64).collect();
        for s in 0..n {
            let r = b * n + s;
            let e = &eps_c[r * nd..(r + 1) * nd];
            let e64: Vec<f64> = e.iter().map(|&v| v as f64).collect();
            let smp = reference::sample_two_layer(layout, &p64, &p64, &p64, &xb, &e64);
            z1_c.extend(smp.z1.iter().map(|&v| v as f32));
            z2_c.extend(smp.z2.iter().map(|&v| v as f32));
        }
    }
    rows.push(compare(
        &format!("hvae rng: eps1 + eps2 ({d1}+{d2} normals per row)"),
        &eps_g,
        &eps_c,
        1e-5,
        1e-5,
    ));
    rows.push(compare(
        "hvae matmul: z1 drawn in q(z2|z1)'s first GEMM",
        &z1_g,
        &z1_c,
        1e-5,
        1e-4,
    ));
    rows.push(compare(
        "hvae matmul: q(z2|z1) MLP, z2 drawn in p(z1|z2)'s first GEMM",
        &z2_g,
        &z2_c,
        1e-5,
        1e-4,
    ));
    rows.push(compare(
        "hvae vae: two-layer log-weights",
        &lw_gpu,
        &lw_cpu,
        1e-4,
        1e-5,
    ));

    let el = layout.encoder_len;
    let enc2_start = layout.encoder2[0].w;
    let case = ModelCase {
        tag: "hvae",
        groups: vec![
            ("p(x|z1), p(z1|z2)", el..layout.len),
            ("q(z1|x)", 0..enc2_start),
            ("q(z2|z1)", enc2_start..el),
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
