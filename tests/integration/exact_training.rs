//! The exact models (toy, PPCA) as backend configurations: the backend's log-weights and
//! decoder gradient against the f64 closed forms of `unbiased_vae::exact`, frozen ranges
//! through training steps, and `--model toy` training on the CPU and the GPU. GPU parts skip
//! without an adapter, except under CI=true (`common::have_gpu`).

use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::{Backend, Noise, StepInputs};
use unbiased_vae::config::{BackendChoice, TrainConfig};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::exact::{ExactModel, Ppca, PpcaConfig, Toy};
use unbiased_vae::model::exact_training::{self as training, ExactTraining};
use unbiased_vae::model::ModelChoice;
use unbiased_vae::model::{Arch, Params};
use unbiased_vae::optim::{AdamConfig, Schedule};
use unbiased_vae::rng::{self, Stream};
use unbiased_vae::train;

use crate::common::{backends, on_cpu_and_gpu, TestBackend};

const NOISE: Noise = Noise {
    seed: 42,
    stream: Stream::Eps,
    step: 3,
    first_datapoint: 1,
    first_sample: 0,
};

/// The standard normals the backends draw for datapoint 0, sample s.
fn eps_of(s: usize, zd: usize) -> Vec<f64> {
    let mut e = vec![0.0f32; zd];
    rng::fill_normals_from(
        NOISE.seed,
        NOISE.stream,
        NOISE.step,
        NOISE.first_datapoint,
        s * zd,
        &mut e,
    );
    e.iter().map(|&v| v as f64).collect()
}

/// Asserts |got - want| <= atol + rtol |want| everywhere, printing the worst pairs.
fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut pairs: Vec<(f64, usize)> = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| ((g - w).abs() / (atol + rtol * w.abs()), i))
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let worst: Vec<String> = pairs
        .iter()
        .take(4)
        .map(|&(_, i)| format!("[{i}] got {:.7e} want {:.7e}", got[i], want[i]))
        .collect();
    println!("{what}: worst {worst:?}");
    assert!(
        pairs[0].0 <= 1.0,
        "{what}: outside atol {atol} + rtol {rtol}: {worst:?}"
    );
}

/// One datapoint, `n` samples, coefficients `a` on the decoder only: (log-weights, gradient).
fn cpu_forward_backward(params: &Params, x: &[f32], a: &[f32]) -> (Vec<f64>, Vec<f32>) {
    let mut cpu = CpuBackend::new(&params.layout, &params.values, 1).unwrap();
    let n = a.len();
    let lw = cpu.forward(x, 1, n, &NOISE).unwrap().to_vec();
    let zeros = vec![0.0f32; n];
    cpu.backward(a, &zeros, &zeros).unwrap();
    (
        lw.iter().map(|&v| v as f64).collect(),
        cpu.gradient().unwrap(),
    )
}

const COEFFS: [f32; 5] = [0.3, -0.5, 1.2, 0.7, 0.05];

/// Toy, centred parameterisation: the backend's log-weights equal the exact model's for the
/// same eps, and its decoder-bias gradient (d/dmu at fixed z' = z - mu) equals
/// sum_n a_n (log_joint_grad_theta + log_joint_grad_z)(x, z_n) = sum_n a_n (x - z_n).
/// f32 tolerances: log-weights are sums of 40 terms of size ~1 (atol 2e-4).
#[test]
fn toy_backend_log_weights_and_decoder_gradient_match_the_exact_model() {
    let toy = Toy::with_perturbation(3, 0.05);
    let params = training::toy_to_params(&toy);
    let xs = &toy.data()[5];
    let x: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let (lw, grad) = cpu_forward_backward(&params, &x, &COEFFS);
    let d = Toy::DIM;
    let (mut want_lw, mut want_g) = (Vec::new(), vec![0.0; d]);
    for (s, &a) in COEFFS.iter().enumerate() {
        let (z, l) = toy.sample(xs, &eps_of(s, d));
        want_lw.push(l);
        let gt = toy.log_joint_grad_theta(xs, &z);
        let gz = toy.log_joint_grad_z(xs, &z);
        for i in 0..d {
            want_g[i] += a as f64 * (gt[i] + gz[i]);
        }
    }
    assert_close("toy log-weights", &lw, &want_lw, 2e-4, 1e-5);
    let dec = &params.layout.decoder[0];
    let got_g: Vec<f64> = grad[dec.b..dec.b + d].iter().map(|&v| v as f64).collect();
    assert_close("toy decoder-bias gradient", &got_g, &want_g, 1e-4, 1e-4);
    // Frozen: the identity decoder weight and the encoder's log-sd rows get no gradient.
    for r in &params.layout.frozen {
        assert!(grad[r.clone()].iter().all(|&g| g == 0.0), "frozen {r:?}");
    }
}

