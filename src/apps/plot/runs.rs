//! Training curves of run directories (`uvae plot`): each run's `metrics.jsonl` and
//! `config.json` (README, "The run directory") overlaid on one chart, a colour per run.

use super::{Axis, Chart, Line, Marker, Series};
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// What the x axis shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    Epoch,
    /// Cumulative training time: metrics.jsonl's `seconds` is per epoch.
    Seconds,
    /// Training steps: metrics.jsonl's `steps` is per epoch.
    Steps,
}

/// One run directory, read.
#[derive(Clone, Debug)]
pub struct Run {
    pub dir: PathBuf,
    /// "<estimator> K=<k>" from config.json (the directory name when it has none).
    pub label: String,
    pub epochs: Vec<Map<String, Value>>,
}

/// Reads `dir/metrics.jsonl` (required) and `dir/config.json` (for the label; a missing
/// one falls back to the directory name, a corrupt one is an error).
pub fn load_run(dir: &Path) -> Result<Run> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut epochs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => epochs.push(m),
            Ok(_) => bail!("{} line {} is not a JSON object", path.display(), i + 1),
            Err(e) => bail!("{} line {} is not valid JSON: {e}", path.display(), i + 1),
        }
    }
    if epochs.is_empty() {
        bail!("{} holds no epochs", path.display());
    }
    let cfg_path = dir.join("config.json");
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let label = match std::fs::read_to_string(&cfg_path) {
        Err(_) => dir_name,
        Ok(text) => {
            let cfg: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
            let kind = cfg.pointer("/estimator/kind").and_then(Value::as_str);
            let k = cfg.get("k").and_then(Value::as_u64);
            match (kind, k) {
                (Some(kind), Some(k)) => format!("{kind} K={k}"),
                _ => bail!(
                    "{} lacks estimator.kind or k (is it a uvae run configuration?)",
                    cfg_path.display()
                ),
            }
        }
    };
    Ok(Run {
        dir: dir.to_path_buf(),
        label,
        epochs,
    })
}

/// The unit of a metrics.jsonl field, for the y label.
fn unit_of(metric: &str) -> &'static str {
    match metric {
        "seconds" => "s",
        "datapoints_per_s" => "datapoints / s",
        "lr" => "learning rate",
        m if m.starts_with("grad_norm") || m.ends_with("mean_norm") => "L2 norm",
        m if m.ends_with("mean_variance") => "variance",
        m if m.ends_with("snr") => "|mean| / sd",
        m if m.contains("samples") => "samples per datapoint",
        _ => "nats per datapoint",
    }
}

/// A curve's points and, where the run logged a standard error, its bars' half-widths.
type Curve = (Vec<(f64, f64)>, Option<Vec<f64>>);

/// `--metric ARRAY.PATH`: a field of the points an epoch line logs in the array `ARRAY`,
/// each with its run `step` (e.g. `grad_var.encoder.mean_variance`).
fn split_nested(metric: &str) -> Option<(&str, String)> {
    let (array, path) = metric.split_once('.')?;
    Some((array, format!("/{}", path.replace('.', "/"))))
}

/// One curve per (run, metric): the metric against the x axis, with ±2 SE bars where the
/// field `<metric>_stderr` exists. Rows without the field are skipped. A nested metric's
/// points sit at their step, placed within their epoch's span of the x axis.
fn curve(run: &Run, x: XAxis, metric: &str) -> Option<Curve> {
    let (mut pts, mut err) = (Vec::new(), Vec::new());
    let (mut clock, mut steps) = (0.0, 0.0);
    let nested = split_nested(metric);
    for (i, e) in run.epochs.iter().enumerate() {
        let num = |k: &str| e.get(k).and_then(Value::as_f64);
        let epoch_steps = num("steps").unwrap_or(0.0);
        let seconds = num("seconds").unwrap_or(0.0);
        let epoch = num("epoch").unwrap_or((i + 1) as f64);
        // This epoch's span of the x axis.
        let (x0, x1) = match x {
            XAxis::Epoch => (epoch - 1.0, epoch),
            XAxis::Seconds => (clock, clock + seconds),
            XAxis::Steps => (steps, steps + epoch_steps),
        };
        if let Some((array, path)) = &nested {
            for p in e
                .get(*array)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(step), Some(y)) = (
                    p.get("step").and_then(Value::as_f64),
                    p.pointer(path).and_then(Value::as_f64),
                ) else {
                    continue;
                };
                let within = if epoch_steps > 0.0 {
                    (step - steps) / epoch_steps
                } else {
                    1.0
                };
                pts.push((x0 + within * (x1 - x0), y));
                err.push(0.0);
            }
        } else if let Some(y) = num(metric) {
            pts.push((x1, y));
            err.push(num(&format!("{metric}_stderr")).map_or(0.0, |s| 2.0 * s));
        }
        clock += seconds;
        steps += epoch_steps;
    }
    let has_err = err.iter().any(|&e| e > 0.0);
    (!pts.is_empty()).then_some((pts, has_err.then_some(err)))
}

