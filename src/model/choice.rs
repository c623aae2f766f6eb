//! Which model a run fits (`--model`): the one enum the CLI parses, the configuration
//! records and the checkpoint metadata names.

use serde::{Deserialize, Serialize};

/// The model `uvae train`, `eval` and `grad-stats` work on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelChoice {
    /// The MNIST MLP VAE with a Bernoulli decoder.
    #[default]
    Vae,
    /// Burda et al.'s MNIST VAE with two stochastic layers (z1 | x, z2 | z1).
    Hvae,
    /// The DReG paper's structured prediction (§6.3): the bottom rows of each image given its
    /// top rows (`--split-row`), with a learned conditional prior p(z | c).
    Cvae,
    /// The linear-Gaussian toy model (DReG paper section 6.1), trained on its own generated
    /// data; exact log p(x).
    Toy,
    /// Probabilistic PCA, trained on its own generated data; exact log p(x).
    Ppca,
    /// A two-stochastic-layer linear-Gaussian model (the exact counterpart of hvae), trained
    /// on its own generated data; exact log p(x).
    Hgauss,
}

impl ModelChoice {
    /// The CLI / serde name.
    pub fn name(&self) -> &'static str {
        match self {
            ModelChoice::Vae => "vae",
            ModelChoice::Hvae => "hvae",
            ModelChoice::Cvae => "cvae",
            ModelChoice::Toy => "toy",
            ModelChoice::Ppca => "ppca",
            ModelChoice::Hgauss => "hgauss",
        }
    }

    /// True for the models with a closed-form log p(x) and gradient.
    pub fn is_exact(&self) -> bool {
        !matches!(
            self,
            ModelChoice::Vae | ModelChoice::Hvae | ModelChoice::Cvae
        )
    }

    /// True for the two-stochastic-layer model.
    pub fn is_two_layer(&self) -> bool {
        matches!(self, ModelChoice::Hvae)
    }
}

impl std::fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
