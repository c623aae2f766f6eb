//! Gradient estimators as per-sample coefficients.
//!
//! Every estimator in scope is a linear combination of three per-sample gradient pieces
//! (see `docs/design.md` §1): the decoder term `D_n`, the reparameterised "path" term `P_n` and
//! the "score" term `S_n = -grad_phi log q(z_n | x)`. An estimator is therefore a *pure*
//! function from the log-weights `l_n = log p(x, z_n) - log q(z_n | x)` of one datapoint to
//! coefficients `(a_n, b_n, c_n)`, and the ascent directions are
//!
//! ```text
//! g_theta = sum_n a_n D_n          g_phi = sum_n (b_n P_n + c_n S_n)
//! ```
//!
//! Keeping estimators as coefficients means the CPU reference and the GPU kernels share one
//! backward pass, and each estimator can be unit-tested in isolation, in `f64`, against
//! finite differences of its objective. Nothing here touches model parameters or buffers.
//!
//! All coefficients use the *ascent* convention; the softmax weights `w = softmax(l)` are
//! always treated as constants (stop-gradient).
//!
//! | estimator | source | `a_n` | `b_n` | `c_n` |
//! |---|---|---|---|---|
//! | ELBO | Kingma & Welling 2014 | `1/N` | `1/N` | `1/N` |
//! | IWAE | Burda et al. 2016 | `w` | `w` | `w` |
//! | STL | Roeder et al. 2017 | `w` | `w` | `0` |
//! | IWAE-DReG | Tucker et al. 2019 | `w` | `w^2` | `0` |
//! | RWS (wake-phi) | Bornschein & Bengio 2015 | `w` | `0` | `-w` |
//! | RWS-DReG | Tucker et al. 2019 | `w` | `w - w^2` | `0` |
//! | DReG(alpha) | Tucker et al. 2019 | `w` | `alpha w + (1 - 2 alpha) w^2` | `0` |
//! | JVI | Nowozin 2018 | `dJ/dl_n` | same | same |
//! | JVI-DReG | Nowozin 2018 + Tucker 2019 | `dJ/dl_n` | see [`jackknife`] | `0` |

pub mod importance;
pub mod jackknife;
pub mod mlmc;
pub mod program;
pub mod sumo;

pub use program::{CoefficientProgram, EncoderRule, SubsetTerm};

/// Why a fixed-size call was made for a random-size estimator (a programming error).
const RANDOM_SIZE_MSG: &str =
    "SUMO and MLMC draw their number of samples each step: use Estimator::draw";
/// Why a coefficient program was asked of a coupled estimator (a programming error).
const COUPLED_MSG: &str =
    "coupled chains run until they meet: use Estimator::coupling and Backend::chain_step";

use rayon::prelude::*;
use std::cell::RefCell;

/// Which estimator; parsed from the CLI `--estimator` string.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EstimatorKind {
    /// Standard ELBO averaged over the N samples (reparameterised, full gradient).
    Elbo,
    /// Importance weighted bound `L_N` (Burda et al. 2016), full reparameterised gradient.
    Iwae,
    /// "Sticking the landing" (Roeder et al. 2017): IWAE with the score term dropped.
    Stl,
    /// Doubly reparameterised IWAE gradient (Tucker et al. 2019).
    IwaeDreg,
    /// Reweighted wake-sleep, wake-phi update (Bornschein & Bengio 2015).
    Rws,
    /// Doubly reparameterised wake-phi update (Tucker et al. 2019).
    RwsDreg,
    /// Tucker et al.'s DReG(alpha) interpolation: alpha = 0 is IWAE-DReG, alpha = 1 RWS-DReG.
    Dreg,
    /// First-order jackknife variational inference (Nowozin 2018).
    Jvi,
    /// JVI with a doubly reparameterised encoder gradient.
    JviDreg,
    /// SUMO, Russian-roulette sum of nested IWAE bounds (Luo et al. 2020): unbiased for
    /// log p(x); `--k` is the minimum number of samples m.
    Sumo,
    /// Multilevel Monte Carlo, single-sample (Shi & Cornish 2021).
    MlmcSs,
    /// Multilevel Monte Carlo, random truncation / Russian roulette (Shi & Cornish 2021).
    MlmcRr,
    /// Coupled particle independent Metropolis–Hastings chains (Ruiz et al. 2021): unbiased
    /// for the decoder's grad log p(x); `--k` particles per set.
    CoupledPimh,
    /// Coupled iterated sampling importance resampling chains (Ruiz et al. 2021).
    CoupledIsir,
    /// Coupled ISIR with a Metropolised index draw (a reconstruction; see `coupling`).
    CoupledDisir,
}

