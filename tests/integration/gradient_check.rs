//! Gradient checks (docs/design.md §5.2): the CPU backend's gradient for every estimator, built
//! the production way (f32 forward -> estimator coefficients -> backward), against central
//! finite differences of that estimator's surrogate objective, written independently in f64
//! over `model::reference::log_weights` with explicit stop-gradients, the way
//! google-research's `dreg_estimators` writes them.
//!
//! Stop-gradients are expressed by which parameter copy moves: `theta` (decoder), `phi_draw`
//! (the encoder that draws z = mu + sigma * eps) and `phi_score` (the encoder that scores
//! log q). "sg(.)" means evaluated at the current parameters and held constant.
//!
//! | estimator | theta surrogate | phi surrogate | phi copy that moves |
//! |---|---|---|---|
//! | ELBO | mean(l) | mean(l) | draw and score |
//! | IWAE | L_n(l) | L_n(l) | draw and score |
//! | STL | L_n(l) | L_n(l) | draw |
//! | IWAE-DReG | L_n(l) | sum sg(w^2) l | draw |
//! | RWS | L_n(l) | sum sg(w) log q(sg z) = -sum sg(w) l | score |
//! | RWS-DReG | L_n(l) | sum sg(w - w^2) l | draw |
//! | DReG(alpha) | L_n(l) | sum sg(alpha w + (1 - 2 alpha) w^2) l | draw |
//! | JVI | J(l) | J(l) | draw and score |
//! | JVI-DReG | J(l) | sum sg(b) l, b = n w^2 - (n-1)/n sum_{i!=n} (w^(-i))^2 | draw |
//!
//! L_n(l) = logsumexp(l) - ln n, J = n L_n - (n-1) mean_i L_{n-1}^(-i), w = softmax(l).
//! Every surrogate is averaged over the batch, like the backend's gradient.

use std::ops::Range;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::{Backend, Noise};
use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::model::{reference, Arch, Layout, Params};
use unbiased_vae::rng::{self, Stream};

use crate::common::arch;

/// Samples per datapoint (JVI needs n >= 2).
pub(crate) const N: usize = 4;
/// DReG(alpha)'s alpha.
pub(crate) const ALPHA: f64 = 0.3;

/// Tolerances for |g_backend - g_fd| <= ATOL + RTOL |g_fd|.
///
/// The backend runs in f32 (unit roundoff 6e-8) with fast exp/tanh (abs error ~1e-7). Here
/// the log-weights are O(10) and carry ~1e-6 absolute error (see
/// `backend_log_weights_match_reference`), which moves the softmax weights by ~1e-6
/// relative; each gradient entry (|g| up to ~4) is a sum of a few dozen f32 products of O(1)
/// terms. Expected error: ~1e-6 absolute, ~1e-6 relative; observed: at most 2.4e-6 absolute
/// over all estimators, the same for FD steps 1e-4, 1e-5 and 1e-6 (so it is the backend's
/// f32 noise, not the finite differences). ATOL = 1e-5 and RTOL = 1e-4 leave >= 20x
/// headroom over that (worst err/tol 0.022) and are 10x tighter than the 2e-4 / 2e-3 one
/// might start from for f32, so an error of a few 1e-5 in any coefficient or gradient piece
/// shows; a wrong coefficient routing is off by 1e-2 .. 1 (`wrong_routing_fails_the_check`).
pub(crate) const ATOL: f64 = 1e-5;
pub(crate) const RTOL: f64 = 1e-4;

/// Central-difference step (absolute). Truncation error ~ h^2 |f'''| / 6 ~ 1e-10; roundoff
/// ~ 1e-16 |f| / h ~ 1e-10 for |f| ~ 10: both far below the f32 noise being tested.
const FD_STEP: f64 = 1e-5;

/// Log-weight tolerance: |l_backend - l_ref| <= LW_ATOL + LW_RTOL |l_ref|.
pub(crate) const LW_ATOL: f64 = 1e-4;
pub(crate) const LW_RTOL: f64 = 1e-5;

