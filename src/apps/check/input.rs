//! The input pipeline: training images held on the GPU and binarized there
//! (shaders/input.wgsl) against `data::binarize_train`, value for value with no mismatch
//! allowed, on images of random intensities (every value 0..=255) at a dimension that is not
//! a multiple of 4 (images straddle the packed words) and at MNIST's, with index lists
//! shuffled and repeating, several steps and a seed using its high 32 bits. Then training
//! steps on device-binarized minibatches: identical to the GPU's own steps on the host's
//! values, and within the usual tolerance of the CPU's.

use super::{compare, compare_exact, restart, ParityRow};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{AdapterChoice, GpuBackend};
use crate::backend::{Backend, ImageRows, ImageUpload, Minibatch, Noise, StepInputs};
use crate::coupling::{ChainKernel, CouplingConfig};
use crate::data::{self, idx::Images};
use crate::estimators::{Estimator, EstimatorKind};
use crate::model::{Arch, Params};
use crate::optim::AdamConfig;
use crate::rng::Stream;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (seed, step) pairs binarized: consecutive steps, and a seed and step with high bits set.
const DRAWS: [(u64, u32); 3] = [(99, 0), (99, 1), (0xDEAD_BEEF_0000_0001, (1 << 31) + 7)];

pub(super) fn rows(choice: &AdapterChoice) -> Result<Vec<ParityRow>> {
    let mut rows = Vec::new();
    // (dim, images, rows per minibatch); 437 is a 19 x 23 image (`--data` of any shape), and
    // its images mapped to 0/255 are what `--binarize threshold|none` holds.
    for (dim, count, batch) in [
        (7, 400, 300),
        (784, 300, 100),
        (437, 200, 64),
        (437, 64, 64),
    ] {
        let mut images = random_images(count, dim, dim as u64);
        let fixed = dim == 437 && count == 64;
        if fixed {
            data::binarization::apply_u8(
                data::Binarization::Threshold,
                &mut images.pixels,
                "check",
                dim,
            )?;
        }
        let (params, mut gpu) = backend(choice, dim)?;
        hold(&mut gpu, &images)?;
        let lists = index_lists(count, batch, dim as u64);
        let (mut g, mut c) = (Vec::new(), Vec::new());
        for list in &lists {
            let idx32: Vec<u32> = list.iter().map(|&i| i as u32).collect();
            for (seed, step) in DRAWS {
                let mut x = vec![0.0f32; batch * dim];
                data::binarize_train(&images, list, seed, step, &mut x);
                c.extend(x);
                g.extend(gpu.binarize_on_device(&ImageRows {
                    indices: &idx32,
                    seed,
                    step,
                })?);
            }
        }
        let what = if fixed {
            " (0/255: threshold, none)"
        } else {
            ""
        };
        rows.push(compare_exact(
            &format!(
                "input: binarize {count} images of {dim} pixels{what}, {}x{batch} rows",
                lists.len() * DRAWS.len()
            ),
            &g,
            &c,
        ));
        if fixed {
            // 0 is never on and 255 always: the draws give back the images themselves.
            let want: Vec<f32> = lists
                .iter()
                .flat_map(|l| DRAWS.iter().map(move |_| l))
                .flat_map(|l| {
                    l.iter()
                        .flat_map(|&i| images.image(i).iter().map(|&p| f32::from(p) / 255.0))
                })
                .collect();
            rows.push(compare_exact(
                "input: 0/255 images binarize to themselves",
                &c,
                &want,
            ));
        }
        if dim == 7 || (dim == 437 && !fixed) {
            rows.extend(step_rows(&params, &mut gpu, &images, &lists[0][..5])?);
        }
    }
    Ok(rows)
}

/// A tiny model on `dim` pixels and its GPU backend.
fn backend(choice: &AdapterChoice, dim: usize) -> Result<(Params, GpuBackend)> {
    let arch = Arch {
        x_dim: dim,
        hidden: vec![6],
        z_dim: 3,
        likelihood: Default::default(),
        top: None,
        cond: None,
    };
    let mean: Vec<f32> = (0..dim)
        .map(|j| 0.2 + 0.6 * j as f32 / dim as f32)
        .collect();
    let params = Params::init(&arch, 5, Some(&mean));
    let gpu = GpuBackend::new(&params.layout, &params.values, choice)?;
    Ok((params, gpu))
}

