//! The exact models (toy, PPCA) as backend configurations: linear, Gaussian likelihood,
//! frozen parameter ranges.

use super::{compare, ParityRow};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, Noise, StepInputs};
use crate::estimators::{Estimator, EstimatorKind};
use crate::model::ModelChoice;
use crate::optim::AdamConfig;
use crate::rng::Stream;
use anyhow::Result;

/// The rows of the toy model, then those of PPCA, each on fresh backends.
pub(super) fn rows(choice: &AdapterChoice, batch: usize, n: usize) -> Result<Vec<ParityRow>> {
    let mut rows = Vec::new();
    for model in [ModelChoice::Toy, ModelChoice::Ppca] {
        rows.extend(exact_model_rows(choice, model, batch, n)?);
    }
    Ok(rows)
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
    use crate::model::exact_training as training;
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
    let lr = 1e-3;
    let inputs = StepInputs {
        batch,
        noise,
        adam: AdamConfig::default(),
        lr,
    };
    let p = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    for chunked in [false, true] {
        // Chunks of 3 samples per datapoint in the second step (3 + 3 + 1 for n = 7).
        gpu.set_row_limit(chunked.then_some(3 * batch));
        cpu.set_row_limit(chunked.then_some(3 * batch));
        cpu.train_step(&x, &inputs, n, &p)?;
        gpu.train_step(&x, &inputs, n, &p)?;
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