/// The fixed problem every check runs on.
pub(crate) struct Fixture {
    pub(crate) layout: Layout,
    pub(crate) values: Vec<f32>,
    /// x as f32, [batch, x_dim], binary.
    pub(crate) x: Vec<f32>,
    pub(crate) batch: usize,
    pub(crate) noise: Noise,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture::from_arch(arch(7, &[5, 4], 3))
    }

    /// The fixture's problem on `arch` (x_dim 7); a two-layer model's q(z2 | z1) is narrowed
    /// like q(z1 | x).
    pub(crate) fn from_arch(arch: Arch) -> Fixture {
        let mean = [0.1f32, 0.3, 0.5, 0.7, 0.9, 0.45, 0.2];
        let mut p = Params::init(&arch, 11, Some(&mean));
        // Perturb every parameter a little so that no bias is zero and nothing is symmetric.
        let mut r = ChaCha8Rng::seed_from_u64(2024);
        for v in p.values.iter_mut() {
            *v += 0.2 * (r.random::<f32>() - 0.5);
        }
        // Narrower q (sigma ~ e^-1) keeps the log-weights within a few nats of each other, so
        // every sample carries real weight and the weighted estimators are all exercised.
        let last = p.layout.encoder.last().expect("encoder").clone();
        for v in &mut p.values[last.b + arch.z_dim..last.b + 2 * arch.z_dim] {
            *v -= 1.0;
        }
        if let (Some(top), Some(last2)) = (&arch.top, p.layout.encoder2.last().cloned()) {
            for v in &mut p.values[last2.b + top.z_dim..last2.b + 2 * top.z_dim] {
                *v -= 1.0;
            }
        }
        let x: Vec<f32> = [
            [1, 0, 1, 1, 0, 0, 1],
            [0, 1, 1, 0, 1, 0, 0],
            [1, 1, 0, 0, 1, 1, 1],
        ]
        .iter()
        .flatten()
        .map(|&b| b as f32)
        .collect();
        Fixture {
            layout: p.layout,
            values: p.values,
            batch: 3,
            x,
            // Non-zero offsets so the test also pins the (datapoint, sample) indexing.
            noise: Noise {
                seed: 3,
                stream: Stream::Eps,
                step: 5,
                first_datapoint: 10,
                first_sample: 2,
            },
        }
    }

    fn x_dim(&self) -> usize {
        self.layout.arch.x_dim
    }

    pub(crate) fn backend(&self) -> CpuBackend {
        CpuBackend::new(&self.layout, &self.values, 2).expect("cpu backend")
    }

    /// eps [batch][N * noise_dim] as the backend draws it (see `Noise`).
    pub(crate) fn eps(&self) -> Vec<Vec<f64>> {
        let zd = self.layout.arch.noise_dim();
        (0..self.batch)
            .map(|b| {
                let mut e = vec![0.0f32; N * zd];
                for s in 0..N {
                    rng::fill_normals_from(
                        self.noise.seed,
                        self.noise.stream,
                        self.noise.step,
                        self.noise.first_datapoint + b as u32,
                        (self.noise.first_sample as usize + s) * zd,
                        &mut e[s * zd..(s + 1) * zd],
                    );
                }
                e.iter().map(|&v| f64::from(v)).collect()
            })
            .collect()
    }

    pub(crate) fn params64(&self) -> Vec<f64> {
        self.values.iter().map(|&v| f64::from(v)).collect()
    }

    pub(crate) fn x64(&self, b: usize) -> Vec<f64> {
        let d = self.x_dim();
        self.x[b * d..(b + 1) * d]
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    }
}

/// Reference log-weights of every datapoint.
pub(crate) fn ref_log_weights(
    f: &Fixture,
    eps: &[Vec<f64>],
    theta: &[f64],
    phi_draw: &[f64],
    phi_score: &[f64],
) -> Vec<Vec<f64>> {
    (0..f.batch)
        .map(|b| reference::log_weights(&f.layout, theta, phi_draw, phi_score, &f.x64(b), &eps[b]))
        .collect()
}

// ---- f64 surrogate building blocks (independent of src/estimators) ----

