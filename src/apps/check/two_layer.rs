//! The two-stochastic-layer model (`--model hvae`) on a tiny shape, on fresh backends: the
//! noise_dim normals per row, z1 and z2 against the f64 reference, the log-weights and the
//! gradient of every estimator family (plain softmax, DReG, STL, a subset program) against
//! the CPU, fused training steps (one chunked), evaluation and the coupled chains.

use super::coefficients::{dyadic_blocks, N8};
use super::{binary_data, compare, restart, step_rows, ParityReport, ParityShape};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, Noise, StepInputs};
use crate::estimators::{CoefficientProgram, EncoderRule, Estimator, EstimatorKind};
use crate::model::{reference, Arch, Params, TopLayer};
use crate::optim::AdamConfig;
use crate::rng::Stream;
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
    let mean: Vec<f32> = (0..xd).map(|j| 0.1 + 0.8 * j as f32 / xd as f32).collect();
    let params = Params::init(&arch, 11, Some(&mean));
    let layout = &params.layout;
    let mut gpu = GpuBackend::new(layout, &params.values, choice)?;
    let mut cpu = CpuBackend::new(layout, &params.values, 2)?;
    let device = gpu.describe();
    let x = binary_data(batch, xd, 29);
    let noise = Noise {
        seed: 77,
        stream: Stream::Eps,
        step: 2,
        first_datapoint: 3,
        first_sample: 4,
    };
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

    // Gradients on the CPU's log-weights, one estimator family each.
    let x8 = binary_data(batch, xd, 29);
    let programs: Vec<(&str, usize, CoefficientProgram)> = vec![
        (
            "IWAE",
            n,
            Estimator::new(EstimatorKind::Iwae, 0.0).program(),
        ),
        (
            "IWAE-DReG",
            n,
            Estimator::new(EstimatorKind::IwaeDreg, 0.0).program(),
        ),
        ("STL", n, Estimator::new(EstimatorKind::Stl, 0.0).program()),
        ("RWS", n, Estimator::new(EstimatorKind::Rws, 0.0).program()),
        (
            "subset program (MLMC dyadic blocks, DReG on pairs)",
            N8,
            CoefficientProgram::Subsets {
                terms: dyadic_blocks(),
                encoder: EncoderRule::DregBlocks { size: 2 },
            },
        ),
    ];
    let el = layout.encoder_len;
    let enc2_start = layout.encoder2[0].w;
    for (name, k, program) in &programs {
        let lw = cpu.forward(&x8, batch, *k, &noise)?.to_vec();
        gpu.forward(&x8, batch, *k, &noise)?;
        let co = {
            let mut out = Default::default();
            program.coefficients_into(&lw, batch, *k, &mut out);
            out
        };
        let nc = cpu.backward(&co.a, &co.b, &co.c)?;
        let ng = gpu.backward(&co.a, &co.b, &co.c)?;
        let (gc, gg) = (cpu.gradient()?, gpu.gradient()?);
        rows.push(compare(
            &format!("hvae {name}: p(x|z1), p(z1|z2) gradient"),
            &gg[el..],
            &gc[el..],
            1e-5,
            1e-3,
        ));
        rows.push(compare(
            &format!("hvae {name}: q(z1|x) gradient"),
            &gg[..enc2_start],
            &gc[..enc2_start],
            1e-5,
            1e-3,
        ));
        rows.push(compare(
            &format!("hvae {name}: q(z2|z1) gradient"),
            &gg[enc2_start..el],
            &gc[enc2_start..el],
            1e-5,
            1e-3,
        ));
        rows.push(compare(
            &format!("hvae {name}: gradient norms"),
            &[ng.encoder as f32, ng.decoder as f32],
            &[nc.encoder as f32, nc.decoder as f32],
            1e-5,
            1e-4,
        ));
    }

    // Fused training steps, then a chunked one (3 samples per pass: 3 + 2).
    let lr = 1e-3;
    let inputs = StepInputs {
        batch,
        noise,
        adam: AdamConfig {
            clip_encoder: Some(50.0),
            ..Default::default()
        },
        lr,
    };
    restart(&mut cpu, &params.values)?;
    restart(&mut gpu, &params.values)?;
    for step in 0..2u32 {
        let inputs = StepInputs {
            noise: Noise { step, ..noise },
            ..inputs
        };
        for kind in [EstimatorKind::Iwae, EstimatorKind::IwaeDreg] {
            let p = Estimator::new(kind, 0.0).program();
            cpu.train_step(&x, &inputs, n, &p)?;
            gpu.train_step(&x, &inputs, n, &p)?;
        }
    }
    let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
    rows.push(compare(
        "hvae optim: parameters after 4 fused steps",
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));
    rows.push(compare(
        "hvae optim: running objective and norms",
        &[
            sg.objective as f32,
            sg.grad_norm_encoder as f32,
            sg.grad_norm_decoder as f32,
        ],
        &[
            sc.objective as f32,
            sc.grad_norm_encoder as f32,
            sc.grad_norm_decoder as f32,
        ],
        1e-4,
        1e-4,
    ));
    restart(&mut cpu, &params.values)?;
    restart(&mut gpu, &params.values)?;
    gpu.set_row_limit(Some(3 * batch));
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    rows.extend(step_rows(
        &mut cpu,
        &mut gpu,
        (
            "hvae optim: parameters after a chunked step (3 samples a pass)",
            "hvae weights: chunked step objective",
        ),
        lr,
        |b| b.train_step(&x, &inputs, n, &p),
    )?);

    // Evaluation L_K, the GPU's in chunks of 3 samples.
    gpu.set_params(&params.values)?;
    cpu.set_params(&params.values)?;
    let k = 2 * n + 1;
    let eg = crate::eval::log_likelihood(&mut gpu, &x, batch, k, 7, 0)?;
    let ec = crate::eval::log_likelihood(&mut cpu, &x, batch, k, 7, 0)?;
    gpu.set_row_limit(None);
    let per_g: Vec<f32> = eg.per_point.iter().map(|&v| v as f32).collect();
    let per_c: Vec<f32> = ec.per_point.iter().map(|&v| v as f32).collect();
    rows.push(compare(
        &format!("hvae eval: L_{k} per datapoint (chunks of 3 samples)"),
        &per_g,
        &per_c,
        1e-4,
        1e-5,
    ));

    // Coupled chains: a particle is the pair (z1, z2), drawn at its own noise address.
    for kernel in crate::coupling::ChainKernel::ALL {
        let chains = crate::coupling::CouplingConfig {
            horizon: 2,
            max_iters: 60,
            ..crate::coupling::CouplingConfig::new(kernel, 4)
        };
        restart(&mut cpu, &params.values)?;
        restart(&mut gpu, &params.values)?;
        let oc = cpu.chain_step(&x, &inputs, &chains)?;
        let og = gpu.chain_step(&x, &inputs, &chains)?;
        let summary = |o: &crate::backend::ChainOutcome| -> Vec<f32> {
            let mut v = vec![o.iterations as f32];
            v.extend(o.meeting_times.iter().map(|&t| t as f32));
            v.extend(o.particles.iter().map(|&p| p as f32));
            v.extend(o.capped.iter().map(|&c| c as u8 as f32));
            v
        };
        rows.push(compare(
            &format!("hvae coupling: {kernel} iterations, meeting times, particles"),
            &summary(&og),
            &summary(&oc),
            0.5,
            0.0,
        ));
        rows.push(compare(
            &format!("hvae coupling: {kernel} gradient"),
            &gpu.gradient()?,
            &cpu.gradient()?,
            1e-4,
            1e-3,
        ));
        let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
        rows.push(compare(
            &format!("hvae coupling: {kernel} objective"),
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ));
    }
    let kernels = gpu
        .plan_kernel_counts()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    Ok(ParityReport {
        device,
        kernels,
        rows,
    })
}
