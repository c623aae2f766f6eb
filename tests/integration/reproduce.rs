//! `uvae reproduce`: every protocol at a tiny budget (one row per run, finite numbers in
//! every results file, reruns skip finished runs), a protocol killed mid-run resumes to the
//! uninterrupted result, each row's settings as the papers give them, and the measured cost
//! of the ML-RR and SUMO rows against the closed form of their level distributions.

use crate::common::cli::{arg, metrics_lines, run_ok, words};
use rand::SeedableRng;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use unbiased_vae::apps::reproduce::{Protocol, ReproduceOptions};
use unbiased_vae::estimators::EstimatorKind;

/// One seed, one epoch on 200 training images, 100 validation images, test bounds on 40
/// images.
const TINY: &str = "--backend cpu --seeds 1 --epochs 1 --train-limit 200 --valid-size 100 \
    --eval-k 8 --eval-limit 40 --test-k 4 --test-limit 40";

/// The dreg protocol's variance logging at the tiny budget (6 steps of 32): every 3rd step,
/// from 2 estimates.
const TINY_GRAD_VAR: [&str; 4] = ["--grad-var-every", "3", "--grad-var-reps", "2"];

fn reproduce(protocol: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["reproduce", protocol, "--out", arg(out)];
    args.extend(words(TINY));
    args.extend(extra);
    run_ok(&args)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn finite(v: &Value, key: &str, what: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {key} missing in {v}"));
    assert!(x.is_finite(), "{what}: {key} = {x}");
    x
}

/// Each protocol's rows, one run each at seed 0: every results file has one finite row per
/// run, and a rerun skips them all and writes the same table.
#[test]
fn every_protocol_runs_at_a_tiny_budget_and_a_rerun_skips_finished_runs() {
    for protocol in [
        Protocol::Burda,
        Protocol::ShiCornish,
        Protocol::Dreg,
        Protocol::Ruiz,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let name = protocol.name();
        let rows: Vec<String> = protocol
            .spec()
            .rows
            .iter()
            .map(|r| format!("{}-seed0", r.name))
            .collect();
        // The options the TINY flags stand for.
        let dreg = protocol == Protocol::Dreg;
        let opts = ReproduceOptions {
            out: out.to_path_buf(),
            epochs: Some(1),
            seeds: Some(1),
            grad_var_every: dreg.then_some(3),
            grad_var_reps: dreg.then_some(2),
            backend: Some(unbiased_vae::config::BackendChoice::Cpu),
            train_limit: Some(200),
            valid_size: Some(100),
            eval_k: Some(8),
            eval_limit: Some(40),
            test_k: Some(4),
            test_limit: Some(40),
            ..Default::default()
        };
        let planned = protocol.spec().plan(&opts).unwrap();
        let extra: &[&str] = if dreg { &TINY_GRAD_VAR } else { &[] };
        let first = reproduce(name, out, extra);
        assert!(
            first.contains(&format!(
                "done: {} of {} runs finished",
                rows.len(),
                rows.len()
            )),
            "{name}: {first}"
        );
        let json = read_json(&out.join("results.json"));
        let runs = json["runs"].as_array().unwrap();
        assert_eq!(runs.len(), rows.len(), "{name}: {json}");
        for (r, want) in runs.iter().zip(&rows) {
            assert_eq!(r["run"].as_str(), Some(want.as_str()), "{name}");
            let what = format!("{name} {want}");
            for key in [
                "test_lk",
                "test_lk_stderr",
                "measured_samples",
                "train_seconds",
            ] {
                finite(r, key, &what);
            }
            assert!(
                finite(r, "test_lk", &what) < 0.0,
                "{what}: a log-likelihood"
            );
            assert_eq!(r["epochs"], 1, "{what}");
            assert_eq!(r["test_images"], 40, "{what}");
            if !r["estimator"].as_str().unwrap().starts_with("coupled") {
                finite(r, "expected_samples", &what);
            }
            // The config.json written is the protocol's planned configuration (whose
            // settings `every_row_is_configured_as_its_paper_says` checks).
            let cfg = read_json(&out.join(want).join("config.json"));
            let planned = planned.iter().find(|p| &p.name == want).expect("planned");
            let planned = serde_json::to_value(&planned.cfg).unwrap();
            for (key, value) in planned.as_object().unwrap() {
                assert_eq!(&cfg[key], value, "{what}: config.json {key}");
            }
            let lines = metrics_lines(&out.join(want));
            assert_eq!(lines.len(), 1, "{what}");
            assert!(
                lines[0]["test_lk"].as_f64().is_some_and(f64::is_finite),
                "{what}: test bound during training"
            );
            assert_eq!(cfg["test"]["k"], 4, "{what}");
            // The dreg protocol: Figure 2's rows log the gradient variance (after steps 3
            // and 6 of 6), the JVI rows the jackknife estimate; results.md names the figure.
            let figure = &r["figure"];
            assert_eq!(figure.is_string(), dreg, "{what}: {figure}");
            if dreg {
                let fig2 = figure == "Figure 2";
                let points = lines[0]["grad_var"].as_array().map(Vec::len);
                assert_eq!(points, fig2.then_some(2), "{what}");
                let jvi = r["estimator"].as_str().unwrap().starts_with("jvi");
                assert_eq!(lines[0]["test_jvi"].is_f64(), jvi, "{what}");
            }
        }
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        let csv_rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(csv_rows.len(), rows.len(), "{name}: {csv}");
        for line in &csv_rows {
            // test_nll, then paper_nll, active_units and paper_active_units.
            let nll: f64 = line.split(',').nth_back(3).unwrap().parse().unwrap();
            assert!(nll.is_finite() && nll > 0.0, "{name}: {line}");
        }
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        for r in &rows {
            let line = md.lines().find(|l| l.starts_with(&format!("| {r} |")));
            let line = line.unwrap_or_else(|| panic!("{name}: no row {r} in\n{md}"));
            assert!(!line.contains("NaN") && !line.contains("inf"), "{line}");
            if dreg {
                assert!(["| Figure 2 |", "| Figure 3 |", "| Figure 4 |"]
                    .iter()
                    .any(|f| line.contains(f)));
            }
        }
        assert!(out.join("results.png").exists(), "{name}: the curves");
        for run in json["runs"].as_array().unwrap() {
            let units = run["active_units"].as_str().unwrap_or_default();
            assert!(!units.is_empty(), "{name}: active units of {run}");
            if name == "burda" {
                assert!(run["paper_active_units"].is_string(), "{name}: {run}");
            }
        }

        let again = reproduce(name, out, extra);
        assert_eq!(
            again.matches("finished earlier, skipped").count(),
            rows.len(),
            "{name}: {again}"
        );
        assert_eq!(
            read_json(&out.join("results.json")),
            json,
            "{name}: the same table"
        );
    }
}

/// A protocol killed (SIGKILL) in its second run continues to the same results as one that
/// ran uninterrupted: the same test bounds, costs and validation curves.
#[test]
fn a_protocol_killed_mid_run_resumes_to_the_uninterrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    let (killed, whole) = (dir.path().join("killed"), dir.path().join("whole"));
    // Two epochs on 400 images: long enough to be caught in the second of six runs.
    let mut budget: Vec<&str> = words(TINY);
    for (flag, value) in [("--epochs", "2"), ("--train-limit", "400")] {
        let at = budget.iter().position(|a| *a == flag).unwrap();
        budget[at + 1] = value;
    }
    budget.push("--quiet");
    let args = |out: &Path| -> Vec<String> {
        ["reproduce", "shi-cornish", "--out", out.to_str().unwrap()]
            .into_iter()
            .chain(budget.iter().copied())
            .map(String::from)
            .collect()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_uvae"))
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The second run's first save: the first run is finished, the second has begun.
    let marker = killed
        .join("ml-rr-cost5-seed0")
        .join("train-state.safetensors");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the protocol ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no second run");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The first run's end rewrote the results; the killed run is pending there.
    let partial = read_json(&killed.join("results.json"));
    assert!(
        partial["pending"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ml-rr-cost5-seed0")),
        "{partial}"
    );
    let rerun = run_ok(&args(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rerun.contains("done: 6 of 6"), "{rerun}");
    run_ok(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    let (a, b) = (
        read_json(&killed.join("results.json")),
        read_json(&whole.join("results.json")),
    );
    for (ra, rb) in a["runs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["runs"].as_array().unwrap())
    {
        for key in [
            "run",
            "test_lk",
            "test_lk_stderr",
            "measured_samples",
            "scored_epoch",
            "steps",
        ] {
            assert_eq!(ra[key], rb[key], "{key} of {}", ra["run"]);
        }
        let run = ra["run"].as_str().unwrap();
        let curve = |out: &Path| -> Vec<Value> {
            metrics_lines(&out.join(run))
                .iter()
                .map(|m| m["val_lk"].clone())
                .collect()
        };
        assert_eq!(curve(&killed), curve(&whole), "{run}: validation curve");
    }
}

/// Options for reading a protocol's plan (one seed), never running it.
fn plan_only() -> ReproduceOptions {
    ReproduceOptions {
        out: "/nonexistent".into(),
        seeds: Some(1),
        ..Default::default()
    }
}

/// Every row's settings as written into its config.json by a run, against the papers'
/// numbers (issue #11): estimator, K, batch, optimiser, schedule, clipping, initialisation,
/// data split and the unbiased estimators' level distributions and encoders.
#[test]
fn every_row_is_configured_as_its_paper_says() {
    let opts = plan_only();
    let mut dreg_rows = Vec::new();
    for protocol in [
        Protocol::Burda,
        Protocol::ShiCornish,
        Protocol::Dreg,
        Protocol::Ruiz,
    ] {
        let spec = protocol.spec();
        for run in spec.plan(&opts).unwrap() {
            let c = serde_json::to_value(&run.cfg).unwrap();
            let what = format!("{} {}", protocol.name(), run.name);
            let get = |p: &str| c.pointer(p).cloned().unwrap_or(Value::Null);
            let kind = get("/estimator/kind");
            assert_eq!(get("/arch/hidden"), serde_json::json!([200, 200]), "{what}");
            if get("/model") == "vae" {
                assert_eq!(get("/arch/z_dim"), 50, "{what}");
            }
            match protocol {
                Protocol::Burda => {
                    let (est, k) = run.row.name.split_once("-k").unwrap();
                    let two = est.ends_with('2');
                    let est = est.trim_end_matches('2');
                    assert_eq!(kind, if est == "vae" { "elbo" } else { "iwae" }, "{what}");
                    let (model, z) = if two { ("hvae", 100) } else { ("vae", 50) };
                    assert_eq!(
                        (get("/model"), get("/arch/z_dim")),
                        (model.into(), z.into()),
                        "{what}"
                    );
                    if two {
                        assert_eq!(
                            get("/arch/top/hidden"),
                            serde_json::json!([100, 100]),
                            "{what}"
                        );
                        assert_eq!(get("/arch/top/z_dim"), 50, "{what}");
                    }
                    assert!(
                        ["1", "5", "50"].contains(&k) && get("/k") == k.parse::<u64>().unwrap(),
                        "{what}"
                    );
                    assert_eq!(get("/batch"), 20, "{what}");
                    assert_eq!(get("/schedule"), "burda", "{what}");
                    assert_eq!(get("/epochs"), 3280, "{what}");
                    assert_eq!(get("/adam/eps"), 1e-4, "{what}");
                    let want = match (two, est, k) {
                        (false, _, "1") => 86.76,
                        (false, "vae", "5") => 86.47,
                        (false, "vae", "50") => 86.35,
                        (false, "iwae", "5") => 85.54,
                        (false, _, _) => 84.78,
                        (true, _, "1") => 85.33,
                        (true, "vae", "5") => 85.01,
                        (true, "vae", "50") => 84.78,
                        (true, "iwae", "5") => 83.89,
                        (true, _, _) => 82.90,
                    };
                    assert_eq!(run.row.paper_nll, Some(want), "{what}");
                }
                Protocol::ShiCornish => {
                    assert_eq!(get("/batch"), 100, "{what}");
                    assert_eq!(get("/adam/amsgrad"), true, "{what}");
                    assert_eq!(get("/adam/eps"), 1e-4, "{what}");
                    assert_eq!(get("/lr"), 1e-3, "{what}");
                    assert_eq!(get("/schedule"), "linear", "{what}");
                    assert_eq!(get("/adam/clip_decoder"), 60.0, "{what}");
                    assert_eq!(get("/adam/clip_encoder"), 125.0, "{what}");
                    assert_eq!(get("/output_bias"), "data-mean", "{what}");
                    assert_eq!(get("/valid_size"), 10_000, "{what}");
                    let u = |f: &str| get(&format!("/estimator/unbiased/{f}"));
                    let mlmc = |p: f64, cap: u32, i0: u32, ek: usize| {
                        assert_eq!(kind, "mlmc-rr", "{what}");
                        assert_eq!(u("mlmc_p"), p, "{what}");
                        assert_eq!(u("mlmc_cap"), cap, "{what}");
                        assert_eq!(u("mlmc_i0"), i0, "{what}");
                        assert_eq!(
                            (u("encoder"), u("encoder_k")),
                            ("iwae".into(), ek.into()),
                            "{what}"
                        );
                    };
                    let sumo = |m: usize, ek: usize| {
                        assert_eq!(
                            (kind.clone(), get("/k")),
                            ("sumo".into(), m.into()),
                            "{what}"
                        );
                        assert_eq!(
                            (u("encoder"), u("encoder_k")),
                            ("iwae".into(), ek.into()),
                            "{what}"
                        );
                    };
                    match run.row.name.as_str() {
                        "iwae-k5" => assert_eq!((kind, get("/k")), ("iwae".into(), 5.into())),
                        "iwae-k15" => assert_eq!((kind, get("/k")), ("iwae".into(), 15.into())),
                        "ml-rr-cost5" => mlmc(0.585, 6, 0, 5),
                        "ml-rr-cost15" => mlmc(0.63, 4, 2, 15),
                        "sumo-m1" => sumo(1, 5),
                        "sumo-m9" => sumo(9, 15),
                        other => panic!("unexpected row {other}"),
                    }
                }
                Protocol::Dreg => {
                    // Not in the paper: the authors' training script's batch, Adam and
                    // learning rate (google-research dreg_estimators, train.py).
                    assert_eq!(
                        (get("/batch"), get("/lr")),
                        (32.into(), 3e-4.into()),
                        "{what}"
                    );
                    assert_eq!(get("/schedule"), "constant", "{what}");
                    // The paper's curves run to 5 million steps: the epochs that reach them.
                    let steps = get("/epochs").as_u64().unwrap() * (50_000 / 32);
                    assert!(
                        (5_000_000..5_000_000 + 50_000 / 32).contains(&steps),
                        "{what}: {steps}"
                    );
                    // The test curve at the training K (the script's log_p_hat).
                    assert_eq!(get("/test/k"), get("/k"), "{what}");
                    let alpha = get("/estimator/alpha").as_f64().unwrap();
                    let kind = kind.as_str().unwrap().to_string();
                    let k = get("/k").as_u64().unwrap();
                    let fig = run.row.figure.unwrap_or("none");
                    // Figure 4 (section 6.3) is structured prediction: the bottom half of a
                    // 28 x 28 digit given its top half (14 rows of 28 pixels), 50 latents.
                    let conditional = (get("/model"), get("/arch/cond/c_dim"), get("/arch/z_dim"));
                    if fig == "fig4" {
                        assert_eq!(
                            conditional,
                            ("cvae".into(), 392.into(), 50.into()),
                            "{what}"
                        );
                        assert!(run.row.name.starts_with("cvae-"), "{what}");
                    } else {
                        assert_eq!(conditional.0, "vae", "{what}");
                    }
                    // Figure 2 logs the gradient variance; Figures 3 and 4 do not.
                    assert_eq!(get("/grad_var").is_object(), fig == "fig2", "{what}");
                    dreg_rows.push((fig.to_string(), kind, k, alpha));
                }
                Protocol::Ruiz => {
                    assert!(
                        ["iwae", "coupled-pimh", "coupled-isir", "coupled-disir"]
                            .contains(&kind.as_str().unwrap()),
                        "{what}"
                    );
                    assert_eq!(get("/k"), 10, "{what}: equal particles per set");
                }
            }
        }
    }
    // The dreg rows are exactly the curves of Tucker et al.'s Figures 2 and 3, typed here
    // from the paper: Figure 2, IWAE / RWS / JVI against their DReG twins at K = 64 (the
    // caption of Figure 5, its Omniglot twin); Figure 3, five estimators at K = 32 and 256,
    // and DReG(alpha) at K = 64 for alpha in {0.5, 0.7, 0.8, 0.9, 1}.
    let mut want = Vec::new();
    for kind in ["iwae", "iwae-dreg", "rws", "rws-dreg", "jvi", "jvi-dreg"] {
        want.push(("fig2".to_string(), kind.to_string(), 64, 0.0));
    }
    for k in [32, 256] {
        for kind in ["iwae", "iwae-dreg", "rws", "rws-dreg", "stl"] {
            want.push(("fig3".to_string(), kind.to_string(), k, 0.0));
        }
    }
    for alpha in [0.5, 0.7, 0.8, 0.9, 1.0] {
        want.push(("fig3".to_string(), "dreg".to_string(), 64, alpha));
    }
    // Figure 4: IWAE, IWAE-DReG, RWS, RWS-DReG and STL at K = 64 and 256, and the convex
    // combination at K = 64 for alpha in {0.1, 0.2, 0.5 (STL), 1 (RWS-DReG)}: the last two
    // are the STL and RWS-DReG rows at K = 64, run once.
    for k in [64, 256] {
        for kind in ["iwae", "iwae-dreg", "rws", "rws-dreg", "stl"] {
            want.push(("fig4".to_string(), kind.to_string(), k, 0.0));
        }
    }
    for alpha in [0.1, 0.2] {
        want.push(("fig4".to_string(), "dreg".to_string(), 64, alpha));
    }
    assert_eq!(dreg_rows, want);
    // Three trials per curve (Figures 2 and 3: "the average over three trials").
    assert_eq!(Protocol::Dreg.spec().seeds(&ReproduceOptions::default()), 3);
    assert_eq!(
        Protocol::Burda.spec().seeds(&ReproduceOptions::default()),
        1
    );
}

/// `--runs fig2` picks Figure 2's rows (every seed), a row name still picks one row, and an
/// unknown name lists the figures among the accepted names.
#[test]
fn runs_picks_a_figures_rows() {
    let spec = Protocol::Dreg.spec();
    let pick = |names: &[&str]| {
        let opts = ReproduceOptions {
            runs: Some(names.iter().map(|n| n.to_string()).collect()),
            ..plan_only()
        };
        let planned = spec
            .plan(&ReproduceOptions {
                seeds: None,
                ..opts.clone()
            })
            .unwrap();
        unbiased_vae::apps::reproduce::selected(planned, &opts)
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    let fig2 = pick(&["fig2"]);
    assert_eq!(fig2.len(), 6 * 3, "{fig2:?}");
    assert!(fig2.contains(&"jvi-dreg-k64-seed2".to_string()));
    assert_eq!(pick(&["fig3"]).len(), 15 * 3);
    assert_eq!(pick(&["stl-k32", "fig2"]).len(), 7 * 3);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let args = ["reproduce", "dreg", "--runs", "fig9", "--out", arg(&out)];
    let o = crate::common::cli::run(&args);
    assert_eq!(o.code, Some(1), "{}", o.context(&args));
    assert!(
        o.stderr.contains("--runs") && o.stderr.contains("fig2, fig3"),
        "{}",
        o.stderr
    );
}

/// The cost of the ML-RR and SUMO rows, measured over 200,000 steps' draws (what training
/// draws, `StepPlan::draw`), against the closed form of their level distributions:
/// ML-RR: 2^(I0+1) (sum_{k<cap} p (1-p)^k 2^k + (1-p)^cap 2^cap) + the encoder's K;
/// SUMO: m + E[K] + the encoder's K, E[K] = sum_{k>=1} P(K >= k) with P(K >= k) = 1/(k+1)
/// below 79 and (1/80) 0.9^(k-79) from there. Each within 3 standard errors (99.7 % each;
/// 98.9 % for all four by the union bound), seeded.
#[test]
fn the_unbiased_rows_cost_what_their_level_distributions_say() {
    let opts = plan_only();
    let sumo_tail: f64 = (1..79).map(|k| 1.0 / (k as f64 + 1.0)).sum::<f64>() + 10.0 / 80.0;
    let mut checked = 0;
    for run in Protocol::ShiCornish.spec().plan(&opts).unwrap() {
        let e = &run.cfg.estimator;
        let u = &e.unbiased;
        let closed = match e.kind {
            EstimatorKind::MlmcRr => {
                let (p, cap, i0) = (u.mlmc_p, u.mlmc_cap.unwrap() as i32, u.mlmc_i0 as i32);
                let levels: f64 = (0..cap)
                    .map(|k| p * (1.0 - p).powi(k) * 2f64.powi(k))
                    .sum::<f64>()
                    + (1.0 - p).powi(cap) * 2f64.powi(cap);
                2f64.powi(i0 + 1) * levels + u.encoder_k as f64
            }
            EstimatorKind::Sumo => run.cfg.k as f64 + sumo_tail + u.encoder_k as f64,
            _ => continue,
        };
        let plan = run.cfg.validate().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11 + checked);
        let steps = 200_000;
        let n: Vec<f64> = (0..steps)
            .map(|_| plan.draw(&mut rng).unwrap().n as f64)
            .collect();
        let mean = n.iter().sum::<f64>() / steps as f64;
        let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (steps as f64 - 1.0);
        let se = (var / steps as f64).sqrt();
        eprintln!(
            "{}: measured {mean:.4} ± {se:.4}, closed form {closed:.4}",
            run.name
        );
        assert!(
            (mean - closed).abs() <= 3.0 * se,
            "{}: measured {mean} ± {se} vs closed form {closed}",
            run.name
        );
        assert!(
            (plan.expected_samples().unwrap() - closed).abs() < 1e-9,
            "{}: the plan's expectation",
            run.name
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "two ML-RR and two SUMO rows");
}

/// Bad protocol flags, and a run directory holding another configuration, fail with an error
/// naming the flag or the directory, before anything trains.
#[test]
fn bad_protocol_input_names_the_flag_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 9] = [
        (&["--shard", "0/2"], &["--shard 0/2", "1 <= I <= N"]),
        (&["--shard", "3/2"], &["--shard 3/2"]),
        (&["--shard", "two"], &["--shard 'two'"]),
        (&["--runs", "nope"], &["--runs", "nope", "iwae-k5"]),
        (&["--seeds", "0"], &["--seeds 0"]),
        (
            &["--grad-var-every", "5"],
            &["--grad-var-every", "none of its rows"],
        ),
        (&["--epochs-scale", "-1"], &["--epochs-scale -1"]),
        (&["--eval-k", "0"], &["--eval-k 0"]),
        (
            &["--epochs", "1", "--epochs-scale", "0.5"],
            &["--epochs", "--epochs-scale"],
        ),
    ];
    for (extra, names) in cases {
        let mut args = vec!["reproduce", "shi-cornish", "--out", o, "--backend", "cpu"];
        args.extend(extra);
        let r = crate::common::cli::run(&args);
        assert!(
            matches!(r.code, Some(1) | Some(2)),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        for n in names {
            assert!(r.stderr.contains(n), "{args:?}: {n:?} not in {}", r.stderr);
        }
        assert!(!out.join("iwae-k5-seed0").exists(), "{args:?} trained");
    }
    // A run trained with another learning rate in the directory of the protocol's first run.
    let first = out.join("iwae-k5-seed0");
    let mut train = words(
        "train --backend cpu --train-limit 200 --valid-size 100 --epochs 1 --val-k 2 --lr 0.01",
    );
    train.extend(["--out", arg(&first), "--quiet"]);
    run_ok(&train);
    let mut args = vec!["reproduce", "shi-cornish", "--out", o];
    args.extend(words(TINY));
    let r = crate::common::cli::run(&args);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    for n in [first.to_str().unwrap(), "another configuration", "lr"] {
        assert!(r.stderr.contains(n), "{n:?} not in {}", r.stderr);
    }
}

/// Burda et al.'s Table 1 in full: every row carries the paper's active units, and given
/// `--data .../chardata.mat` the protocol runs the Omniglot rows with the paper's Omniglot
/// numbers instead of MNIST's.
#[test]
fn burda_rows_carry_active_units_and_omniglot_replaces_mnist_given_chardata() {
    let mnist = Protocol::Burda.spec().plan(&plan_only()).unwrap();
    assert_eq!(mnist.len(), 12);
    let find = |runs: &[unbiased_vae::apps::reproduce::PlannedRun], name: &str| {
        let r = runs
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        (r.row.paper_nll, r.row.paper_active_units, r.cfg.valid_size)
    };
    assert_eq!(
        find(&mnist, "vae-k1-seed0"),
        (Some(86.76), Some("19"), 1000)
    );
    assert_eq!(
        find(&mnist, "iwae2-k50-seed0"),
        (Some(82.90), Some("26+7"), 1000)
    );
    let opts = ReproduceOptions {
        data: Some("/data/omniglot/chardata.mat".into()),
        ..plan_only()
    };
    let omni = Protocol::Burda.spec().plan(&opts).unwrap();
    assert_eq!(omni.len(), 12);
    assert!(omni.iter().all(|r| r.name.starts_with("omniglot-")));
    assert_eq!(
        find(&omni, "omniglot-vae-k1-seed0"),
        (Some(108.11), Some("28"), 1345)
    );
    assert_eq!(
        find(&omni, "omniglot-iwae-k50-seed0"),
        (Some(104.67), Some("41"), 1345)
    );
    assert_eq!(
        find(&omni, "omniglot-vae2-k1-seed0"),
        (Some(107.58), Some("28+4"), 1345)
    );
    assert_eq!(
        find(&omni, "omniglot-iwae2-k50-seed0"),
        (Some(103.38), Some("44+7"), 1345)
    );
    let two = omni
        .iter()
        .find(|r| r.name == "omniglot-iwae2-k5-seed0")
        .unwrap();
    assert_eq!(two.cfg.model, unbiased_vae::model::ModelChoice::Hvae);
}
