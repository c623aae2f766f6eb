//! An estimator and its K resolved, once, into what every training step does: a fixed
//! coefficient program, a random-size draw (SUMO, MLMC), or coupled chains. Validating the
//! plan is the one place where K and the estimator's settings are checked.

use super::mlmc::Mlmc;
use super::program::{CoefficientProgram, EncoderRule, SubsetTerm};
use super::sumo::SumoTail;
use super::CouplingConfig;
use super::{EncoderChoice, Estimator, EstimatorKind};
use crate::error::{self, ConfigError};

/// What a training step runs, resolved from an [`Estimator`] and K by [`Estimator::plan`].
#[derive(Clone, Debug, PartialEq)]
pub enum StepPlan {
    /// The same `n` samples and coefficient program every step.
    Fixed {
        n: usize,
        program: CoefficientProgram,
    },
    /// SUMO: `m + K` samples, the tail length K drawn afresh each step (plus the encoder's
    /// own `encoder_k` under `--encoder iwae`).
    Sumo {
        m: usize,
        tail: SumoTail,
        encoder: EncoderChoice,
        encoder_k: usize,
    },
    /// MLMC: `2^(level + I0 + 1)` samples, the level drawn afresh each step (plus the
    /// encoder's own `encoder_k` under `--encoder iwae`).
    Mlmc {
        mlmc: Mlmc,
        encoder: EncoderChoice,
        encoder_k: usize,
    },
    /// Coupled Markov chains, run until they meet (`Backend::chain_step`).
    Coupled(CouplingConfig),
}

/// One step's draw: how many samples per datapoint, and the coefficients as a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub n: usize,
    pub program: CoefficientProgram,
    /// The drawn level (MLMC) or tail length K (SUMO); None for fixed-size estimators.
    pub level: Option<u32>,
}

impl Estimator {
    /// Resolves this estimator with `k` samples per datapoint (SUMO: the minimum m; coupled
    /// chains: particles per set; MLMC: unused) into a validated plan. Every check of K and
    /// of the estimator's settings happens here, each error naming its flag.
    pub fn plan(&self, k: usize) -> Result<StepPlan, ConfigError> {
        let kind = self.kind;
        error::at_least("--k", k, kind.min_samples(), &format!("--estimator {kind}"))?;
        error::at_most("--k", k, error::MAX_SAMPLES, &format!("--estimator {kind}"))?;
        if self.unbiased.encoder != EncoderChoice::Dreg && !kind.is_random_size() {
            return Err(ConfigError::NotApplicable {
                flag: "--encoder",
                context: format!("to --estimator {kind}"),
                fix: "it applies to sumo, mlmc-ss and mlmc-rr only; the others set their own encoder gradient".into(),
            });
        }
        if kind == EstimatorKind::Dreg && !self.alpha.is_finite() {
            return Err(ConfigError::range(
                "--alpha",
                self.alpha,
                "it must be a finite number",
            ));
        }
        let encoder = self.unbiased.encoder;
        let encoder_k = self.unbiased.encoder_k;
        if encoder == EncoderChoice::Iwae {
            error::at_least("--encoder-k", encoder_k, 1, "--encoder iwae")?;
            error::at_most(
                "--encoder-k",
                encoder_k,
                error::MAX_SAMPLES,
                "--encoder iwae",
            )?;
        } else if encoder_k != 0 {
            return Err(ConfigError::NotApplicable {
                flag: "--encoder-k",
                context: format!("to --encoder {}", encoder.name()),
                fix: "it sets the encoder's own samples of --encoder iwae; drop it or add --encoder iwae".into(),
            });
        }
        Ok(match kind {
            EstimatorKind::Sumo => StepPlan::Sumo {
                m: k,
                tail: SumoTail::DEFAULT,
                encoder,
                encoder_k,
            },
            EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => StepPlan::Mlmc {
                mlmc: self.mlmc()?,
                encoder,
                encoder_k,
            },
            EstimatorKind::CoupledPimh
            | EstimatorKind::CoupledIsir
            | EstimatorKind::CoupledDisir => {
                let kernel = kind.coupling_kernel().expect("a coupled kind");
                let o = &self.chains;
                let cfg = CouplingConfig {
                    burn_in: o.burn_in,
                    horizon: o.horizon,
                    lag: o.lag,
                    max_iters: o.max_iters,
                    ..CouplingConfig::new(kernel, k)
                };
                cfg.validate()?;
                StepPlan::Coupled(cfg)
            }
            _ => StepPlan::Fixed {
                n: k,
                program: self.program(),
            },
        })
    }
}

/// The encoder rule of SUMO and MLMC: IWAE-DReG over blocks of `dreg_size` samples, unbiased
/// RWS, SUMO's variance objective, or IWAE on the encoder's own `encoder_k` samples.
fn encoder_rule(choice: EncoderChoice, dreg_size: usize, encoder_k: usize) -> EncoderRule {
    match choice {
        EncoderChoice::Dreg => EncoderRule::DregBlocks {
            size: dreg_size as u32,
        },
        EncoderChoice::Rws => EncoderRule::UnbiasedRws,
        EncoderChoice::Variance => EncoderRule::Variance,
        EncoderChoice::Iwae => EncoderRule::IwaeTail {
            size: encoder_k as u32,
        },
    }
}

