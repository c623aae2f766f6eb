//! Coupled Markov chain estimators (`unbiased_vae::coupling`, Ruiz et al. 2021) on the exact
//! models (docs/design.md §5.3).
//!
//! For a fixed datapoint `x` of [`Toy`] (Rainforth et al. / Tucker et al. §6.1, paper setup,
//! theta = mu, 20 coordinates) and of [`Ppca`] (theta = (W, b), 15 coordinates), each check
//! draws `R` independent coupled estimates `H_{k:m}` (fresh chains, fresh particles) and
//! compares their mean with the exact `grad_theta log p(x)`, coordinate by coordinate:
//!
//! ```text
//! z_i = (mean_i - exact_i) / SE_i,      SE_i = sample sd_i / sqrt(R),      pass iff |z_i| < 4 for every i.
//! ```
//!
//! Confidence: under the normal approximation a two-sided 4-SE bound has false-alarm rate
//! `6.3e-5` per coordinate; with at most 20 coordinates the union bound gives `<= 1.3e-3` per
//! check and `<= 9e-3` over the 7 checks in this file that must pass, for a fresh seed. All
//! draws are seeded (ChaCha8, one stream per chunk of replications, merged in a fixed order),
//! so the outcome is reproducible and independent of the number of threads.
//!
//! Power: every passing check also measures the bias of IWAE with 2 samples, and of IWAE with
//! the chains' own `K = 5` particles per set, in units of the check's SE
//! (`power ratio = max_i |bias_i| / SE_i`), and requires both to be `>= 6`: an estimator as
//! biased as IWAE(5) would fail the 4-SE check with probability `>= P(N(0,1) > -2) = 0.977`.
//! The converse checks fail on purpose: IWAE(2) itself, and the coupled ISIR estimator with the
//! Rao-Blackwellised `h` taken over the wrong particle set (the trap of docs/design.md §1).
//!
//! The configurations vary `(k, m, L)` across the checks so that both the lag-1 and the lag >= 2
//! bias-correction weights (`coupling::bc_weight`) are exercised.

use std::sync::OnceLock;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unbiased_vae::coupling::{estimate, ChainKernel, CouplingConfig, MeetingStats, RbSet};
use unbiased_vae::estimators::softmax_into;
use unbiased_vae::exact::{combine, draw_samples, ExactModel, Toy};

use crate::common::mc::{self, max_abs, ppca, toy, Merge, Welford, MIN_POWER, Z_MAX};

/// Replications per unbiasedness check.
const R: usize = 64_000;
/// Replications of the IWAE references.
const R_IWAE: usize = 64_000;
/// Replications of the trap check (its bias is small; see `trap_h_is_biased_on_the_toy`).
const R_TRAP: usize = 256_000;
/// Particles per set in every check.
const K: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Est {
    /// IWAE with `k` samples: `a = softmax(l)`.
    Iwae(usize),
    Coupled(CouplingConfig),
}

/// Running mean and sum of squared deviations per coordinate (Welford / Chan et al.), plus the
/// cost and the meeting times.
#[derive(Clone, Debug)]
struct Moments {
    stats: Welford,
    cost: f64,
    times: Vec<usize>,
    capped: Vec<bool>,
}

/// Reads of n, mean, m2 and se() go to the shared running moments.
impl std::ops::Deref for Moments {
    type Target = Welford;
    fn deref(&self) -> &Welford {
        &self.stats
    }
}

impl Moments {
    fn new(d: usize) -> Self {
        Moments {
            stats: Welford::new(d),
            cost: 0.0,
            times: Vec::new(),
            capped: Vec::new(),
        }
    }

    fn push(&mut self, v: &[f64]) {
        self.stats.push(v);
    }
}

impl Merge for Moments {
    fn merge(&mut self, o: &Moments) {
        self.stats.merge(&o.stats);
        self.cost += o.cost;
        self.times.extend_from_slice(&o.times);
        self.capped.extend_from_slice(&o.capped);
    }
}