impl EstimatorKind {
    /// Every estimator, in CLI order.
    pub const ALL: [EstimatorKind; 9] = [
        EstimatorKind::Elbo,
        EstimatorKind::Iwae,
        EstimatorKind::Stl,
        EstimatorKind::IwaeDreg,
        EstimatorKind::Rws,
        EstimatorKind::RwsDreg,
        EstimatorKind::Dreg,
        EstimatorKind::Jvi,
        EstimatorKind::JviDreg,
    ];

    /// The CLI / serde name (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            EstimatorKind::Elbo => "elbo",
            EstimatorKind::Iwae => "iwae",
            EstimatorKind::Stl => "stl",
            EstimatorKind::IwaeDreg => "iwae-dreg",
            EstimatorKind::Rws => "rws",
            EstimatorKind::RwsDreg => "rws-dreg",
            EstimatorKind::Dreg => "dreg",
            EstimatorKind::Jvi => "jvi",
            EstimatorKind::JviDreg => "jvi-dreg",
            EstimatorKind::Sumo => "sumo",
            EstimatorKind::MlmcSs => "mlmc-ss",
            EstimatorKind::MlmcRr => "mlmc-rr",
            EstimatorKind::CoupledPimh => "coupled-pimh",
            EstimatorKind::CoupledIsir => "coupled-isir",
            EstimatorKind::CoupledDisir => "coupled-disir",
        }
    }

    /// The coupled Markov chain estimators: a training step runs the chains until they meet
    /// (`Backend::chain_step`) instead of a coefficient program.
    pub const COUPLED: [EstimatorKind; 3] = [
        EstimatorKind::CoupledPimh,
        EstimatorKind::CoupledIsir,
        EstimatorKind::CoupledDisir,
    ];

    /// The Markov kernel of a coupled estimator.
    pub fn coupling_kernel(self) -> Option<crate::coupling::ChainKernel> {
        use crate::coupling::ChainKernel;
        match self {
            EstimatorKind::CoupledPimh => Some(ChainKernel::Pimh),
            EstimatorKind::CoupledIsir => Some(ChainKernel::Isir),
            EstimatorKind::CoupledDisir => Some(ChainKernel::Disir),
            _ => None,
        }
    }

    /// The estimators whose number of samples is drawn afresh each step.
    pub const RANDOM_SIZE: [EstimatorKind; 3] = [
        EstimatorKind::Sumo,
        EstimatorKind::MlmcSs,
        EstimatorKind::MlmcRr,
    ];

    pub fn is_random_size(self) -> bool {
        Self::RANDOM_SIZE.contains(&self)
    }

    /// Parses a name as printed by [`EstimatorKind::name`]. ASCII case and `_` vs `-` are
    /// ignored. The error message lists the valid names.
    pub fn parse(s: &str) -> Result<Self, String> {
        let norm: String = s
            .trim()
            .chars()
            .map(|ch| {
                if ch == '_' {
                    '-'
                } else {
                    ch.to_ascii_lowercase()
                }
            })
            .collect();
        Self::ALL
            .iter()
            .chain(Self::RANDOM_SIZE.iter())
            .chain(Self::COUPLED.iter())
            .copied()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL
                    .iter()
                    .chain(Self::RANDOM_SIZE.iter())
                    .chain(Self::COUPLED.iter())
                    .map(|k| k.name())
                    .collect();
                format!(
                    "unknown estimator '{s}'; valid estimators: {}",
                    names.join(", ")
                )
            })
    }

    /// Smallest number of samples per datapoint the estimator is defined for.
    pub fn min_samples(self) -> usize {
        match self {
            EstimatorKind::Jvi | EstimatorKind::JviDreg => 2,
            EstimatorKind::CoupledIsir | EstimatorKind::CoupledDisir => 2,
            _ => 1,
        }
    }
}