impl StepPlan {
    /// This step's samples per datapoint and coefficient program (a fresh draw from `rng`
    /// for SUMO and MLMC); None for the coupled chains, which have no fixed program.
    pub fn draw(&self, rng: &mut impl rand::Rng) -> Option<Draw> {
        match self {
            StepPlan::Fixed { n, program } => Some(Draw {
                n: *n,
                program: program.clone(),
                level: None,
            }),
            StepPlan::Sumo {
                m,
                tail,
                encoder,
                encoder_k,
            } => {
                let big_k = tail.sample(rng);
                let n = m + big_k;
                let terms = tail
                    .prefix_coefficients(big_k)
                    .into_iter()
                    .enumerate()
                    .map(|(j, w)| SubsetTerm {
                        blocks: false,
                        size: (m + j) as u32,
                        weight: w,
                    })
                    .collect();
                Some(Draw {
                    n: n + encoder_k,
                    program: CoefficientProgram::Subsets {
                        terms,
                        encoder: encoder_rule(*encoder, n, *encoder_k),
                    },
                    level: Some(big_k as u32),
                })
            }
            StepPlan::Mlmc {
                mlmc,
                encoder,
                encoder_k,
            } => {
                let level = mlmc.sample_level(rng);
                let terms = mlmc
                    .level_coefficients(level)
                    .into_iter()
                    .map(|(s, w)| SubsetTerm {
                        blocks: true,
                        size: 1 << s,
                        weight: w,
                    })
                    .collect();
                Some(Draw {
                    n: mlmc.num_samples(level) + encoder_k,
                    program: CoefficientProgram::Subsets {
                        terms,
                        encoder: encoder_rule(*encoder, mlmc.base_group_size(), *encoder_k),
                    },
                    level: Some(level),
                })
            }
            StepPlan::Coupled(_) => None,
        }
    }

    /// Expected samples per datapoint per step (the cost): K, m + E[K], or
    /// E[2^(level+I0+1)], plus the encoder's own under `--encoder iwae`; None for the
    /// coupled chains, whose cost follows the meeting time.
    pub fn expected_samples(&self) -> Option<f64> {
        match self {
            StepPlan::Fixed { n, .. } => Some(*n as f64),
            StepPlan::Sumo {
                m, tail, encoder_k, ..
            } => Some(tail.expected_samples(*m) + *encoder_k as f64),
            StepPlan::Mlmc {
                mlmc, encoder_k, ..
            } => Some(mlmc.expected_samples() + *encoder_k as f64),
            StepPlan::Coupled(_) => None,
        }
    }

    /// The chains' configuration of a coupled plan.
    pub fn coupling(&self) -> Option<&CouplingConfig> {
        match self {
            StepPlan::Coupled(c) => Some(c),
            _ => None,
        }
    }

    /// The MLMC estimator of an MLMC plan.
    pub fn mlmc(&self) -> Option<&Mlmc> {
        match self {
            StepPlan::Mlmc { mlmc, .. } => Some(mlmc),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::{ChainOptions, UnbiasedOptions};

    #[test]
    fn plans_follow_the_estimator_kind() {
        let fixed = Estimator::new(EstimatorKind::Iwae, 0.0).plan(5).unwrap();
        assert!(matches!(fixed, StepPlan::Fixed { n: 5, .. }));
        assert_eq!(fixed.expected_samples(), Some(5.0));
        let sumo = Estimator::new(EstimatorKind::Sumo, 0.0).plan(3).unwrap();
        assert!(matches!(sumo, StepPlan::Sumo { m: 3, .. }));
        let chains = Estimator::new(EstimatorKind::CoupledIsir, 0.0)
            .plan(4)
            .unwrap();
        assert_eq!(chains.coupling().map(|c| c.particles), Some(4));
        assert_eq!(chains.expected_samples(), None);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        assert!(chains.draw(&mut rng).is_none());
    }

    #[test]
    fn every_bad_setting_names_its_flag() {
        let with = |kind, unbiased: UnbiasedOptions, chains: ChainOptions| Estimator {
            unbiased,
            chains,
            ..Estimator::new(kind, 0.5)
        };
        let u = UnbiasedOptions::default();
        let c = ChainOptions::default();
        let cases = [
            (Estimator::new(EstimatorKind::Jvi, 0.0).plan(1), "--k"),
            (Estimator::new(EstimatorKind::Iwae, 0.0).plan(0), "--k"),
            (
                Estimator::new(EstimatorKind::CoupledIsir, 0.0).plan(1),
                "--k",
            ),
            (
                with(
                    EstimatorKind::MlmcSs,
                    UnbiasedOptions { mlmc_p: 1.5, ..u },
                    c,
                )
                .plan(1),
                "--mlmc-p",
            ),
            (
                with(
                    EstimatorKind::Iwae,
                    UnbiasedOptions {
                        encoder: EncoderChoice::Rws,
                        ..u
                    },
                    c,
                )
                .plan(5),
                "--encoder",
            ),
            (
                with(EstimatorKind::CoupledPimh, u, ChainOptions { lag: 0, ..c }).plan(5),
                "--lag",
            ),
            (
                with(
                    EstimatorKind::CoupledPimh,
                    u,
                    ChainOptions {
                        burn_in: 5,
                        horizon: 4,
                        ..c
                    },
                )
                .plan(5),
                "--chain-k",
            ),
            (
                Estimator::new(EstimatorKind::Dreg, f64::NAN).plan(5),
                "--alpha",
            ),
        ];
        for (result, flag) in cases {
            let e = result.expect_err(flag);
            assert_eq!(e.flag(), flag, "{e}");
            assert!(e.to_string().contains(flag), "{e}");
        }
    }
}
