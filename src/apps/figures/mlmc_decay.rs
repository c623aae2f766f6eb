//! `uvae figure mlmc-decay`: how fast MLMC's antithetic difference shrinks with the level,
//! E[Delta_k^2] against k, with N = 2^(k + I0 + 1) samples (docs/design.md §1), on PPCA (exact)
//! and on the MNIST VAE (fresh weights or a checkpoint). A least-squares fit of
//! log2 E[Delta_k^2] = c - beta k gives beta, and finite cost and variance of MLMC need
//! 1/2 < p < 1 - 2^-beta (Shi & Cornish 2021). `uvae grad-stats` reports the same fit through
//! [`level_decay`].

use super::{Figure, Table};
use crate::apps::plot::{Axis, Chart, Line, Marker, Series};
use crate::backend::{Backend, Noise};
use crate::estimators::mlmc;
use crate::exact::{ExactModel, Ppca};
use crate::rng::Stream;
use anyhow::Result;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

/// E[Delta_k^2] at one level.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LevelDecay {
    pub level: u32,
    pub samples: usize,
    pub mean_delta_sq: f64,
    pub stderr: f64,
}

/// E[Delta_k^2] of the antithetic difference at N = 2^(k + i0 + 1) samples for k = 0..=max_level
/// (`reps` draws each, `draw(n)` giving one set of n log-weights), and the decay rate beta from
/// a least-squares fit of log2 E[Delta_k^2] against k (NaN with under two positive levels).
pub fn level_decay(
    max_level: u32,
    i0: u32,
    reps: usize,
    mut draw: impl FnMut(usize) -> Result<Vec<f64>>,
) -> Result<(Vec<LevelDecay>, f64)> {
    let mut out = Vec::new();
    for level in 0..=max_level {
        let n = 1usize << (level + i0 + 1);
        let mut vals = Vec::with_capacity(reps);
        for _ in 0..reps {
            vals.push(mlmc::antithetic_delta(&draw(n)?).powi(2));
        }
        let m = vals.iter().sum::<f64>() / reps as f64;
        let v = vals.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (reps.max(2) - 1) as f64;
        out.push(LevelDecay {
            level,
            samples: n,
            mean_delta_sq: m,
            stderr: (v / reps as f64).sqrt(),
        });
    }
    let pts: Vec<(f64, f64)> = out
        .iter()
        .filter(|d| d.mean_delta_sq > 0.0)
        .map(|d| (d.level as f64, d.mean_delta_sq.log2()))
        .collect();
    let beta = super::least_squares(&pts).map_or(f64::NAN, |(s, _)| -s);
    Ok((out, beta))
}

/// Where the VAE's weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum VaeSource {
    /// `bench::peer_model`: the default architecture, Glorot init from seed 0.
    Fresh,
    Checkpoint(std::path::PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecayConfig {
    pub seed: u64,
    /// Draws per level on PPCA and on the VAE.
    pub reps: usize,
    pub vae_reps: usize,
    pub max_level: u32,
    pub i0: u32,
    pub datapoint: usize,
    pub vae: Option<VaeSource>,
    pub threads: usize,
}

impl Default for DecayConfig {
    fn default() -> Self {
        DecayConfig {
            seed: 0,
            reps: 2000,
            vae_reps: 400,
            max_level: 6,
            i0: 2,
            datapoint: 0,
            vae: Some(VaeSource::Fresh),
            threads: 0,
        }
    }
}

/// One model's decay with its fit.
#[derive(Clone, Debug, Serialize)]
pub struct ModelDecay {
    pub model: String,
    pub levels: Vec<LevelDecay>,
    pub beta: f64,
    pub p_range: (f64, f64),
}

fn fitted(model: &str, (levels, beta): (Vec<LevelDecay>, f64)) -> ModelDecay {
    ModelDecay {
        model: model.to_string(),
        levels,
        beta,
        p_range: (0.5, 1.0 - 2f64.powf(-beta)),
    }
}

/// PPCA's decay at one datapoint of its data.
pub fn ppca_decay(cfg: &DecayConfig) -> Result<ModelDecay> {
    let model = Ppca::new(cfg.seed);
    let x = model
        .data()
        .get(cfg.datapoint)
        .ok_or_else(|| anyhow::anyhow!("--datapoint {} is out of range for ppca", cfg.datapoint))?
        .clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xDECA_7000);
    let r = level_decay(cfg.max_level, cfg.i0, cfg.reps, |n| {
        Ok(super::exact_log_weights(&model, &x, n, &mut rng))
    })?;
    Ok(fitted("ppca", r))
}

