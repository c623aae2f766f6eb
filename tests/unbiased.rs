//! Scratch exploration (replaced by the real tests).

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use unbiased_vae::estimators::mlmc::{Mlmc, MlmcVariant};
use unbiased_vae::estimators::softmax_into;
use unbiased_vae::estimators::sumo::{sumo_coefficients, SumoTail};
use unbiased_vae::exact::{combine, draw_samples, ExactModel, Ppca, PpcaConfig, Toy};

#[derive(Clone, Copy, Debug)]
enum Est {
    Iwae(usize),
    Sumo(usize),
    Mlmc(Mlmc),
}

impl Est {
    fn draw<M: ExactModel>(
        &self,
        model: &M,
        x: &[f64],
        rng: &mut ChaCha8Rng,
    ) -> (f64, Vec<f64>, usize) {
        let p = model.theta_len();
        match *self {
            Est::Iwae(k) => {
                let (l, d) = draw_samples(model, x, k, rng);
                let mut a = vec![0.0; k];
                softmax_into(&l, &mut a);
                (
                    unbiased_vae::estimators::iwae_bound(&l),
                    combine(&a, &d, p),
                    k,
                )
            }
            Est::Sumo(m) => {
                let k = SumoTail::DEFAULT.sample(rng);
                let (l, d) = draw_samples(model, x, m + k, rng);
                let (v, a) = sumo_coefficients(&l, m, k);
                (v, combine(&a, &d, p), m + k)
            }
            Est::Mlmc(e) => {
                let k = e.sample_level(rng);
                let n = e.num_samples(k);
                let (l, d) = draw_samples(model, x, n, rng);
                let (v, a) = e.coefficients(&l, k);
                (v, combine(&a, &d, p), n)
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Stats {
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    samples: f64,
}

impl Stats {
    fn new(d: usize) -> Self {
        Stats {
            n: 0.0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
            samples: 0.0,
        }
    }
    fn push(&mut self, v: &[f64]) {
        self.n += 1.0;
        for i in 0..v.len() {
            let delta = v[i] - self.mean[i];
            self.mean[i] += delta / self.n;
            self.m2[i] += delta * (v[i] - self.mean[i]);
        }
    }
    fn merge(&mut self, o: &Stats) {
        let n = self.n + o.n;
        for i in 0..self.mean.len() {
            let delta = o.mean[i] - self.mean[i];
            self.m2[i] += o.m2[i] + delta * delta * self.n * o.n / n;
            self.mean[i] += delta * o.n / n;
        }
        self.n = n;
        self.samples += o.samples;
    }
    fn se(&self, i: usize) -> f64 {
        (self.m2[i] / (self.n - 1.0) / self.n).sqrt()
    }
}

fn replicate<M: ExactModel + Sync>(
    model: &M,
    x: &[f64],
    est: Est,
    reps: usize,
    seed: u64,
) -> Stats {
    const CHUNKS: u64 = 64;
    let per = reps as u64 / CHUNKS;
    let d = model.theta_len() + 1;
    let parts: Vec<Stats> = (0..CHUNKS)
        .into_par_iter()
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c);
            let mut s = Stats::new(d);
            let mut v = vec![0.0; d];
            for _ in 0..per {
                let (val, g, n) = est.draw(model, x, &mut rng);
                v[..d - 1].copy_from_slice(&g);
                v[d - 1] = val;
                s.push(&v);
                s.samples += n as f64;
            }
            s
        })
        .collect();
    let mut total = Stats::new(d);
    for p in &parts {
        total.merge(p);
    }
    total
}

fn report<M: ExactModel + Sync>(name: &str, model: &M, x: &[f64], est: Est, reps: usize) {
    let t = Instant::now();
    let s = replicate(model, x, est, reps, 42);
    let mut target = model.exact_grad_theta(x);
    target.push(model.exact_log_px(x));
    let z: Vec<f64> = (0..target.len())
        .map(|i| (s.mean[i] - target[i]) / s.se(i))
        .collect();
    let zmax = z[..z.len() - 1].iter().fold(0.0f64, |a, b| a.max(b.abs()));
    let se_max = (0..target.len() - 1).map(|i| s.se(i)).fold(0.0, f64::max);
    println!(
        "{name:30} {est:?} R={reps} samples/rep={:.2} max|z|grad={zmax:.2} z(value)={:.2} maxSE={se_max:.4} t={:.2}s",
        s.samples / s.n,
        z[z.len() - 1],
        t.elapsed().as_secs_f64()
    );
    println!(
        "   z = {:?}",
        z.iter()
            .map(|v| (v * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore]
fn explore() {
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64_000);
    let sd: f64 = std::env::var("SD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.02);
    let psd: f64 = std::env::var("PSD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.1);
    let toy = Toy::with_perturbation(1, sd);
    let x = toy.data()[0].clone();
    let ss = Mlmc::new(MlmcVariant::SingleSample, 0.6, 0, None).unwrap();
    let rr = Mlmc::new(MlmcVariant::RussianRoulette, 0.6, 0, None).unwrap();
    for est in [Est::Iwae(2), Est::Sumo(1), Est::Mlmc(ss), Est::Mlmc(rr)] {
        report("toy", &toy, &x, est, reps);
    }
    let cfg = PpcaConfig {
        perturb_sd: psd,
        ..PpcaConfig::default()
    };
    let pp = Ppca::with_config(1, &cfg);
    let x = pp.data()[0].clone();
    for est in [Est::Iwae(2), Est::Sumo(1), Est::Mlmc(ss), Est::Mlmc(rr)] {
        report("ppca", &pp, &x, est, reps);
    }
}
