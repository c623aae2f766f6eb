//! `--model hvae`: the architecture of the two-stochastic-layer VAE from the CLI's sizes
//! (`--hidden`, `--latent` for z1; `--hidden2`, `--latent2` for z2), and its checks.

use super::{Arch, ModelChoice, TopLayer};
use crate::config::MAX_LAYER;
use crate::error::{self, ConfigError};

/// The architecture `model` and the sizes ask for (None: not given, Burda et al.'s default).
/// `--hidden2` / `--latent2` belong to `--model hvae` only; elsewhere they are an error.
pub fn resolve_arch(
    model: ModelChoice,
    hidden: Option<Vec<usize>>,
    latent: Option<usize>,
    hidden2: Option<Vec<usize>>,
    latent2: Option<usize>,
) -> Result<Arch, ConfigError> {
    if !model.is_two_layer() {
        for (flag, given) in [
            ("--hidden2", hidden2.is_some()),
            ("--latent2", latent2.is_some()),
        ] {
            if given {
                let context = if model.is_exact() {
                    format!(
                        "to --model {model}: its shape is fixed ({})",
                        crate::exact::training::shape_note(model)
                    )
                } else {
                    format!("to --model {model}: it has one stochastic layer")
                };
                return Err(ConfigError::NotApplicable {
                    flag,
                    context,
                    fix: format!("drop {flag}, or use --model hvae"),
                });
            }
        }
        return crate::config::resolve_arch(model, hidden, latent);
    }
    let burda = Arch::burda_mnist_two_layer();
    let top = burda.top.clone().expect("two layers");
    Ok(Arch {
        hidden: hidden.unwrap_or(burda.hidden),
        z_dim: latent.unwrap_or(burda.z_dim),
        top: Some(TopLayer {
            hidden: hidden2.unwrap_or(top.hidden),
            z_dim: latent2.unwrap_or(top.z_dim),
        }),
        ..burda
    })
}

/// Checks the second layer's sizes, naming `--hidden2` / `--latent2`.
pub fn validate_top(top: &TopLayer) -> Result<(), ConfigError> {
    if top.z_dim == 0 || top.hidden.is_empty() || top.hidden.contains(&0) {
        return Err(ConfigError::range(
            "--hidden2/--latent2",
            format!("{:?}/{}", top.hidden, top.z_dim),
            "--hidden2 needs at least one positive size (e.g. 100,100) and --latent2 must be positive",
        ));
    }
    for &h in &top.hidden {
        error::at_most("--hidden2", h, MAX_LAYER, "a hidden layer")?;
    }
    error::at_most("--latent2", top.z_dim, MAX_LAYER, "the latent z2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_burdas_and_flags_are_checked() {
        let a = resolve_arch(ModelChoice::Hvae, None, None, None, None).unwrap();
        assert_eq!(a, Arch::burda_mnist_two_layer());
        let a = resolve_arch(
            ModelChoice::Hvae,
            Some(vec![8]),
            Some(4),
            Some(vec![6]),
            Some(2),
        )
        .unwrap();
        assert_eq!((a.hidden, a.z_dim), (vec![8], 4));
        assert_eq!(
            a.top,
            Some(TopLayer {
                hidden: vec![6],
                z_dim: 2
            })
        );
        let e = resolve_arch(ModelChoice::Vae, None, None, None, Some(3)).unwrap_err();
        assert!(
            e.to_string().contains("--latent2") && e.to_string().contains("hvae"),
            "{e}"
        );
        let bad = TopLayer {
            hidden: vec![0],
            z_dim: 2,
        };
        let e = validate_top(&bad).unwrap_err().to_string();
        assert!(e.contains("--hidden2"), "{e}");
    }
}
