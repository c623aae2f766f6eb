//! Coupled Markov chain estimators (`unbiased_vae::coupling`, Ruiz et al. 2021) on the exact
//! models (docs/design.md §5.3).
//!
//! For a fixed datapoint `x` of [`Toy`] (Rainforth et al. / Tucker et al. §6.1, paper setup,
//! theta = mu, 20 coordinates), of [`Ppca`] (theta = (W, b), 15 coordinates) and of the
//! two-layer model with its hierarchical q (`HGaussQ`, theta = (A, a, B, b), 33), each check
//! draws `R` independent coupled estimates `H_{k:m}` (fresh chains, fresh particles) and
//! compares their mean with the exact `grad_theta log p(x)`, coordinate by coordinate:
//!
//! ```text
//! z_i = (mean_i - exact_i) / SE_i,      SE_i = sample sd_i / sqrt(R),      pass iff |z_i| < 4 for every i.
//! ```
//!
//! Confidence: under the normal approximation a two-sided 4-SE bound has false-alarm rate
//! `6.3e-5` per coordinate; with at most 20 coordinates the union bound gives `<= 1.3e-3` per
//! check and `<= 9e-3` over the 7 toy and PPCA checks in this file that must pass, for a fresh
//! seed (`<= 6.3e-3` more over the three hgauss checks, 33 coordinates each). All
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

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use unbiased_vae::coupling::{estimate, ChainKernel, CouplingConfig, MeetingStats, RbSet};
use unbiased_vae::estimators::softmax_into;
use unbiased_vae::exact::{combine, draw_samples, ExactModel, Toy};

use crate::common::mc::{hgauss, ppca, toy, Check, Exact, Extra};
use crate::common::test_table;

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

/// The cost and the meeting times of the replications.
#[derive(Default)]
struct Chains {
    cost: f64,
    times: Vec<usize>,
    capped: Vec<bool>,
}

impl Chains {
    fn meeting_stats(&self) -> MeetingStats {
        MeetingStats::from_times(&self.times, &self.capped)
    }
}

impl Extra for Chains {
    fn merge(&mut self, o: &Self) {
        self.cost += o.cost;
        self.times.extend_from_slice(&o.times);
        self.capped.extend_from_slice(&o.capped);
    }

    fn report(&self, reps: usize) -> String {
        let cost = format!("mean cost = {:.2} particles", self.cost / reps as f64);
        if self.times.is_empty() {
            cost
        } else {
            format!("{cost}, {}", self.meeting_stats())
        }
    }
}

/// `reps` replications of `est` against the exact gradient.
fn check<M: ExactModel + Sync>(on: &Exact<M>, est: Est, reps: usize, seed: u64) -> Check<Chains> {
    let (model, x) = (&on.model, &on.x[..]);
    let d = model.theta_len();
    let label = format!("{} {est:?}", on.label);
    Check::<Chains>::run(
        label,
        on.values(false),
        d,
        reps,
        seed,
        |mo, ch, rng| match est {
            Est::Iwae(k) => {
                let (l, dd) = draw_samples(model, x, k, rng);
                let mut a = vec![0.0; k];
                softmax_into(&l, &mut a);
                mo.push(&combine(&a, &dd, d));
                ch.cost += k as f64;
            }
            Est::Coupled(cfg) => {
                let e = estimate(model, x, &cfg, rng);
                mo.push(&e.grad_theta);
                ch.cost += e.proposals as f64;
                ch.times.push(e.meeting_time);
                ch.capped.push(e.capped);
            }
        },
    )
}

/// Passes the 4-SE check, with no capped run.
fn assert_unbiased(c: &Check<Chains>) {
    c.assert_unbiased();
    let s = c.extra.meeting_stats();
    assert_eq!(
        s.capped, 0,
        "{}: capped runs in an unbiasedness check",
        c.label
    );
}

fn cfg(kernel: ChainKernel, particles: usize, k: usize, m: usize, lag: usize) -> CouplingConfig {
    CouplingConfig {
        burn_in: k,
        horizon: m,
        lag,
        ..CouplingConfig::new(kernel, particles)
    }
}

type Refs = (Check<Chains>, Check<Chains>);

/// IWAE(2) and IWAE(K) on `on` (seeds `seed`, `seed + 1`).
fn refs<M: ExactModel + Sync>(on: Exact<M>, seed: u64) -> Refs {
    (
        check(&on, Est::Iwae(2), R_IWAE, seed),
        check(&on, Est::Iwae(K), R_IWAE, seed + 1),
    )
}

/// The IWAE references, computed once per model and shared by the tests.
fn toy_refs() -> &'static Refs {
    static REFS: OnceLock<Refs> = OnceLock::new();
    REFS.get_or_init(|| refs(toy(), 101))
}

fn ppca_refs() -> &'static Refs {
    static REFS: OnceLock<Refs> = OnceLock::new();
    REFS.get_or_init(|| refs(ppca(), 103))
}

/// The coupled estimate of `c` on `on` is powered against both references and passes.
fn passes<M: ExactModel + Sync>(on: Exact<M>, refs: &Refs, c: CouplingConfig, seed: u64) {
    let check = check(&on, Est::Coupled(c), R, seed);
    check.assert_powered(&refs.0);
    check.assert_powered(&refs.1);
    assert_unbiased(&check);
}

