//! The Monte-Carlo check harness of the statistical tests (`unbiased`, `coupling`,
//! `coupled_training`): seeded replications in parallel chunks, Welford's running moments, and
//! the per-coordinate z-test against an exact value,
//!
//! ```text
//! z_i = (mean_i - exact_i) / SE_i,      SE_i = sample sd_i / sqrt(R),      pass iff |z_i| < Z_MAX for every i,
//! ```
//!
//! whose false-alarm rate over the coordinates of a check is bounded by the union bound (each
//! test module states its own numbers), with the power ratio `max_i |bias_i| / SE_i` of a
//! known-biased reference.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use unbiased_vae::exact::{ExactModel, Ppca, Toy};

/// The 4-SE threshold.
pub const Z_MAX: f64 = 4.0;
/// Minimum power ratio (see the test modules' docs).
pub const MIN_POWER: f64 = 6.0;
/// Chunks of replications, each with its own ChaCha8 stream.
pub const CHUNKS: u64 = 64;

/// Running per-coordinate mean and sum of squared deviations (Welford), mergeable across the
/// parallel chunks of replications (Chan et al.'s pairwise update).
#[derive(Clone, Debug)]
pub struct Welford {
    pub n: f64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Welford {
    pub fn new(d: usize) -> Self {
        Welford {
            n: 0.0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
        }
    }

    pub fn push(&mut self, v: &[f64]) {
        self.n += 1.0;
        for (i, &vi) in v.iter().enumerate() {
            let delta = vi - self.mean[i];
            self.mean[i] += delta / self.n;
            self.m2[i] += delta * (vi - self.mean[i]);
        }
    }

    pub fn merge(&mut self, o: &Welford) {
        let n = self.n + o.n;
        for i in 0..self.mean.len() {
            let delta = o.mean[i] - self.mean[i];
            self.m2[i] += o.m2[i] + delta * delta * self.n * o.n / n;
            self.mean[i] += delta * o.n / n;
        }
        self.n = n;
    }

    /// Standard error of the mean of coordinate `i`.
    pub fn se(&self, i: usize) -> f64 {
        (self.m2[i] / (self.n - 1.0) / self.n).sqrt()
    }

    /// `(mean_i - exact_i) / SE_i` for the coordinates of `exact`.
    pub fn z(&self, exact: &[f64]) -> Vec<f64> {
        (0..exact.len())
            .map(|i| (self.mean[i] - exact[i]) / self.se(i))
            .collect()
    }

    /// The largest SE over the first `d` coordinates.
    pub fn max_se(&self, d: usize) -> f64 {
        (0..d).map(|i| self.se(i)).fold(0.0, f64::max)
    }

    /// `max_i |bias_i of biased| / SE_i of self` over the first `d` coordinates, `bias_i` being
    /// `biased`'s mean minus `exact`.
    pub fn power_ratio(&self, biased: &Welford, exact: &[f64], d: usize) -> f64 {
        (0..d)
            .map(|i| (biased.mean[i] - exact[i]).abs() / self.se(i))
            .fold(0.0, f64::max)
    }

    /// Two-sample z of coordinate `i`: `(mean_i - other mean_i) / sqrt(SE_i^2 + other SE_i^2)`.
    pub fn z_against(&self, other: &Welford, i: usize) -> f64 {
        (self.mean[i] - other.mean[i]) / combined_se(self.se(i), other.se(i))
    }
}

/// The SE of a difference of two independent means, `sqrt(se1^2 + se2^2)` (conservative for
/// positively correlated ones).
pub fn combined_se(se1: f64, se2: f64) -> f64 {
    (se1.powi(2) + se2.powi(2)).sqrt()
}

/// `max_i |z_i|`.
pub fn max_abs(z: &[f64]) -> f64 {
    z.iter().fold(0.0, |a, z| a.max(z.abs()))
}

/// Running statistics that chunks of replications merge into.
pub trait Merge: Send {
    fn merge(&mut self, o: &Self);
}

/// `reps` seeded replications: [`CHUNKS`] chunks in parallel, chunk `c` drawing from ChaCha8
/// stream `c` of `seed`, merged in a fixed order into `new()`, so the outcome is reproducible
/// and independent of the number of threads.
pub fn replicate<A: Merge>(
    reps: usize,
    seed: u64,
    new: impl Fn() -> A + Sync,
    draw: impl Fn(&mut A, &mut ChaCha8Rng) + Sync,
) -> A {
    assert_eq!(
        reps as u64 % CHUNKS,
        0,
        "reps must be a multiple of {CHUNKS}"
    );
    let per = reps as u64 / CHUNKS;
    let parts: Vec<A> = (0..CHUNKS)
        .into_par_iter()
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c);
            let mut acc = new();
            for _ in 0..per {
                draw(&mut acc, &mut rng);
            }
            acc
        })
        .collect();
    let mut total = new();
    for p in &parts {
        total.merge(p);
    }
    total
}

/// The toy and its first datapoint, in the paper's setup: optimum + N(0, 0.01^2)
/// perturbation of mu, A and b.
pub fn toy() -> (Toy, Vec<f64>) {
    let m = Toy::new(1);
    let x = m.data()[0].clone();
    (m, x)
}

/// PPCA and its first datapoint.
pub fn ppca() -> (Ppca, Vec<f64>) {
    let m = Ppca::new(1);
    let x = m.data()[0].clone();
    (m, x)
}
