//! The sections of a model's parity rows that need no model-specific reference: the
//! gradient of every estimator family (plain softmax, DReG, STL, RWS, a subset program)
//! against the CPU by parameter group, fused training steps (one chunked), evaluation and the
//! coupled chains. The two-layer (`two_layer.rs`) and conditional (`conditional.rs`) sections
//! share them.

use super::coefficients::{dyadic_blocks, N8};
use super::{binary_data, compare, restart, step_rows, ParityReport, ParityRow};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, Noise, StepInputs};
use crate::estimators::{CoefficientProgram, EncoderRule, Estimator, EstimatorKind};
use crate::model::{Arch, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
use anyhow::Result;
use std::ops::Range;

/// A model's section set up: its parameters, fresh backends on them, the GPU's description, a
/// binary minibatch and a noise address.
pub(super) struct Fresh {
    pub params: Params,
    pub cpu: CpuBackend,
    pub gpu: GpuBackend,
    pub device: String,
    pub x: Vec<f32>,
    pub noise: Noise,
}

/// [`Fresh`] for `arch` on `choice`'s adapter, `batch` datapoints; `seeds`: the parameters',
/// the minibatch's and the noise's.
pub(super) fn fresh(
    choice: &AdapterChoice,
    arch: &Arch,
    batch: usize,
    (init, data, noise): (u64, u64, u64),
) -> Result<Fresh> {
    let xd = arch.x_dim;
    // A made-up mean image for the output bias (Params::init keeps the modelled pixels').
    let mean: Vec<f32> = (0..xd).map(|j| 0.1 + 0.8 * j as f32 / xd as f32).collect();
    let params = Params::init(arch, init, Some(&mean));
    let gpu = GpuBackend::new(&params.layout, &params.values, choice)?;
    let cpu = CpuBackend::new(&params.layout, &params.values, 2)?;
    Ok(Fresh {
        device: gpu.describe(),
        x: binary_data(batch, xd, data),
        noise: Noise {
            seed: noise,
            stream: Stream::Eps,
            step: 2,
            first_datapoint: 3,
            first_sample: 4,
        },
        params,
        cpu,
        gpu,
    })
}

/// The report of `rows` with `gpu`'s dispatches per kernel of its plans.
pub(super) fn report(gpu: &GpuBackend, device: String, rows: Vec<ParityRow>) -> ParityReport {
    let kernels = gpu
        .plan_kernel_counts()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    ParityReport {
        device,
        kernels,
        rows,
    }
}

/// A model's backends and data for the shared rows; each row's name starts with `tag`.
pub(super) struct ModelCase<'a> {
    pub tag: &'a str,
    /// The parameter groups compared apart (name, range of the flat vector).
    pub groups: Vec<(&'a str, Range<usize>)>,
    pub params: &'a Params,
    pub x: &'a [f32],
    pub noise: Noise,
    pub batch: usize,
    pub n: usize,
}

/// The shared rows of `case`, GPU against CPU.
pub(super) fn shared_rows(
    case: &ModelCase,
    cpu: &mut CpuBackend,
    gpu: &mut GpuBackend,
) -> Result<Vec<ParityRow>> {
    let ModelCase {
        tag,
        ref groups,
        params,
        x,
        noise,
        batch,
        n,
    } = *case;
    let mut rows = Vec::new();
    // Gradients on the CPU's log-weights, one estimator family each.
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
    for (name, k, program) in &programs {
        let lw = cpu.forward(x, batch, *k, &noise)?.to_vec();
        gpu.forward(x, batch, *k, &noise)?;
        let co = {
            let mut out = Default::default();
            program.coefficients_into(&lw, batch, *k, &mut out);
            out
        };
        let nc = cpu.backward(&co.a, &co.b, &co.c)?;
        let ng = gpu.backward(&co.a, &co.b, &co.c)?;
        let (gc, gg) = (cpu.gradient()?, gpu.gradient()?);
        for (group, range) in groups {
            rows.push(compare(
                &format!("{tag} {name}: {group} gradient"),
                &gg[range.clone()],
                &gc[range.clone()],
                1e-5,
                1e-3,
            ));
        }
        rows.push(compare(
            &format!("{tag} {name}: gradient norms"),
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
    restart(cpu, &params.values)?;
    restart(gpu, &params.values)?;
    for step in 0..2u32 {
        let inputs = StepInputs {
            noise: Noise { step, ..noise },
            ..inputs
        };
        for kind in [EstimatorKind::Iwae, EstimatorKind::IwaeDreg] {
            let p = Estimator::new(kind, 0.0).program();
            cpu.train_step(x, &inputs, n, &p)?;
            gpu.train_step(x, &inputs, n, &p)?;
        }
    }
    let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
    rows.push(compare(
        &format!("{tag} optim: parameters after 4 fused steps"),
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));
    rows.push(compare(
        &format!("{tag} optim: running objective and norms"),
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
    restart(cpu, &params.values)?;
    restart(gpu, &params.values)?;
    gpu.set_row_limit(Some(3 * batch));
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    rows.extend(step_rows(
        cpu,
        gpu,
        (
            &format!("{tag} optim: parameters after a chunked step (3 samples a pass)"),
            &format!("{tag} weights: chunked step objective"),
        ),
        lr,
        |b| b.train_step(x, &inputs, n, &p),
    )?);

    // Evaluation L_K, the GPU's in chunks of 3 samples.
    gpu.set_params(&params.values)?;
    cpu.set_params(&params.values)?;
    let k = 2 * n + 1;
    let eg = crate::eval::log_likelihood(gpu, x, batch, k, 7, 0)?;
    let ec = crate::eval::log_likelihood(cpu, x, batch, k, 7, 0)?;
    gpu.set_row_limit(None);
    let per_g: Vec<f32> = eg.per_point.iter().map(|&v| v as f32).collect();
    let per_c: Vec<f32> = ec.per_point.iter().map(|&v| v as f32).collect();
    rows.push(compare(
        &format!("{tag} eval: L_{k} per datapoint (chunks of 3 samples)"),
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
        restart(cpu, &params.values)?;
        restart(gpu, &params.values)?;
        let oc = cpu.chain_step(x, &inputs, &chains)?;
        let og = gpu.chain_step(x, &inputs, &chains)?;
        let summary = |o: &crate::backend::ChainOutcome| -> Vec<f32> {
            let mut v = vec![o.iterations as f32];
            v.extend(o.meeting_times.iter().map(|&t| t as f32));
            v.extend(o.particles.iter().map(|&p| p as f32));
            v.extend(o.capped.iter().map(|&c| c as u8 as f32));
            v
        };
        rows.push(compare(
            &format!("{tag} coupling: {kernel} iterations, meeting times, particles"),
            &summary(&og),
            &summary(&oc),
            0.5,
            0.0,
        ));
        rows.push(compare(
            &format!("{tag} coupling: {kernel} gradient"),
            &gpu.gradient()?,
            &cpu.gradient()?,
            1e-4,
            1e-3,
        ));
        let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
        rows.push(compare(
            &format!("{tag} coupling: {kernel} objective"),
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ));
    }
    Ok(rows)
}