fn check_toy(c: CouplingConfig, seed: u64) {
    passes(toy(), toy_refs(), c, seed);
}

fn check_ppca(c: CouplingConfig, seed: u64) {
    passes(ppca(), ppca_refs(), c, seed);
}

fn hgauss_refs() -> &'static Refs {
    static REFS: OnceLock<Refs> = OnceLock::new();
    REFS.get_or_init(|| refs(hgauss(), 105))
}

/// The two-layer model with its hierarchical q(z1|x) q(z2|z1) (`exact::HGaussQ`): theta =
/// (A, a, B, b), 33 coordinates, so a 4-SE check's false-alarm rate is <= 2.1e-3 by the union
/// bound, <= 6.3e-3 over the three kernels.
///
/// Shown once (the closing note of issue 24), with `coupling::bc_weight` scaled (the
/// lag-correction weights perturbed) at these seeds: x0.5 fails all three (max |z| PIMH 7.2,
/// ISIR 4.6, DISIR 12.9); x0.8 fails DISIR (k = m = 0, where every term is a correction:
/// 5.3) while PIMH and ISIR, whose time averages over k..m carry most of the estimate, pass.
fn check_hgauss(c: CouplingConfig, seed: u64) {
    passes(hgauss(), hgauss_refs(), c, seed);
}

// ---------------------------------------------------------------- the check can fail

#[test]
fn iwae_references_fail_the_check() {
    // IWAE(2) is measurably biased on both models at R_IWAE (IWAE(K) is printed: its bias is
    // what the power ratios are measured against).
    for (name, refs) in [
        ("toy", toy_refs()),
        ("ppca", ppca_refs()),
        ("hgauss", hgauss_refs()),
    ] {
        refs.0
            .assert_detects_bias(&format!("IWAE(2) on the {name}"));
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
    let good = cfg(ChainKernel::Isir, K, 0, 0, 1);
    let trap = CouplingConfig {
        rb_set: RbSet::SelectedFrom,
        ..good
    };
    let on_trap = Exact {
        label: "toy trap",
        ..toy()
    };
    check(&on_trap, Est::Coupled(trap), R_TRAP, 601).assert_detects_bias("the trap h");
    assert_unbiased(&check(&toy(), Est::Coupled(good), R_TRAP, 601));
}

// ---------------------------------------------------------------- unbiasedness

test_table! {
    pimh_is_unbiased_on_the_toy: check_toy(cfg(ChainKernel::Pimh, K, 1, 4, 1), 201);
    isir_is_unbiased_on_the_toy: check_toy(cfg(ChainKernel::Isir, K, 0, 0, 1), 202);
    disir_is_unbiased_on_the_toy: check_toy(cfg(ChainKernel::Disir, K, 1, 4, 2), 203);
    pimh_is_unbiased_on_ppca: check_ppca(cfg(ChainKernel::Pimh, K, 0, 2, 3), 211);
    isir_is_unbiased_on_ppca: check_ppca(cfg(ChainKernel::Isir, K, 1, 4, 2), 212);
    disir_is_unbiased_on_ppca: check_ppca(cfg(ChainKernel::Disir, K, 0, 0, 1), 213);
    pimh_is_unbiased_on_hgauss: check_hgauss(cfg(ChainKernel::Pimh, K, 0, 2, 1), 221);
    isir_is_unbiased_on_hgauss: check_hgauss(cfg(ChainKernel::Isir, K, 1, 4, 2), 222);
    disir_is_unbiased_on_hgauss: check_hgauss(cfg(ChainKernel::Disir, K, 0, 0, 1), 223);
}

// ---------------------------------------------------------------- cap and meeting times

/// The cap is reported, never silent: a run that cannot finish by `max_iters` says so.
#[test]
fn iteration_cap_is_reported() {
    // Deterministic: with max_iters = 1 no coupled step can happen (L = 1), so every run is
    // capped, reports tau as the cap and still returns a (truncated) estimate.
    let Exact { model: t, x, .. } = toy();
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
    let toy = toy();
    let reps = 3200;
    let mut means = Vec::new();
    for (i, kk) in [2usize, 10, 100].into_iter().enumerate() {
        let est = Est::Coupled(cfg(ChainKernel::Pimh, kk, 0, 0, 1));
        let s = check(&toy, est, reps, 400 + i as u64).extra.meeting_stats();
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
    let meeting = |kernel, seed| {
        let est = Est::Coupled(cfg(kernel, K, 0, 0, 1));
        check(&toy, est, reps, seed).extra.meeting_stats()
    };
    let (isir, disir) = (
        meeting(ChainKernel::Isir, 410),
        meeting(ChainKernel::Disir, 411),
    );
    // Standard error of the difference of means ~ sqrt(sd1^2 + sd2^2) / sqrt(reps) ~ 0.03.
    assert!(
        disir.mean < isir.mean,
        "DISIR should meet no later than ISIR on average: {} vs {}",
        disir.mean,
        isir.mean
    );
}
