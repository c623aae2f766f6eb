//! The parity suite: every GPU kernel and every estimator's coefficients against the CPU
//! reference on the same seed, |gpu - cpu| <= atol + rtol |cpu|. `uvae check` prints it as a
//! table; the tests assert it. Shapes are deliberately not multiples of the GEMM tiles.
//!
//! `run_suite` runs the sections in order, each a file: `forward` (rng, encoder, z,
//! log-weights), `coefficients`, `gradients`, `training` (fused optimizer steps), `chains`
//! (coupled chains), `evaluation`, `exact_models`, `split` (split-K GEMMs and two-level
//! reductions at forced slice counts), `two_layer` (the two-stochastic-layer model, on
//! its own backends) and `input` (training images binarized on the device, exactly). The sections share one pair of
//! backends, so each one starts from the state the one before left.

mod chains;
mod coefficients;
mod conditional;
mod evaluation;
mod exact_models;
mod forward;
mod gradients;
mod input;
mod model_rows;
mod split;
mod training;
mod two_layer;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, Noise, StepInputs};
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

/// One training step (`step`) on each backend, then two rows: the parameters it left
/// (absolute tolerance a tenth of the learning rate `lr`) and the step's objective.
pub(super) fn step_rows(
    cpu: &mut dyn Backend,
    gpu: &mut dyn Backend,
    (params_row, objective_row): (&str, &str),
    lr: f64,
    mut step: impl FnMut(&mut dyn Backend) -> Result<()>,
) -> Result<[ParityRow; 2]> {
    step(cpu)?;
    step(gpu)?;
    let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
    Ok([
        compare(params_row, &gpu.params()?, &cpu.params()?, lr * 0.1, 1e-4),
        compare(
            objective_row,
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ),
    ])
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

/// Compares `gpu` against `cpu` bit for bit (atol = rtol = 0): any differing value, or a
/// different length, fails; the worst pairs listed are the first mismatches.
pub fn compare_exact(name: &str, gpu: &[f32], cpu: &[f32]) -> ParityRow {
    let mut row = compare(name, gpu, cpu, 0.0, 0.0);
    let mismatches: Vec<(usize, f64, f64)> = gpu
        .iter()
        .zip(cpu)
        .enumerate()
        .filter(|(_, (g, c))| g.to_bits() != c.to_bits())
        .map(|(i, (&g, &c))| (i, g as f64, c as f64))
        .collect();
    row.pass = gpu.len() == cpu.len() && mismatches.is_empty();
    if !mismatches.is_empty() {
        row.name = format!("{name}: {} values differ", mismatches.len());
    }
    row.worst = mismatches.into_iter().take(5).collect();
    row
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
                top: None,
                cond: None,
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

/// What the sections share: the shape, the model, both backends and the inputs.
struct Suite {
    arch: Arch,
    batch: usize,
    n: usize,
    params: Params,
    gpu: GpuBackend,
    cpu: CpuBackend,
    x: Vec<f32>,
    noise: Noise,
    /// The optimizer settings of the training and coupled-chain steps.
    lr: f64,
    cfg: AdamConfig,
}

impl Suite {
    /// The inputs of its training and coupled-chain steps.
    fn step_inputs(&self) -> StepInputs {
        StepInputs {
            batch: self.batch,
            noise: self.noise,
            adam: self.cfg,
            lr: self.lr,
        }
    }
}

/// Runs the whole suite on `choice`'s adapter.
pub fn run_suite(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    let ParityShape { arch, batch, n } = shape.clone();
    let xd = arch.x_dim;
    let mean: Vec<f32> = (0..xd).map(|j| 0.1 + 0.8 * j as f32 / xd as f32).collect();
    let params = Params::init(&arch, 5, Some(&mean));
    let gpu = GpuBackend::new(&params.layout, &params.values, choice)?;
    let cpu = CpuBackend::new(&params.layout, &params.values, 2)?;
    let device = gpu.describe();
    let x = binary_data(batch, xd, 17);
    let noise = Noise {
        seed: 99,
        stream: Stream::Eps,
        step: 3,
        first_datapoint: 4,
        first_sample: 6,
    };
    let mut suite = Suite {
        arch,
        batch,
        n,
        params,
        gpu,
        cpu,
        x,
        noise,
        lr: 1e-3,
        cfg: AdamConfig {
            clip_encoder: Some(50.0),
            ..Default::default()
        },
    };
    let (mut rows, lw_cpu) = forward::rows(&mut suite)?;
    // The coefficient and gradient sections reuse the CPU's log-weights.
    rows.extend(coefficients::estimator_rows(&mut suite, &lw_cpu)?);
    rows.extend(coefficients::subset_rows(&mut suite, &lw_cpu)?);
    rows.extend(gradients::rows(&mut suite, &lw_cpu)?);
    rows.extend(training::rows(&mut suite)?);
    rows.extend(chains::rows(&mut suite)?);
    rows.extend(evaluation::rows(&mut suite)?);
    rows.extend(exact_models::rows(choice, batch, n)?);
    rows.extend(split::rows(choice)?);
    rows.extend(two_layer::rows(choice, &two_layer::tiny_shape())?.rows);
    rows.extend(conditional::rows(choice, &conditional::tiny_shape())?.rows);
    rows.extend(input::rows(choice)?);
    Ok(model_rows::report(&suite.gpu, device, rows))
}

pub use conditional::{arch as conditional_arch, tiny_shape as conditional_shape};
pub use two_layer::tiny_shape as two_layer_shape;

/// The conditional model's section alone (`conditional`) on `shape` (its arch needs a
/// context; `run_suite` uses [`conditional_shape`]).
pub fn run_conditional(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    conditional::rows(choice, shape)
}

/// The two-stochastic-layer section alone (`two_layer`) on `shape` (its arch needs a top
/// layer; `run_suite` uses [`two_layer_shape`]).
pub fn run_two_layer(choice: &AdapterChoice, shape: &ParityShape) -> Result<ParityReport> {
    two_layer::rows(choice, shape)
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