fn lse(l: &[f64]) -> f64 {
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + l.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// L_S = logsumexp(l_S) - ln |S|.
fn bound(l: &[f64]) -> f64 {
    lse(l) - (l.len() as f64).ln()
}

pub(crate) fn softmax(l: &[f64]) -> Vec<f64> {
    let m = lse(l);
    l.iter().map(|&v| (v - m).exp()).collect()
}

/// J = n L_n - (n-1) mean_i L_{n-1}^(-i).
fn jackknife(l: &[f64]) -> f64 {
    let n = l.len();
    let loo: f64 = (0..n)
        .map(|i| {
            let rest: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| l[j]).collect();
            bound(&rest)
        })
        .sum::<f64>()
        / n as f64;
    n as f64 * bound(l) - (n - 1) as f64 * loo
}

/// JVI-DReG path weights b_n = n w_n^2 - (n-1)/n sum_{i != n} (w_n^(-i))^2, with the
/// leave-one-out softmax taken naively as w_n / (1 - w_i) (fine on this well-conditioned
/// example: no weight is near 1).
fn jvi_dreg_weights(l: &[f64]) -> Vec<f64> {
    let n = l.len();
    let w = softmax(l);
    assert!(
        w.iter().all(|&v| v < 0.99),
        "example too ill-conditioned: {w:?}"
    );
    (0..n)
        .map(|k| {
            let loo: f64 = (0..n)
                .filter(|&i| i != k)
                .map(|i| (w[k] / (1.0 - w[i])).powi(2))
                .sum();
            n as f64 * w[k] * w[k] - (n - 1) as f64 / n as f64 * loo
        })
        .collect()
}

/// Which encoder copy a phi surrogate differentiates.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Moves {
    /// phi_draw and phi_score together: the full reparameterised derivative.
    Both,
    /// phi_draw only (log q's parameters under stop-gradient): path term.
    Draw,
    /// phi_score only (z under stop-gradient): score term.
    Score,
}

/// phi surrogate of one datapoint: (log-weights at the moved copies, log-weights at the
/// current parameters, alpha) -> value.
type PhiSurrogate = fn(&[f64], &[f64], f64) -> f64;

/// theta surrogate of one datapoint, as a function of its log-weights.
fn theta_surrogate(kind: EstimatorKind, l: &[f64]) -> f64 {
    match kind {
        EstimatorKind::Elbo => l.iter().sum::<f64>() / l.len() as f64,
        EstimatorKind::Jvi | EstimatorKind::JviDreg => jackknife(l),
        _ => bound(l),
    }
}

/// The phi surrogate of `kind` (see the module table) and the encoder copy it moves. Its
/// arguments: `l` the log-weights at the moved copies, `l0` those at the current parameters
/// (for the stop-gradient weights), and alpha (DReG(alpha) only).
fn phi_surrogate(kind: EstimatorKind) -> (Moves, PhiSurrogate) {
    fn dot(c: &[f64], l: &[f64]) -> f64 {
        c.iter().zip(l).map(|(c, l)| c * l).sum()
    }
    match kind {
        EstimatorKind::Elbo => (Moves::Both, |l, _, _| {
            l.iter().sum::<f64>() / l.len() as f64
        }),
        EstimatorKind::Iwae => (Moves::Both, |l, _, _| bound(l)),
        EstimatorKind::Stl => (Moves::Draw, |l, _, _| bound(l)),
        EstimatorKind::IwaeDreg => (Moves::Draw, |l, l0, _| {
            let w = softmax(l0);
            dot(&w.iter().map(|w| w * w).collect::<Vec<_>>(), l)
        }),
        // sum sg(w) log q_phi(sg z) = -sum sg(w) l(phi_draw = sg, phi_score = phi) + const.
        EstimatorKind::Rws => (Moves::Score, |l, l0, _| -dot(&softmax(l0), l)),
        EstimatorKind::RwsDreg => (Moves::Draw, |l, l0, _| {
            let w = softmax(l0);
            dot(&w.iter().map(|w| w - w * w).collect::<Vec<_>>(), l)
        }),
        EstimatorKind::Dreg => (Moves::Draw, |l, l0, alpha| {
            let w = softmax(l0);
            let c: Vec<f64> = w
                .iter()
                .map(|w| alpha * w + (1.0 - 2.0 * alpha) * w * w)
                .collect();
            dot(&c, l)
        }),
        EstimatorKind::Jvi => (Moves::Both, |l, _, _| jackknife(l)),
        EstimatorKind::JviDreg => (Moves::Draw, |l, l0, _| dot(&jvi_dreg_weights(l0), l)),
        // Random-size estimators are subset programs, checked in src/estimators/program.rs;
        // the coupled chains in the `coupling` tests.
        EstimatorKind::Sumo
        | EstimatorKind::MlmcSs
        | EstimatorKind::MlmcRr
        | EstimatorKind::CoupledPimh
        | EstimatorKind::CoupledIsir
        | EstimatorKind::CoupledDisir => {
            unreachable!("fixed-size estimators only")
        }
    }
}