/// The outcome of `R` replications against the exact gradient.
struct Check {
    label: String,
    moments: Moments,
    exact: Vec<f64>,
}

impl Check {
    fn run<M: ExactModel + Sync>(
        label: &str,
        model: &M,
        x: &[f64],
        est: Est,
        reps: usize,
        seed: u64,
    ) -> Check {
        let t = Instant::now();
        let d = model.theta_len();
        let moments = mc::replicate(
            reps,
            seed,
            || Moments::new(d),
            |mo, rng| match est {
                Est::Iwae(k) => {
                    let (l, dd) = draw_samples(model, x, k, rng);
                    let mut a = vec![0.0; k];
                    softmax_into(&l, &mut a);
                    mo.push(&combine(&a, &dd, d));
                    mo.cost += k as f64;
                }
                Est::Coupled(cfg) => {
                    let e = estimate(model, x, &cfg, rng);
                    mo.push(&e.grad_theta);
                    mo.cost += e.proposals as f64;
                    mo.times.push(e.meeting_time);
                    mo.capped.push(e.capped);
                }
            },
        );
        let check = Check {
            label: format!("{label} {est:?}"),
            moments,
            exact: model.exact_grad_theta(x),
        };
        check.print(t.elapsed().as_secs_f64());
        check
    }

    fn z(&self) -> Vec<f64> {
        self.moments.z(&self.exact)
    }

    fn max_abs_z(&self) -> f64 {
        max_abs(&self.z())
    }

    fn max_se(&self) -> f64 {
        self.moments.max_se(self.exact.len())
    }

    /// `max_i |bias_i of reference| / SE_i of self`.
    fn power_ratio(&self, biased: &Check) -> f64 {
        self.moments
            .power_ratio(&biased.moments, &biased.exact, self.exact.len())
    }

    fn meeting_stats(&self) -> MeetingStats {
        MeetingStats::from_times(&self.moments.times, &self.moments.capped)
    }

    fn print(&self, secs: f64) {
        let stats = if self.moments.times.is_empty() {
            String::new()
        } else {
            format!("\n  {}", self.meeting_stats())
        };
        let zs: Vec<String> = self.z().iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "{}: R = {}, mean cost = {:.2} particles, {secs:.2} s\n  max |z| = {:.2}, max SE = {:.3e}{stats}\n  z = [{}]",
            self.label,
            self.moments.n,
            self.moments.cost / self.moments.n,
            self.max_abs_z(),
            self.max_se(),
            zs.join(", ")
        );
    }

    fn assert_unbiased(&self) {
        let z = self.max_abs_z();
        assert!(
            z < Z_MAX,
            "{}: max |z| = {z:.2} >= {Z_MAX}: mean differs from the exact gradient",
            self.label
        );
        let s = self.meeting_stats();
        assert_eq!(
            s.capped, 0,
            "{}: capped runs in an unbiasedness check",
            self.label
        );
    }

    fn assert_powered(&self, reference: &Check) {
        let r = self.power_ratio(reference);
        println!(
            "  power ratio vs {} bias = {r:.1}",
            reference.label.split_whitespace().nth(1).unwrap_or("")
        );
        assert!(
            r >= MIN_POWER,
            "{}: power ratio {r:.1} < {MIN_POWER} against {}",
            self.label,
            reference.label
        );
    }
}

fn cfg(kernel: ChainKernel, particles: usize, k: usize, m: usize, lag: usize) -> CouplingConfig {
    CouplingConfig {
        burn_in: k,
        horizon: m,
        lag,
        ..CouplingConfig::new(kernel, particles)
    }
}

/// IWAE(2) and IWAE(K) references, computed once per model and shared by the tests.
fn toy_refs() -> &'static (Check, Check) {
    static REFS: OnceLock<(Check, Check)> = OnceLock::new();
    REFS.get_or_init(|| {
        let (t, x) = toy();
        (
            Check::run("toy", &t, &x, Est::Iwae(2), R_IWAE, 101),
            Check::run("toy", &t, &x, Est::Iwae(K), R_IWAE, 102),
        )
    })
}

