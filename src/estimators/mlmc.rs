//! Multilevel Monte Carlo (MLMC) unbiased estimators of `log p(x)` and of its gradient
//! (Shi & Cornish, "On multilevel Monte Carlo unbiased gradient estimation for deep latent
//! variable models", AISTATS 2021), as per-sample coefficients, as docs/design.md §1 states
//! them.
//!
//! # Definitions as implemented
//!
//! `L_S = logsumexp(l_S) - ln |S|` is the IWAE bound (Burda et al. 2016) of a group `S` of
//! samples, and the antithetic difference of a group of even size is
//!
//! ```text
//! Delta(S) = L_S - (L_{first half of S} + L_{second half of S}) / 2.
//! ```
//!
//! Groups are contiguous, aligned blocks of the sample vector (all samples are i.i.d., so any
//! fixed partition is valid; contiguous blocks match chunked GPU processing). The level `k`
//! is `Geometric(p)` on `{0, 1, ...}`, `P(k) = p (1-p)^k`, `P(k >= j) = (1-p)^j`, one draw per
//! minibatch ([`GeometricLevel`]), default `p = 0.6`; `I0` sets the base group size `2^I0`.
//!
//! - Single sample (SS), `N = 2^(k+I0+1)`:
//!   `SS = mean over the 2^(k+1) groups of size 2^I0 of L  +  Delta(all N) / P(k)`.
//! - Russian roulette / random truncation (RR), `N = 2^(K+I0+1)`:
//!   `RR = mean over the 2^K groups of size 2^(I0+1) of L
//!         + sum_{j=1}^{K} [mean of Delta over the 2^(K-j) groups of size 2^(I0+j+1)] / P(K >= j)`.
//!
//! Unbiasedness: write `E_M = E[L_M]` for the expected IWAE bound with `M` samples
//! (`E_M -> log p(x)`), and note `E[Delta(S)] = E_{|S|} - E_{|S|/2}`. For SS,
//! `E[SS | k] = E_{2^I0} + (E_{2^(k+I0+1)} - E_{2^(k+I0)}) / P(k)`, and summing over
//! `P(k)` telescopes to `lim_M E_M = log p(x)`. For RR,
//! `E[RR | K] = E_{2^(I0+1)} + sum_{j<=K} (E_{2^(I0+j+1)} - E_{2^(I0+j)}) / P(K >= j)`, and
//! `E_K[1{K >= j}] / P(K >= j) = 1` telescopes the same way.
//!
//! # Coefficients
//!
//! Both estimators are `sum over dyadic levels s of coef_s * sum over the blocks of size 2^s
//! of L_block` (see [`dyadic_combination`]); since `d L_S / d l_n = softmax(l_S)_n` for `n` in
//! `S`, `a_n = sum_s coef_s softmax(l_{block_s(n)})_n`. With `P = P(k)` and `G = 2^(k+1)`:
//!
//! ```text
//! SS: coef_{I0} = 1/G,  coef_{k+I0} -= 1/(2P),  coef_{k+I0+1} += 1/P     (k = 0: the first two add)
//! RR: coef_{I0+1} = 2^-K;  for j = 1..K, with Q_j = 2^(K-j) P(K >= j):
//!     coef_{I0+j+1} += 1/Q_j,  coef_{I0+j} -= 1/(2 Q_j)
//! ```
//!
//! # Cost, variance and the cap
//!
//! Both use `E[N] = sum_k P(k) 2^(k+I0+1) = 2^(I0+1) p / (2p - 1)` samples per datapoint,
//! finite iff `p > 1/2`. If `E[Delta_k^2] = O(2^(-beta k))` (`beta ~ 2` for antithetic
//! differences of IWAE bounds), the variance `~ sum_k 2^(-beta k) / P(k)` is finite iff
//! `p < 1 - 2^(-beta)`; [`p_range_warning`] reports either failure. With a cap `k <= cap`
//! ([`GeometricLevel::new`] clamps the draw: `P(k = cap) = (1-p)^cap`), the telescoping sum
//! stops at level `cap` and the estimators are unbiased for `E[L_M]`, `M = 2^(cap+I0+1)`,
//! instead of `log p(x)` ([`Mlmc::target`], [`Mlmc::capped_target_description`]).
//!
//! # Encoder
//!
//! Two choices for `(b, c)`: IWAE-DReG at the base group size
//! ([`encoder_iwae_dreg_groups`] with [`Mlmc::base_group_size`]) or "unbiased RWS"
//! (`b = 0`, `c = -a` of the MLMC combiner, [`encoder_unbiased_rws`]).