/// Central finite differences of both surrogates, batch mean, flat in layout order.
pub(crate) fn finite_difference_gradient(f: &Fixture, kind: EstimatorKind, alpha: f64) -> Vec<f64> {
    let eps = f.eps();
    let p0 = f.params64();
    let l0 = ref_log_weights(f, &eps, &p0, &p0, &p0);
    let inv_b = 1.0 / f.batch as f64;
    let mut g = vec![0.0; f.layout.len];

    // Decoder: theta moves, both encoder copies at the current parameters.
    let theta_obj = |theta: &[f64]| -> f64 {
        ref_log_weights(f, &eps, theta, &p0, &p0)
            .iter()
            .map(|l| theta_surrogate(kind, l))
            .sum::<f64>()
            * inv_b
    };
    // Encoder: the copies the surrogate differentiates move.
    let (moves, sur) = phi_surrogate(kind);
    let phi_obj = |phi: &[f64]| -> f64 {
        let (draw, score) = match moves {
            Moves::Both => (phi, phi),
            Moves::Draw => (phi, &p0[..]),
            Moves::Score => (&p0[..], phi),
        };
        ref_log_weights(f, &eps, &p0, draw, score)
            .iter()
            .zip(&l0)
            .map(|(l, l0)| sur(l, l0, alpha))
            .sum::<f64>()
            * inv_b
    };

    let mut p = p0.clone();
    for (i, gi) in g.iter_mut().enumerate() {
        let obj: &dyn Fn(&[f64]) -> f64 = if i < f.layout.encoder_len {
            &phi_obj
        } else {
            &theta_obj
        };
        p[i] = p0[i] + FD_STEP;
        let up = obj(&p);
        p[i] = p0[i] - FD_STEP;
        let down = obj(&p);
        p[i] = p0[i];
        *gi = (up - down) / (2.0 * FD_STEP);
    }
    g
}

/// Coefficients as the production path makes them, optionally re-routed by `route`.
pub(crate) type Route = fn(Vec<f32>, Vec<f32>, Vec<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>);

/// The production gradient: backend forward -> coefficients on the f32 log-weights ->
/// backward -> gradient.
pub(crate) fn backend_gradient(
    f: &Fixture,
    kind: EstimatorKind,
    alpha: f64,
    route: Route,
) -> Vec<f32> {
    let mut be = f.backend();
    let lw = be
        .forward(&f.x, f.batch, N, &f.noise)
        .expect("forward")
        .to_vec();
    let co = Estimator::new(kind, alpha).coefficients(&lw, f.batch, N);
    let (a, b, c) = route(co.a, co.b, co.c);
    be.backward(&a, &b, &c).expect("backward");
    be.gradient().expect("gradient")
}

pub(crate) fn as_is(a: Vec<f32>, b: Vec<f32>, c: Vec<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (a, b, c)
}

/// "name[local index]" of flat parameter `i`.
fn param_name(layout: &Layout, i: usize) -> String {
    layout
        .tensors()
        .into_iter()
        .find(|(_, _, off, len)| (*off..off + len).contains(&i))
        .map(|(name, _, off, _)| format!("{name}[{}]", i - off))
        .unwrap_or_else(|| format!("?[{i}]"))
}

/// Result of comparing a gradient with its finite-difference reference.
pub(crate) struct Comparison {
    pub(crate) failures: usize,
    /// Largest |g_backend - g_fd|.
    pub(crate) max_abs_err: f64,
    /// Largest |g_fd| on the encoder and the decoder.
    pub(crate) max_fd: (f64, f64),
    /// Largest err / (ATOL + RTOL |fd|): <= 1 passes.
    pub(crate) worst_ratio: f64,
}

