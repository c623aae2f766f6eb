//! Training with coupled Markov chains (coupled-pimh, coupled-isir, coupled-disir) on MNIST:
//! the batch runs until every datapoint's chains have met, the cost and meeting times are
//! logged, a cap is reported, chunked steps equal whole ones, and both backends agree. The
//! chains' unbiasedness is tested on the exact models in `coupling`, through the same
//! `coupling::chain::step` the CPU backend runs (and the GPU mirrors, see `uvae check`).

use serde_json::Value;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::{Backend, Noise, StepInputs};
use unbiased_vae::coupling::{ChainKernel, CouplingConfig};
use unbiased_vae::model::Params;
use unbiased_vae::optim::AdamConfig;
use unbiased_vae::rng::Stream;

use crate::common::cli::{arg, assert_agree, run, train_metrics, train_on_cpu_and_gpu, words};
use crate::common::mc::{max_abs, max_se, z_scores, Moments};
use crate::common::{arch, backends, tiny, TestBackend};

const TINY: &str =
    "--train-limit 120 --valid-size 20 --epochs 1 --batch 12 --hidden 24 --latent 4 --val-k 4";

fn train(dir: &std::path::Path, extra: &str) -> (Vec<Value>, String) {
    train_metrics(dir, &words(TINY), &words(extra))
}

#[test]
fn coupled_estimators_train_and_log_meeting_times_and_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let k = 4.0;
    for est in ["coupled-pimh", "coupled-isir", "coupled-disir"] {
        let (m, err) = train(
            &tmp.path().join(est),
            &format!("--backend cpu --estimator {est} --k 4"),
        );
        let m = &m[0];
        println!("{est}: {m}");
        assert!(!err.contains("warning"), "{est}: {err}");
        assert!(m["train_objective"].as_f64().unwrap().is_finite(), "{m}");
        assert!(m.get("expected_samples_per_datapoint").is_none(), "{m}");
        let c = &m["chains"];
        let used = m["samples_per_datapoint"].as_f64().unwrap();
        let computed = c["computed_samples_per_datapoint"].as_f64().unwrap();
        let (mean, max) = (
            c["meeting_time_mean"].as_f64().unwrap(),
            c["meeting_time_max"].as_u64().unwrap(),
        );
        assert_eq!(c["capped"], 0, "{m}");
        // The chains meet after the lag (tau > L = 1); the time average runs to m = 4.
        assert!(mean > 1.0 && max as f64 >= mean, "{m}");
        // Per datapoint the cost is K (2 + max(m, tau)) (PIMH) or 2 + (K-1) max(m+1, tau).
        let floor = if est == "coupled-pimh" {
            k * (2.0 + 4.0)
        } else {
            2.0 + (k - 1.0) * 5.0
        };
        assert!(used >= floor && computed >= used, "{est}: {m}");
        // The batch runs until its slowest datapoint is done.
        assert!(c["iterations_mean"].as_f64().unwrap() >= 5.0, "{m}");
    }
}

#[test]
fn a_capped_chain_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    // With max-iters 2 the chains have one coupled step to meet in.
    let args = "--backend cpu --estimator coupled-pimh --chain-m 1 --max-iters 2";
    let (m, err) = train(&tmp.path().join("cap"), args);
    let capped = m[0]["chains"]["capped"].as_u64().unwrap();
    assert!(capped > 0, "{}", m[0]);
    assert!(
        err.contains(&format!("{capped} datapoint-steps reached --max-iters")),
        "{err}"
    );
}

