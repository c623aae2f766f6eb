//! The GPU's input pipeline: with the training images held on the device and binarized
//! there, a short training run ends with the same parameters, Adam moments and running
//! sums, bit for bit, as the same GPU fed the host's binarized values, for every kind of
//! step that takes a minibatch (fused, chunked, random-size SUMO, coupled chains in
//! sub-batch groups). Bit-identity is the stated tolerance: the binarization is exact
//! (integer thresholds, `data::binarize_thresholds`) and the step has no float atomics, so
//! identical inputs give identical numbers. The plan's dispatch list, as `uvae profile`
//! prints it, leads with the binarization. With CI=true a missing adapter is a failure.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unbiased_vae::backend::gpu::GpuBackend;
use unbiased_vae::backend::{Backend, ImageUpload, Minibatch, Noise, StepInputs};
use unbiased_vae::data::{self, idx::Images, Dataset};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::model::Params;
use unbiased_vae::optim::AdamConfig;
use unbiased_vae::rng::Stream;
use unbiased_vae::train::{estimator_step, MinibatchFeed};

use crate::common::{any_adapter, arch, have_gpu};

const BATCH: usize = 6;
const STEPS: u32 = 4;

/// The first 600 bundled MNIST training images and a small model on them.
fn setup() -> (Images, Params) {
    let ds = Dataset::load(&data::bundled_mnist_dir(), 400).expect("bundled MNIST loads");
    let images = ds.train.slice(0..600);
    let params = Params::init(&arch(images.dim(), &[12], 4), 3, Some(&ds.train_mean()));
    (images, params)
}

fn gpu(params: &Params) -> GpuBackend {
    GpuBackend::new(&params.layout, &params.values, &any_adapter()).expect("GPU backend")
}

/// `STEPS` steps of `estimator` at `k` from `params`, on minibatches of shuffled, unsorted
/// indices; `device` binarizes on the GPU (through the loop's `MinibatchFeed`), otherwise
/// the host binarizes. Returns parameters, Adam's moments and the running sums.
fn run(
    b: &mut GpuBackend,
    params: &Params,
    images: &Images,
    estimator: &Estimator,
    k: usize,
    device: bool,
) -> (Vec<f32>, Vec<f32>, [f64; 4]) {
    b.set_params(&params.values).unwrap();
    b.reset_optimizer();
    b.take_stats().unwrap();
    let plan = estimator.plan(k).expect("a valid estimator");
    let mut levels = ChaCha8Rng::seed_from_u64(8);
    // Only the device side offers the images: the host side never holds them.
    let mut feed = device.then(|| {
        let (feed, notice) = MinibatchFeed::new(b, Some(images), BATCH, images.dim()).unwrap();
        assert!(notice.is_none(), "{notice:?}");
        assert!(feed.on_device(), "the GPU holds 600 MNIST images");
        feed
    });
    let mut x = vec![0.0f32; BATCH * images.dim()];
    let adam = AdamConfig::default();
    for step in 0..STEPS {
        let idx: Vec<usize> = (0..BATCH)
            .map(|r| (599 - 97 * r - 13 * step as usize) % 600)
            .collect();
        let noise = Noise {
            seed: 21,
            stream: Stream::Eps,
            step,
            first_datapoint: 0,
            first_sample: 0,
        };
        let mb = if let Some(feed) = feed.as_mut() {
            feed.minibatch(&idx, 21, step, |_| unreachable!("the device binarizes"))
        } else {
            data::binarize_train(images, &idx, 21, step, &mut x);
            Minibatch::Host(&x)
        };
        let inputs = StepInputs {
            batch: BATCH,
            noise,
            adam,
            lr: 1e-3,
        };
        estimator_step(b, &plan, mb, &inputs, &mut levels)
            .unwrap_or_else(|e| panic!("{}: {e:#}", estimator.kind));
    }
    let s = b.take_stats().unwrap();
    let st = b.optimizer_state().unwrap();
    let moments = [st.m, st.v].concat();
    let sums = [
        s.objective,
        s.grad_norm_encoder,
        s.grad_norm_decoder,
        s.steps as f64,
    ];
    (b.params().unwrap(), moments, sums)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn device_binarization_trains_as_host_binarization() {
    if !have_gpu() {
        return;
    }
    let (images, params) = setup();
    let (mut host, mut device) = (gpu(&params), gpu(&params));
    // (estimator, k, rows one pass may hold)
    let cases = [
        (EstimatorKind::Iwae, 5, None),
        (EstimatorKind::IwaeDreg, 7, Some(3 * BATCH)),
        (EstimatorKind::Sumo, 3, None),
        (EstimatorKind::CoupledIsir, 3, None),
    ];
    for (kind, k, limit) in cases {
        let est = Estimator::new(kind, 0.0);
        for b in [&mut host, &mut device] {
            b.set_row_limit(limit);
            // Coupled chains: one backward group per datapoint, each binarized on its own.
            b.set_chain_group_overhead(Some(0));
        }
        let h = run(&mut host, &params, &images, &est, k, false);
        let d = run(&mut device, &params, &images, &est, k, true);
        assert_eq!(bits(&d.0), bits(&h.0), "{kind}: parameters differ");
        assert_eq!(bits(&d.1), bits(&h.1), "{kind}: Adam's moments differ");
        assert_eq!(d.2, h.2, "{kind}: running sums differ");
        assert_ne!(
            bits(&d.0),
            bits(&params.values),
            "{kind}: the steps moved nothing"
        );
        println!("{kind}: {STEPS} steps identical, objective sum {}", d.2[0]);
    }
}

/// The plan's dispatches of a step lead with the binarization once the images are held:
/// its workgroups (one thread per row and block of four pixels, 64 a workgroup) and bytes
/// (indices, one byte read and four written per pixel).
#[test]
fn the_step_plan_leads_with_the_binarization() {
    if !have_gpu() {
        return;
    }
    let (images, params) = setup();
    let mut b = gpu(&params);
    let before = b.plan_dispatches(100, 5).unwrap();
    assert!(before.iter().all(|d| d.kernel != "binarize"), "{before:?}");
    assert_eq!(b.upload_images(&images).unwrap(), ImageUpload::Held);
    let after = b.plan_dispatches(100, 5).unwrap();
    assert_eq!(after.len(), before.len() + 1);
    let d = &after[0];
    assert_eq!(
        (d.kernel.as_str(), d.label.as_str()),
        ("binarize", "binarize [100x784]")
    );
    assert_eq!(d.workgroups, (100u64 * 196).div_ceil(64));
    assert_eq!(d.bytes, (4 * 100 + 5 * 100 * 784) as f64);
    // The held bytes count as working memory.
    assert!(b.memory_bytes().0 >= 600 * 784);
}