use super::{logsumexp, softmax_lse};
use crate::error::ConfigError;
use rand::Rng;

/// The default level probability (docs/design.md §1).
pub const DEFAULT_P: f64 = 0.6;

/// The assumed decay rate of `E[Delta_k^2] = O(2^(-beta k))` for antithetic differences
/// (docs/design.md §1).
pub const DEFAULT_BETA: f64 = 2.0;

/// Which MLMC estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlmcVariant {
    /// Single-sample MLMC (one level difference, weighted by `1/P(k)`).
    SingleSample,
    /// Random truncation / Russian roulette (all differences up to `K`, by `1/P(K >= j)`).
    RussianRoulette,
}

/// The law of the level: `Geometric(p)` on `{0, 1, ...}`, optionally clamped at `cap`
/// (`k = min(k', cap)` with `k' ~ Geometric(p)`), so that
///
/// ```text
/// P(k) = p (1-p)^k for k < cap,   P(cap) = (1-p)^cap,   P(k >= j) = (1-p)^j for j <= cap.
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeometricLevel {
    p: f64,
    cap: Option<u32>,
}

impl GeometricLevel {
    /// `p` must lie in `(0, 1)`.
    pub fn new(p: f64, cap: Option<u32>) -> Result<Self, ConfigError> {
        if !(p > 0.0 && p < 1.0) {
            return Err(ConfigError::range(
                "--mlmc-p",
                p,
                "the MLMC level probability must lie in (0, 1)",
            ));
        }
        Ok(GeometricLevel { p, cap })
    }

    pub fn p(&self) -> f64 {
        self.p
    }

    pub fn cap(&self) -> Option<u32> {
        self.cap
    }

    /// `P(k)`.
    pub fn pmf(&self, k: u32) -> f64 {
        match self.cap {
            Some(c) if k > c => 0.0,
            Some(c) if k == c => (1.0 - self.p).powi(k as i32),
            _ => self.p * (1.0 - self.p).powi(k as i32),
        }
    }

    /// `P(k >= j)`.
    pub fn survival(&self, j: u32) -> f64 {
        match self.cap {
            Some(c) if j > c => 0.0,
            _ => (1.0 - self.p).powi(j as i32),
        }
    }

    /// Draws the level by inversion, `k = floor(ln U / ln(1 - p))` with `U` uniform on
    /// `(0, 1]` (so `P(k >= j) = P(U <= (1-p)^j)`), clamped at the cap.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        let u = 1.0 - rng.random::<f64>();
        self.inverse(u)
    }

    /// The inversion map of [`GeometricLevel::sample`] for `u` in `(0, 1]`.
    pub fn inverse(&self, u: f64) -> u32 {
        assert!(u > 0.0 && u <= 1.0, "u must lie in (0, 1], got {u}");
        let t = (u.ln() / (1.0 - self.p).ln()).floor().max(0.0);
        let mut k = if t >= u32::MAX as f64 {
            u32::MAX
        } else {
            t as u32
        };
        // Guard the rounding near u == (1-p)^j: k = #{j >= 1 : (1-p)^j >= u}.
        let q = 1.0 - self.p;
        while k > 0 && q.powf(k as f64) < u {
            k -= 1;
        }
        while k < u32::MAX && q.powf(k as f64 + 1.0) >= u {
            k += 1;
        }
        match self.cap {
            Some(c) => k.min(c),
            None => k,
        }
    }

    /// `E[2^k]` (infinite when uncapped and `p <= 1/2`).
    pub fn expected_pow2(&self) -> f64 {
        match self.cap {
            None => {
                if self.p > 0.5 {
                    self.p / (2.0 * self.p - 1.0)
                } else {
                    f64::INFINITY
                }
            }
            Some(c) => (0..=c).map(|k| self.pmf(k) * 2f64.powi(k as i32)).sum(),
        }
    }
}

/// What an [`Mlmc`] estimator is unbiased for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlmcTarget {
    /// `log p(x)` (uncapped level).
    LogMarginal,
    /// The expected IWAE bound `E[L_M]` with `M = samples` (capped level).
    IwaeBound { samples: usize },
}

