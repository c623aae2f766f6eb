//! The architecture a run's size flags ask for (`--hidden`, `--latent`; `--hidden2`,
//! `--latent2` for hvae's z2), and their checks.

use super::exact_training::{arch as fixed_arch, shape_note};
use super::{Arch, Conditional, ModelChoice, TopLayer};
use crate::error::{self, ConfigError};

/// The widest `--hidden` layer or `--latent` a run accepts (a 784-65536 layer alone holds
/// 51 million weights).
pub const MAX_LAYER: usize = 1 << 16;

/// The architecture `model` and the sizes ask for (None: not given, Burda et al.'s default).
/// `--hidden2` / `--latent2` belong to `--model hvae` only; elsewhere they are an error. The
/// exact models fix their own shape, so giving a size with them is an error that says so.
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
                        shape_note(model)
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
        let mut arch = one_layer_arch(model, hidden, latent)?;
        if model == ModelChoice::Cvae {
            // 28 x 28 MNIST's context until the run loads its data (as for x_dim).
            arch.cond = Some(Conditional::for_images(None, 28, 28)?);
        }
        return Ok(arch);
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

/// The architecture of a one-stochastic-layer model for `--hidden` / `--latent`.
fn one_layer_arch(
    model: ModelChoice,
    hidden: Option<Vec<usize>>,
    latent: Option<usize>,
) -> Result<Arch, ConfigError> {
    match fixed_arch(model) {
        None => Ok(Arch {
            x_dim: 784,
            hidden: hidden.unwrap_or_else(|| vec![200, 200]),
            z_dim: latent.unwrap_or(50),
            likelihood: Default::default(),
            top: None,
            cond: None,
        }),
        Some(fixed) => {
            for (flag, given) in [
                ("--hidden", hidden.is_some()),
                ("--latent", latent.is_some()),
            ] {
                if given {
                    return Err(ConfigError::NotApplicable {
                        flag,
                        context: format!(
                            "to --model {model}: its shape is fixed ({})",
                            shape_note(model)
                        ),
                        fix: format!("drop {flag}"),
                    });
                }
            }
            Ok(fixed)
        }
    }
}

/// Applies `--split-row` (the context's image rows) to a `--model cvae` architecture; an
/// error naming the flag for another model or a row of 0. Whether it leaves rows to predict
/// is checked when the run loads its images ([`Conditional::for_images`]).
pub fn apply_split_row(
    arch: &mut Arch,
    model: ModelChoice,
    split_row: Option<usize>,
) -> Result<(), ConfigError> {
    let Some(row) = split_row else {
        return Ok(());
    };
    let Some(cond) = &mut arch.cond else {
        return Err(ConfigError::NotApplicable {
            flag: "--split-row",
            context: format!("to --model {model}: it models whole images"),
            fix: "drop --split-row, or use --model cvae".into(),
        });
    };
    error::at_least("--split-row", row, 1, "a context of image rows")?;
    cond.split_row = Some(row);
    cond.c_dim = row * 28;
    Ok(())
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
