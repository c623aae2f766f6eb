//! The Monte-Carlo check of every statistical test (`unbiased`, `coupling`, `hgauss_unbiased`,
//! `coupled_training`): seeded replications in parallel chunks, running moments ([`Moments`],
//! the library's Welford / Chan type), and the per-coordinate z-test of their mean against an
//! exact value ([`Check`]),
//!
//! ```text
//! z_i = (mean_i - exact_i) / SE_i,      SE_i = sample sd_i / sqrt(R),      pass iff |z_i| < Z_MAX for every i,
//! ```
//!
//! whose false-alarm rate over the coordinates of a check is bounded by the union bound (each
//! test module states its own numbers), with the power ratio `max_i |bias_i| / SE_i` of a
//! known-biased reference.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use unbiased_vae::exact::{ExactModel, HGauss, HGaussQ, Ppca, Toy};
pub use unbiased_vae::stats::Moments;

/// The 4-SE threshold.
pub const Z_MAX: f64 = 4.0;
/// Minimum power ratio (see the test modules' docs).
pub const MIN_POWER: f64 = 6.0;
/// Chunks of replications, each with its own ChaCha8 stream.
const CHUNKS: u64 = 64;

/// `(mean_i - exact_i) / SE_i` for the coordinates of `exact`.
pub fn z_scores(m: &Moments, exact: &[f64]) -> Vec<f64> {
    (0..exact.len())
        .map(|i| (m.mean(i) - exact[i]) / m.stderr(i))
        .collect()
}

/// The largest SE over the first `d` coordinates.
pub fn max_se(m: &Moments, d: usize) -> f64 {
    (0..d).map(|i| m.stderr(i)).fold(0.0, f64::max)
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

/// What a check records per replication besides the moments (cost, meeting times, a
/// chunk's scratch backend): merged across the chunks like the moments, and reported.
pub trait Extra: Default + Send {
    /// Adds another chunk's records (nothing by default: scratch state).
    fn merge(&mut self, _o: &Self) {}
    /// The report's words on it after `reps` replications (none by default).
    fn report(&self, _reps: usize) -> String {
        String::new()
    }
}

/// One chunk's running moments and extra.
struct Acc<X> {
    moments: Moments,
    extra: X,
}

/// `reps` seeded replications of `draw`: [`CHUNKS`] chunks in parallel, chunk `c` drawing
/// from ChaCha8 stream `c` of `seed`, merged in a fixed order, so the outcome is reproducible
/// and independent of the number of threads.
fn replicate<X: Extra>(
    reps: usize,
    seed: u64,
    dim: usize,
    draw: impl Fn(&mut Moments, &mut X, &mut ChaCha8Rng) + Sync,
) -> Acc<X> {
    assert_eq!(
        reps as u64 % CHUNKS,
        0,
        "reps must be a multiple of {CHUNKS}"
    );
    let per = reps as u64 / CHUNKS;
    let new = || Acc {
        moments: Moments::new(dim),
        extra: X::default(),
    };
    let parts: Vec<Acc<X>> = (0..CHUNKS)
        .into_par_iter()
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c);
            let mut acc = new();
            for _ in 0..per {
                draw(&mut acc.moments, &mut acc.extra, &mut rng);
            }
            acc
        })
        .collect();
    let mut total = new();
    for p in &parts {
        total.moments.merge(&p.moments);
        total.extra.merge(&p.extra);
    }
    total
}

/// The outcome of `R` replications of an estimate against its exact value: a gradient in
/// coordinates `0..grad`, then any further values checked with it (an estimate of
/// `log p(x)`).
pub struct Check<X> {
    pub label: String,
    pub moments: Moments,
    pub extra: X,
    pub exact: Vec<f64>,
    pub grad: usize,
}

impl<X: Extra> Check<X> {
    /// `reps` seeded replications of `draw`, which pushes one replication's `exact.len()`
    /// values and records what else it keeps in the extra; prints the report.
    pub fn run(
        label: String,
        exact: Vec<f64>,
        grad: usize,
        reps: usize,
        seed: u64,
        draw: impl Fn(&mut Moments, &mut X, &mut ChaCha8Rng) + Sync,
    ) -> Self {
        let t = Instant::now();
        let acc = replicate(reps, seed, exact.len(), draw);
        let check = Check {
            label,
            moments: acc.moments,
            extra: acc.extra,
            exact,
            grad,
        };
        check.print(t.elapsed().as_secs_f64());
        check
    }