fn hold(gpu: &mut GpuBackend, images: &Images) -> Result<()> {
    match gpu.upload_images(images)? {
        ImageUpload::Held => Ok(()),
        other => bail!(
            "the GPU did not take {} test images: {other:?}",
            images.count
        ),
    }
}

/// `count` images of `dim` pixels (19 x 23 for 437, else one row of `dim` columns), every
/// intensity equally likely.
fn random_images(count: usize, dim: usize, seed: u64) -> Images {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = if dim == 437 { 19 } else { 1 };
    Images {
        count,
        rows,
        cols: dim / rows,
        pixels: (0..count * dim).map(|_| rng.random::<u8>()).collect(),
    }
}

/// Two index lists of `batch` rows: the first `batch` of a shuffle of all images, and a
/// descending walk with repeats (each image twice, from the last one down).
fn index_lists(count: usize, batch: usize, seed: u64) -> [Vec<usize>; 2] {
    let mut all: Vec<usize> = (0..count).collect();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x51));
    [
        all[..batch].to_vec(),
        (0..batch).map(|r| count - 1 - (r / 2) % count).collect(),
    ]
}

/// The step kinds that take a minibatch (fused, chunked, coupled chains in sub-batch
/// groups) on `rows` of the held `images`: the GPU binarizing them against the GPU on the
/// host's values (identical), and against the CPU on the host's values (0.1 lr, as the
/// other parameter rows).
fn step_rows(
    params: &Params,
    gpu: &mut GpuBackend,
    images: &Images,
    rows: &[usize],
) -> Result<Vec<ParityRow>> {
    let (batch, lr, dim) = (rows.len(), 1e-3, images.dim());
    let shape = format!("{}x{} images", images.rows, images.cols);
    let mut cpu = CpuBackend::new(&params.layout, &params.values, 2)?;
    let (seed, step) = (7, 11);
    let mut x = vec![0.0f32; batch * dim];
    data::binarize_train(images, rows, seed, step, &mut x);
    let idx32: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    let on_device = Minibatch::Images(ImageRows {
        indices: &idx32,
        seed,
        step,
    });
    let inputs = StepInputs {
        batch,
        noise: Noise {
            seed,
            stream: Stream::Eps,
            step,
            first_datapoint: 0,
            first_sample: 0,
        },
        adam: AdamConfig::default(),
        lr,
    };
    let chains = CouplingConfig {
        horizon: 2,
        max_iters: 60,
        ..CouplingConfig::new(ChainKernel::Isir, 4)
    };
    let program = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    let mut out = Vec::new();
    // (name, rows one pass may hold, whether coupled)
    let kinds = [
        ("a fused IWAE-DReG step", None, false),
        ("a chunked step (3+3+1)", Some(3 * batch), false),
        (
            "a coupled ISIR step",
            Some(batch * chains.particles_through(1)),
            true,
        ),
    ];
    for (what, limit, coupled) in kinds {
        let run = |b: &mut dyn Backend, x: Minibatch| -> Result<Vec<f32>> {
            restart(b, &params.values)?;
            if coupled {
                b.chain_minibatch(x, &inputs, &chains)?;
            } else {
                b.train_minibatch(x, &inputs, 7, &program)?;
            }
            b.params()
        };
        gpu.set_row_limit(limit);
        // Groups of one datapoint: the chains' backward binarizes sub-batches.
        gpu.set_chain_group_overhead(coupled.then_some(0));
        let host = run(gpu, Minibatch::Host(&x))?;
        let device = run(gpu, on_device)?;
        gpu.set_row_limit(None);
        gpu.set_chain_group_overhead(None);
        let reference = run(&mut cpu, Minibatch::Host(&x))?;
        out.push(compare_exact(
            &format!("input: {what} ({shape}), device vs host binarization"),
            &device,
            &host,
        ));
        out.push(compare(
            &format!("input: {what} ({shape}) on device-binarized images vs cpu"),
            &device,
            &reference,
            lr * 0.1,
            1e-4,
        ));
    }
    Ok(out)
}
