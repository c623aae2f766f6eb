//! `uvae figure meeting-times`: the distribution of the coupled chains' meeting time tau
//! (docs/design.md §1) as the survival function P(tau > t), for several particle counts K and
//! the PIMH, ISIR and DISIR kernels, on an exact model via `coupling::estimate`. The tail of
//! tau sets the cost of a batch that runs until every datapoint's chains have met.
//! DISIR is the crate's labelled reconstruction (ISIR with a Metropolised index draw,
//! docs/design.md §7), and the figure says so.

use super::{Figure, Table};
use crate::apps::plot::{Axis, Chart, Line, Marker, Series};
use crate::coupling::{self, ChainKernel, CouplingConfig, MeetingStats};
use crate::exact::{ExactModel, Ppca, Toy};
use crate::model::ModelChoice;
use anyhow::{bail, Result};
use rand::SeedableRng;
use serde_json::json;

#[derive(Clone, Debug, PartialEq)]
pub struct MeetingConfig {
    pub model: ModelChoice,
    pub seed: u64,
    /// Coupled runs per (kernel, K).
    pub reps: usize,
    pub ks: Vec<usize>,
    pub datapoint: usize,
    pub max_iters: usize,
}

impl Default for MeetingConfig {
    fn default() -> Self {
        MeetingConfig {
            model: ModelChoice::Ppca,
            seed: 0,
            reps: 10000,
            ks: vec![2, 5, 10, 20],
            datapoint: 0,
            max_iters: 1000,
        }
    }
}

/// The legend name of a kernel; DISIR carries its label.
pub fn kernel_label(k: ChainKernel) -> &'static str {
    match k {
        ChainKernel::Pimh => "PIMH",
        ChainKernel::Isir => "ISIR",
        ChainKernel::Disir => "DISIR*",
    }
}

/// Meeting-time statistics per (kernel, K), kernels in `ChainKernel::ALL` order.
pub fn measure(cfg: &MeetingConfig) -> Result<Vec<(ChainKernel, usize, MeetingStats)>> {
    if cfg.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let model: Box<dyn ExactModel> = match cfg.model {
        ModelChoice::Toy => Box::new(Toy::new(cfg.seed)),
        ModelChoice::Ppca => Box::new(Ppca::new(cfg.seed)),
        m @ (ModelChoice::Vae | ModelChoice::Hvae) => {
            bail!("--model {m}: coupled chains need an exact model (toy or ppca)")
        }
        ModelChoice::Hgauss => bail!("--model hgauss is not in this figure yet: use toy or ppca"),
    };
    let Some(x) = model.data().get(cfg.datapoint) else {
        bail!("--datapoint {} is out of range", cfg.datapoint);
    };
    let mut out = Vec::new();
    for (ki, &kernel) in ChainKernel::ALL.iter().enumerate() {
        for &k in &cfg.ks {
            let chains = CouplingConfig {
                max_iters: cfg.max_iters,
                ..CouplingConfig::new(kernel, k)
            };
            chains.validate()?;
            // One stream per (kernel, K), so adding a K leaves the others' runs unchanged.
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                cfg.seed ^ 0x3EE7_0000 ^ ((ki as u64) << 32) ^ k as u64,
            );
            let (mut times, mut capped) = (Vec::new(), Vec::new());
            for _ in 0..cfg.reps {
                let e = coupling::estimate(model.as_ref(), x, &chains, &mut rng);
                times.push(e.meeting_time);
                capped.push(e.capped);
            }
            out.push((kernel, k, MeetingStats::from_times(&times, &capped)));
        }
    }
    Ok(out)
}

pub fn figure(cfg: &MeetingConfig) -> Result<Figure> {
    let stats = measure(cfg)?;
    let mut table = Table::new(&["kernel", "k", "t", "survival"]);
    let title = format!(
        "Meeting times of coupled chains on {}: P(tau > t), {} runs each (DISIR*: a labelled reconstruction)",
        cfg.model.name(),
        cfg.reps
    );
    let mut chart = Chart::new(
        title,
        Axis::linear("t (chain iterations)"),
        Axis::log("P(tau > t)"),
    );
    chart.width = 1100;
    let markers = [Marker::Circle, Marker::Triangle, Marker::Square];
    let lines = [Line::Solid, Line::Dashed, Line::Solid];
    let mut summary = Vec::new();
    for (kernel, k, s) in &stats {
        let ki = ChainKernel::ALL
            .iter()
            .position(|c| c == kernel)
            .unwrap_or(0);
        let kpos = cfg.ks.iter().position(|v| v == k).unwrap_or(0);
        let mut pts = Vec::new();
        for (t, &p) in s.survival.iter().enumerate() {
            table.push(vec![kernel.name().into(), (*k).into(), t.into(), p.into()]);
            if p > 0.0 {
                pts.push((t as f64, p));
            }
        }
        chart.push(
            Series::new(format!("{} K={k}", kernel_label(*kernel)), pts)
                .color(kpos)
                .marker(markers[ki])
                .line(lines[ki]),
        );
        summary.push(json!({
            "kernel": kernel.name(), "k": k, "mean": s.mean, "sd": s.sd, "p50": s.p50,
            "p90": s.p90, "p99": s.p99, "max": s.max, "capped": s.capped,
        }));
    }
    let capped: usize = stats.iter().map(|s| s.2.capped).sum();
    let mut notes = vec![
        "DISIR* is the crate's labelled reconstruction of the paper's DISIR (ISIR with Liu's Metropolised index draw); the paper's definition could not be checked (docs/design.md §7)".to_string(),
        "chains: k = 0, m = 4, lag 1 (CouplingConfig::new); t = 0 is the initial state; P(tau > t) = 0 is not drawn on the log axis (it is in the table)".to_string(),
    ];
    if capped > 0 {
        notes.push(format!(
            "{capped} runs hit --max-iters {}: their meeting times are lower bounds",
            cfg.max_iters
        ));
    }
    Ok(Figure {
        name: "meeting-times",
        chart,
        panels: Vec::new(),
        table,
        settings: json!({
            "model": cfg.model.name(), "seed": cfg.seed, "reps": cfg.reps, "ks": cfg.ks,
            "datapoint": cfg.datapoint, "max_iters": cfg.max_iters,
            "kernels": ["pimh", "isir", "disir"],
        }),
        notes,
        summary: json!(summary),
    })
}
