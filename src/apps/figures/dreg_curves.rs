//! `uvae figure dreg-curves RUN_DIR...`: training curves drawn as the DReG paper draws them
//! (Tucker et al. 2019, Figures 2 and 3). Runs are grouped by their directory name without
//! `-seed<S>` (the names `uvae reproduce` gives); each seed is drawn faint and the mean over
//! seeds bold. The right panel is the test objective against steps (a JVI run's jackknife
//! estimate, else the test bound L_K), relative to a named baseline group's mean at the same
//! step when one is given; the left panel, where runs logged it (`--grad-var-every`), the
//! encoder gradient's variance. The original estimators are dashed, their DReG twins solid.

use super::{Cell, Figure, Table};
use crate::apps::plot::runs::{load_run, Run};
use crate::apps::plot::{Axis, Chart, Emphasis, Line, Marker, Series};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The runs to draw and the group the objective is taken relative to (None: absolute).
#[derive(Clone, Debug, Default)]
pub struct CurvesConfig {
    pub runs: Vec<PathBuf>,
    pub baseline: Option<String>,
}

/// One run's curves: (step, value) of the test objective and of the encoder variance.
struct RunCurves {
    dir: String,
    objective: Vec<(f64, f64)>,
    variance: Vec<(f64, f64)>,
    dashed: bool,
}

/// A run directory's group: its name without a trailing `-seed<S>`.
fn group_of(dir: &str) -> String {
    match dir.rsplit_once("-seed") {
        Some((g, s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => g.to_string(),
        _ => dir.to_string(),
    }
}

fn curves_of(run: &Run) -> RunCurves {
    let (mut objective, mut variance, mut steps) = (Vec::new(), Vec::new(), 0.0);
    for e in &run.epochs {
        let num = |k: &str| e.get(k).and_then(Value::as_f64);
        steps += num("steps").unwrap_or(0.0);
        if let Some(y) = num("test_jvi").or(num("test_lk")) {
            objective.push((steps, y));
        }
        for p in e
            .get("grad_var")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let step = p.get("step").and_then(Value::as_f64);
            let var = p.pointer("/encoder/mean_variance").and_then(Value::as_f64);
            if let (Some(s), Some(v)) = (step, var) {
                variance.push((s, v));
            }
        }
    }
    let name = run.dir.file_name().map_or_else(
        || run.dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    RunCurves {
        // The DReG estimators (and DReG(alpha)) solid, the originals dashed, as the paper.
        dashed: !run.label.contains("dreg"),
        dir: name,
        objective,
        variance,
    }
}

/// The mean over `curves` at the steps every one of them has.
fn mean_curve(curves: &[&[(f64, f64)]]) -> Vec<(f64, f64)> {
    let Some(first) = curves.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|&(step, _)| {
            let ys: Option<Vec<f64>> = curves
                .iter()
                .map(|c| c.iter().find(|p| p.0 == step).map(|p| p.1))
                .collect();
            ys.map(|ys| (step, ys.iter().sum::<f64>() / ys.len() as f64))
        })
        .collect()
}

pub fn figure(cfg: &CurvesConfig) -> Result<Figure> {
    if cfg.runs.is_empty() {
        bail!("dreg-curves needs at least one run directory");
    }
    let mut groups: BTreeMap<String, Vec<RunCurves>> = BTreeMap::new();
    let mut order = Vec::new();
    for dir in &cfg.runs {
        let c = curves_of(&load_run(dir)?);
        let g = group_of(&c.dir);
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(c);
    }
    let means: BTreeMap<&String, Vec<(f64, f64)>> = groups
        .iter()
        .map(|(g, runs)| {
            let c: Vec<&[(f64, f64)]> = runs.iter().map(|r| &r.objective[..]).collect();
            (g, mean_curve(&c))
        })
        .collect();
    let baseline = match &cfg.baseline {
        None => None,
        Some(b) => match means.get(b) {
            Some(m) if !m.is_empty() => Some(m.clone()),
            Some(_) => {
                bail!("--baseline {b}: its runs logged no test objective (train with --test-every)")
            }
            None => bail!(
                "--baseline {b}: no such group among the runs; groups: {}",
                order.join(", ")
            ),
        },
    };
    // A point relative to the baseline's mean at the same step (left out where it has none).
    let relative = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        match &baseline {
            None => pts.to_vec(),
            Some(b) => pts
                .iter()
                .filter_map(|&(s, y)| b.iter().find(|p| p.0 == s).map(|p| (s, y - p.1)))
                .collect(),
        }
    };
    let y_label = match &cfg.baseline {
        Some(b) => format!("test objective minus {b}'s (nats)"),
        None => "test objective (nats): L_K, or JVI's estimate".to_string(),
    };
    let mut objective = Chart::new(
        "Test objective (bold: mean over seeds; faint: each seed)",
        Axis::linear("training steps"),
        Axis::linear(y_label),
    );
    let mut variance = Chart::new(
        "Encoder gradient variance (fixed minibatch)",
        Axis::linear("training steps"),
        Axis::log("mean per-coordinate variance"),
    );
    let mut table = Table::new(&["panel", "group", "run", "step", "value"]);
    for (color, g) in order.iter().enumerate() {
        let runs = &groups[g];
        let line = if runs[0].dashed {
            Line::Dashed
        } else {
            Line::Solid
        };
        for (panel, chart, pick) in [
            ("objective", &mut objective, true),
            ("variance", &mut variance, false),
        ] {
            let per_run: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .map(|r| {
                    if pick {
                        relative(&r.objective)
                    } else {
                        r.variance.clone()
                    }
                })
                .collect();
            let refs: Vec<&[(f64, f64)]> = per_run.iter().map(|c| &c[..]).collect();
            let mean = mean_curve(&refs);
            if mean.is_empty() {
                continue;
            }
            for (r, pts) in runs.iter().zip(&per_run) {
                for &(s, y) in pts {
                    table.push(vec![
                        panel.into(),
                        g.clone().into(),
                        r.dir.clone().into(),
                        Cell::Num(s),
                        y.into(),
                    ]);
                }
                let faint = Series::new("", pts.clone()).emphasis(Emphasis::Faint);
                chart.push(faint.color(color).line(line).marker(Marker::None));
            }
            for &(s, y) in &mean {
                table.push(vec![
                    panel.into(),
                    g.clone().into(),
                    "mean".into(),
                    Cell::Num(s),
                    y.into(),
                ]);
            }
            let name = format!("{g} ({} seeds)", runs.len());
            let bold = Series::new(name, mean).emphasis(Emphasis::Bold);
            chart.push(bold.color(color).line(line).marker(Marker::None));
        }
    }
    if objective.series.is_empty() {
        bail!("no run logged a test objective in metrics.jsonl (train with --test-every, or use uvae reproduce)");
    }
    let panels = if variance.series.is_empty() {
        Vec::new()
    } else {
        vec![variance]
    };
    let mut notes = Vec::new();
    if baseline.is_some() {
        notes.push(
            "points where the baseline has no test objective at the same step are left out"
                .to_string(),
        );
    }
    Ok(Figure {
        name: "dreg-curves",
        chart: objective,
        panels,
        table,
        settings: json!({
            "runs": cfg.runs,
            "baseline": cfg.baseline,
            "groups": order,
        }),
        notes,
        summary: json!({}),
    })
}