/// An MLMC estimator: variant, level law and base size `I0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mlmc {
    pub variant: MlmcVariant,
    pub level: GeometricLevel,
    pub i0: u32,
}

impl Mlmc {
    /// Validated constructor; `p` in `(0, 1)` and `2^(cap+I0+1)` must fit in `usize`.
    pub fn new(
        variant: MlmcVariant,
        p: f64,
        i0: u32,
        cap: Option<u32>,
    ) -> Result<Self, ConfigError> {
        let level = GeometricLevel::new(p, cap)?;
        if i0 as u64 + 1 >= usize::BITS as u64 {
            return Err(ConfigError::range(
                "--mlmc-i0",
                i0,
                format!("base groups of 2^I0 samples need I0 + 1 < {}", usize::BITS),
            ));
        }
        if let Some(c) = cap {
            if (c as u64 + i0 as u64 + 1) >= usize::BITS as u64 {
                return Err(ConfigError::range(
                    "--mlmc-cap",
                    c,
                    format!(
                        "with --mlmc-i0 {i0} the top level needs 2^(cap + I0 + 1) samples, so cap + I0 + 1 < {}",
                        usize::BITS
                    ),
                ));
            }
        }
        Ok(Mlmc { variant, level, i0 })
    }

    /// Draws the level (one per minibatch).
    pub fn sample_level(&self, rng: &mut impl Rng) -> u32 {
        self.level.sample(rng)
    }

    /// Samples per datapoint at level `k`: `2^(k+I0+1)` for both variants.
    ///
    /// # Panics
    /// If the count does not fit in `usize`.
    pub fn num_samples(&self, k: u32) -> usize {
        let e = k as u64 + self.i0 as u64 + 1;
        assert!(
            e < usize::BITS as u64,
            "level {k} needs 2^{e} samples per datapoint"
        );
        1usize << e
    }

    /// The group size of the base term: `2^I0` (SS) or `2^(I0+1)` (RR).
    pub fn base_group_size(&self) -> usize {
        match self.variant {
            MlmcVariant::SingleSample => 1usize << self.i0,
            MlmcVariant::RussianRoulette => 1usize << (self.i0 + 1),
        }
    }

    /// Expected samples per datapoint, `2^(I0+1) E[2^k]` (`2^(I0+1) p / (2p - 1)` uncapped).
    pub fn expected_samples(&self) -> f64 {
        2f64.powi(self.i0 as i32 + 1) * self.level.expected_pow2()
    }

    /// What the estimator is unbiased for: `log p(x)`, or `E[L_M]`, `M = 2^(cap+I0+1)`.
    pub fn target(&self) -> MlmcTarget {
        match self.level.cap() {
            None => MlmcTarget::LogMarginal,
            Some(c) => MlmcTarget::IwaeBound {
                samples: self.num_samples(c),
            },
        }
    }

    /// A sentence for the run log stating the estimator's target (capped or not).
    pub fn capped_target_description(&self) -> String {
        match (self.level.cap(), self.target()) {
            (Some(c), MlmcTarget::IwaeBound { samples }) => format!(
                "MLMC level capped at {c}: the estimator is unbiased for the IWAE bound \
                 L_{samples} = E[log mean of {samples} importance weights] (M = 2^(cap+I0+1) \
                 = 2^{}), NOT for log p(x)",
                c + self.i0 + 1
            ),
            _ => format!(
                "MLMC level uncapped (k ~ Geometric({})): the estimator is unbiased for log p(x)",
                self.level.p()
            ),
        }
    }

    /// Warnings for the run log: the target when capped; the p-range condition
    /// ([`p_range_warning`]) when uncapped.
    pub fn warnings(&self, beta: f64) -> Vec<String> {
        match self.level.cap() {
            Some(_) => vec![self.capped_target_description()],
            None => p_range_warning(self.level.p(), beta).into_iter().collect(),
        }
    }