#[test]
fn bad_chain_settings_name_their_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    for (args, needle) in [
        ("--max-iters 3 --chain-m 4", "--max-iters"),
        ("--chain-k 5 --chain-m 4", "--chain-k"),
        ("--lag 0", "--lag"),
        ("--k 1", "at least 2"),
    ] {
        let mut a = words("train --estimator coupled-isir --backend cpu --out");
        a.push(arg(&out));
        a.extend(words(args));
        let o = run(&a);
        let err = o.stderr;
        assert!(o.code != Some(0), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

fn tiny_model() -> (Params, Vec<f32>, usize) {
    let batch = 5;
    let (params, x) = tiny(&arch(30, &[12], 3), batch);
    (params, x, batch)
}

const NOISE: Noise = Noise {
    seed: 11,
    stream: Stream::Eps,
    step: 2,
    first_datapoint: 0,
    first_sample: 0,
};

/// One step on the CPU: every datapoint's iterations and particles follow from its meeting
/// time (the batch runs to the slowest), and a step chunked to the initial block per pass, or
/// whose backward runs per datapoint over the particles it used, gives the same parameters as
/// one whole backward.
#[test]
fn chain_steps_run_to_the_slowest_datapoint_and_chunk_exactly() {
    let (params, x, batch) = tiny_model();
    let mut early = false;
    for kernel in ChainKernel::ALL {
        let chains = CouplingConfig {
            horizon: 3,
            ..CouplingConfig::new(kernel, 4)
        };
        let mut whole = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        whole.set_chain_group_overhead(Some(usize::MAX / 4));
        let mut chunked = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        chunked.set_row_limit(Some(batch * chains.particles_through(1)));
        // One backward group per datapoint, each over the particles it used.
        let mut split = CpuBackend::new(&params.layout, &params.values, 2).unwrap();
        split.set_chain_group_overhead(Some(0));
        let mut outcomes = Vec::new();
        for b in [&mut whole, &mut chunked, &mut split] {
            b.reset_optimizer();
            outcomes.push(
                b.chain_step(
                    &x,
                    &StepInputs {
                        batch,
                        noise: NOISE,
                        adam: AdamConfig::default(),
                        lr: 1e-3,
                    },
                    &chains,
                )
                .unwrap(),
            );
        }
        let o = &outcomes[0];
        assert_eq!(o, &outcomes[1], "{kernel}: chunking changed the chains");
        assert_eq!(o, &outcomes[2], "{kernel}: grouping changed the chains");
        let own_iterations: Vec<usize> = o
            .meeting_times
            .iter()
            .map(|&tau| (tau as usize).max(chains.horizon + 1))
            .collect();
        assert_eq!(o.iterations, *own_iterations.iter().max().unwrap(), "{o:?}");
        assert!(o.capped.iter().all(|&c| !c));
        for ((&p, &it), &tau) in o
            .particles
            .iter()
            .zip(&own_iterations)
            .zip(&o.meeting_times)
        {
            let expect = match kernel {
                ChainKernel::Pimh => 4 * (2 + chains.horizon.max(tau as usize)),
                _ => chains.particles_through(it),
            };
            assert_eq!(p as usize, expect, "{kernel}: {o:?}");
        }
        early |= o
            .particles
            .iter()
            .any(|&p| (p as usize) < chains.particles_through(o.iterations));
        let pw = whole.params().unwrap();
        let worst = [chunked.params().unwrap(), split.params().unwrap()]
            .iter()
            .flat_map(|pc| pw.iter().zip(pc).map(|(a, b)| (a - b).abs()))
            .fold(0.0f32, f32::max);
        println!("{kernel}: {o:?}; worst chunked or split vs whole parameter difference {worst:e}");
        // A tenth of Adam's first step (lr = 1e-3) bounds what summation order can change.
        assert!(worst < 1e-4, "{kernel}: chunked step differs by {worst}");
    }
    assert!(
        early,
        "some datapoint should finish before its batch's slowest"
    );
}

#[test]
fn gpu_and_cpu_agree_for_coupled_chains() {
    let args = format!("{TINY} --k 3 --chain-m 2");
    let estimators = ["coupled-pimh", "coupled-isir", "coupled-disir"];
    for (est, c, g) in train_on_cpu_and_gpu(&args, &estimators).unwrap_or_default() {
        let (c, g) = (&c[0], &g[0]);
        println!("{est}: cpu {} gpu {}", c["chains"], g["chains"]);
        assert_agree(est, c, g, "train_objective", 1e-3);
        // The same Philox uniforms give the same chain decisions on both backends.
        assert_eq!(c["chains"], g["chains"], "{est}");
        assert_eq!(c["samples_per_datapoint"], g["samples_per_datapoint"]);
    }
}

/// Mean over `steps` batch means of the decoder-bias gradient (the toy's mu), and its SE.
fn mu_gradient_stats(
    backend: &mut dyn Backend,
    step: &mut dyn FnMut(&mut dyn Backend, u32),
    bias: std::ops::Range<usize>,
    steps: u32,
) -> Moments {
    let mut stats = Moments::new(bias.len());
    for r in 0..steps {
        step(backend, r);
        let g = backend.gradient().unwrap();
        let mu: Vec<f64> = g[bias.clone()].iter().map(|&v| v as f64).collect();
        stats.push(&mu);
    }
    stats
}

/// The training path's chains are unbiased end to end. On the toy (a backend model under
/// `--model toy`; decoder bias = mu, see docs/estimators.md §4) `chain_step`'s decoder
/// gradient, averaged over S steps of 250 independent estimates for one datapoint (S = 64 on
/// the CPU, 32 on the GPU, lavapipe being slow), matches grad_mu log p(x) = (x - mu) / 2
/// within 4.5 SE in each of the 20 coordinates. With S - 1 degrees of freedom P(|t| > 4.5) is
/// below 1e-4 per coordinate: under 1 % for the 80 coordinates of the four unbiased checks
/// together (union bound). IWAE(2) through `train_step` fails the same check (it must exceed
/// 6 SE somewhere), so the check can fail. lr = 0: the parameters stay put while Adam runs.
#[test]
fn coupled_chain_steps_are_unbiased_on_the_toy_through_the_backends() {
    use unbiased_vae::exact::{ExactModel, Toy};
    use unbiased_vae::model::exact_training::toy_to_params;
    let toy = Toy::new(0);
    let params = toy_to_params(&toy);
    let x: Vec<f32> = toy.data()[0].iter().map(|&v| v as f32).collect();
    let exact: Vec<f64> = toy.data()[0]
        .iter()
        .zip(toy.mu())
        .map(|(x, m)| (x - m) / 2.0)
        .collect();
    let batch = 250;
    let xb: Vec<f32> = x.iter().copied().cycle().take(batch * x.len()).collect();
    let bias = {
        let l = &params.layout.decoder[0];
        l.b..l.b + l.out
    };
    // Step r's inputs: its own noise, learning rate 0 (the parameters stay put).
    let inputs = |r: u32| StepInputs {
        batch,
        noise: Noise {
            seed: 7,
            stream: Stream::Eps,
            step: r,
            first_datapoint: 0,
            first_sample: 0,
        },
        adam: AdamConfig::default(),
        lr: 0.0,
    };
    let max_z = |stats: &Moments| max_abs(&z_scores(stats, &exact));
    for name in backends() {
        // (kernels checked, steps)
        let (kernels, steps) = match name {
            TestBackend::Cpu => (ChainKernel::ALL.to_vec(), 64),
            TestBackend::Gpu => (vec![ChainKernel::Isir], 32),
        };
        let mut backend = name.create(&params.layout, &params.values, 2, None);
        backend.reset_optimizer();
        for kernel in kernels {
            let chains = CouplingConfig::new(kernel, 5);
            let stats = mu_gradient_stats(
                backend.as_mut(),
                &mut |b, r| {
                    b.chain_step(&xb, &inputs(r), &chains).unwrap();
                },
                bias.clone(),
                steps,
            );
            let z = max_z(&stats);
            println!(
                "{name} {kernel}: max |z| = {z:.2} (max SE {:.2e})",
                max_se(&stats, bias.len())
            );
            assert!(z < 4.5, "{name} {kernel}: biased? max |z| = {z}");
        }
        let iwae = unbiased_vae::estimators::Estimator::new(
            unbiased_vae::estimators::EstimatorKind::Iwae,
            0.0,
        )
        .program();
        let stats = mu_gradient_stats(
            backend.as_mut(),
            &mut |b, r| {
                b.train_step(&xb, &inputs(r), 2, &iwae).unwrap();
            },
            bias.clone(),
            steps,
        );
        let z = max_z(&stats);
        println!("{name} iwae(2): max |z| = {z:.2}");
        assert!(
            z > 6.0,
            "{name}: IWAE(2) should fail the check, max |z| = {z}"
        );
        assert_eq!(toy.theta_len(), bias.len());
    }
}
