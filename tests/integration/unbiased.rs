//! Unbiasedness on exact models (docs/design.md §5.3).
//!
//! For a fixed datapoint `x` of an exact model ([`Toy`]: Rainforth et al. / Tucker et al. §6.1
//! in the paper's setup; [`Ppca`]), each check draws `R` independent replications of an
//! estimator — fresh level draw (`K` or `k`), fresh `eps` — computes the theta-gradient
//! estimate `g = sum_n a_n D_n` and the estimator's value, and compares the replication mean
//! with the exact `grad_theta log p(x)` and `log p(x)`, coordinate by coordinate:
//!
//! ```text
//! z_i = (mean_i - exact_i) / SE_i,      SE_i = sample sd_i / sqrt(R),      pass iff |z_i| < 4 for every i.
//! ```
//!
//! Confidence: under the normal approximation a two-sided 4-SE bound has false-alarm rate
//! `6.3e-5` per coordinate; with `d + 1` coordinates (21 for the toy, 16 for PPCA) the union
//! bound gives at most `1.3e-3` per check and about `1.3e-2` over the 10 checks that must
//! pass in this file, for a fresh seed. All draws are seeded (ChaCha8, one stream per chunk of
//! replications, merged in a fixed order), so the outcome is reproducible and independent of
//! the number of threads.
//!
//! Power: every check that must pass also measures how large IWAE(K = 2)'s bias is in units of
//! the check's own SE (`power ratio = max_i |bias_IWAE2_i| / SE_i`) and requires it to be
//! `>= 6`: an estimator as biased as IWAE(2) would then fail the 4-SE check with probability
//! `>= P(N(0,1) > -2) = 0.977`. The converse checks — IWAE(2) and a SUMO with docs/design.md's
//! literal index convention must FAIL — show that the check can fail.
//!
//! SUMO caveat: with docs/design.md's tail (`P(K >= k) = 1/(k+1)` for `k < 79`, then geometric
//! with ratio 0.9) the terms `Delta_j / P(K >= j)` grow like `0.9^-j / j`, so SUMO's variance is
//! infinite; the sample SE is dominated by the few largest `K` drawn and the mean's error
//! decays far more slowly than `1/sqrt(R)`. The 4-SE check still passes (one outlier moves the
//! mean and the SE alike), but its power is a matter of luck: over 8 seeds at `R = 128000` on
//! the toy (`sumo_default_tail_across_seeds`, ignored by default) the largest gradient SE
//! ranged from 0.014 to 0.88 and the power ratio from 1.4 to 14. The powered SUMO checks
//! therefore use the same code with the heavy `1/(k+1)` part extended to `k < 10000`
//! (`SumoTail::new(10_000, 0.9)`, `E[K] ~ 8.8`), whose variance is finite in practice; the
//! default tail is checked too, with the power ratio printed but not asserted.

use rand_chacha::ChaCha8Rng;
use unbiased_vae::estimators::mlmc::{p_range_warning, Mlmc, MlmcTarget, MlmcVariant};
use unbiased_vae::estimators::sumo::{sumo_coefficients_with, SumoTail};
use unbiased_vae::estimators::{iwae_bound, softmax_into};
use unbiased_vae::exact::{combine, draw_samples, ExactModel};

use crate::common::mc::{max_abs, ppca, toy, Check, Exact, Extra, Z_MAX};
use crate::common::test_table;

/// Replications for the MLMC checks and IWAE references.
const R: usize = 64_000;
/// Replications for the SUMO checks (its variance is larger).
const R_SUMO: usize = 128_000;

/// SUMO's tail with the heavy part extended to `k < 10000` (see the module docs).
fn long_heavy_tail() -> SumoTail {
    SumoTail::new(10_000, 0.9).unwrap()
}

/// SUMO with base 1 and [`long_heavy_tail`].
fn heavy_sumo() -> Est {
    Est::Sumo(1, long_heavy_tail())
}

#[derive(Clone, Copy, Debug)]
enum Est {
    /// IWAE with `k` samples: `a = softmax(l)`.
    Iwae(usize),
    /// SUMO with base `m`.
    Sumo(usize, SumoTail),
    /// SUMO with docs/design.md §1's indices read literally, `Delta_j = L_{m+j+1} - L_{m+j}`
    /// (`j = 1..K`, `N = m + K + 1`): a deliberately biased variant.
    SumoLiteral(usize, SumoTail),
    Mlmc(Mlmc),
}