    /// The dyadic-level coefficients `(s, coef_s)` of the estimator at level `k` (see the
    /// module docs); block size `2^s`.
    pub fn level_coefficients(&self, k: u32) -> Vec<(u32, f64)> {
        let i0 = self.i0;
        let mut out: Vec<(u32, f64)> = Vec::new();
        let mut add = |s: u32, c: f64| match out.iter_mut().find(|(t, _)| *t == s) {
            Some((_, v)) => *v += c,
            None => out.push((s, c)),
        };
        match self.variant {
            MlmcVariant::SingleSample => {
                let pk = self.level.pmf(k);
                assert!(pk > 0.0, "level {k} has probability 0");
                add(i0, 1.0 / 2f64.powi(k as i32 + 1));
                add(k + i0, -0.5 / pk);
                add(k + i0 + 1, 1.0 / pk);
            }
            MlmcVariant::RussianRoulette => {
                assert!(self.level.pmf(k) > 0.0, "level {k} has probability 0");
                add(i0 + 1, 1.0 / 2f64.powi(k as i32));
                for j in 1..=k {
                    let q = 2f64.powi((k - j) as i32) * self.level.survival(j);
                    add(i0 + j + 1, 1.0 / q);
                    add(i0 + j, -0.5 / q);
                }
            }
        }
        out
    }

    /// The estimator's value at level `k` (`l.len() == num_samples(k)`), computed as
    /// base means plus weighted antithetic differences (not through the coefficients, to
    /// avoid cancellation between large weights).
    pub fn value(&self, l: &[f64], k: u32) -> f64 {
        let n = self.num_samples(k);
        assert_eq!(
            l.len(),
            n,
            "MLMC level {k} with I0 = {} needs {n} log-weights",
            self.i0
        );
        match self.variant {
            MlmcVariant::SingleSample => {
                let base = mean_bound(l, 1usize << self.i0);
                base + antithetic_delta(l) / self.level.pmf(k)
            }
            MlmcVariant::RussianRoulette => {
                let mut v = mean_bound(l, 1usize << (self.i0 + 1));
                for j in 1..=k {
                    let size = 1usize << (self.i0 + j + 1);
                    let mean_delta =
                        l.chunks(size).map(antithetic_delta).sum::<f64>() / (n / size) as f64;
                    v += mean_delta / self.level.survival(j);
                }
                v
            }
        }
    }

    /// `(value, a)` at level `k`, `a_n = d value / d l_n`.
    pub fn coefficients(&self, l: &[f64], k: u32) -> (f64, Vec<f64>) {
        let v = self.value(l, k);
        let (_, a) = dyadic_combination(l, &self.level_coefficients(k));
        (v, a)
    }
}

/// `Delta(S) = L_S - (L_first half + L_second half) / 2` for `l_S = l` of even length.
pub fn antithetic_delta(l: &[f64]) -> f64 {
    let n = l.len();
    assert!(
        n >= 2 && n.is_multiple_of(2),
        "antithetic difference needs an even group"
    );
    let (a, b) = l.split_at(n / 2);
    // |S| = 2 |half|, so the ln-count terms leave -ln 2.
    logsumexp(l) - 0.5 * (logsumexp(a) + logsumexp(b)) - std::f64::consts::LN_2
}

/// Mean of the IWAE bound over the contiguous groups of `size` samples.
pub fn mean_bound(l: &[f64], size: usize) -> f64 {
    assert!(
        size >= 1 && l.len().is_multiple_of(size),
        "groups must tile the samples"
    );
    let g = l.len() / size;
    l.chunks(size).map(super::iwae_bound).sum::<f64>() / g as f64
}

/// `sum_s coef_s sum_{blocks B of size 2^s} L_B` and its gradient `a` in `l`
/// (`a_n = sum_s coef_s softmax(l_B(n))_n`). Every block size must divide `l.len()`.
pub fn dyadic_combination(l: &[f64], levels: &[(u32, f64)]) -> (f64, Vec<f64>) {
    let n = l.len();
    let mut a = vec![0.0; n];
    let mut w = vec![0.0; n];
    let mut value = 0.0;
    for &(s, coef) in levels {
        let size = 1usize << s;
        assert!(
            n.is_multiple_of(size),
            "block size 2^{s} does not divide N = {n}"
        );
        let ln_size = (size as f64).ln();
        for (lb, wb) in l.chunks(size).zip(w.chunks_mut(size)) {
            value += coef * (softmax_lse(lb, wb) - ln_size);
        }
        for (ai, wi) in a.iter_mut().zip(&w) {
            *ai += coef * wi;
        }
    }
    (value, a)
}

