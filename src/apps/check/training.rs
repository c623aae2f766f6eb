//! Whole training steps, fused on the GPU: parameters and running statistics after Adam, for
//! plain estimators, a subset program (also after the GPU's buffers were reallocated) and
//! chunked steps (the gradient at several chunk sizes, then the parameters).

use super::coefficients::{dyadic_blocks, N8};
use super::{binary_data, compare, restart, step_rows, ParityRow, Suite};
use crate::backend::{Backend, Noise, StepInputs};
use crate::estimators::{CoefficientProgram, EncoderRule, Estimator, EstimatorKind};
use anyhow::Result;

/// Adam divides by sqrt(v), so a gradient entry near 0 moves by up to lr whatever its size;
/// the parameters' tolerance is a tenth of one step.
pub(super) fn rows(suite: &mut Suite) -> Result<Vec<ParityRow>> {
    let (batch, n, noise, lr) = (suite.batch, suite.n, suite.noise, suite.lr);
    let (x, inputs) = (&suite.x, suite.step_inputs());
    let (cpu, gpu) = (&mut suite.cpu, &mut suite.gpu);
    let params = &suite.params;
    let mut rows = Vec::new();
    restart(cpu, &params.values)?;
    restart(gpu, &params.values)?;
    for step in 0..2u32 {
        let inputs = StepInputs {
            noise: Noise { step, ..noise },
            ..inputs
        };
        for kind in [EstimatorKind::Iwae, EstimatorKind::JviDreg] {
            let p = Estimator::new(kind, 0.0).program();
            cpu.train_step(x, &inputs, n, &p)?;
            gpu.train_step(x, &inputs, n, &p)?;
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
    restart(cpu, &params.values)?;
    restart(gpu, &params.values)?;
    let p8 = CoefficientProgram::Subsets {
        terms: dyadic_blocks(),
        encoder: EncoderRule::DregBlocks { size: 2 },
    };
    let step = |b: &mut dyn Backend| b.train_step(x, &inputs, N8, &p8);
    rows.extend(step_rows(
        cpu,
        gpu,
        (
            "optim: parameters after a subset-program step",
            "weights: subset step objective",
        ),
        lr,
        step,
    )?);

    // The same subset step again after a larger pass has reallocated the GPU's buffers (as
    // validation does between epochs): the cached subset dispatch must follow them.
    let big = batch * 40;
    gpu.forward(&binary_data(big, suite.arch.x_dim, 23), big, 16, &noise)?;
    let [params_row, objective_row] = step_rows(
        cpu,
        gpu,
        (
            "optim: parameters after it",
            "weights: subset step after a reallocation",
        ),
        lr,
        step,
    )?;
    rows.extend([objective_row, params_row]);

    // Chunked steps at other chunk sizes (n = 7: one sample a chunk, 2+2+2+1, 4+3), the
    // gradient itself compared: each chunk's gathers move its columns of the log-weights
    // into the whole step's (a wrong column moves the objective) and the coefficients' back
    // (a wrong one moves the gradient).
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    for per in [1, 2, 4] {
        restart(cpu, &params.values)?;
        restart(gpu, &params.values)?;
        gpu.set_row_limit(Some(per * batch));
        cpu.train_step(x, &inputs, n, &p)?;
        gpu.train_step(x, &inputs, n, &p)?;
        let chunks: Vec<String> = (0..n)
            .step_by(per)
            .map(|s0| per.min(n - s0).to_string())
            .collect();
        let chunks = chunks.join("+");
        rows.push(compare(
            &format!("weights: chunked step gradient ({chunks})"),
            &gpu.gradient()?,
            &cpu.gradient()?,
            1e-5,
            1e-3,
        ));
        let (sc, sg) = (cpu.take_stats()?, gpu.take_stats()?);
        rows.push(compare(
            &format!("weights: chunked step objective ({chunks})"),
            &[sg.objective as f32],
            &[sc.objective as f32],
            1e-4,
            1e-4,
        ));
    }

    // A chunked step: the GPU may hold only 3 samples per datapoint, so N = n runs as
    // chunks of 3, 3, 1 (log-weights pass, then backward chunk by chunk).
    restart(cpu, &params.values)?;
    restart(gpu, &params.values)?;
    gpu.set_row_limit(Some(3 * batch));
    cpu.train_step(x, &inputs, n, &p)?;
    gpu.train_step(x, &inputs, n, &p)?;
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
    Ok(rows)
}