impl std::str::FromStr for EstimatorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl std::fmt::Display for EstimatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An estimator with its parameters (`alpha` is used only by [`EstimatorKind::Dreg`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimator {
    pub kind: EstimatorKind,
    pub alpha: f64,
    /// Settings of SUMO and MLMC.
    #[serde(default)]
    pub unbiased: UnbiasedOptions,
    /// Settings of the coupled chains.
    #[serde(default)]
    pub chains: ChainOptions,
}

/// The coupled chains' horizon (`crate::coupling::CouplingConfig` without the kernel and K):
/// the time average runs over iterations `burn_in..=horizon` (Jacob et al.'s k and m), the
/// chains are `lag` apart, and a datapoint whose chains have not met by `max_iters` stops
/// there (the estimate is then biased; training reports how many did).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainOptions {
    pub burn_in: usize,
    pub horizon: usize,
    pub lag: usize,
    pub max_iters: usize,
}

impl Default for ChainOptions {
    fn default() -> Self {
        let c = crate::coupling::CouplingConfig::new(crate::coupling::ChainKernel::Isir, 2);
        ChainOptions {
            burn_in: c.burn_in,
            horizon: c.horizon,
            lag: c.lag,
            max_iters: c.max_iters,
        }
    }
}

/// How SUMO and MLMC train the encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderChoice {
    /// IWAE-DReG: on all samples for SUMO, on the base groups for MLMC.
    #[default]
    Dreg,
    /// Unbiased RWS: b = 0, c = -a (Shi & Cornish 2021).
    Rws,
    /// Minimise E[estimate^2] (SUMO's variance objective, Luo et al. 2020).
    Variance,
}

/// Settings of the random-size estimators.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnbiasedOptions {
    /// MLMC level distribution: P(k) = p (1 - p)^k.
    pub mlmc_p: f64,
    /// MLMC base groups of 2^i0 samples.
    pub mlmc_i0: u32,
    /// Largest MLMC level; the estimate then targets L_{2^(cap+i0+1)}, not log p(x).
    pub mlmc_cap: Option<u32>,
    pub encoder: EncoderChoice,
}

impl Default for UnbiasedOptions {
    fn default() -> Self {
        UnbiasedOptions {
            mlmc_p: mlmc::DEFAULT_P,
            mlmc_i0: 2,
            mlmc_cap: None,
            encoder: EncoderChoice::Dreg,
        }
    }
}

/// One step's draw: how many samples per datapoint, and the coefficients as a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub n: usize,
    pub program: CoefficientProgram,
    /// The drawn level (MLMC) or tail length K (SUMO); None for fixed-size estimators.
    pub level: Option<u32>,
}

/// Per-sample coefficients for a batch, row-major `[batch, n]`; `objective` has one value
/// per datapoint (see [`Estimator::coefficients_row`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coefficients {
    pub batch: usize,
    pub n: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub objective: Vec<f64>,
}

/// One row of the zipped batch iterators: `(((log_w, a), b), c)`.
type RowArgs<'a> = (((&'a [f32], &'a mut [f32]), &'a mut [f32]), &'a mut [f32]);

/// Rows are computed in parallel only when the batch holds at least this many samples.
const PARALLEL_MIN_SAMPLES: usize = 4096;