/// Returns a message when `p` is outside `(1/2, 1 - 2^(-beta))`, giving the reason: finite
/// expected cost needs `p > 1/2` (`E[2^k] = sum_k p (2(1-p))^k`), finite variance needs
/// `p < 1 - 2^(-beta)` when `E[Delta_k^2] = O(2^(-beta k))` (the variance is
/// `~ sum_k 2^(-beta k) / (p (1-p)^k)`). `None` inside the range.
pub fn p_range_warning(p: f64, beta: f64) -> Option<String> {
    if !(p > 0.0 && p < 1.0) {
        return Some(format!("MLMC level probability p = {p} is not in (0, 1)"));
    }
    let hi = 1.0 - 2f64.powf(-beta);
    let mut msgs = Vec::new();
    if p <= 0.5 {
        msgs.push(format!(
            "MLMC p = {p} <= 1/2: infinite expected cost (E[2^k] = sum_k p (2(1-p))^k diverges; \
             finite expected cost needs p > 1/2)"
        ));
    }
    if p >= hi {
        msgs.push(format!(
            "MLMC p = {p} >= 1 - 2^(-beta) = {hi} (beta = {beta}): infinite variance \
             (sum_k E[Delta_k^2] / P(k) ~ sum_k (2^(-beta) / (1-p))^k diverges; finite \
             variance needs p < 1 - 2^(-beta))"
        ));
    }
    if msgs.is_empty() {
        None
    } else {
        Some(msgs.join("; "))
    }
}

/// Encoder coefficients "IWAE-DReG at the base size": the mean over the contiguous groups
/// of `group_size` samples of each group's IWAE-DReG coefficients, `b_n = w_n^2 / G`
/// (`w` the softmax within `n`'s group, `G` the number of groups), `c = 0`.
pub fn encoder_iwae_dreg_groups(l: &[f64], group_size: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(
        group_size >= 1 && l.len().is_multiple_of(group_size),
        "groups must tile the samples"
    );
    let g = (l.len() / group_size) as f64;
    let mut b = vec![0.0; l.len()];
    for (lb, bb) in l.chunks(group_size).zip(b.chunks_mut(group_size)) {
        softmax_lse(lb, bb);
        for x in bb.iter_mut() {
            *x = *x * *x / g;
        }
    }
    (b, vec![0.0; l.len()])
}

