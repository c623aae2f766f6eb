//! `uvae plot` and `uvae figure` through the binary: every PNG decodes at its size and is not
//! blank, every CSV/JSON table has its columns and finite values, and the SNR figure shows
//! the DReG paper's trend.

use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::common::cli::{arg, run, run_ok as ok, words};

/// Pixel variance (over all RGB bytes) above which a chart is taken as drawn. A blank
/// white image has variance 0; the default-budget figures and a one-run `uvae plot`
/// measured 700-1160 (mostly white, with dark text, grid and coloured curves).
const MIN_PIXEL_VARIANCE: f64 = 200.0;

/// Decodes a PNG, checks its size and that it is not blank; returns its pixel variance.
fn check_png(path: &Path, width: u32, height: u32) -> f64 {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (width, height), "{}", path.display());
    let px = img.as_raw();
    let n = px.len() as f64;
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(
        var > MIN_PIXEL_VARIANCE,
        "{} looks blank: pixel variance {var:.1}",
        path.display()
    );
    var
}

/// Checks `DIR/<name>.csv` and `.json`: the CSV header is `columns`, every row has one value
/// per column, every column not in `text` parses as a finite number; the JSON's columns and
/// rows agree with the CSV. Returns the JSON document.
fn check_tables(dir: &Path, name: &str, columns: &[&str], text: &[&str]) -> Value {
    let csv = std::fs::read_to_string(dir.join(format!("{name}.csv"))).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, columns, "{name}.csv header");
    let mut rows = 0;
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), columns.len(), "{name}.csv row {line}");
        for (c, v) in columns.iter().zip(&cells) {
            if !text.contains(c) {
                let x: f64 = v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}.csv {c} = {v:?} is not a number"));
                assert!(x.is_finite(), "{name}.csv {c} = {v}");
            }
        }
        rows += 1;
    }
    assert!(rows > 0, "{name}.csv has no rows");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert_eq!(json["figure"], name);
    let jcols: Vec<&str> = json["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(jcols, columns);
    let jrows = json["rows"].as_array().unwrap();
    assert_eq!(jrows.len(), rows, "{name}.json rows");
    for r in jrows {
        for c in columns.iter().filter(|c| !text.contains(c)) {
            let v = r[*c]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}.json {c}: {r}"));
            assert!(v.is_finite());
        }
    }
    json
}

fn train_tiny(dir: &Path, estimator: &str, seed: &str) -> PathBuf {
    let out = dir.join(estimator);
    let mut args = words(
        "train --train-limit 100 --epochs 2 --batch 50 --k 2 --val-k 2 --valid-size 10 \
         --hidden 8 --latent 2 --backend cpu --threads 1",
    );
    args.extend(["--estimator", estimator, "--seed", seed, "--out", arg(&out)]);
    ok(&args);
    out
}