fn ppca_refs() -> &'static (Check, Check) {
    static REFS: OnceLock<(Check, Check)> = OnceLock::new();
    REFS.get_or_init(|| {
        let (p, x) = ppca();
        (
            Check::run("ppca", &p, &x, Est::Iwae(2), R_IWAE, 103),
            Check::run("ppca", &p, &x, Est::Iwae(K), R_IWAE, 104),
        )
    })
}

fn check_toy(c: CouplingConfig, seed: u64) {
    let (t, x) = toy();
    let refs = toy_refs();
    let check = Check::run("toy", &t, &x, Est::Coupled(c), R, seed);
    check.assert_powered(&refs.0);
    check.assert_powered(&refs.1);
    check.assert_unbiased();
}

fn check_ppca(c: CouplingConfig, seed: u64) {
    let (p, x) = ppca();
    let refs = ppca_refs();
    let check = Check::run("ppca", &p, &x, Est::Coupled(c), R, seed);
    check.assert_powered(&refs.0);
    check.assert_powered(&refs.1);
    check.assert_unbiased();
}

// ---------------------------------------------------------------- the check can fail

#[test]
fn iwae_references_fail_the_check() {
    // IWAE(2) is measurably biased on both models at R_IWAE (IWAE(K) is printed: its bias is
    // what the power ratios are measured against).
    for (name, refs) in [("toy", toy_refs()), ("ppca", ppca_refs())] {
        assert!(
            refs.0.max_abs_z() > Z_MAX,
            "IWAE(2)'s bias went undetected on the {name} (max |z| = {:.2})",
            refs.0.max_abs_z()
        );
        println!("{name}: IWAE({K}) max |z| = {:.2}", refs.1.max_abs_z());
    }
}

/// The trap of docs/design.md §1: for ISIR, `h(X_t)` averaged over the set `X_t` was selected
/// from instead of the set the step from `X_t` builds. The chains' `h` then still differ at
/// `tau`, where the corrections stop, and the estimator is biased. With `k = m = 0`, `L = 1`,
/// `K = 5` the bias is about 13 SE at 640000 replications (measured), so about 8.4 SE at
/// `R_TRAP = 256000`; the correct `h` on the same seed passes.
#[test]
fn trap_h_is_biased_on_the_toy() {
    let (t, x) = toy();
    let good = cfg(ChainKernel::Isir, K, 0, 0, 1);
    let trap = CouplingConfig {
        rb_set: RbSet::SelectedFrom,
        ..good
    };
    let c = Check::run("toy trap", &t, &x, Est::Coupled(trap), R_TRAP, 601);
    assert!(
        c.max_abs_z() > Z_MAX,
        "the trap h was not detected as biased (max |z| = {:.2})",
        c.max_abs_z()
    );
    let c = Check::run("toy", &t, &x, Est::Coupled(good), R_TRAP, 601);
    c.assert_unbiased();
}

// ---------------------------------------------------------------- unbiasedness

#[test]
fn pimh_is_unbiased_on_the_toy() {
    check_toy(cfg(ChainKernel::Pimh, K, 1, 4, 1), 201);
}

#[test]
fn isir_is_unbiased_on_the_toy() {
    check_toy(cfg(ChainKernel::Isir, K, 0, 0, 1), 202);
}

#[test]
fn disir_is_unbiased_on_the_toy() {
    check_toy(cfg(ChainKernel::Disir, K, 1, 4, 2), 203);
}

#[test]
fn pimh_is_unbiased_on_ppca() {
    check_ppca(cfg(ChainKernel::Pimh, K, 0, 2, 3), 211);
}

#[test]
fn isir_is_unbiased_on_ppca() {
    check_ppca(cfg(ChainKernel::Isir, K, 1, 4, 2), 212);
}

#[test]
fn disir_is_unbiased_on_ppca() {
    check_ppca(cfg(ChainKernel::Disir, K, 0, 0, 1), 213);
}