/// Encoder coefficients "unbiased RWS" (Shi & Cornish 2021): the wake-phi update with the
/// MLMC combiner's weights, `b = 0`, `c = -a` (RWS's `c = -w` with `w` replaced by `a`).
pub fn encoder_unbiased_rws(a: &[f64]) -> (Vec<f64>, Vec<f64>) {
    (vec![0.0; a.len()], a.iter().map(|x| -x).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::iwae_bound;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn random_l(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| scale * (rng.random::<f64>() - 0.5) - 90.0)
            .collect()
    }

    #[test]
    fn level_law() {
        let g = GeometricLevel::new(0.6, None).unwrap();
        let total: f64 = (0..200).map(|k| g.pmf(k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        for j in 0..20 {
            let s: f64 = (j..200).map(|k| g.pmf(k)).sum();
            assert!((g.survival(j) - s).abs() < 1e-12);
        }
        assert!((g.expected_pow2() - 3.0).abs() < 1e-12);
        let c = GeometricLevel::new(0.6, Some(3)).unwrap();
        let total: f64 = (0..10).map(|k| c.pmf(k)).sum();
        assert!((total - 1.0).abs() < 1e-15);
        assert_eq!(c.pmf(4), 0.0);
        assert_eq!(c.survival(4), 0.0);
        for j in 0..=3 {
            let s: f64 = (j..10).map(|k| c.pmf(k)).sum();
            assert!((c.survival(j) - s).abs() < 1e-15);
        }
        let want: f64 = (0..=3).map(|k| c.pmf(k) * 2f64.powi(k as i32)).sum();
        assert_eq!(c.expected_pow2(), want);
        assert!(GeometricLevel::new(0.4, None)
            .unwrap()
            .expected_pow2()
            .is_infinite());
        assert!(GeometricLevel::new(1.0, None).is_err());
        assert!(GeometricLevel::new(0.0, None).is_err());
        assert!(GeometricLevel::new(f64::NAN, None).is_err());
        // Inversion at the boundaries and sampler frequencies (6-sigma binomial bounds).
        assert_eq!(g.inverse(1.0), 0);
        assert_eq!(g.inverse(0.4), 1);
        assert_eq!(g.inverse(0.4 - 1e-12), 1);
        assert_eq!(g.inverse(0.4 + 1e-12), 0);
        assert_eq!(c.inverse(1e-300), 3);
        for i in 1..=10_000 {
            let u = i as f64 / 10_000.0;
            let brute = (1..200).take_while(|&j| 0.4f64.powi(j) >= u).count() as u32;
            assert_eq!(g.inverse(u), brute, "u = {u}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 200_000;
        let mut counts = [0usize; 12];
        for _ in 0..n {
            counts[(g.sample(&mut rng) as usize).min(11)] += 1;
        }
        for (k, &cnt) in counts.iter().enumerate().take(11) {
            let p = g.pmf(k as u32);
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((cnt as f64 / n as f64 - p).abs() < 6.0 * se, "k={k}");
        }
    }

    #[test]
    fn ss_and_rr_by_hand() {
        // SS, I0 = 0, k = 0: N = 2, base = mean(l), plus (L_2 - mean(l)) / p.
        let m = Mlmc::new(MlmcVariant::SingleSample, 0.6, 0, None).unwrap();
        let l = [-1.0, 0.5];
        let want = (l[0] + l[1]) / 2.0 + (iwae_bound(&l) - (l[0] + l[1]) / 2.0) / 0.6;
        assert!((m.value(&l, 0) - want).abs() < 1e-14);
        // RR, I0 = 0, K = 0: N = 2, just L_2.
        let r = Mlmc::new(MlmcVariant::RussianRoulette, 0.6, 0, None).unwrap();
        assert!((r.value(&l, 0) - iwae_bound(&l)).abs() < 1e-14);
        // RR, I0 = 0, K = 2: N = 8.
        let l8 = [0.1, -0.3, 2.0, -1.0, 0.0, 0.7, -2.0, 1.1];
        let q = 0.4;
        let mean_l2: f64 = l8.chunks(2).map(iwae_bound).sum::<f64>() / 4.0;
        let d4: f64 = l8.chunks(4).map(antithetic_delta).sum::<f64>() / 2.0;
        let d8 = antithetic_delta(&l8);
        let want = mean_l2 + d4 / q + d8 / (q * q);
        assert!((r.value(&l8, 2) - want).abs() < 1e-13);
        // SS, I0 = 1, k = 1: N = 8, base = mean over 4 groups of 2, plus Delta(8) / P(1).
        let s1 = Mlmc::new(MlmcVariant::SingleSample, 0.6, 1, None).unwrap();
        let want = mean_l2 + d8 / (0.6 * 0.4);
        assert!((s1.value(&l8, 1) - want).abs() < 1e-13);
        assert_eq!(s1.num_samples(1), 8);
        assert_eq!(s1.base_group_size(), 2);
        assert_eq!(r.base_group_size(), 2);
        // Delta on equal log-weights is 0.
        assert!(antithetic_delta(&[3.0; 8]).abs() < 1e-15);
    }

    #[test]
    fn coefficients_are_finite_differences_of_the_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for variant in [MlmcVariant::SingleSample, MlmcVariant::RussianRoulette] {
            for &(i0, cap) in &[(0u32, None), (1, None), (2, Some(2u32)), (0, Some(0))] {
                let m = Mlmc::new(variant, 0.6, i0, cap).unwrap();
                for k in 0..=cap.unwrap_or(3) {
                    let n = m.num_samples(k);
                    let l = random_l(&mut rng, n, 6.0);
                    let (v, a) = m.coefficients(&l, k);
                    // The dyadic form gives the same value.
                    let (v2, _) = dyadic_combination(&l, &m.level_coefficients(k));
                    assert!((v - v2).abs() < 1e-9, "{variant:?} k={k}: {v} vs {v2}");
                    let h = 1e-5;
                    let mut lp = l.clone();
                    for i in 0..n {
                        lp[i] = l[i] + h;
                        let fp = m.value(&lp, k);
                        lp[i] = l[i] - h;
                        let fm = m.value(&lp, k);
                        lp[i] = l[i];
                        let fd = (fp - fm) / (2.0 * h);
                        let scale = 1.0 / m.level.pmf(k);
                        assert!(
                            (a[i] - fd).abs() < 1e-7 * (1.0 + scale),
                            "{variant:?} i0={i0} k={k} i={i}: a={} fd={fd}",
                            a[i]
                        );
                    }
                    // Each softmax sums to 1: sum_n a_n = the base term's total weight = 1
                    // (each antithetic difference's weights sum to 0).
                    let sum: f64 = a.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-10, "{variant:?} k={k}: {sum}");
                }
            }
        }
    }

    #[test]
    fn targets_costs_and_warnings() {
        let m = Mlmc::new(MlmcVariant::SingleSample, 0.6, 2, None).unwrap();
        assert_eq!(m.target(), MlmcTarget::LogMarginal);
        assert!((m.expected_samples() - 8.0 * 3.0).abs() < 1e-12);
        assert!(m.warnings(DEFAULT_BETA).is_empty());
        assert!(m.capped_target_description().contains("log p(x)"));
        let c = Mlmc::new(MlmcVariant::RussianRoulette, 0.6, 1, Some(3)).unwrap();
        assert_eq!(c.target(), MlmcTarget::IwaeBound { samples: 32 });
        let d = c.capped_target_description();
        assert!(d.contains("L_32") && d.contains("NOT for log p(x)"), "{d}");
        assert_eq!(c.warnings(DEFAULT_BETA), vec![d]);
        assert!(Mlmc::new(MlmcVariant::SingleSample, 0.6, 0, Some(200)).is_err());
        // Expected cost by simulation agrees with the closed form (6 SE).
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let r = 400_000;
        let xs: Vec<f64> = (0..r)
            .map(|_| c.num_samples(c.sample_level(&mut rng)) as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / r as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (r - 1) as f64;
        assert!((mean - c.expected_samples()).abs() < 6.0 * (var / r as f64).sqrt());
    }

    #[test]
    fn p_range() {
        assert_eq!(p_range_warning(0.6, 2.0), None);
        assert_eq!(p_range_warning(0.74, 2.0), None);
        let w = p_range_warning(0.5, 2.0).unwrap();
        assert!(
            w.contains("infinite expected cost") && w.contains("p > 1/2"),
            "{w}"
        );
        let w = p_range_warning(0.8, 2.0).unwrap();
        assert!(w.contains("infinite variance") && w.contains("0.75"), "{w}");
        let w = p_range_warning(0.75, 2.0).unwrap();
        assert!(w.contains("infinite variance"), "{w}");
        // beta <= 1: no p works; both reasons are given for p = 0.5.
        let w = p_range_warning(0.5, 1.0).unwrap();
        assert!(w.contains("cost") && w.contains("variance"), "{w}");
        assert!(p_range_warning(1.5, 2.0).unwrap().contains("not in (0, 1)"));
    }

    #[test]
    fn encoder_helpers() {
        let l = [0.0, 1.0, -1.0, 2.0];
        let (b, c) = encoder_iwae_dreg_groups(&l, 2);
        let mut w = [0.0; 2];
        softmax_lse(&l[..2], &mut w);
        assert!((b[0] - w[0] * w[0] / 2.0).abs() < 1e-15);
        assert!((b[1] - w[1] * w[1] / 2.0).abs() < 1e-15);
        assert!(c.iter().all(|&x| x == 0.0));
        // One group: IWAE-DReG's b = w^2.
        let (b1, _) = encoder_iwae_dreg_groups(&l, 4);
        let mut w4 = [0.0; 4];
        softmax_lse(&l, &mut w4);
        for i in 0..4 {
            assert!((b1[i] - w4[i] * w4[i]).abs() < 1e-15);
        }
        let (b, c) = encoder_unbiased_rws(&[0.5, -0.25]);
        assert_eq!(b, vec![0.0, 0.0]);
        assert_eq!(c, vec![-0.5, 0.25]);
    }

    #[test]
    fn extreme_log_weights_stay_finite() {
        let m = Mlmc::new(MlmcVariant::RussianRoulette, 0.6, 0, None).unwrap();
        let l = [
            0.0,
            -800.0,
            -1600.0,
            f64::NEG_INFINITY,
            700.0,
            710.0,
            -1e4,
            3.0,
        ];
        let (v, a) = m.coefficients(&l, 2);
        assert!(
            v.is_finite() && a.iter().all(|x| x.is_finite()),
            "{v} {a:?}"
        );
    }
}