/// PPCA maps directly: decoder (weight, bias) = theta (W row-major, b), so the backend's
/// decoder gradient is sum_n a_n log_joint_grad_theta(x, z_n).
#[test]
fn ppca_backend_log_weights_and_decoder_gradient_match_the_exact_model() {
    let m = Ppca::with_config(
        6,
        &PpcaConfig {
            perturb_sd: 0.2,
            ..PpcaConfig::default()
        },
    );
    let params = training::ppca_to_params(&m);
    let xs = &m.data()[3];
    let x: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let (lw, grad) = cpu_forward_backward(&params, &x, &COEFFS);
    let p = m.theta_len();
    let (mut want_lw, mut want_g) = (Vec::new(), vec![0.0; p]);
    for (s, &a) in COEFFS.iter().enumerate() {
        let (z, l) = m.sample(xs, &eps_of(s, m.z_dim()));
        want_lw.push(l);
        for (g, d) in want_g.iter_mut().zip(m.log_joint_grad_theta(xs, &z)) {
            *g += a as f64 * d;
        }
    }
    assert_close("ppca log-weights", &lw, &want_lw, 1e-4, 1e-5);
    let el = params.layout.encoder_len;
    let got_g: Vec<f64> = grad[el..].iter().map(|&v| v as f64).collect();
    assert_eq!(got_g.len(), p, "decoder = theta");
    assert_close("ppca decoder gradient", &got_g, &want_g, 1e-4, 1e-4);
}

/// Three training steps (IWAE-DReG, so the encoder's path and score terms reach the frozen
/// rows): the frozen ranges stay bit-identical, most of the rest moves.
fn frozen_ranges_survive(backend: &mut dyn Backend, params: &Params, x: &[f32]) {
    let program = Estimator::new(EstimatorKind::IwaeDreg, 0.0).program();
    let cfg = AdamConfig::default();
    backend.reset_optimizer();
    for step in 0..3u32 {
        let noise = Noise { step, ..NOISE };
        backend
            .train_step(
                x,
                &StepInputs {
                    batch: 4,
                    noise,
                    adam: cfg,
                    lr: 0.01,
                },
                6,
                &program,
            )
            .unwrap();
    }
    let after = backend.params().unwrap();
    for r in &params.layout.frozen {
        assert_eq!(
            after[r.clone()],
            params.values[r.clone()],
            "{}: frozen range {r:?} moved",
            backend.describe()
        );
    }
    let moved = after
        .iter()
        .zip(&params.values)
        .filter(|(a, b)| a != b)
        .count();
    let frozen: usize = params.layout.frozen.iter().map(|r| r.len()).sum();
    assert!(
        moved > (params.layout.len - frozen) / 2,
        "{}: only {moved} parameters moved",
        backend.describe()
    );
}

fn exact_cases() -> Vec<(Params, Vec<f32>)> {
    [ModelChoice::Toy, ModelChoice::Ppca]
        .into_iter()
        .map(|m| {
            let ex = ExactTraining::new(m, 2).unwrap();
            let x = ex.data_f32()[..4 * ex.dim()].to_vec();
            (ex.initial_params(2), x)
        })
        .collect()
}

#[test]
fn frozen_ranges_stay_bit_identical_on_every_backend() {
    for backend in backends() {
        for (params, x) in exact_cases() {
            let mut whole = backend.create(&params.layout, &params.values, 2, None);
            frozen_ranges_survive(whole.as_mut(), &params, &x);
            // Chunked steps: at most 8 sample rows a pass (4 datapoints x 2 samples).
            let mut chunked = backend.create(&params.layout, &params.values, 2, Some(8));
            frozen_ranges_survive(chunked.as_mut(), &params, &x);
        }
    }
}

fn toy_config(
    backend: BackendChoice,
    epochs: usize,
    train_limit: Option<usize>,
    out: std::path::PathBuf,
) -> TrainConfig {
    TrainConfig {
        model: ModelChoice::Toy,
        data: None,
        binarize: Default::default(),
        image_shape: None,
        valid_size: 0,
        train_limit,
        arch: unbiased_vae::model::resolve_arch(ModelChoice::Toy, None, None, None, None).unwrap(),
        estimator: Estimator::new(EstimatorKind::Iwae, 0.0),
        k: 5,
        epochs,
        batch: 32,
        lr: 0.02,
        schedule: Schedule::Constant,
        adam: AdamConfig::default(),
        seed: 4,
        threads: 2,
        backend,
        adapter: None,
        val_k: 20,
        output_bias: Default::default(),
        test: None,
        grad_var: None,
        out,
    }
}

