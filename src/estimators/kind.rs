//! The catalogue of estimators: their names, how they are parsed, and what each needs.

use super::ChainKernel;
use crate::error::ConfigError;

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
    pub fn coupling_kernel(self) -> Option<ChainKernel> {
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

    pub fn is_coupled(self) -> bool {
        Self::COUPLED.contains(&self)
    }

    /// Parses a name as printed by [`EstimatorKind::name`]. ASCII case and `_` vs `-` are
    /// ignored. The error names `--estimator` and lists the valid names.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
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
                ConfigError::UnknownName {
                    flag: "--estimator",
                    given: s.to_string(),
                    accepted: names.join(", "),
                }
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
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s)
    }
}

impl std::fmt::Display for EstimatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = EstimatorKind::parse("sumo?").unwrap_err().to_string();
        assert!(err.contains("--estimator"), "{err}");
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
}