thread_local! {
    /// Per-thread f64 scratch for the f32 batch path: `[l, a, b, c]`, each `n` long.
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl Estimator {
    pub fn new(kind: EstimatorKind, alpha: f64) -> Self {
        Estimator {
            kind,
            alpha,
            unbiased: UnbiasedOptions::default(),
            chains: ChainOptions::default(),
        }
    }

    /// The coupled chains with `k` particles per set (coupled kinds only), validated.
    pub fn coupling(&self, k: usize) -> Result<crate::coupling::CouplingConfig, String> {
        let kernel = self
            .kind
            .coupling_kernel()
            .ok_or_else(|| format!("{} is not a coupled-chain estimator", self.kind))?;
        let o = &self.chains;
        let cfg = crate::coupling::CouplingConfig {
            burn_in: o.burn_in,
            horizon: o.horizon,
            lag: o.lag,
            max_iters: o.max_iters,
            ..crate::coupling::CouplingConfig::new(kernel, k)
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The MLMC estimator these settings describe (MLMC kinds only).
    pub fn mlmc(&self) -> Result<mlmc::Mlmc, String> {
        let variant = match self.kind {
            EstimatorKind::MlmcSs => mlmc::MlmcVariant::SingleSample,
            EstimatorKind::MlmcRr => mlmc::MlmcVariant::RussianRoulette,
            other => return Err(format!("{other} is not an MLMC estimator")),
        };
        let o = &self.unbiased;
        mlmc::Mlmc::new(variant, o.mlmc_p, o.mlmc_i0, o.mlmc_cap)
    }

    /// This step's samples per datapoint and coefficient program: `k` for the fixed-size
    /// estimators; for SUMO (m = `k`) and MLMC a fresh draw from `rng`.
    pub fn draw(&self, k: usize, rng: &mut impl rand::Rng) -> Result<Draw, String> {
        let encoder = |dreg_size: usize| match self.unbiased.encoder {
            EncoderChoice::Dreg => EncoderRule::DregBlocks {
                size: dreg_size as u32,
            },
            EncoderChoice::Rws => EncoderRule::UnbiasedRws,
            EncoderChoice::Variance => EncoderRule::Variance,
        };
        match self.kind {
            EstimatorKind::Sumo => {
                let tail = sumo::SumoTail::DEFAULT;
                let big_k = tail.sample(rng);
                let n = k + big_k;
                let terms = tail
                    .prefix_coefficients(big_k)
                    .into_iter()
                    .enumerate()
                    .map(|(j, w)| SubsetTerm {
                        blocks: false,
                        size: (k + j) as u32,
                        weight: w,
                    })
                    .collect();
                Ok(Draw {
                    n,
                    program: CoefficientProgram::Subsets {
                        terms,
                        encoder: encoder(n),
                    },
                    level: Some(big_k as u32),
                })
            }
            EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
                let m = self.mlmc()?;
                let level = m.sample_level(rng);
                let terms = m
                    .level_coefficients(level)
                    .into_iter()
                    .map(|(s, w)| SubsetTerm {
                        blocks: true,
                        size: 1 << s,
                        weight: w,
                    })
                    .collect();
                Ok(Draw {
                    n: m.num_samples(level),
                    program: CoefficientProgram::Subsets {
                        terms,
                        encoder: encoder(m.base_group_size()),
                    },
                    level: Some(level),
                })
            }
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => Err(format!("{}: {COUPLED_MSG}", self.kind)),
            _ => Ok(Draw {
                n: k,
                program: self.program(),
                level: None,
            }),
        }
    }

    /// Expected samples per datapoint per step (the cost): `k`, m + E[K], or E[2^(level+i0+1)];
    /// NaN for the coupled chains, whose cost follows the meeting time (no closed form).
    pub fn expected_samples(&self, k: usize) -> f64 {
        match self.kind {
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => f64::NAN,
            EstimatorKind::Sumo => sumo::SumoTail::DEFAULT.expected_samples(k),
            EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
                self.mlmc().map_or(f64::NAN, |m| m.expected_samples())
            }
            _ => k as f64,
        }
    }

    /// One datapoint: `log_w` has `n` entries; writes `a`, `b`, `c` (each of length `n`)
    /// and returns the objective value (ELBO: mean of `l`; IWAE family:
    /// `L_n = logsumexp(l) - ln n`; JVI family: the jackknife estimate `J`).
    ///
    /// `log_w` may contain `-inf` (a sample with zero weight); `+inf` and NaN propagate.
    /// JVI needs `n >= 2` ([`EstimatorKind::min_samples`]); callers validate this.
    pub fn coefficients_row(
        &self,
        log_w: &[f64],
        a: &mut [f64],
        b: &mut [f64],
        c: &mut [f64],
    ) -> f64 {
        let n = log_w.len();
        assert!(
            a.len() == n && b.len() == n && c.len() == n,
            "coefficient slices must have the length of log_w"
        );
        debug_assert!(
            n >= self.kind.min_samples(),
            "estimator {} needs at least {} samples, got {n}",
            self.kind,
            self.kind.min_samples()
        );
        match self.kind {
            EstimatorKind::Elbo => importance::elbo(log_w, a, b, c),
            EstimatorKind::Iwae => importance::iwae(log_w, a, b, c),
            EstimatorKind::Stl => importance::stl(log_w, a, b, c),
            EstimatorKind::IwaeDreg => importance::iwae_dreg(log_w, a, b, c),
            EstimatorKind::Rws => importance::rws(log_w, a, b, c),
            EstimatorKind::RwsDreg => importance::rws_dreg(log_w, a, b, c),
            EstimatorKind::Dreg => importance::dreg(self.alpha, log_w, a, b, c),
            EstimatorKind::Jvi => jackknife::jvi(log_w, a, b, c),
            EstimatorKind::JviDreg => jackknife::jvi_dreg(log_w, a, b, c),
            EstimatorKind::Sumo | EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
                panic!("{RANDOM_SIZE_MSG}")
            }
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => panic!("{COUPLED_MSG}"),
        }
    }

    /// A batch `[batch, n]` of f32 log-weights; each row is computed in f64.
    pub fn coefficients(&self, log_w: &[f32], batch: usize, n: usize) -> Coefficients {
        let mut out = Coefficients::default();
        self.coefficients_into(log_w, batch, n, &mut out);
        out
    }

    /// Like [`Estimator::coefficients`] but writes into `out`, reusing its buffers (no
    /// allocation when the shape repeats).
    pub fn coefficients_into(&self, log_w: &[f32], batch: usize, n: usize, out: &mut Coefficients) {
        rows_into(
            |l, a, b, c| self.coefficients_row(l, a, b, c),
            log_w,
            batch,
            n,
            out,
        );
    }
}