// ---------------------------------------------------------------- cap and meeting times

/// The cap is reported, never silent: a run that cannot finish by `max_iters` says so.
#[test]
fn iteration_cap_is_reported() {
    // Deterministic: with max_iters = 1 no coupled step can happen (L = 1), so every run is
    // capped, reports tau as the cap and still returns a (truncated) estimate.
    let (t, x) = toy();
    let mut rng = ChaCha8Rng::seed_from_u64(301);
    for kernel in ChainKernel::ALL {
        let c = CouplingConfig {
            max_iters: 1,
            ..cfg(kernel, K, 0, 0, 1)
        };
        let e = estimate(&t, &x, &c, &mut rng);
        assert!(e.capped, "{kernel}: cap not reported");
        assert_eq!((e.meeting_time, e.iterations), (1, 1));
        assert!(e.grad_theta.iter().all(|v| v.is_finite()));
    }
    // Statistical: a badly fitted encoder (perturbation 0.3) makes meeting slow; with
    // max_iters = 10 a good fraction of runs is capped, and exactly those are flagged.
    let bad = Toy::with_perturbation(1, 0.3);
    let bx = bad.data()[0].clone();
    for kernel in ChainKernel::ALL {
        let c = CouplingConfig {
            max_iters: 10,
            ..cfg(kernel, 2, 0, 0, 1)
        };
        let runs: Vec<_> = (0..2000)
            .map(|_| estimate(&bad, &bx, &c, &mut rng))
            .collect();
        let s = MeetingStats::from_estimates(&runs);
        println!("bad toy {kernel}: {s}");
        assert!(s.capped > 0, "{kernel}: expected some capped runs");
        for e in &runs {
            if e.capped {
                assert_eq!((e.meeting_time, e.iterations), (10, 10));
            } else {
                assert!(e.meeting_time <= 10);
            }
        }
        assert_eq!(s.capped, runs.iter().filter(|e| e.capped).count());
        assert_eq!(s.max, 10);
    }
}

/// Meeting-time statistics: more particles meet faster (PIMH with K = 100 almost always meets
/// at the first coupled step, tau = L + 1), the survival function decreases, and DISIR's
/// meeting probability per step is at least ISIR's.
#[test]
fn meeting_times_are_sane() {
    let (t, x) = toy();
    let reps = 3200;
    let mut means = Vec::new();
    for (i, kk) in [2usize, 10, 100].into_iter().enumerate() {
        let c = Check::run(
            "toy",
            &t,
            &x,
            Est::Coupled(cfg(ChainKernel::Pimh, kk, 0, 0, 1)),
            reps,
            400 + i as u64,
        );
        let s = c.meeting_stats();
        assert_eq!(s.capped, 0);
        assert_eq!(s.min, 2, "tau >= L + 1 = 2");
        assert!(s.survival.windows(2).all(|w| w[1] <= w[0]));
        means.push(s.mean);
        if kk == 100 {
            assert!(
                s.survival_at(2) < 0.2,
                "PIMH with K = 100 should meet at tau = 2 in most runs: P(tau > 2) = {}",
                s.survival_at(2)
            );
        }
    }
    println!("PIMH mean meeting time for K = 2, 10, 100: {means:?}");
    assert!(means[0] > means[1] && means[1] > means[2], "{means:?}");
    let isir = Check::run(
        "toy",
        &t,
        &x,
        Est::Coupled(cfg(ChainKernel::Isir, K, 0, 0, 1)),
        reps,
        410,
    )
    .meeting_stats();
    let disir = Check::run(
        "toy",
        &t,
        &x,
        Est::Coupled(cfg(ChainKernel::Disir, K, 0, 0, 1)),
        reps,
        411,
    )
    .meeting_stats();
    // Standard error of the difference of means ~ sqrt(sd1^2 + sd2^2) / sqrt(reps) ~ 0.03.
    assert!(
        disir.mean < isir.mean,
        "DISIR should meet no later than ISIR on average: {} vs {}",
        disir.mean,
        isir.mean
    );
}