pub(crate) fn compare(label: &str, layout: &Layout, got: &[f32], want: &[f64]) -> Comparison {
    assert_eq!(got.len(), want.len());
    let mut rows: Vec<(usize, f64, f64, f64, f64)> = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| {
            let err = (f64::from(g) - w).abs();
            let ratio = err / (ATOL + RTOL * w.abs());
            (
                i,
                f64::from(g),
                w,
                err,
                if ratio.is_nan() { f64::INFINITY } else { ratio },
            )
        })
        .collect();
    rows.sort_by(|x, y| y.4.total_cmp(&x.4));
    let failures = rows.iter().filter(|r| r.4 > 1.0).count();
    let el = layout.encoder_len;
    let max_of = |r: std::ops::Range<usize>| want[r].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cmp = Comparison {
        failures,
        max_abs_err: rows.iter().fold(0.0f64, |m, r| m.max(r.3)),
        max_fd: (max_of(0..el), max_of(el..layout.len)),
        worst_ratio: rows[0].4,
    };
    println!(
        "{label}: {} / {} outside tol (atol {ATOL:e}, rtol {RTOL:e}); max |err| {:.3e}, \
         worst err/tol {:.3}, max |fd| enc {:.3e} dec {:.3e}",
        failures,
        got.len(),
        cmp.max_abs_err,
        cmp.worst_ratio,
        cmp.max_fd.0,
        cmp.max_fd.1
    );
    println!(
        "    {:<24} {:>5} {:>14} {:>14} {:>10} {:>8}",
        "parameter", "flat", "backend", "fd", "|err|", "err/tol"
    );
    for &(i, g, w, err, ratio) in rows.iter().take(5) {
        println!(
            "    {:<24} {:>5} {:>14.7e} {:>14.7e} {:>10.3e} {:>8.3}",
            param_name(layout, i),
            i,
            g,
            w,
            err,
            ratio
        );
    }
    cmp
}

