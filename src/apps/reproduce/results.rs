//! A protocol's results: each finished run's `result.json` in its directory, and the
//! protocol's results.md, results.json, results.csv and results.png over all of them.

use super::{EvalSettings, PlannedRun, ProtocolSpec, Selection};
use crate::apps::plot::{self, Axis, Chart, Line, Marker, Series};
use crate::config::TrainConfig;
use crate::estimators::{EncoderChoice, EstimatorKind};
use crate::model::checkpoint;
use crate::progress::Progress;
use crate::{data, eval, files, train};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A finished run's line of the results: written last, so its presence means finished.
pub const RESULT_FILE: &str = "result.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: String,
    pub row: String,
    pub seed: u64,
    pub estimator: String,
    /// The estimator's settings and the optimisation, in words.
    pub settings: String,
    pub k: usize,
    pub batch: usize,
    pub epochs: usize,
    /// Samples per datapoint per step: the plan's expectation (None for the coupled chains,
    /// whose cost follows the meeting times) and the run's mean over all its steps.
    pub expected_samples: Option<f64>,
    pub measured_samples: f64,
    pub steps: usize,
    /// Seconds of training steps (validation and test bounds excluded), all epochs.
    pub train_seconds: f64,
    /// The epoch whose checkpoint was scored.
    pub scored_epoch: usize,
    /// Test L_K of that checkpoint: mean and standard error over `test_images`.
    pub test_lk: f64,
    pub test_lk_stderr: f64,
    pub test_images: usize,
    pub eval_seconds: f64,
    pub eval: EvalSettings,
    /// The paper's test negative log-likelihood for this row, where it prints one.
    pub paper_nll: Option<f64>,
    /// Active units of the scored checkpoint on the test images, per layer ("21+5"), and the
    /// paper's (absent in results written before they were counted).
    #[serde(default)]
    pub active_units: String,
    #[serde(default)]
    pub paper_active_units: Option<String>,
    /// The paper's figure the row draws ("Figure 2"), where the protocol has figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figure: Option<String>,
}

