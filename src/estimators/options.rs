//! An estimator with its settings, as a run configuration records it.

use super::mlmc::{self, Mlmc, MlmcVariant};
use super::EstimatorKind;
use super::{ChainKernel, CouplingConfig};
use crate::error::ConfigError;

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

/// The coupled chains' horizon ([`CouplingConfig`] without the kernel and K):
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
        let c = CouplingConfig::new(ChainKernel::Isir, 2);
        ChainOptions {
            burn_in: c.burn_in,
            horizon: c.horizon,
            lag: c.lag,
            max_iters: c.max_iters,
        }
    }
}

/// How SUMO and MLMC train the encoder.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderChoice {
    /// IWAE-DReG: on all samples for SUMO, on the base groups for MLMC.
    #[default]
    Dreg,
    /// Unbiased RWS: b = 0, c = -a (Shi & Cornish 2021).
    Rws,
    /// Minimise E[estimate^2] (SUMO's variance objective, Luo et al. 2020).
    Variance,
    /// IWAE on `encoder_k` fresh samples of its own, drawn after the estimator's (Shi &
    /// Cornish 2021 train the encoder of ML-RR and SUMO this way).
    Iwae,
}

impl EncoderChoice {
    /// The CLI / serde name.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderChoice::Dreg => "dreg",
            EncoderChoice::Rws => "rws",
            EncoderChoice::Variance => "variance",
            EncoderChoice::Iwae => "iwae",
        }
    }
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
    /// `--encoder iwae`: the encoder's own samples per datapoint (0: not given). Absent in
    /// configurations written before it existed.
    #[serde(default)]
    pub encoder_k: usize,
}

impl Default for UnbiasedOptions {
    fn default() -> Self {
        UnbiasedOptions {
            mlmc_p: mlmc::DEFAULT_P,
            mlmc_i0: 2,
            mlmc_cap: None,
            encoder: EncoderChoice::Dreg,
            encoder_k: 0,
        }
    }
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

    /// The MLMC estimator these settings describe (MLMC kinds only).
    pub fn mlmc(&self) -> Result<Mlmc, ConfigError> {
        let variant = match self.kind {
            EstimatorKind::MlmcSs => MlmcVariant::SingleSample,
            EstimatorKind::MlmcRr => MlmcVariant::RussianRoulette,
            other => {
                return Err(ConfigError::NotApplicable {
                    flag: "--mlmc-p",
                    context: format!("to --estimator {other}"),
                    fix: "it applies to mlmc-ss and mlmc-rr only".into(),
                })
            }
        };
        let o = &self.unbiased;
        Mlmc::new(variant, o.mlmc_p, o.mlmc_i0, o.mlmc_cap)
    }
}