/// `--metric grad_var`: the encoder's and the decoder's gradient variance.
pub const GRAD_VAR_METRICS: [&str; 2] = [
    "grad_var.encoder.mean_variance",
    "grad_var.decoder.mean_variance",
];

/// The chart of `runs`: the named metric, or by default the training objective, the
/// validation L_K and (where logged) the test L_K.
pub fn runs_chart(runs: &[Run], x: XAxis, metric: Option<&str>) -> Result<Chart> {
    if runs.is_empty() {
        bail!("no run directories given");
    }
    // Two runs with the same estimator and K are told apart by their directory.
    let labels: Vec<String> = runs
        .iter()
        .map(|r| {
            if runs.iter().filter(|o| o.label == r.label).count() > 1 {
                format!("{} ({})", r.label, r.dir.display())
            } else {
                r.label.clone()
            }
        })
        .collect();
    let val_k = runs[0].epochs[0].get("val_k").and_then(Value::as_u64);
    let metrics: Vec<(String, String)> = match metric {
        Some("grad_var") => GRAD_VAR_METRICS
            .iter()
            .map(|m| (m.to_string(), m.replace(".mean_variance", " variance")))
            .collect(),
        Some(m) => vec![(m.to_string(), m.to_string())],
        None => vec![
            ("train_objective".into(), "train objective".into()),
            (
                "val_lk".into(),
                format!(
                    "validation L_{}",
                    val_k.map_or("K".into(), |k| k.to_string())
                ),
            ),
            ("test_lk".into(), "test L_K".into()),
        ],
    };
    let x_axis = match x {
        XAxis::Epoch => Axis::linear("epoch"),
        XAxis::Seconds => Axis::linear("training time, cumulative (s)"),
        XAxis::Steps => Axis::linear("training steps"),
    };
    let y_label = match metric {
        Some("grad_var") => {
            "gradient variance (mean over coordinates, fixed minibatch)".to_string()
        }
        Some(m) => format!("{m} ({})", unit_of(m)),
        None => "nats per datapoint".to_string(),
    };
    let title = match metric {
        Some(m) => format!("{m} by run"),
        None => "Training curves (bars: ±2 standard errors)".to_string(),
    };
    let y_axis = if metric == Some("grad_var") {
        Axis::log(y_label)
    } else {
        Axis::linear(y_label)
    };
    let mut chart = Chart::new(title, x_axis, y_axis);
    let styles = [
        (Line::Solid, Marker::Circle),
        (Line::Dashed, Marker::Triangle),
        (Line::None, Marker::Square),
    ];
    for (mi, (field, name)) in metrics.iter().enumerate() {
        for (ri, run) in runs.iter().enumerate() {
            let Some((pts, err)) = curve(run, x, field) else {
                continue;
            };
            let (line, marker) = styles[mi % styles.len()];
            let mut s = Series::new(format!("{}: {name}", labels[ri]), pts)
                .color(ri)
                .line(line)
                .marker(marker);
            s.y_err = err;
            chart.push(s);
        }
    }
    if chart.series.is_empty() {
        let fields: Vec<&str> = runs[0].epochs[0].keys().map(String::as_str).collect();
        bail!(
            "no run has {} in metrics.jsonl (fields of {}: {})",
            metric.unwrap_or("train_objective or val_lk"),
            runs[0].dir.join("metrics.jsonl").display(),
            fields.join(", ")
        );
    }
    Ok(chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(lines: &str, config: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("metrics.jsonl"), lines).unwrap();
        if let Some(c) = config {
            std::fs::write(d.path().join("config.json"), c).unwrap();
        }
        d
    }

    #[test]
    fn reads_runs_and_builds_curves() {
        let d = run_dir(
            "{\"epoch\":1,\"seconds\":2.0,\"train_objective\":-100,\"val_lk\":-99,\"val_lk_stderr\":1,\"val_k\":5}\n\
             {\"epoch\":2,\"seconds\":3.0,\"train_objective\":-95,\"val_lk\":-94,\"val_lk_stderr\":1,\"val_k\":5}\n",
            Some("{\"estimator\":{\"kind\":\"iwae\"},\"k\":5}"),
        );
        let run = load_run(d.path()).unwrap();
        assert_eq!(run.label, "iwae K=5");
        let chart = runs_chart(std::slice::from_ref(&run), XAxis::Seconds, None).unwrap();
        assert_eq!(chart.series.len(), 2);
        assert_eq!(chart.series[0].points, vec![(2.0, -100.0), (5.0, -95.0)]);
        assert_eq!(chart.series[1].y_err, Some(vec![2.0, 2.0]));
        assert!(chart.series[1].name.contains("validation L_5"));
        assert!(runs_chart(&[run], XAxis::Epoch, Some("nope")).is_err());
    }

    #[test]
    fn nested_grad_var_points_sit_at_their_steps() {
        let d = run_dir(
            "{\"epoch\":1,\"steps\":10,\"seconds\":4.0,\"train_objective\":-9,\"grad_var\":[{\"step\":5,\"encoder\":{\"mean_variance\":0.5},\"decoder\":{\"mean_variance\":0.25}},{\"step\":10,\"encoder\":{\"mean_variance\":0.4},\"decoder\":{\"mean_variance\":0.2}}]}\n\
             {\"epoch\":2,\"steps\":10,\"seconds\":2.0,\"train_objective\":-8,\"grad_var\":[{\"step\":15,\"encoder\":{\"mean_variance\":0.3},\"decoder\":{\"mean_variance\":0.1}}]}\n",
            None,
        );
        let run = load_run(d.path()).unwrap();
        let runs = std::slice::from_ref(&run);
        let c = runs_chart(runs, XAxis::Steps, Some("grad_var")).unwrap();
        assert_eq!(c.series.len(), 2);
        assert_eq!(
            c.series[0].points,
            vec![(5.0, 0.5), (10.0, 0.4), (15.0, 0.3)]
        );
        assert_eq!(c.series[1].points[2], (15.0, 0.1));
        assert_eq!(c.y.scale, super::super::Scale::Log10);
        // Epochs: step 15 is half-way through epoch 2; seconds: half of its 2 s after 4 s.
        let e = runs_chart(runs, XAxis::Epoch, Some("grad_var.encoder.mean_variance")).unwrap();
        assert_eq!(e.series[0].points, vec![(0.5, 0.5), (1.0, 0.4), (1.5, 0.3)]);
        let s = runs_chart(runs, XAxis::Seconds, Some("grad_var.encoder.mean_variance")).unwrap();
        assert_eq!(s.series[0].points[2], (5.0, 0.3));
        // The epoch metrics keep their place at each epoch's end.
        let t = runs_chart(runs, XAxis::Steps, Some("train_objective")).unwrap();
        assert_eq!(t.series[0].points, vec![(10.0, -9.0), (20.0, -8.0)]);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let d = run_dir("{\"epoch\":1}\nnot json\n", None);
        let e = load_run(d.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl line 2"), "{e}");
        let missing = tempfile::tempdir().unwrap();
        let e = format!("{:#}", load_run(missing.path()).unwrap_err());
        assert!(e.contains("metrics.jsonl"), "{e}");
        let d = run_dir("{\"epoch\":1}\n", Some("{"));
        let e = format!("{:#}", load_run(d.path()).unwrap_err());
        assert!(e.contains("config.json"), "{e}");
    }
}
