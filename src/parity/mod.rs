//! The parity suite: every GPU kernel and every estimator's coefficients against the CPU
//! reference on the same seed, |gpu - cpu| <= atol + rtol |cpu|. `uvae check` prints it as a
//! table; the tests assert it. Shapes are deliberately not multiples of the GEMM tiles.

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, Noise};
use crate::estimators::{CoefficientProgram, EncoderRule, Estimator, EstimatorKind, SubsetTerm};
use crate::eval;
use crate::model::ModelChoice;
use crate::model::{Arch, Params};
use crate::optim::AdamConfig;
use crate::rng::{self, Stream};
use anyhow::Result;
use serde::Serialize;

/// One compared quantity.
#[derive(Clone, Debug, Serialize)]
pub struct ParityRow {
    pub name: String,
    pub count: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    pub atol: f64,
    pub rtol: f64,
    pub pass: bool,
    /// The worst pairs: (index, gpu, cpu), worst first.
    pub worst: Vec<(usize, f64, f64)>,
}

/// Compares `gpu` against `cpu` elementwise.
pub fn compare(name: &str, gpu: &[f32], cpu: &[f32], atol: f64, rtol: f64) -> ParityRow {
    let mut pairs: Vec<(f64, usize, f64, f64)> = Vec::with_capacity(cpu.len());
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let mut pass = gpu.len() == cpu.len();
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let (g, c) = (g as f64, c as f64);
        let err = (g - c).abs();
        let excess = err / (atol + rtol * c.abs());
        // NaN fails too.
        if excess.is_nan() || excess > 1.0 {
            pass = false;
        }
        max_abs = max_abs.max(err);
        if c != 0.0 {
            max_rel = max_rel.max(err / c.abs());
        }
        pairs.push((
            if excess.is_nan() {
                f64::INFINITY
            } else {
                excess
            },
            i,
            g,
            c,
        ));
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    ParityRow {
        name: name.to_string(),
        count: cpu.len(),
        max_abs,
        max_rel,
        atol,
        rtol,
        pass,
        worst: pairs
            .iter()
            .take(5)
            .map(|&(_, i, g, c)| (i, g, c))
            .collect(),
    }
}

/// The shapes the suite runs on.
#[derive(Clone, Debug)]
pub struct ParityShape {
    pub arch: Arch,
    pub batch: usize,
    pub n: usize,
}

impl Default for ParityShape {
    /// Tiny (lavapipe runs about 1 GFLOP/s) and off the 64 x 64 x 16 GEMM tiles everywhere.
    fn default() -> Self {
        ParityShape {
            arch: Arch {
                x_dim: 70,
                hidden: vec![33, 17],
                z_dim: 5,
                likelihood: Default::default(),
            },
            batch: 3,
            n: 7,
        }
    }
}