impl Est {
    /// One replication: `(value, g, samples used)`.
    fn draw<M: ExactModel>(
        &self,
        model: &M,
        x: &[f64],
        rng: &mut ChaCha8Rng,
    ) -> (f64, Vec<f64>, usize) {
        let p = model.theta_len();
        let (value, a, d) = match *self {
            Est::Iwae(k) => {
                let (l, d) = draw_samples(model, x, k, rng);
                let mut a = vec![0.0; k];
                softmax_into(&l, &mut a);
                (iwae_bound(&l), a, d)
            }
            Est::Sumo(m, tail) => {
                let k = tail.sample(rng);
                let (l, d) = draw_samples(model, x, m + k, rng);
                let (v, a) = sumo_coefficients_with(&tail, &l, m, k);
                (v, a, d)
            }
            Est::SumoLiteral(m, tail) => {
                // L_m + sum_{j=1}^K (L_{m+j+1} - L_{m+j}) / P(K >= j)
                //   = SUMO(base m + 1, K) - L_{m+1} + L_m.
                let k = tail.sample(rng);
                let (l, d) = draw_samples(model, x, m + 1 + k, rng);
                let (v, mut a) = sumo_coefficients_with(&tail, &l, m + 1, k);
                let mut w = vec![0.0; m + 1];
                softmax_into(&l[..m + 1], &mut w);
                for (ai, wi) in a.iter_mut().zip(&w) {
                    *ai -= wi;
                }
                softmax_into(&l[..m], &mut w[..m]);
                for (ai, wi) in a.iter_mut().zip(&w[..m]) {
                    *ai += wi;
                }
                (v - iwae_bound(&l[..m + 1]) + iwae_bound(&l[..m]), a, d)
            }
            Est::Mlmc(e) => {
                let k = e.sample_level(rng);
                let (l, d) = draw_samples(model, x, e.num_samples(k), rng);
                let (v, a) = e.coefficients(&l, k);
                (v, a, d)
            }
        };
        let n = a.len();
        (value, combine(&a, &d, p), n)
    }
}

/// The samples the estimator used, over the replications.
#[derive(Default)]
struct Samples {
    total: f64,
    max: usize,
}