/// `--model toy` with IWAE on the CPU: the exact log p(x) rises every epoch and ends within
/// 0.02 nats of the maximum-likelihood optimum; mu ends within 0.15 of the data mean in
/// every coordinate (the gap is |mu - mu*|^2 / 4, so 0.02 nats allows |mu - mu*| ~ 0.28).
#[test]
fn toy_iwae_training_on_the_cpu_reaches_the_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = toy_config(BackendChoice::Cpu, 12, None, dir.path().join("toy"));
    let out = train::train(&cfg, |_| {}).unwrap();
    let lp: Vec<f64> = out.epochs.iter().map(|m| m.exact_log_px.unwrap()).collect();
    let opt = out.epochs[0].optimum_log_px.unwrap();
    println!("exact log p(x) per epoch {lp:?}, optimum {opt}");
    let ex = ExactTraining::new(ModelChoice::Toy, cfg.seed).unwrap();
    let start = ex.mean_exact_log_px(&ex.initial_params(cfg.seed)).unwrap();
    assert!(lp[0] > start, "first epoch {} vs start {start}", lp[0]);
    assert!(
        start < opt - 2.0,
        "the start {start} is not away from the optimum {opt}"
    );
    for w in lp.windows(2).take(6) {
        assert!(w[1] > w[0], "exact log p(x) fell early on: {lp:?}");
    }
    let last = *lp.last().unwrap();
    assert!(last <= opt + 1e-9, "above the optimum: {last} > {opt}");
    assert!(opt - last < 0.02, "gap {} nats", opt - last);
    let toy = training::params_to_toy(&out.params, Vec::new()).unwrap();
    let worst = toy
        .mu()
        .iter()
        .zip(ex.data_mean())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 0.15, "mu is {worst} from the data mean");
    // Validation L_K sits below the exact log p(x) (a lower bound, up to its noise).
    let m = out.epochs.last().unwrap();
    assert!(m.val_lk < m.exact_log_px.unwrap() + 3.0 * m.val_lk_stderr);
    // The checkpoint reloads with its Gaussian likelihood and names its model.
    let (p, meta) =
        unbiased_vae::model::checkpoint::load(&cfg.out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(p.layout.arch, cfg.arch);
    let back = training::from_checkpoint_metadata(&meta).unwrap().unwrap();
    assert_eq!(back.choice(), ModelChoice::Toy);
    assert!((back.mean_exact_log_px(&p).unwrap() - last).abs() < 1e-9);
}

/// The same run, tiny (2 epochs on 256 datapoints: 16 steps), on the GPU and the CPU: exact
/// log p(x) per epoch within 1e-4 nats and mu within 1e-3 (f32 sums in a different order).
#[test]
fn toy_iwae_training_on_the_gpu_agrees_with_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let runs = on_cpu_and_gpu(|b| {
        let choice = match b {
            TestBackend::Cpu => BackendChoice::Cpu,
            TestBackend::Gpu => BackendChoice::Gpu,
        };
        let cfg = toy_config(choice, 2, Some(256), dir.path().join(b.name()));
        train::train(&cfg, |_| {}).unwrap()
    });
    let Some((c, g)) = &runs else { return };
    for (mc, mg) in c.epochs.iter().zip(&g.epochs) {
        let (ec, eg) = (mc.exact_log_px.unwrap(), mg.exact_log_px.unwrap());
        println!("epoch {}: exact log p(x) cpu {ec:.6} gpu {eg:.6}", mc.epoch);
        assert!((ec - eg).abs() < 1e-4, "cpu {ec} gpu {eg}");
        assert!(
            (mc.val_lk - mg.val_lk).abs() < 1e-3,
            "{} vs {}",
            mc.val_lk,
            mg.val_lk
        );
    }
    assert!(c.epochs[1].exact_log_px > c.epochs[0].exact_log_px);
    let mu = |p: &Params| {
        training::params_to_toy(p, Vec::new())
            .unwrap()
            .mu()
            .to_vec()
    };
    let (uc, ug) = (mu(&c.params), mu(&g.params));
    let worst = uc
        .iter()
        .zip(&ug)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "mu differs by {worst}");
}

/// `--hidden` / `--latent` with an exact model is an error naming the flag.
#[test]
fn exact_models_refuse_hidden_and_latent() {
    let e = unbiased_vae::model::resolve_arch(ModelChoice::Ppca, Some(vec![4]), None, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--hidden") && e.contains("ppca"), "{e}");
    let e = unbiased_vae::model::resolve_arch(ModelChoice::Toy, None, Some(3), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--latent"), "{e}");
    let a: Arch =
        unbiased_vae::model::resolve_arch(ModelChoice::Vae, None, None, None, None).unwrap();
    assert_eq!(a.hidden, vec![200, 200]);
}