    fn print(&self, secs: f64) {
        let z = self.z();
        let n = self.moments.count();
        let extra = self.extra.report(n);
        let extra = if extra.is_empty() {
            extra
        } else {
            format!(", {extra}")
        };
        let values: String = (self.grad..z.len())
            .map(|i| format!(", z[{i}] = {:.2}, SE[{i}] = {:.3e}", z[i], self.se(i)))
            .collect();
        let zs: Vec<String> = z.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "{}: R = {n}{extra}, {secs:.2} s\n  max |z| (gradient) = {:.2}, max SE (gradient) = {:.3e}{values}\n  z = [{}]",
            self.label,
            self.max_abs_z_grad(),
            self.max_se_grad(),
            zs.join(", ")
        );
    }
}

impl<X> Check<X> {
    /// Standard error of the mean of coordinate `i`.
    pub fn se(&self, i: usize) -> f64 {
        self.moments.stderr(i)
    }

    /// z of every coordinate.
    pub fn z(&self) -> Vec<f64> {
        z_scores(&self.moments, &self.exact)
    }

    /// Largest |z| over every coordinate.
    pub fn max_abs_z(&self) -> f64 {
        max_abs(&self.z())
    }

    /// Largest |z| over the gradient coordinates.
    pub fn max_abs_z_grad(&self) -> f64 {
        max_abs(&self.z()[..self.grad])
    }

    /// Largest SE over the gradient coordinates.
    pub fn max_se_grad(&self) -> f64 {
        max_se(&self.moments, self.grad)
    }

    /// `max_i |bias_i of biased| / SE_i of self` over the gradient coordinates, `bias_i`
    /// being `biased`'s mean minus its exact value.
    pub fn power_ratio<Y>(&self, biased: &Check<Y>) -> f64 {
        (0..self.grad)
            .map(|i| (biased.moments.mean(i) - biased.exact[i]).abs() / self.se(i))
            .fold(0.0, f64::max)
    }

    /// Two-sample z of every coordinate: `(mean_i - other mean_i) / sqrt(SE_i^2 + other
    /// SE_i^2)`.
    pub fn z_against<Y>(&self, other: &Check<Y>) -> Vec<f64> {
        (0..self.exact.len())
            .map(|i| {
                (self.moments.mean(i) - other.moments.mean(i))
                    / combined_se(self.se(i), other.se(i))
            })
            .collect()
    }

    /// Passes: |z| < [`Z_MAX`] in every coordinate, gradient and values.
    pub fn assert_unbiased(&self) {
        let z = self.max_abs_z();
        assert!(
            z < Z_MAX,
            "{}: max |z| = {z:.2} >= {Z_MAX}: the mean differs from the exact value",
            self.label
        );
    }

    /// Fails, as a known-biased estimate must: some gradient coordinate has |z| > [`Z_MAX`].
    pub fn assert_detects_bias(&self, what: &str) {
        let z = self.max_abs_z_grad();
        assert!(
            z > Z_MAX,
            "{what}: the bias went undetected ({}: max |z| = {z:.2})",
            self.label
        );
    }

    /// The check is powered: `reference`'s bias is at least [`MIN_POWER`] of its SEs.
    pub fn assert_powered<Y>(&self, reference: &Check<Y>) {
        let r = self.power_ratio(reference);
        println!("  power ratio vs {} bias = {r:.1}", reference.label);
        assert!(
            r >= MIN_POWER,
            "{}: power ratio {r:.1} < {MIN_POWER} against {}: the check could miss a bias of its size",
            self.label,
            reference.label
        );
    }
}

/// An exact model at one datapoint, with the name its checks' labels start with.
pub struct Exact<M> {
    pub label: &'static str,
    pub model: M,
    pub x: Vec<f64>,
}

impl<M: ExactModel> Exact<M> {
    /// The exact gradient at `x`, then (`with_log_px`) the exact `log p(x)`.
    pub fn values(&self, with_log_px: bool) -> Vec<f64> {
        let mut exact = self.model.exact_grad_theta(&self.x);
        if with_log_px {
            exact.push(self.model.exact_log_px(&self.x));
        }
        exact
    }
}

impl<M: ExactModel> Exact<M> {
    /// `model` at its first datapoint.
    fn first(label: &'static str, model: M) -> Self {
        let x = model.data()[0].clone();
        Exact { label, model, x }
    }
}

/// The toy and its first datapoint, in the paper's setup: optimum + N(0, 0.01^2)
/// perturbation of mu, A and b.
pub fn toy() -> Exact<Toy> {
    Exact::first("toy", Toy::new(1))
}

/// PPCA and its first datapoint.
pub fn ppca() -> Exact<Ppca> {
    Exact::first("ppca", Ppca::new(1))
}

/// The two-layer model with its hierarchical q at `grad-stats --model hgauss`'s encoders, and
/// its first datapoint.
pub fn hgauss() -> Exact<HGaussQ> {
    Exact::first(
        "hgauss",
        HGaussQ::at_posterior(
            HGauss::new(1),
            unbiased_vae::apps::grad_stats::HGAUSS_SD_INFLATION,
        ),
    )
}