impl Extra for Samples {
    fn merge(&mut self, o: &Self) {
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    fn report(&self, reps: usize) -> String {
        let mean = self.total / reps as f64;
        format!("mean samples/rep = {mean:.2} (max {})", self.max)
    }
}

/// `reps` replications of `est` against the exact gradient (coordinates `0..d`) and the exact
/// `log p(x)` (coordinate `d`).
fn check<M: ExactModel + Sync>(on: &Exact<M>, est: Est, reps: usize, seed: u64) -> Check<Samples> {
    let label = format!("{} {est:?}", on.label);
    let grad = on.model.theta_len();
    Check::<Samples>::run(label, on.values(true), grad, reps, seed, |mo, s, rng| {
        let (val, mut v, n) = est.draw(&on.model, &on.x, rng);
        v.push(val);
        mo.push(&v);
        s.total += n as f64;
        s.max = s.max.max(n);
    })
}

/// IWAE(2) (seed `seed`) and `est` (seed `seed + 1`, `reps` replications) on `on`: the check
/// of `est` passes, and is powered against IWAE(2)'s bias (`powered`) or prints its power
/// ratio.
fn passes<M: ExactModel + Sync>(on: Exact<M>, est: Est, reps: usize, seed: u64, powered: bool) {
    let iwae2 = check(&on, Est::Iwae(2), R, seed);
    let c = check(&on, est, reps, seed + 1);
    if powered {
        c.assert_powered(&iwae2);
    } else {
        let r = c.power_ratio(&iwae2);
        println!("  power ratio vs IWAE(2) bias = {r:.2} (not asserted)");
    }
    c.assert_unbiased();
}

fn mlmc(variant: MlmcVariant, i0: u32, cap: Option<u32>) -> Mlmc {
    Mlmc::new(variant, 0.6, i0, cap).unwrap()
}

/// Uncapped single-sample MLMC from level `i0`.
fn ss(i0: u32) -> Est {
    Est::Mlmc(mlmc(MlmcVariant::SingleSample, i0, None))
}

/// Uncapped Russian-roulette MLMC from level `i0`.
fn rr(i0: u32) -> Est {
    Est::Mlmc(mlmc(MlmcVariant::RussianRoulette, i0, None))
}

// ---------------------------------------------------------------- the check can fail

#[test]
fn iwae_k2_fails_the_check_on_both_models() {
    check(&toy(), Est::Iwae(2), R, 101).assert_detects_bias("IWAE(2) on the toy");
    check(&ppca(), Est::Iwae(2), R, 102).assert_detects_bias("IWAE(2) on PPCA");
}

#[test]
fn sumo_with_design_literal_indices_is_biased() {
    // E = log p(x) - (E[L_{m+1}] - E[L_m]): with m = 1 the bias is grad(L_2 - L_1).
    let est = Est::SumoLiteral(1, long_heavy_tail());
    check(&toy(), est, R_SUMO, 103).assert_detects_bias("SUMO with Delta_j = L_(m+j+1) - L_(m+j)");
}

// ---------------------------------------------------------------- MLMC

test_table! {
    mlmc_ss_is_unbiased_on_the_toy: passes(toy(), ss(1), R, 201, true);
    mlmc_rr_is_unbiased_on_the_toy: passes(toy(), rr(0), R, 211, true);
    mlmc_ss_is_unbiased_on_ppca: passes(ppca(), ss(0), R, 221, true);
    mlmc_rr_is_unbiased_on_ppca: passes(ppca(), rr(1), R, 231, true);
}

/// A capped level makes the target `E[L_M]`, `M = 2^(cap+I0+1)`, not `log p(x)`: the capped
/// estimators' mean matches IWAE(M)'s mean (two-sample 4-SE check per coordinate) and fails
/// the check against the exact gradient.
#[test]
fn capped_mlmc_targets_the_capped_bound() {
    let iwae4 = check(&toy(), Est::Iwae(4), R, 301);
    let capped = Exact {
        label: "toy capped",
        ..toy()
    };
    for (variant, seed) in [
        (MlmcVariant::SingleSample, 302),
        (MlmcVariant::RussianRoulette, 303),
    ] {
        let e = mlmc(variant, 0, Some(1));
        assert_eq!(e.target(), MlmcTarget::IwaeBound { samples: 4 });
        let desc = e.capped_target_description();
        println!("{desc}");
        assert!(
            desc.contains("L_4") && desc.contains("NOT for log p(x)"),
            "{desc}"
        );
        assert_eq!(e.warnings(2.0), vec![desc]);

        let c = check(&capped, Est::Mlmc(e), R, seed);
        let z2 = c.z_against(&iwae4);
        let zmax = max_abs(&z2);
        println!(
            "  capped {variant:?} vs IWAE(4): max |z| = {zmax:.2}, z = [{}]",
            z2.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(
            zmax < Z_MAX,
            "capped {variant:?} does not match IWAE(4): max |z| = {zmax:.2}"
        );
        c.assert_detects_bias(&format!("capped {variant:?} for grad log p(x)"));
    }
}

#[test]
fn mlmc_p_outside_the_range_warns() {
    for (p, want) in [
        (0.5, "infinite expected cost"),
        (0.3, "infinite expected cost"),
        (0.75, "infinite variance"),
        (0.9, "infinite variance"),
    ] {
        let w = p_range_warning(p, 2.0).unwrap_or_default();
        assert!(w.contains(want), "p = {p}: {w:?}");
        let e = Mlmc::new(MlmcVariant::SingleSample, p, 0, None).unwrap();
        assert_eq!(e.warnings(2.0), vec![w]);
    }
    assert_eq!(p_range_warning(0.6, 2.0), None);
    assert!(mlmc(MlmcVariant::RussianRoulette, 0, None)
        .warnings(2.0)
        .is_empty());
    assert!(Mlmc::new(MlmcVariant::SingleSample, 0.5, 0, None)
        .unwrap()
        .expected_samples()
        .is_infinite());
    assert!((mlmc(MlmcVariant::SingleSample, 0, None).expected_samples() - 6.0).abs() < 1e-12);
}

// ---------------------------------------------------------------- SUMO

test_table! {
    sumo_is_unbiased_on_the_toy: passes(toy(), heavy_sumo(), R_SUMO, 401, true);
    sumo_is_unbiased_on_ppca: passes(ppca(), heavy_sumo(), R_SUMO, 411, true);
}

/// docs/design.md's default tail: infinite variance, so this check passes but has (almost) no
/// power; the power ratio is printed, not asserted.
#[test]
fn sumo_default_tail_passes_without_power() {
    passes(toy(), Est::Sumo(1, SumoTail::DEFAULT), R_SUMO, 421, false);
    passes(ppca(), Est::Sumo(1, SumoTail::DEFAULT), R_SUMO, 431, false);
}

/// Diagnostic (slow, `--ignored`): the default tail's SE and power across seeds on the toy,
/// showing how much they depend on the largest `K` drawn. Each seed must still pass.
#[test]
#[ignore]
fn sumo_default_tail_across_seeds() {
    let toy = toy();
    let iwae2 = check(&toy, Est::Iwae(2), R, 441);
    for seed in 0..8 {
        let c = check(&toy, Est::Sumo(1, SumoTail::DEFAULT), R_SUMO, 500 + seed);
        println!(
            "  seed {seed}: power ratio vs IWAE(2) bias = {:.2}",
            c.power_ratio(&iwae2)
        );
        c.assert_unbiased();
    }
}
