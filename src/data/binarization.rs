//! `--binarize`: how grey levels become the binary pixels the Bernoulli likelihood models.
//!
//! Both backends binarize 8-bit intensities p by drawing pixel ~ Bernoulli(p / 255) through
//! the shared thresholds of `binarize_thresholds`, where intensity 0 is never on and 255
//! always on. So `threshold` and `none` map each pixel to 0 or 255 on the host once, at load,
//! and the unchanged dynamic path then reproduces them exactly on either backend.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How a run binarizes its images (`--binarize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Binarization {
    /// A fresh Bernoulli(intensity) draw per step (training) and one fixed draw (evaluation).
    #[default]
    Dynamic,
    /// Fixed: on where the intensity x > 0.5.
    Threshold,
    /// The data is binary already (uint8 0/255 or float 0/1); anything else is an error.
    #[value(name = "none")]
    #[serde(rename = "none")]
    AsGiven,
}

impl Binarization {
    pub fn name(self) -> &'static str {
        match self {
            Binarization::Dynamic => "dynamic",
            Binarization::Threshold => "threshold",
            Binarization::AsGiven => "none",
        }
    }
}

impl std::fmt::Display for Binarization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The rule a checkpoint was trained with, from its metadata (`uvae` -> `config.binarize`).
/// A checkpoint written before `--binarize` existed, or by another program, reads as dynamic.
pub fn of_checkpoint(meta: &std::collections::HashMap<String, String>) -> Result<Binarization> {
    let Some(json) = meta.get("uvae") else {
        return Ok(Binarization::Dynamic);
    };
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("the checkpoint's uvae metadata is not JSON ({e})"))?;
    match v.pointer("/config/binarize") {
        None => Ok(Binarization::Dynamic),
        Some(b) => serde_json::from_value(b.clone()).map_err(|e| {
            anyhow::anyhow!(
                "the checkpoint's metadata names an unknown binarization ({e}); pass --binarize"
            )
        }),
    }
}

/// Where value number `flat` of an array of images of `dim` values lies, in words.
fn position(flat: usize, dim: usize) -> String {
    format!(
        "image {}, value {} (flat index {flat})",
        flat / dim.max(1),
        flat % dim.max(1)
    )
}

fn not_binary(what: &str, shown: &str, flat: usize, dim: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: {} is {shown}, but --binarize none needs binary data (uint8 0 or 255, float 0 or 1); \
         pass --binarize threshold (x > 0.5) or dynamic",
        position(flat, dim)
    )
}

/// Applies `rule` to 8-bit intensities in place. `what` names the file and array in errors,
/// `dim` is the values per image (for the error's position).
pub fn apply_u8(rule: Binarization, pixels: &mut [u8], what: &str, dim: usize) -> Result<()> {
    match rule {
        Binarization::Dynamic => {}
        // x > 0.5 with x = p / 255: p > 127.5.
        Binarization::Threshold => pixels
            .iter_mut()
            .for_each(|p| *p = if *p >= 128 { 255 } else { 0 }),
        Binarization::AsGiven => {
            if let Some(i) = pixels.iter().position(|&p| p != 0 && p != 255) {
                return Err(not_binary(what, &pixels[i].to_string(), i, dim));
            }
        }
    }
    Ok(())
}

/// Float grey levels within this of a multiple of 1/255 are that multiple: a uint8 array
/// divided by 255 in f32 or f64 (and rounded to f32) lands within a few ulps of it.
const GRID_TOLERANCE: f64 = 1e-6;

/// Float grey levels in [0, 1] as 8-bit intensities under `rule`, and how many had to be
/// quantised (not multiples of 1/255). NaN and values outside [0, 1] are errors.
pub fn from_unit(
    rule: Binarization,
    values: impl Iterator<Item = f64>,
    what: &str,
    dim: usize,
) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(values.size_hint().0);
    let mut quantised = 0usize;
    for (i, v) in values.enumerate() {
        if !(0.0..=1.0).contains(&v) {
            bail!(
                "{what}: {} is {v}, outside [0, 1]; float data must be grey levels in [0, 1] \
                 (divide by 255, or by the data's maximum, before saving; replace NaNs)",
                position(i, dim)
            );
        }
        out.push(match rule {
            Binarization::Threshold => {
                if v > 0.5 {
                    255
                } else {
                    0
                }
            }
            Binarization::AsGiven => {
                if v == 0.0 {
                    0
                } else if v == 1.0 {
                    255
                } else {
                    return Err(not_binary(what, &v.to_string(), i, dim));
                }
            }
            Binarization::Dynamic => {
                let q = (v * 255.0).round();
                if (v - q / 255.0).abs() > GRID_TOLERANCE {
                    quantised += 1;
                }
                q as u8
            }
        });
    }
    Ok((out, quantised))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_name_their_rule_and_older_ones_read_as_dynamic() {
        let meta = |json: &str| std::collections::HashMap::from([("uvae".into(), json.into())]);
        let rule = |json: &str| of_checkpoint(&meta(json)).unwrap();
        assert_eq!(
            rule(r#"{"config":{"binarize":"threshold"}}"#),
            Binarization::Threshold
        );
        assert_eq!(
            rule(r#"{"config":{"binarize":"none"}}"#),
            Binarization::AsGiven
        );
        assert_eq!(rule(r#"{"config":{"k":5}}"#), Binarization::Dynamic);
        assert_eq!(
            of_checkpoint(&Default::default()).unwrap(),
            Binarization::Dynamic
        );
        let e = of_checkpoint(&meta(r#"{"config":{"binarize":"otsu"}}"#)).unwrap_err();
        assert!(e.to_string().contains("--binarize"), "{e}");
    }

    #[test]
    fn threshold_is_x_above_one_half_on_both_dtypes() {
        let mut p: Vec<u8> = (0..=255).collect();
        apply_u8(Binarization::Threshold, &mut p, "t", 256).unwrap();
        assert!(p[..128].iter().all(|&v| v == 0) && p[128..].iter().all(|&v| v == 255));
        let vals = [0.0, 0.5, 0.5000001, 1.0];
        let (q, n) = from_unit(Binarization::Threshold, vals.into_iter(), "t", 4).unwrap();
        assert_eq!((q, n), (vec![0, 0, 255, 255], 0));
    }

    #[test]
    fn none_names_the_first_non_binary_value() {
        let mut p = vec![0u8, 255, 255, 0, 0, 7, 3];
        let e = apply_u8(Binarization::AsGiven, &mut p, "f.npz train", 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 1, value 2 (flat index 5) is 7"), "{e}");
        assert!(
            e.contains("f.npz train") && e.contains("--binarize threshold"),
            "{e}"
        );
        let e = from_unit(Binarization::AsGiven, [1.0, 0.25].into_iter(), "x", 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flat index 1) is 0.25"), "{e}");
    }

    #[test]
    fn grid_floats_are_exact_and_others_are_counted() {
        let grid = (0..=255u32).map(|p| (p as f32 / 255.0) as f64);
        let (q, n) = from_unit(Binarization::Dynamic, grid, "t", 256).unwrap();
        assert_eq!(n, 0);
        assert_eq!(q, (0..=255).collect::<Vec<u8>>());
        let (q, n) = from_unit(Binarization::Dynamic, [0.31, 0.002].into_iter(), "t", 2).unwrap();
        assert_eq!((q, n), (vec![79, 1], 2));
        for bad in [f64::NAN, -0.1, 1.5] {
            let e = from_unit(Binarization::Dynamic, [0.0, bad].into_iter(), "a", 2)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("outside [0, 1]") && e.contains("flat index 1"),
                "{e}"
            );
        }
    }
}