fn binary_data(count: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut u = vec![0.0f32; count * dim];
    for i in 0..count {
        rng::fill_uniforms(
            seed,
            Stream::Binarize,
            0,
            i as u32,
            &mut u[i * dim..(i + 1) * dim],
        );
    }
    // Pixel j of an image is on with probability rising along the row, like digits' mass.
    u.iter()
        .enumerate()
        .map(|(j, &v)| {
            if v < 0.15 + 0.7 * ((j % dim) as f32 / dim as f32) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// What a suite run found.
#[derive(Clone, Debug, Serialize)]
pub struct ParityReport {
    pub device: String,
    /// Dispatches per kernel in the plans the suite built (which GEMM variant ran).
    pub kernels: Vec<(String, usize)>,
    pub rows: Vec<ParityRow>,
}

impl ParityReport {
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| !r.pass).count()
    }
}

/// Runs the whole suite on `choice`'s adapter.
pub fn run_suite(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    let ParityShape { arch, batch, n } = shape.clone();
    let xd = arch.x_dim;
    let mean: Vec<f32> = (0..xd).map(|j| 0.1 + 0.8 * j as f32 / xd as f32).collect();
    let params = Params::init(&arch, 5, Some(&mean));
    let mut gpu = GpuBackend::new(&params.layout, &params.values, choice)?;
    let mut cpu = CpuBackend::new(&params.layout, &params.values, 2)?;
    let device = gpu.describe();
    let x = binary_data(batch, xd, 17);
    let noise = Noise {
        seed: 99,
        stream: Stream::Eps,
        step: 3,
        first_datapoint: 4,
        first_sample: 6,
    };
    let mut rows = Vec::new();

    // Forward: Philox + Box-Muller, sampling, GEMMs with fused bias/tanh, log-weights.
    let lw_cpu = cpu.forward(&x, batch, n, &noise)?.to_vec();
    let lw_gpu = gpu.forward(&x, batch, n, &noise)?.to_vec();
    let (eps_g, z_g, enc_g) = gpu.read_forward_state()?;
    let zd = arch.z_dim;
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
    let enc_c = crate::model::reference::encode_batch(&params, &x, batch);
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

    // Coefficients of every estimator, on the same (CPU) log-weights.
    for kind in EstimatorKind::ALL {
        let est = Estimator::new(kind, 0.3);
        let want = est.coefficients(&lw_cpu, batch, n);
        let (a, b, c, obj) = gpu.coefficients_on_device(&lw_cpu, batch, n, &est.program())?;
        let mut got: Vec<f32> = a;
        got.extend(b);
        got.extend(c);
        got.extend(obj);
        let mut reference: Vec<f32> = want.a.clone();
        reference.extend(&want.b);
        reference.extend(&want.c);
        reference.extend(want.objective.iter().map(|&o| o as f32));
        rows.push(compare(
            &format!("weights: coefficients {}", kind.name()),
            &got,
            &reference,
            1e-6,
            1e-4,
        ));
    }

    // Subset programs (SUMO's prefixes, MLMC's dyadic blocks) and their encoder rules.
    let prefixes: Vec<SubsetTerm> = (1..=n as u32)
        .map(|size| SubsetTerm {
            blocks: false,
            size,
            weight: 1.0 / size as f64 - 0.3,
        })
        .collect();
    let n8 = 8;
    let lw8: Vec<f32> = (0..batch * n8)
        .map(|i| -60.0 + 7.0 * ((i * 37 % 11) as f32 / 11.0) - (i % 3) as f32)
        .collect();
    let blocks: Vec<SubsetTerm> = [(1, 0.5), (2, -0.7), (4, 1.2), (8, 0.3)]
        .iter()
        .map(|&(size, weight)| SubsetTerm {
            blocks: true,
            size,
            weight,
        })
        .collect();
    let subset_cases = [
        (
            "prefixes, DReG on all",
            CoefficientProgram::Subsets {
                terms: prefixes.clone(),
                encoder: EncoderRule::DregBlocks { size: n as u32 },
            },
            &lw_cpu,
            n,
        ),
        (
            "prefixes, variance",
            CoefficientProgram::Subsets {
                terms: prefixes,
                encoder: EncoderRule::Variance,
            },
            &lw_cpu,
            n,
        ),
        (
            "dyadic blocks, unbiased RWS",
            CoefficientProgram::Subsets {
                terms: blocks.clone(),
                encoder: EncoderRule::UnbiasedRws,
            },
            &lw8,
            n8,
        ),
        (
            "dyadic blocks, DReG on pairs",
            CoefficientProgram::Subsets {
                terms: blocks.clone(),
                encoder: EncoderRule::DregBlocks { size: 2 },
            },
            &lw8,
            n8,
        ),
    ];
    for (what, program, lw, nn) in subset_cases {
        let mut want = crate::estimators::Coefficients::default();
        program.coefficients_into(lw, batch, nn, &mut want);
        let (a, b, c, obj) = gpu.coefficients_on_device(lw, batch, nn, &program)?;
        let got: Vec<f32> = a.into_iter().chain(b).chain(c).chain(obj).collect();
        let reference: Vec<f32> = want
            .a
            .iter()
            .chain(&want.b)
            .chain(&want.c)
            .copied()
            .chain(want.objective.iter().map(|&o| o as f32))
            .collect();
        rows.push(compare(
            &format!("weights: subset program, {what}"),
            &got,
            &reference,
            1e-5,
            1e-4,
        ));
    }

    // Backward with IWAE-DReG's coefficients (a, b, c all different, so routing shows).
    let est = Estimator::new(EstimatorKind::IwaeDreg, 0.0);
    let co = est.coefficients(&lw_cpu, batch, n);
    // Re-run the GPU forward so backward uses its own activations.
    gpu.forward(&x, batch, n, &noise)?;
    let ng = gpu.backward(&co.a, &co.b, &co.c)?;
    let nc = cpu.backward(&co.a, &co.b, &co.c)?;
    let gg = gpu.gradient()?;
    let gc = cpu.gradient()?;
    let el = params.layout.encoder_len;
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

    // Whole training steps, fused on the GPU: parameters after Adam. Adam divides by
    // sqrt(v), so a gradient entry near 0 moves by up to lr whatever its size; the tolerance
    // is a tenth of one step.
    restart(&mut cpu, &params.values)?;
    restart(&mut gpu, &params.values)?;
    let lr = 1e-3;
    let cfg = AdamConfig {
        clip_encoder: Some(50.0),
        ..Default::default()
    };
    for step in 0..2u32 {
        let nz = Noise { step, ..noise };
        for kind in [EstimatorKind::Iwae, EstimatorKind::JviDreg] {
            let p = Estimator::new(kind, 0.0).program();
            cpu.train_step(&x, batch, n, &nz, &p, &cfg, lr)?;
            gpu.train_step(&x, batch, n, &nz, &p, &cfg, lr)?;
        }
    }
    let sc = cpu.take_stats()?;
    let sg = gpu.take_stats()?;
    rows.push(compare(
        "optim: parameters after 4 fused steps",
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));
    rows.push(compare(
        "optim: running objective and norms",
        &[
            sg.objective as f32,
            sg.grad_norm_encoder as f32,
            sg.grad_norm_decoder as f32,
            sg.steps as f32,
        ],
        &[
            sc.objective as f32,
            sc.grad_norm_encoder as f32,
            sc.grad_norm_decoder as f32,
            sc.steps as f32,
        ],
        1e-4,
        1e-4,
    ));

    // A fused step with a subset program on 8 samples (MLMC's shape of estimator).
    restart(&mut cpu, &params.values)?;
    restart(&mut gpu, &params.values)?;
    let p8 = CoefficientProgram::Subsets {
        terms: blocks,
        encoder: EncoderRule::DregBlocks { size: 2 },
    };
    cpu.train_step(&x, batch, n8, &noise, &p8, &cfg, lr)?;
    gpu.train_step(&x, batch, n8, &noise, &p8, &cfg, lr)?;
    let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
    rows.push(compare(
        "optim: parameters after a subset-program step",
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));
    rows.push(compare(
        "weights: subset step objective",
        &[sg.objective as f32],
        &[sc.objective as f32],
        1e-4,
        1e-4,
    ));

    // The same subset step again after a larger pass has reallocated the GPU's buffers (as
    // validation does between epochs): the cached subset dispatch must follow them.
    let big = batch * 40;
    gpu.forward(&binary_data(big, xd, 23), big, 16, &noise)?;
    cpu.train_step(&x, batch, n8, &noise, &p8, &cfg, lr)?;
    gpu.train_step(&x, batch, n8, &noise, &p8, &cfg, lr)?;
    let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
    rows.push(compare(
        "weights: subset step after a reallocation",
        &[sg.objective as f32],
        &[sc.objective as f32],
        1e-4,
        1e-4,
    ));
    rows.push(compare(
        "optim: parameters after it",
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));

    // A chunked step: the GPU may hold only 3 samples per datapoint, so N = n runs as
    // chunks of 3, 3, 1 (log-weights pass, then backward chunk by chunk).
    restart(&mut cpu, &params.values)?;
    restart(&mut gpu, &params.values)?;
    gpu.set_row_limit(Some(3 * batch));
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    cpu.train_step(&x, batch, n, &noise, &p, &cfg, lr)?;
    gpu.train_step(&x, batch, n, &noise, &p, &cfg, lr)?;
    let sc = cpu.take_stats()?;
    let sg = gpu.take_stats()?;
    rows.push(compare(
        "optim: parameters after a chunked step (3+3+1)",
        &gpu.params()?,
        &cpu.params()?,
        lr * 0.1,
        1e-4,
    ));
    rows.push(compare(
        "weights: chunked step objective and norms",
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

    // Coupled chains: the whole batch advances in lockstep, each datapoint's chains on one GPU
    // thread (shaders/coupling.wgsl) against the host's coupling::chain::step; then the
    // backward over the particles each datapoint used: on the GPU one group per datapoint,
    // chunked to what one pass holds (the initial block), on the CPU its default grouping.
    for kernel in crate::coupling::ChainKernel::ALL {
        let chains = crate::coupling::CouplingConfig {
            horizon: 2,
            max_iters: 60,
            ..crate::coupling::CouplingConfig::new(kernel, 4)
        };
        restart(&mut cpu, &params.values)?;
        restart(&mut gpu, &params.values)?;
        gpu.set_row_limit(Some(batch * chains.particles_through(1)));
        gpu.set_chain_group_overhead(Some(0));
        let oc = cpu.chain_step(&x, batch, &noise, &chains, &cfg, lr)?;
        let og = gpu.chain_step(&x, batch, &noise, &chains, &cfg, lr)?;
        gpu.set_row_limit(None);
        gpu.set_chain_group_overhead(None);
        let summary = |o: &crate::backend::ChainOutcome| -> Vec<f32> {
            let mut v = vec![o.iterations as f32];
            v.extend(o.meeting_times.iter().map(|&t| t as f32));
            v.extend(o.particles.iter().map(|&p| p as f32));
            v.extend(o.capped.iter().map(|&c| c as u8 as f32));
            v
        };
        rows.push(compare(
            &format!("coupling: {kernel} iterations, meeting times, particles"),
            &summary(&og),
            &summary(&oc),
            0.5,
            0.0,
        ));
        rows.push(compare(
            &format!("coupling: {kernel} gradient"),
            &gpu.gradient()?,
            &cpu.gradient()?,
            1e-4,
            1e-3,
        ));
        let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
        rows.push(compare(
            &format!("coupling: {kernel} objective (L_K of the first K)"),
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ));
    }

    // Evaluation L_K: log-sum-exp accumulated on the device over chunks of 5 samples.
    gpu.set_row_limit(Some(5));
    gpu.set_params(&params.values)?;
    cpu.set_params(&params.values)?;
    let k = 2 * n + 3;
    let eg = eval::log_likelihood(&mut gpu, &x, batch, k, 7, 0)?;
    let ec = eval::log_likelihood(&mut cpu, &x, batch, k, 7, 0)?;
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
    for model in [ModelChoice::Toy, ModelChoice::Ppca] {
        rows.extend(exact_model_rows(choice, model, batch, n)?);
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

/// The exact models as backend configurations (linear, Gaussian likelihood, frozen ranges):
/// log-weights, the gradient, and two training steps (the second chunked) on both backends,
/// and the frozen entries after them, which must not have moved at all.
fn exact_model_rows(
    choice: &AdapterChoice,
    model: ModelChoice,
    batch: usize,
    n: usize,
) -> Result<Vec<ParityRow>> {
    use crate::exact::training;
    let name = model.name();
    // Perturbed away from the optimum, so every gradient entry is in play.
    let params = match model {
        ModelChoice::Toy => training::toy_to_params(&crate::exact::Toy::with_perturbation(5, 0.05)),
        _ => training::ppca_to_params(&crate::exact::Ppca::with_config(
            5,
            &crate::exact::PpcaConfig {
                perturb_sd: 0.2,
                ..Default::default()
            },
        )),
    };
    let ex = training::ExactTraining::new(model, 5).expect("an exact model");
    let x: Vec<f32> = ex.data_f32()[..batch * ex.dim()].to_vec();
    let mut gpu = GpuBackend::new(&params.layout, &params.values, choice)?;
    let mut cpu = CpuBackend::new(&params.layout, &params.values, 2)?;
    let noise = Noise {
        seed: 31,
        stream: Stream::Eps,
        step: 1,
        first_datapoint: 2,
        first_sample: 0,
    };
    let mut rows = Vec::new();
    let lw_cpu = cpu.forward(&x, batch, n, &noise)?.to_vec();
    let lw_gpu = gpu.forward(&x, batch, n, &noise)?.to_vec();
    rows.push(compare(
        &format!("{name}: log-weights (Gaussian likelihood)"),
        &lw_gpu,
        &lw_cpu,
        1e-4,
        1e-5,
    ));
    let co = Estimator::new(EstimatorKind::IwaeDreg, 0.0).coefficients(&lw_cpu, batch, n);
    gpu.backward(&co.a, &co.b, &co.c)?;
    cpu.backward(&co.a, &co.b, &co.c)?;
    rows.push(compare(
        &format!("{name}: gradient, frozen ranges zeroed"),
        &gpu.gradient()?,
        &cpu.gradient()?,
        1e-5,
        1e-3,
    ));
    let (lr, cfg) = (1e-3, AdamConfig::default());
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    for chunked in [false, true] {
        // Chunks of 3 samples per datapoint in the second step (3 + 3 + 1 for n = 7).
        gpu.set_row_limit(chunked.then_some(3 * batch));
        cpu.set_row_limit(chunked.then_some(3 * batch));
        cpu.train_step(&x, batch, n, &noise, &p, &cfg, lr)?;
        gpu.train_step(&x, batch, n, &noise, &p, &cfg, lr)?;
    }
    gpu.set_row_limit(None);
    let (pg, pc) = (gpu.params()?, cpu.params()?);
    rows.push(compare(
        &format!("{name}: parameters after 2 steps (one chunked)"),
        &pg,
        &pc,
        lr * 0.1,
        1e-4,
    ));
    let frozen = |v: &[f32]| -> Vec<f32> {
        params
            .layout
            .frozen
            .iter()
            .flat_map(|r| v[r.clone()].to_vec())
            .collect()
    };
    let init = frozen(&params.values);
    let mut both = frozen(&pg);
    both.extend(frozen(&pc));
    let mut want = init.clone();
    want.extend(&init);
    // A tolerance of 1e-30 is bit-identity for these values (0, 1 and ln sqrt(2/3)).
    rows.push(compare(
        &format!("{name}: frozen entries unchanged (gpu, cpu)"),
        &both,
        &want,
        1e-30,
        0.0,
    ));
    Ok(rows)
}

/// Fresh parameters, fresh Adam moments and empty running statistics.
fn restart(backend: &mut dyn Backend, params: &[f32]) -> Result<()> {
    backend.set_params(params)?;
    backend.reset_optimizer();
    backend.take_stats()?;
    Ok(())
}

/// The suite as a table.
pub fn format_table(report: &ParityReport) -> String {
    let (device, rows) = (&report.device, &report.rows);
    let mut out = format!("parity on {device}: |gpu - cpu| <= atol + rtol |cpu|\n");
    let kernels: Vec<String> = report
        .kernels
        .iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect();
    out += &format!("dispatches in the plans: {}\n", kernels.join(", "));
    out += &format!(
        "{:<52} {:>6} {:>11} {:>11} {:>8} {:>8}  result\n",
        "kernel / estimator", "values", "max abs", "max rel", "atol", "rtol"
    );
    for r in rows {
        out += &format!(
            "{:<52} {:>6} {:>11.3e} {:>11.3e} {:>8.0e} {:>8.0e}  {}\n",
            r.name,
            r.count,
            r.max_abs,
            r.max_rel,
            r.atol,
            r.rtol,
            if r.pass { "pass" } else { "FAIL" }
        );
        if !r.pass {
            for (i, g, c) in &r.worst {
                out += &format!("    [{i}] gpu {g:.7e} cpu {c:.7e}\n");
            }
        }
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    out += &format!("{} passed, {} failed\n", rows.len() - failed, failed);
    out
}