/// Runs `row` (f64 coefficients of one datapoint) over a `[batch, n]` f32 batch into `out`,
/// reusing its buffers; rows run in parallel when the batch is large.
pub(crate) fn rows_into(
    row_fn: impl Fn(&[f64], &mut [f64], &mut [f64], &mut [f64]) -> f64 + Sync,
    log_w: &[f32],
    batch: usize,
    n: usize,
    out: &mut Coefficients,
) {
    assert!(n >= 1, "need at least one sample per datapoint");
    assert_eq!(log_w.len(), batch * n, "log_w must have batch * n entries");
    out.batch = batch;
    out.n = n;
    out.a.resize(batch * n, 0.0);
    out.b.resize(batch * n, 0.0);
    out.c.resize(batch * n, 0.0);
    out.objective.resize(batch, 0.0);
    if batch == 0 {
        return;
    }

    let row = |(((lw, a), b), c): RowArgs<'_>| -> f64 {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 4 * n {
                s.resize(4 * n, 0.0);
            }
            let (l64, rest) = s.split_at_mut(n);
            let (a64, rest) = rest.split_at_mut(n);
            let (b64, rest) = rest.split_at_mut(n);
            let c64 = &mut rest[..n];
            for (d, &x) in l64.iter_mut().zip(lw) {
                *d = f64::from(x);
            }
            let obj = row_fn(l64, a64, b64, c64);
            for (src, dst) in [(&*a64, a), (&*b64, b), (&*c64, c)] {
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = x as f32;
                }
            }
            obj
        })
    };

    let Coefficients {
        a, b, c, objective, ..
    } = out;
    if batch * n >= PARALLEL_MIN_SAMPLES && batch > 1 {
        log_w
            .par_chunks(n)
            .zip(a.par_chunks_mut(n))
            .zip(b.par_chunks_mut(n))
            .zip(c.par_chunks_mut(n))
            .zip(objective.par_iter_mut())
            .for_each(|(args, obj)| *obj = row(args));
    } else {
        log_w
            .chunks(n)
            .zip(a.chunks_mut(n))
            .zip(b.chunks_mut(n))
            .zip(c.chunks_mut(n))
            .zip(objective.iter_mut())
            .for_each(|(args, obj)| *obj = row(args));
    }
}

/// Maximum that propagates NaN (`f64::max` would drop it).
pub(crate) fn max_nan(l: &[f64]) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for &x in l {
        if x.is_nan() {
            return x;
        }
        if x > m {
            m = x;
        }
    }
    m
}

/// Stable `log sum_n exp(l_n)`; `-inf` when every entry is `-inf` (or `l` is empty).
pub fn logsumexp(l: &[f64]) -> f64 {
    let m = max_nan(l);
    if !m.is_finite() {
        // -inf: all entries -inf (or empty); +inf: the sum is +inf; NaN propagates.
        return m;
    }
    let s: f64 = l.iter().map(|&x| (x - m).exp()).sum();
    m + s.ln()
}