#[test]
fn plot_overlays_two_runs_and_names_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = train_tiny(tmp.path(), "iwae", "1");
    let b = train_tiny(tmp.path(), "iwae-dreg", "2");
    let (a_s, b_s) = (arg(&a), arg(&b));
    // Default --out: plot.png in the first run directory.
    let stdout = ok(&["plot", a_s, b_s]);
    assert!(stdout.contains("4 curves from 2 runs"), "{stdout}");
    check_png(&a.join("plot.png"), 1000, 640);
    for (name, flags) in [
        ("seconds", "--x seconds"),
        ("norm", "--metric grad_norm_encoder"),
    ] {
        let out = tmp.path().join(format!("{name}.png"));
        ok(&[&["plot", a_s, b_s, "--out", arg(&out)], &words(flags)[..]].concat());
        check_png(&out, 1000, 640);
    }

    // A missing and a corrupt metrics.jsonl, and an unknown metric: errors naming the
    // file or field, exit status 1, no panic.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("metrics.jsonl"), "{\"epoch\": 1}\n{oops\n").unwrap();
    for (args, want) in [
        (vec!["plot", arg(&empty)], "metrics.jsonl"),
        (vec!["plot", a_s, arg(&bad)], "metrics.jsonl line 2"),
        (vec!["plot", a_s, "--metric", "nope"], "nope"),
    ] {
        let out = run(&args);
        let err = out.stderr;
        assert_eq!(out.code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// `uvae figure <name> <flags>` into a temporary folder, whose `<name>.png` must be a
/// `width` x `height` chart; returns the folder.
fn figure(name: &str, flags: &str, width: u32, height: u32) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    ok(&[
        &["figure", name, "--out", arg(tmp.path())],
        &words(flags)[..],
    ]
    .concat());
    check_png(&tmp.path().join(format!("{name}.png")), width, height);
    tmp
}

/// Replications of the SNR acceptance test: a tenth of the figure's default 2000, at the
/// figure's own K grid (1..1000), datapoint and perturbation, so that it takes about a
/// second of CPU. At this R the slopes below lay 36-77 standard errors from zero (seeds
/// 0-2: IWAE -0.49..-0.51, IWAE-DReG +0.46..+0.48), so the 3-SE criterion has a wide margin.
const SNR_TEST_REPS: &str = "200";

#[test]
fn snr_figure_shows_iwae_falling_dreg_rising_and_stl_biased() {
    let flags = format!("--seed 0 --threads 1 --reps {SNR_TEST_REPS}");
    // Three panels of 800 x 640 side by side.
    let tmp = figure("snr", &flags, 2400, 640);
    let cols = words(
        "estimator k reps snr snr_se snr_floor mean_from variance mean_abs_grad coords \
         bias_sq bias_sq_floor bias_max_z bias_significant bias_rws_sq bias_rws_sq_floor \
         bias_rws_max_z bias_rws_significant",
    );
    let text = words(
        "estimator mean_from bias_sq bias_sq_floor bias_max_z bias_significant bias_rws_sq \
         bias_rws_sq_floor bias_rws_max_z bias_rws_significant",
    );
    let json = check_tables(tmp.path(), "snr", &cols, &text);
    assert_eq!(
        json["settings"]["ks"],
        serde_json::json!([1, 3, 10, 30, 100, 300, 1000])
    );
    let rows = json["rows"].as_array().unwrap();
    let row = |name: &str, k: u64| {
        rows.iter()
            .find(|r| r["estimator"] == name && r["k"] == k)
            .unwrap_or_else(|| panic!("no row {name} K={k}"))
    };
    // RWS-DReG's encoder gradient is identically 0 at K = 1 (w = 1), and so RWS's mean: left
    // out, and said so.
    let notes = json["notes"].to_string();
    assert!(notes.contains("rws-dreg at K = 1") && notes.contains("rws at K = 1"));

    // The slopes over K = 10..1000 (weighted least squares, jackknife standard errors).
    let slope = |name: &str| {
        let s = &json["summary"]["slopes"][name];
        (s["slope"].as_f64().unwrap(), s["se"].as_f64().unwrap())
    };
    let ((iwae, iwae_se), (dreg, dreg_se)) = (slope("iwae"), slope("iwae-dreg"));
    assert!(
        iwae < -3.0 * iwae_se,
        "IWAE's encoder SNR should fall with K: slope {iwae} ± {iwae_se}"
    );
    assert!(
        dreg > 3.0 * dreg_se,
        "IWAE-DReG's encoder SNR should rise with K: slope {dreg} ± {dreg_se}"
    );
    // IWAE's fitted points stand clear of their noise floor (its mean comes from
    // IWAE-DReG's): at the default R they are >= 10x above it, here >= 3x.
    for k in [10, 30, 100, 300, 1000] {
        let r = row("iwae", k);
        let (snr, floor) = (r["snr"].as_f64().unwrap(), r["snr_floor"].as_f64().unwrap());
        assert!(snr > 3.0 * floor, "IWAE K={k}: SNR {snr} vs floor {floor}");
    }
    // Bias against E[IWAE gradient], Bonferroni z-test at family-wise 1e-3 per (estimator,
    // K): STL's is significant at large K, IWAE-DReG's at no K (7 tests: a false alarm
    // with probability <= 0.7%).
    for k in [100, 300, 1000] {
        assert_eq!(row("stl", k)["bias_significant"], "yes", "STL K={k}");
    }
    for k in [1, 3, 10, 30, 100, 300, 1000] {
        let r = row("iwae-dreg", k);
        assert_eq!(r["bias_significant"], "no", "IWAE-DReG K={k}: {r}");
    }
    assert_eq!(row("rws-dreg", 1000)["bias_rws_significant"], "no");
}

#[test]
fn mlmc_decay_figure_fits_both_models() {
    let tmp = figure(
        "mlmc-decay",
        "--reps 200 --vae-reps 3 --max-level 3",
        1000,
        640,
    );
    let cols = ["model", "level", "samples", "mean_delta_sq", "stderr"];
    let json = check_tables(tmp.path(), "mlmc-decay", &cols, &["model"]);
    assert_eq!(json["rows"].as_array().unwrap().len(), 2 * 4);
    for model in ["ppca", "MNIST VAE"] {
        let beta = json["summary"][model]["beta"].as_f64().unwrap();
        let hi = json["summary"][model]["p_range"][1].as_f64().unwrap();
        assert!(beta.is_finite() && (hi - (1.0 - 2f64.powf(-beta))).abs() < 1e-12);
    }
}

#[test]
fn meeting_times_figure_covers_every_kernel_and_labels_disir() {
    let tmp = figure("meeting-times", "--reps 60 --ks 2,5", 1100, 640);
    let json = check_tables(
        tmp.path(),
        "meeting-times",
        &["kernel", "k", "t", "survival"],
        &["kernel"],
    );
    assert!(json["title"].as_str().unwrap().contains("reconstruction"));
    for kernel in ["pimh", "isir", "disir"] {
        for k in [2, 5] {
            let s: Vec<f64> = json["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["kernel"] == kernel && r["k"] == k)
                .map(|r| r["survival"].as_f64().unwrap())
                .collect();
            // P(tau > 0) = 1, non-increasing, ending at 0.
            assert_eq!(s[0], 1.0, "{kernel} K={k}");
            assert!(s.windows(2).all(|w| w[1] <= w[0]) && *s.last().unwrap() == 0.0);
        }
    }
}

#[test]
fn bias_figure_has_every_estimator() {
    let tmp = figure("bias", "--reps 40 --seed 3", 1000, 640);
    let cols = words("estimator setting cost_mean cost_expected estimate bias stderr exact_log_px");
    let json = check_tables(tmp.path(), "bias", &cols, &["estimator", "setting"]);
    let rows = json["rows"].as_array().unwrap();
    for e in ["iwae", "sumo", "mlmc-ss", "mlmc-rr"] {
        assert!(rows.iter().any(|r| r["estimator"] == e), "{e}");
    }
    // L_K is a lower bound: at K = 1 (the ELBO) its mean lies below log p(x).
    let k1 = rows.iter().find(|r| r["setting"] == "K = 1").unwrap();
    assert!(k1["bias"].as_f64().unwrap() < 0.0);
}

/// `figure dreg-curves` on tiny `reproduce dreg` runs (IWAE and IWAE-DReG at K = 64, two
/// seeds, two epochs of two steps, the variance after every step): the picture holds both
/// panels, and every number of its table follows from the runs' metrics.jsonl, recomputed
/// here: each seed's objective minus the baseline's mean over seeds at the same step, the
/// groups' means over their seeds, and the encoder variances as logged.
#[test]
fn dreg_curves_draws_seeds_means_and_the_relative_objective() {
    use crate::common::cli::metrics_lines;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dreg");
    let mut args = words(
        "reproduce dreg --runs iwae-k64,iwae-dreg-k64 --seeds 2 --backend cpu --epochs 2 \
         --train-limit 64 --valid-size 100 --val-k 2 --eval-k 4 --eval-limit 10 --test-every 1 \
         --test-k 4 --test-limit 10 --grad-var-every 1 --grad-var-reps 2 --quiet --out",
    );
    args.push(arg(&dir));
    ok(&args);
    let runs: Vec<String> = ["iwae", "iwae-dreg"]
        .iter()
        .flat_map(|g| (0..2).map(move |s| format!("{g}-k64-seed{s}")))
        .collect();
    let png = tmp.path().join("curves.png");
    let mut args = vec![
        "figure",
        "dreg-curves",
        "--baseline",
        "iwae-dreg-k64",
        "--out",
        arg(&png),
    ];
    let paths: Vec<PathBuf> = runs.iter().map(|r| dir.join(r)).collect();
    args.extend(paths.iter().map(|p| arg(p)));
    ok(&args);
    // Two panels side by side.
    check_png(&png, 2000, 640);
    let table = read_table(&png.with_extension("json"));
    // (step, test_lk) and (step, encoder variance) of each run, from its metrics.jsonl.
    let logged = |run: &str| {
        let (mut obj, mut var, mut steps) = (Vec::new(), Vec::new(), 0.0);
        for m in metrics_lines(&dir.join(run)) {
            steps += m["steps"].as_f64().unwrap();
            obj.push((steps, m["test_lk"].as_f64().unwrap()));
            for p in m["grad_var"].as_array().unwrap() {
                let v = p["encoder"]["mean_variance"].as_f64().unwrap();
                var.push((p["step"].as_f64().unwrap(), v));
            }
        }
        (obj, var)
    };
    let all: Vec<_> = runs.iter().map(|r| logged(r)).collect();
    assert_eq!(all[0].0.len(), 2, "two test points per run");
    assert_eq!(all[0].1.len(), 4, "a variance after each of the 4 steps");
    let base = |i: usize| (all[2].0[i].1 + all[3].0[i].1) / 2.0;
    let find = |panel: &str, run: &str, step: f64| -> f64 {
        table
            .iter()
            .find(|r| r["panel"] == panel && r["run"] == run && r["step"].as_f64() == Some(step))
            .unwrap_or_else(|| panic!("no {panel} row for {run} at {step}"))["value"]
            .as_f64()
            .unwrap()
    };
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        )
    };
    for (ri, run) in runs.iter().enumerate() {
        for (i, &(step, lk)) in all[ri].0.iter().enumerate() {
            close(find("objective", run, step), lk - base(i), run);
        }
        for &(step, v) in &all[ri].1 {
            close(find("variance", run, step), v, run);
        }
    }
    for (i, &(step, _)) in all[0].0.iter().enumerate() {
        let iwae_mean = (all[0].0[i].1 + all[1].0[i].1) / 2.0 - base(i);
        let means: Vec<f64> = table
            .iter()
            .filter(|r| {
                r["panel"] == "objective" && r["run"] == "mean" && r["step"].as_f64() == Some(step)
            })
            .map(|r| r["value"].as_f64().unwrap())
            .collect();
        assert_eq!(means.len(), 2, "a mean per group at step {step}");
        close(means[0], iwae_mean, "iwae mean");
        close(means[1], 0.0, "the baseline against itself");
    }
    // A baseline that is no group is refused, naming the groups.
    let mut bad = vec![
        "figure",
        "dreg-curves",
        "--baseline",
        "nope",
        "--out",
        arg(&png),
    ];
    bad.extend(paths.iter().map(|p| arg(p)));
    let o = run(&bad);
    assert_eq!(o.code, Some(1), "{}", o.context(&bad));
    assert!(o.stderr.contains("--baseline nope") && o.stderr.contains("iwae-dreg-k64"));
}

fn read_table(path: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["rows"].as_array().unwrap().clone()
}