/// The VAE's decay at binarised test image `x` in `backend`: each draw is a forward pass at a
/// fresh Philox counter.
pub fn vae_decay(backend: &mut dyn Backend, x: &[f32], cfg: &DecayConfig) -> Result<ModelDecay> {
    let mut step = 0u32;
    let r = level_decay(cfg.max_level, cfg.i0, cfg.vae_reps, |n| {
        step += 1;
        let noise = Noise {
            seed: cfg.seed,
            stream: Stream::Eps,
            step,
            first_datapoint: cfg.datapoint as u32,
            first_sample: 0,
        };
        Ok(backend
            .forward(x, 1, n, &noise)?
            .iter()
            .map(|&v| v as f64)
            .collect())
    })?;
    Ok(fitted("MNIST VAE", r))
}

/// The fit as legend text: beta and the admissible p, or that there is none.
fn p_text(d: &ModelDecay) -> String {
    let (lo, hi) = d.p_range;
    if hi > lo {
        format!("beta = {:.2}, so {lo} < p < {hi:.3}", d.beta)
    } else {
        format!("beta = {:.2} <= 1: no p in (1/2, 1 - 2^-beta)", d.beta)
    }
}

/// The figure from the measured decays (PPCA first, then the VAE if measured).
pub fn figure(cfg: &DecayConfig, decays: &[ModelDecay]) -> Result<Figure> {
    let mut table = Table::new(&["model", "level", "samples", "mean_delta_sq", "stderr"]);
    let mut chart = Chart::new(
        format!(
            "MLMC level decay: E[Delta_k^2] at N = 2^(k+{}+1) samples (bars: ±2 SE)",
            cfg.i0
        ),
        Axis::linear("level k"),
        Axis::log("E[Delta_k^2] (nats^2)"),
    );
    let mut notes = vec![
        "beta from a least-squares fit of log2 E[Delta_k^2] against k; finite MLMC cost and variance need 1/2 < p < 1 - 2^-beta".to_string(),
    ];
    let mut summary = serde_json::Map::new();
    for (i, d) in decays.iter().enumerate() {
        for l in &d.levels {
            table.push(vec![
                d.model.as_str().into(),
                l.level.into(),
                l.samples.into(),
                l.mean_delta_sq.into(),
                l.stderr.into(),
            ]);
        }
        let pts: Vec<(f64, f64)> = d
            .levels
            .iter()
            .map(|l| (l.level as f64, l.mean_delta_sq))
            .collect();
        let err: Vec<f64> = d.levels.iter().map(|l| 2.0 * l.stderr).collect();
        chart.push(
            Series::new(d.model.clone(), pts)
                .with_err(err)
                .color(i)
                .line(Line::None),
        );
        if d.beta.is_finite() {
            // The fitted line, through the points' centroid in log2 space.
            let lv: Vec<(f64, f64)> = d
                .levels
                .iter()
                .filter(|l| l.mean_delta_sq > 0.0)
                .map(|l| (l.level as f64, l.mean_delta_sq.log2()))
                .collect();
            let (_, c) = super::least_squares(&lv).unwrap_or((0.0, 0.0));
            let fit = d
                .levels
                .iter()
                .map(|l| (l.level as f64, 2f64.powf(c - d.beta * l.level as f64)))
                .collect();
            chart.push(
                Series::new(format!("{} fit: {}", d.model, p_text(d)), fit)
                    .color(i)
                    .marker(Marker::None)
                    .line(Line::Dashed),
            );
            if d.p_range.1 <= d.p_range.0 {
                notes.push(format!(
                    "{}: beta = {:.2} <= 1 over these levels, so no p gives MLMC both finite cost and finite variance there",
                    d.model, d.beta
                ));
            }
            summary.insert(
                d.model.clone(),
                json!({ "beta": d.beta, "p_range": [d.p_range.0, d.p_range.1] }),
            );
        } else {
            notes.push(format!("{}: too few positive levels to fit beta", d.model));
        }
    }
    let vae = match &cfg.vae {
        None => json!(null),
        Some(VaeSource::Fresh) => json!("fresh (bench::peer_model, seed 0)"),
        Some(VaeSource::Checkpoint(p)) => json!(p.display().to_string()),
    };
    Ok(Figure {
        name: "mlmc-decay",
        chart,
        panels: Vec::new(),
        table,
        settings: json!({
            "seed": cfg.seed, "reps": cfg.reps, "vae_reps": cfg.vae_reps,
            "max_level": cfg.max_level, "i0": cfg.i0, "datapoint": cfg.datapoint, "vae": vae,
        }),
        notes,
        summary: serde_json::Value::Object(summary),
    })
}