/// A model the checks run on: its fixture, its networks and the bounds that differ between
/// models.
pub(crate) struct Model {
    /// What the check's lines and messages start with.
    pub(crate) label: &'static str,
    pub(crate) fixture: Fixture,
    /// (name, flat range) of every network, in layout order.
    pub(crate) networks: Vec<(&'static str, Range<usize>)>,
    /// Every network's largest |finite-difference gradient| must exceed it (else the check
    /// could not fail there).
    pub(crate) min_fd: f64,
    /// Every softmax weight must exceed it (no sample negligible).
    pub(crate) min_weight: f64,
}

/// The one-stochastic-layer fixture: an encoder and a decoder.
fn one_layer() -> Model {
    let fixture = Fixture::new();
    let el = fixture.layout.encoder_len;
    let len = fixture.layout.len;
    Model {
        label: "",
        networks: vec![("encoder", 0..el), ("decoder", el..len)],
        fixture,
        min_fd: 1e-2,
        min_weight: 0.02,
    }
}

/// The three checks of `model` as tests with the given names: the backend's log-weights
/// against the reference, every fixed-size estimator's gradient against finite differences,
/// and mis-routed coefficients failing the check.
macro_rules! gradient_checks {
    ($model:expr, $log_weights:ident, $every_estimator:ident, $wrong_routing:ident) => {
        #[test]
        fn $log_weights() {
            $crate::gradient_check::check_log_weights(&$model);
        }

        #[test]
        fn $every_estimator() {
            $crate::gradient_check::check_every_estimator(&$model);
        }

        #[test]
        fn $wrong_routing() {
            $crate::gradient_check::check_wrong_routing(&$model);
        }
    };
}
pub(crate) use gradient_checks;

gradient_checks!(
    one_layer(),
    backend_log_weights_match_reference,
    every_estimator_matches_finite_differences,
    wrong_routing_fails_the_check
);

/// The backend's log-weights against the reference, and spread enough for the checks.
pub(crate) fn check_log_weights(m: &Model) {
    let f = &m.fixture;
    let mut be = f.backend();
    let lw = be
        .forward(&f.x, f.batch, N, &f.noise)
        .expect("forward")
        .to_vec();
    let p = f.params64();
    let want: Vec<f64> = ref_log_weights(f, &f.eps(), &p, &p, &p)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(lw.len(), want.len());
    let mut rows: Vec<(usize, f64, f64, f64)> = lw
        .iter()
        .zip(&want)
        .enumerate()
        .map(|(i, (&g, &w))| (i, f64::from(g), w, (f64::from(g) - w).abs()))
        .collect();
    rows.sort_by(|x, y| y.3.total_cmp(&x.3));
    println!(
        "{}log-weights, tol {LW_ATOL:e} + {LW_RTOL:e} |l|; worst pairs:",
        m.label
    );
    for &(i, g, w, err) in rows.iter().take(5) {
        println!(
            "    datapoint {} sample {}: backend {g:.7} reference {w:.7} |err| {err:.3e}",
            i / N,
            i % N
        );
    }
    for &(i, g, w, err) in &rows {
        assert!(
            err <= LW_ATOL + LW_RTOL * w.abs(),
            "log-weight {i}: backend {g} vs reference {w} (|err| {err:e})"
        );
    }
    // The weights must be spread (no degenerate softmax) for the gradient checks to mean much.
    for l in want.chunks(N) {
        let w = softmax(l);
        println!("    softmax weights {w:.4?}");
        assert!(
            w.iter().all(|&v| v > m.min_weight && v < 0.9),
            "weights {w:?}"
        );
    }
}

/// Every fixed-size estimator's gradient against finite differences of its surrogate.
pub(crate) fn check_every_estimator(m: &Model) {
    let f = &m.fixture;
    let mut failed = Vec::new();
    let start = Instant::now();
    for kind in EstimatorKind::ALL {
        assert!(N >= kind.min_samples());
        let got = backend_gradient(f, kind, ALPHA, as_is);
        let want = finite_difference_gradient(f, kind, ALPHA);
        let c = compare(&format!("{}{kind}", m.label), &f.layout, &got, &want);
        // The check can fail: every network's reference gradient is clearly non-zero.
        for (name, r) in &m.networks {
            let max = want[r.clone()].iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(
                max > m.min_fd,
                "{kind}: finite-difference gradient of the {name} ~0 ({max:e})"
            );
        }
        if c.failures > 0 {
            failed.push(format!(
                "{kind} ({} outside, worst err/tol {:.2})",
                c.failures, c.worst_ratio
            ));
        }
    }
    println!("all estimators: {:.2?}", start.elapsed());
    assert!(
        failed.is_empty(),
        "{}gradient check failed for {failed:?}",
        m.label
    );
}

/// Mis-routed coefficients fail the check, on the networks they reach only.
pub(crate) fn check_wrong_routing(m: &Model) {
    let f = &m.fixture;
    // IWAE-DReG with path and score coefficients swapped: b = 0, c = w^2.
    let swapped: Route = |a, b, c| (a, c, b);
    // IWAE-DReG with the decoder given the path weights: a = w^2.
    let decoder_wrong: Route = |_, b, c| (b.clone(), b, c);
    // RWS with the score sign flipped (descent instead of ascent on log q).
    let score_sign: Route = |a, b, c| (a, b, c.into_iter().map(|v| -v).collect());
    // (label, estimator, route, fails on the encoders (else on the decoders))
    for (label, kind, route, on_encoders) in [
        ("iwae-dreg b<->c", EstimatorKind::IwaeDreg, swapped, true),
        (
            "iwae-dreg a=w^2",
            EstimatorKind::IwaeDreg,
            decoder_wrong,
            false,
        ),
        ("rws -c", EstimatorKind::Rws, score_sign, true),
    ] {
        let got = backend_gradient(f, kind, ALPHA, route);
        let want = finite_difference_gradient(f, kind, ALPHA);
        let label = format!("{}{label}", m.label);
        let c = compare(&format!("{label} (must fail)"), &f.layout, &got, &want);
        assert!(c.failures > 0, "{label}: a wrong routing passed the check");
        // And it fails where it should, while the untouched networks still pass.
        let fails = |r: Range<usize>| {
            r.into_iter()
                .any(|i| (f64::from(got[i]) - want[i]).abs() > ATOL + RTOL * want[i].abs())
        };
        for (name, r) in &m.networks {
            let encoder = r.start < f.layout.encoder_len;
            assert_eq!(fails(r.clone()), encoder == on_encoders, "{label}: {name}");
        }
    }
}