/// The run's result.json, if it has one (an unreadable one is an error naming the file).
pub fn read(dir: &Path) -> Result<Option<RunResult>> {
    let path = dir.join(RESULT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{} is damaged; delete it to score the run again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

pub fn save(dir: &Path, result: &RunResult) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(result)?;
    json.push(b'\n');
    files::write_atomic(&dir.join(RESULT_FILE), &json)
}

/// The lines of a run's metrics.jsonl as JSON objects.
fn metrics(dir: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    Ok(plot::runs::load_run(dir)?.epochs)
}

fn field(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    m.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

/// The estimator's settings in words, e.g. "p=0.585, cap 6, I0=0; encoder IWAE-5".
pub fn describe(cfg: &TrainConfig) -> String {
    let e = &cfg.estimator;
    let u = &e.unbiased;
    let mut parts = Vec::new();
    match e.kind {
        EstimatorKind::MlmcSs | EstimatorKind::MlmcRr => {
            let cap = u.mlmc_cap.map_or("no cap".into(), |c| format!("cap {c}"));
            parts.push(format!("p={}, {cap}, I0={}", u.mlmc_p, u.mlmc_i0));
        }
        EstimatorKind::Sumo => parts.push(format!("m={}", cfg.k)),
        kind if kind.coupling_kernel().is_some() => {
            parts.push(format!("{} particles per set", cfg.k))
        }
        EstimatorKind::Dreg => parts.push(format!("K={}, alpha={}", cfg.k, e.alpha)),
        _ => parts.push(format!("K={}", cfg.k)),
    }
    if e.kind.is_random_size() {
        parts.push(match u.encoder {
            EncoderChoice::Iwae => format!("encoder IWAE-{}", u.encoder_k),
            other => format!("encoder {}", other.name()),
        });
    }
    let a = &cfg.adam;
    let schedule = clap::ValueEnum::to_possible_value(&cfg.schedule)
        .map_or(String::new(), |v| v.get_name().to_string());
    let mut o = format!(
        "{} lr {} ({schedule}), eps {:e}, batch {}",
        if a.amsgrad { "AMSGrad" } else { "Adam" },
        cfg.lr,
        a.eps,
        cfg.batch
    );
    if let (Some(d), Some(en)) = (a.clip_decoder, a.clip_encoder) {
        o.push_str(&format!(", clip {d} (decoder) / {en} (encoder)"));
    }
    parts.push(o);
    if let Some(g) = cfg.grad_var {
        parts.push(format!(
            "gradient variance every {} steps from {} estimates",
            g.every, g.reps
        ));
    }
    parts.join("; ")
}

/// Scores a trained run: the test bound of its selected checkpoint, with its cost and time
/// from metrics.jsonl.
pub fn score(
    run: &PlannedRun,
    spec: &ProtocolSpec,
    eval_settings: &EvalSettings,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    let cfg = &run.cfg;
    let dir = &cfg.out;
    let epochs = metrics(dir)?;
    // The first epoch of the best bound: the one checkpoint-best.safetensors holds.
    let mut best = 0;
    for (i, m) in epochs.iter().enumerate() {
        if field(m, "val_lk") > field(&epochs[best], "val_lk") {
            best = i;
        }
    }
    let (file, scored_epoch) = match spec.selection {
        Selection::BestValidation => (train::BEST_CHECKPOINT_FILE, best + 1),
        Selection::Last => (train::CHECKPOINT_FILE, epochs.len()),
    };
    let (params, _) = checkpoint::load(&dir.join(file))?;
    let ds = data::load_or_bundled_with(cfg.data.as_deref(), &cfg.load_options())?;
    let n = eval_settings.limit.unwrap_or(usize::MAX).min(ds.test.count);
    let x = data::binarize_eval(&ds.test.slice(0..n));
    let mut backend =
        train::make_backend(cfg.backend, &params, cfg.threads, cfg.adapter.as_deref())?;
    let r = eval::log_likelihood_with(
        backend.as_mut(),
        &x,
        n,
        eval_settings.k,
        eval::DEFAULT_EVAL_SEED,
        0,
        progress,
    )
    .with_context(|| format!("scoring run {}", run.name))?;
    let active = crate::model::active_units::active_units(&params, &x, n, eval::DEFAULT_EVAL_SEED);
    let steps: f64 = epochs.iter().map(|m| field(m, "steps")).sum();
    let samples: f64 = epochs
        .iter()
        .map(|m| field(m, "samples_per_datapoint") * field(m, "steps"))
        .sum();
    Ok(RunResult {
        run: run.name.clone(),
        row: run.row.name.clone(),
        seed: run.seed,
        estimator: cfg.estimator.kind.name().to_string(),
        settings: describe(cfg),
        k: cfg.k,
        batch: cfg.batch,
        epochs: epochs.len(),
        expected_samples: cfg.validate()?.expected_samples(),
        measured_samples: samples / steps.max(1.0),
        steps: steps as usize,
        train_seconds: epochs.iter().map(|m| field(m, "seconds")).sum(),
        scored_epoch,
        test_lk: r.mean,
        test_lk_stderr: r.stderr,
        test_images: r.count,
        eval_seconds: r.seconds,
        eval: *eval_settings,
        paper_nll: run.row.paper_nll,
        active_units: active.label(),
        paper_active_units: run.row.paper_active_units.map(str::to_string),
        figure: run.row.figure.map(super::protocols::figure_label),
    })
}

/// The finished results among `all` (those whose result.json matches the planned epochs
/// and test bound), and the names of the others.
fn gather(all: &[PlannedRun], eval: &EvalSettings) -> Result<(Vec<RunResult>, Vec<String>)> {
    let (mut done, mut pending) = (Vec::new(), Vec::new());
    for run in all {
        match read(&run.cfg.out)? {
            Some(r) if r.eval == *eval && r.epochs == run.cfg.epochs => done.push(r),
            _ => pending.push(run.name.clone()),
        }
    }
    Ok((done, pending))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn markdown(
    spec: &ProtocolSpec,
    eval: &EvalSettings,
    done: &[RunResult],
    pending: &[String],
) -> String {
    let images = done
        .first()
        .map_or("-".into(), |r| r.test_images.to_string());
    let checkpoint = match spec.selection {
        Selection::BestValidation => "the best-validation epoch's checkpoint",
        Selection::Last => "the last epoch's checkpoint",
    };
    let mut s = format!(
        "# uvae reproduce {}\n\nSource: {}.\n\nTest NLL = -L_{} (nats) of {checkpoint} on {images} test images, ± one standard error over the images. Samples are per datapoint per step (the cost), the encoder's own included; train s counts training steps only.\n\n",
        spec.protocol.name(),
        spec.source,
        eval.k,
    );
    // A protocol of figures names each row's figure in a column of its own.
    let figures = spec.rows.iter().any(|r| r.figure.is_some());
    let (fig_head, fig_rule) = if figures {
        (" figure |", "---|")
    } else {
        ("", "")
    };
    s.push_str(&format!("| run |{fig_head} estimator | settings | samples expected | samples measured | epochs | train s | scored epoch | test NLL | ± SE | paper NLL | active units | paper active units |\n"));
    s.push_str(&format!(
        "|---|{fig_rule}---|---|---|---|---|---|---|---|---|---|---|---|\n"
    ));
    for r in done {
        let fig = match (&r.figure, figures) {
            (Some(f), _) => format!(" {f} |"),
            (None, true) => " - |".to_string(),
            (None, false) => String::new(),
        };
        s.push_str(&format!(
            "| {} |{fig} {} | {} | {} | {:.3} | {} | {:.1} | {} | {:.2} | {:.2} | {} | {} | {} |\n",
            r.run,
            r.estimator,
            r.settings,
            opt(r.expected_samples, 3),
            r.measured_samples,
            r.epochs,
            r.train_seconds,
            r.scored_epoch,
            -r.test_lk,
            r.test_lk_stderr,
            opt(r.paper_nll, 2),
            r.active_units,
            r.paper_active_units.as_deref().unwrap_or("-"),
        ));
    }
    let summary = summarise(done);
    if summary.iter().any(|r| r.seeds > 1) {
        s.push_str("\nOver seeds (mean and standard deviation of the runs' test NLL):\n\n| row | seeds | test NLL mean | sd | paper NLL |\n|---|---|---|---|---|\n");
        for r in &summary {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {} | {} |\n",
                r.row,
                r.seeds,
                r.nll_mean,
                opt(r.nll_sd, 2),
                opt(r.paper_nll, 2)
            ));
        }
    }
    if !pending.is_empty() {
        s.push_str(&format!(
            "\nNot finished yet ({}): {}.\n",
            pending.len(),
            pending.join(", ")
        ));
    }
    s
}

/// One row's finished runs over their seeds.
#[derive(Clone, Debug, Serialize)]
pub struct RowSummary {
    pub row: String,
    pub seeds: usize,
    pub nll_mean: f64,
    /// The sample standard deviation over seeds (None for one seed).
    pub nll_sd: Option<f64>,
    pub paper_nll: Option<f64>,
}

/// The finished runs grouped by row, in the order the rows first appear.
pub fn summarise(done: &[RunResult]) -> Vec<RowSummary> {
    let mut rows: Vec<&str> = Vec::new();
    for r in done {
        if !rows.contains(&r.row.as_str()) {
            rows.push(&r.row);
        }
    }
    rows.into_iter()
        .map(|row| {
            let runs: Vec<&RunResult> = done.iter().filter(|r| r.row == row).collect();
            let nll: Vec<f64> = runs.iter().map(|r| -r.test_lk).collect();
            let n = nll.len() as f64;
            let mean = nll.iter().sum::<f64>() / n;
            let sd = (nll.len() > 1)
                .then(|| (nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
            RowSummary {
                row: row.to_string(),
                seeds: nll.len(),
                nll_mean: mean,
                nll_sd: sd,
                paper_nll: runs[0].paper_nll,
            }
        })
        .collect()
}

fn csv(done: &[RunResult]) -> String {
    const HEADER: &str = "run,row,figure,seed,estimator,settings,k,batch,epochs,steps,expected_samples,measured_samples,train_seconds,scored_epoch,test_k,test_images,test_lk,test_lk_stderr,test_nll,paper_nll,active_units,paper_active_units";
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut s = files::csv_record(&HEADER.split(',').collect::<Vec<_>>());
    for r in done {
        s += &files::csv_record(&[
            r.run.clone(),
            r.row.clone(),
            r.figure.clone().unwrap_or_default(),
            r.seed.to_string(),
            r.estimator.clone(),
            r.settings.clone(),
            r.k.to_string(),
            r.batch.to_string(),
            r.epochs.to_string(),
            r.steps.to_string(),
            opt(r.expected_samples),
            r.measured_samples.to_string(),
            r.train_seconds.to_string(),
            r.scored_epoch.to_string(),
            r.eval.k.to_string(),
            r.test_images.to_string(),
            r.test_lk.to_string(),
            r.test_lk_stderr.to_string(),
            (-r.test_lk).to_string(),
            opt(r.paper_nll),
            r.active_units.clone(),
            r.paper_active_units.clone().unwrap_or_default(),
        ]);
    }
    s
}

/// Test NLL (from metrics.jsonl's test_lk) against epochs and against cumulative training
/// seconds, every run with a metrics.jsonl overlaid; None when no run has logged a test bound.
fn curves(all: &[PlannedRun]) -> Result<Option<Vec<u8>>> {
    let mut by_epoch = Chart::new(
        "Test NLL during training",
        Axis::linear("epoch"),
        Axis::linear("test NLL = -L_K (nats)"),
    );
    let mut by_time = Chart::new(
        "Test NLL against training time",
        Axis::linear("training time, cumulative (s)"),
        Axis::linear("test NLL = -L_K (nats)"),
    );
    for (i, run) in all.iter().enumerate() {
        let Ok(epochs) = metrics(&run.cfg.out) else {
            continue;
        };
        let (mut e_pts, mut t_pts, mut clock) = (Vec::new(), Vec::new(), 0.0);
        for m in &epochs {
            clock += field(m, "seconds");
            if let Some(t) = m.get("test_lk").and_then(serde_json::Value::as_f64) {
                e_pts.push((field(m, "epoch"), -t));
                t_pts.push((clock, -t));
            }
        }
        if e_pts.is_empty() {
            continue;
        }
        let style = |s: Series| s.color(i).line(Line::Solid).marker(Marker::Circle);
        by_epoch.push(style(Series::new(run.name.clone(), e_pts)));
        by_time.push(style(Series::new(run.name.clone(), t_pts)));
    }
    if by_epoch.series.is_empty() {
        return Ok(None);
    }
    Ok(Some(plot::side_by_side_png(&[&by_epoch, &by_time])?))
}

/// Writes results.md, .json, .csv (and .png when any run logged a test bound) in `out`
/// over every finished run of `all`; returns the files and the finished count.
pub fn write(
    spec: &ProtocolSpec,
    all: &[PlannedRun],
    eval: &EvalSettings,
    out: &Path,
) -> Result<(Vec<PathBuf>, usize)> {
    let (done, pending) = gather(all, eval)?;
    let json = serde_json::json!({
        "protocol": spec.protocol,
        "source": spec.source,
        "selection": spec.selection,
        "eval": eval,
        "runs": done,
        "by_row": summarise(&done),
        "pending": pending,
    });
    let mut json_bytes = serde_json::to_vec_pretty(&json)?;
    json_bytes.push(b'\n');
    let mut written = Vec::new();
    for (name, bytes) in [
        (
            "results.md",
            markdown(spec, eval, &done, &pending).into_bytes(),
        ),
        ("results.json", json_bytes),
        ("results.csv", csv(&done).into_bytes()),
    ] {
        let path = out.join(name);
        files::write_atomic(&path, &bytes)?;
        written.push(path);
    }
    if let Some(png) = curves(all)? {
        let path = out.join("results.png");
        files::write_atomic(&path, &png)?;
        written.push(path);
    }
    Ok((written, done.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(row: &str, seed: u64, test_lk: f64) -> RunResult {
        RunResult {
            run: format!("{row}-seed{seed}"),
            row: row.into(),
            seed,
            estimator: "iwae".into(),
            settings: String::new(),
            k: 5,
            batch: 20,
            epochs: 1,
            expected_samples: Some(5.0),
            measured_samples: 5.0,
            steps: 10,
            train_seconds: 1.0,
            scored_epoch: 1,
            test_lk,
            test_lk_stderr: 0.5,
            test_images: 10,
            eval_seconds: 1.0,
            eval: EvalSettings {
                k: 8,
                limit: None,
                best_validation: false,
            },
            paper_nll: Some(85.0),
            active_units: "19".into(),
            paper_active_units: Some("20".into()),
            figure: None,
        }
    }

    #[test]
    fn rows_are_summarised_over_their_seeds() {
        let done = [
            result("a", 0, -90.0),
            result("b", 0, -80.0),
            result("a", 1, -92.0),
        ];
        let s = summarise(&done);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].row.as_str(), s[0].seeds), ("a", 2));
        assert!((s[0].nll_mean - 91.0).abs() < 1e-12);
        assert!((s[0].nll_sd.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!((s[1].seeds, s[1].nll_sd), (1, None));
    }
}