/// Stable softmax of `l` into `w`; returns `logsumexp(l)`.
///
/// Degenerate inputs: all `-inf` gives uniform weights (the limit of equal log-weights);
/// `+inf` entries share the mass equally; NaN propagates to every weight.
pub(crate) fn softmax_lse(l: &[f64], w: &mut [f64]) -> f64 {
    assert_eq!(l.len(), w.len(), "softmax output length must match input");
    let n = l.len();
    let m = max_nan(l);
    if m.is_nan() {
        w.fill(f64::NAN);
        return m;
    }
    if m == f64::NEG_INFINITY {
        w.fill(1.0 / n as f64);
        return m;
    }
    if m == f64::INFINITY {
        let k = l.iter().filter(|&&x| x == m).count() as f64;
        for (wi, &x) in w.iter_mut().zip(l) {
            *wi = if x == m { 1.0 / k } else { 0.0 };
        }
        return m;
    }
    let mut s = 0.0;
    for (wi, &x) in w.iter_mut().zip(l) {
        let e = (x - m).exp();
        *wi = e;
        s += e;
    }
    // s >= 1 (the maximum contributes exp(0) = 1), so the division is safe.
    let inv = 1.0 / s;
    for wi in w.iter_mut() {
        *wi *= inv;
    }
    m + s.ln()
}

/// Stable softmax of `l` into `w` (same length). See [`softmax_lse`] for degenerate inputs.
pub fn softmax_into(l: &[f64], w: &mut [f64]) {
    softmax_lse(l, w);
}

/// The importance weighted bound `L_N = logsumexp(l) - ln N` (Burda et al. 2016).
pub fn iwae_bound(l: &[f64]) -> f64 {
    logsumexp(l) - (l.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn names_round_trip_and_parse_errors() {
        for k in EstimatorKind::ALL {
            assert_eq!(EstimatorKind::parse(k.name()), Ok(k));
            assert_eq!(k.name().parse::<EstimatorKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<EstimatorKind>(&json).unwrap(), k);
        }
        assert_eq!(
            EstimatorKind::parse("IWAE_DReG"),
            Ok(EstimatorKind::IwaeDreg)
        );
        let err = EstimatorKind::parse("sumo?").unwrap_err();
        assert!(err.contains("sumo?"), "{err}");
        for k in EstimatorKind::ALL {
            assert!(err.contains(k.name()), "{err}");
        }
        let names: std::collections::HashSet<_> =
            EstimatorKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), EstimatorKind::ALL.len());
    }

    #[test]
    fn min_samples() {
        for k in EstimatorKind::ALL {
            let want = if matches!(k, EstimatorKind::Jvi | EstimatorKind::JviDreg) {
                2
            } else {
                1
            };
            assert_eq!(k.min_samples(), want, "{k}");
        }
    }

    #[test]
    fn softmax_and_logsumexp_extreme_inputs() {
        let cases: Vec<Vec<f64>> = vec![
            vec![-1e4, 0.0, 3.0, -1e300],
            vec![-1e4, 0.0, 3.0, f64::NEG_INFINITY],
            vec![1e4, 1e4 - 1.0, -1e4],
            vec![0.0, -800.0, -1600.0],
            vec![700.0, 710.0, 720.0],
            vec![-745.0, -746.0],
            vec![f64::NEG_INFINITY; 3],
            vec![5.0],
        ];
        for l in &cases {
            let mut w = vec![0.0; l.len()];
            softmax_into(l, &mut w);
            let s: f64 = w.iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{l:?}: sum {s}");
            assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{l:?}: {w:?}");
            let lse = logsumexp(l);
            let mut w2 = vec![0.0; l.len()];
            let lse2 = softmax_lse(l, &mut w2);
            assert_eq!(w, w2);
            assert!(lse == lse2, "{lse} vs {lse2}");
        }
        // Known values.
        assert!((logsumexp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((logsumexp(&[-1000.0, -1000.0]) - (-1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY; 4]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
        assert!(logsumexp(&[0.0, f64::NAN]).is_nan());
        assert!(logsumexp(&[f64::NAN, 0.0]).is_nan());
        // Uniform for all -inf; dominant entry gets everything.
        let mut w = [0.0; 3];
        softmax_into(&[f64::NEG_INFINITY; 3], &mut w);
        assert_eq!(w, [1.0 / 3.0; 3]);
        softmax_into(&[0.0, -800.0, -1600.0], &mut w);
        assert_eq!(w, [1.0, 0.0, 0.0]);
        assert!((iwae_bound(&[1.0, 1.0, 1.0, 1.0]) - 1.0).abs() < 1e-15);
    }

    fn random_batch(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| scale * (rng.random::<f32>() - 0.5) - 90.0)
            .collect()
    }

    #[test]
    fn batch_matches_rows_and_reuses_buffers() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Small (serial) and large (parallel) shapes.
        for &(batch, n) in &[(3usize, 5usize), (64, 100), (1, 7)] {
            let lw = random_batch(&mut rng, batch * n, 30.0);
            for kind in EstimatorKind::ALL {
                let est = Estimator::new(kind, 0.3);
                let co = est.coefficients(&lw, batch, n);
                assert_eq!((co.batch, co.n), (batch, n));
                assert_eq!(co.a.len(), batch * n);
                assert_eq!(co.objective.len(), batch);
                let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                for r in 0..batch {
                    let l: Vec<f64> = lw[r * n..(r + 1) * n].iter().map(|&x| x as f64).collect();
                    let obj = est.coefficients_row(&l, &mut a, &mut b, &mut c);
                    assert_eq!(co.objective[r], obj, "{kind} row {r}");
                    for j in 0..n {
                        assert_eq!(co.a[r * n + j], a[j] as f32, "{kind}");
                        assert_eq!(co.b[r * n + j], b[j] as f32, "{kind}");
                        assert_eq!(co.c[r * n + j], c[j] as f32, "{kind}");
                    }
                }
                // Reuse: same shape -> same buffers, same values.
                let mut out = co.clone();
                let ptrs = (out.a.as_ptr(), out.b.as_ptr(), out.c.as_ptr());
                let obj_ptr = out.objective.as_ptr();
                out.a.fill(f32::NAN);
                est.coefficients_into(&lw, batch, n, &mut out);
                assert_eq!(ptrs, (out.a.as_ptr(), out.b.as_ptr(), out.c.as_ptr()));
                assert_eq!(obj_ptr, out.objective.as_ptr());
                assert_eq!(out, co);
            }
        }
        // Shape change resizes.
        let est = Estimator::new(EstimatorKind::Iwae, 0.0);
        let mut out = est.coefficients(&[0.0; 6], 2, 3);
        est.coefficients_into(&[0.0; 8], 2, 4, &mut out);
        assert_eq!(
            (out.batch, out.n, out.a.len(), out.objective.len()),
            (2, 4, 8, 2)
        );
        assert!(out.a.iter().all(|&x| x == 0.25));
        let empty = est.coefficients(&[], 0, 4);
        assert!(empty.a.is_empty() && empty.objective.is_empty());
    }

    #[test]
    fn every_estimator_is_finite_for_huge_spread() {
        let cases: Vec<Vec<f64>> = vec![
            vec![0.0, -800.0, -1600.0],
            vec![-1600.0, -800.0, 0.0],
            vec![-1e4, 0.0, 3.0, -1e300],
            vec![-1e4, 0.0, 3.0, f64::NEG_INFINITY],
            vec![0.0, -800.0],
            vec![-3000.0, -3000.0, -3000.0, 0.0, -3000.0],
            vec![1e5, -1e5, 1e5 - 1e-9, 0.0],
        ];
        for l in &cases {
            let n = l.len();
            for kind in EstimatorKind::ALL {
                let est = Estimator::new(kind, 0.4);
                let (mut a, mut b, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let obj = est.coefficients_row(l, &mut a, &mut b, &mut c);
                let all = a.iter().chain(&b).chain(&c);
                assert!(
                    all.clone().all(|x| x.is_finite()),
                    "{kind} {l:?}: a={a:?} b={b:?} c={c:?}"
                );
                if kind == EstimatorKind::Elbo && l.contains(&f64::NEG_INFINITY) {
                    assert_eq!(obj, f64::NEG_INFINITY);
                } else {
                    assert!(obj.is_finite(), "{kind} {l:?}: objective {obj}");
                }
                // Through the f32 batch path too.
                let l32: Vec<f32> = l.iter().map(|&x| x as f32).collect();
                let co = est.coefficients(&l32, 1, n);
                assert!(co.a.iter().chain(&co.b).chain(&co.c).all(|x| x.is_finite()));
            }
        }
    }
}
