//! Long runs that survive: `uvae train --resume` after SIGKILL, SIGINT and SIGTERM continues
//! bit for bit, `--checkpoint-every` leaves no temporary files, and non-finite steps stop the
//! run (naming epoch, step, estimator and group) or are skipped and counted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::cli::metrics_lines;
use crate::common::{backends, have_gpu};

fn uvae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uvae"))
}

/// A small CPU run that takes a few seconds: 20 steps per epoch, a save every 5 steps.
fn small_args(out: &Path, epochs: usize) -> Vec<String> {
    small_args_on("cpu", out, epochs)
}

/// [`small_args`] on `backend`.
fn small_args_on(backend: &str, out: &Path, epochs: usize) -> Vec<String> {
    let s = format!(
        "train --backend {backend} --threads 2 --train-limit 400 --valid-size 100 --batch 20 --k 3 --epochs {epochs} --hidden 16 --latent 4 --val-k 4 --checkpoint-every 5 --quiet --out"
    );
    let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
    v.push(out.to_str().unwrap().to_string());
    v
}

fn run(args: &[String]) -> Output {
    uvae().args(args).output().expect("uvae runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(args: &[String]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "uvae {args:?} failed:\n{}", text(&o));
    o
}

fn resume(dir: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "train".to_string(),
        "--resume".into(),
        dir.to_str().unwrap().into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    run(&a)
}

/// The checkpoint's tensors as (name, dtype, shape, bytes), sorted by name.
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort();
    v
}

const TIMING: [&str; 2] = ["seconds", "datapoints_per_s"];

/// metrics.jsonl's lines without their timing fields.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = metrics_lines(dir);
    for v in &mut lines {
        for f in TIMING {
            v.as_object_mut().unwrap().remove(f).expect("timing field");
        }
    }
    lines
}

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

/// The run step the training state is at (from its JSON metadata).
fn state_step(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join("train-state.safetensors")).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let json = meta.metadata().as_ref()?.get("uvae-train-state")?.clone();
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    v["step"].as_u64()
}

/// An uninterrupted run of `epochs`, computed once per test binary.
fn reference(epochs: usize) -> PathBuf {
    use std::sync::{Mutex, OnceLock};
    static DIRS: OnceLock<Mutex<Vec<(usize, tempfile::TempDir)>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(|| Mutex::new(Vec::new()));
    let mut dirs = dirs.lock().unwrap();
    if let Some((_, d)) = dirs.iter().find(|(e, _)| *e == epochs) {
        return d.path().join("run");
    }
    let d = tempfile::tempdir().unwrap();
    run_ok(&small_args(&d.path().join("run"), epochs));
    let p = d.path().join("run");
    dirs.push((epochs, d));
    p
}

fn assert_same_run(dir: &Path, reference: &Path) {
    let (a, b) = (
        tensors(&dir.join("checkpoint.safetensors")),
        tensors(&reference.join("checkpoint.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x == y,
            "tensor {} differs from the uninterrupted run's",
            x.0
        );
    }
    assert_eq!(metrics(dir), metrics(reference), "metrics.jsonl differs");
    assert_eq!(temps(dir), Vec::<String>::new(), "temporary files remain");
}

/// Starts a run, waits until its training state has passed `min_step`, and returns it.
fn start_until(out: &Path, epochs: usize, min_step: u64) -> Child {
    spawn_until(&small_args(out, epochs), out, min_step)
}

/// Starts `uvae args` (a run into `out`) and returns it once its state has passed `min_step`.
fn spawn_until(args: &[String], out: &Path, min_step: u64) -> Child {
    let mut child = uvae()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while state_step(out).is_none_or(|s| s < min_step) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before step {min_step}");
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no state file");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

#[test]
fn sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run() {
    let reference = reference(3);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut child = start_until(&out, 3, 5);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at = state_step(&out).unwrap();
    eprintln!("killed with the state at step {at}");
    let o = resume(&out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_run(&out, &reference);
    // A finished run resumed again has nothing to do and changes nothing.
    let o = resume(&out, &[]);
    assert!(
        o.status.success() && text(&o).contains("already completed"),
        "{}",
        text(&o)
    );
    assert_same_run(&out, &reference);
}

#[cfg(unix)]
fn signal(child: &Child, sig: &str) {
    let s = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

#[cfg(unix)]
#[test]
fn sigint_and_sigterm_save_and_say_how_to_resume() {
    let reference = reference(3);
    for sig in ["-INT", "-TERM"] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("run");
        let child = start_until(&out, 3, 10);
        signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        let t = text(&o);
        assert!(!o.status.success(), "{sig}: the run exited 0:\n{t}");
        assert!(
            t.contains("uvae train --resume") && t.contains(out.to_str().unwrap()),
            "{sig}: {t}"
        );
        assert_eq!(temps(&out), Vec::<String>::new());
        eprintln!("{sig}: {}", t.trim());
        let o = resume(&out, &[]);
        assert!(o.status.success(), "{sig}: {}", text(&o));
        assert_same_run(&out, &reference);
    }
}

#[test]
fn resume_extends_with_epochs_and_refuses_flags_that_change_the_run() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    run_ok(&small_args(&out, 2));
    let o = resume(&out, &["--lr", "0.01"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("--lr") && t.contains("--resume"), "{t}");
    let o = resume(&out, &["--epochs", "1"]);
    assert!(
        !o.status.success() && text(&o).contains("--epochs"),
        "{}",
        text(&o)
    );
    let o = resume(&out, &["--epochs", "3", "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_run(&out, &reference(3));
    let missing = d.path().join("nothing-here");
    let o = resume(&missing, &[]);
    assert!(
        !o.status.success() && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );
}

/// The first f32 tensor values of a checkpoint, all of them.
fn checkpoint_values(path: &Path) -> Vec<f32> {
    tensors(path)
        .into_iter()
        .flat_map(|(_, _, _, b)| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `--lr 1e30`: the first step throws the parameters to +-1e30 and the next one's objective
/// and gradients are NaN. Returns the run's folder, in its temporary one, and its output.
fn nonfinite_run(backend: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf, Output) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let mut a = small_args_on(backend, &out, 1);
    a.extend(["--lr", "1e30"].iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&a);
    (d, out, o)
}

#[test]
fn a_nonfinite_step_stops_the_run_naming_where_and_keeps_the_checkpoint() {
    for backend in backends() {
        let backend = backend.name();
        let (_d, out, o) = nonfinite_run(backend, &[]);
        let t = text(&o);
        assert!(!o.status.success(), "{backend}: {t}");
        for want in [
            "non-finite",
            "epoch 1",
            "step ",
            "estimator iwae",
            "parameter group",
        ] {
            assert!(t.contains(want), "{backend}: no '{want}' in {t}");
        }
        assert!(t.contains("encoder") || t.contains("decoder"), "{t}");
        eprintln!("{backend}: {}", t.trim());
        let values = checkpoint_values(&out.join("checkpoint.safetensors"));
        assert!(!values.is_empty() && values.iter().all(|v| v.is_finite()));
        let o = run(&[
            "eval".into(),
            "--checkpoint".into(),
            out.join("checkpoint.safetensors").to_str().unwrap().into(),
            "--backend".into(),
            "cpu".into(),
            "--k".into(),
            "2".into(),
            "--limit".into(),
            "4".into(),
        ]);
        assert!(o.status.success(), "{backend}: eval: {}", text(&o));
    }
}

#[test]
fn on_nonfinite_skip_counts_the_skipped_steps() {
    for backend in backends() {
        let backend = backend.name();
        let (_d, out, o) = nonfinite_run(backend, &["--on-nonfinite", "skip"]);
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let m = metrics(&out);
        let skipped = m[0]["nonfinite_steps"].as_u64().expect("nonfinite_steps");
        let steps = m[0]["steps"].as_u64().unwrap();
        eprintln!("{backend}: {skipped} of {steps} steps skipped");
        assert!(skipped > 0 && skipped < steps, "{backend}: {m:?}");
        let values = checkpoint_values(&out.join("checkpoint.safetensors"));
        assert!(values.iter().all(|v| v.is_finite()));
    }
}

/// [`small_args`] on the GPU.
fn gpu_args(out: &Path, epochs: usize) -> Vec<String> {
    small_args_on("gpu", out, epochs)
}

/// The largest `|a - b| / (1 + |a|)` over two checkpoints' values.
fn worst_relative(a: &Path, b: &Path) -> f32 {
    let (a, b) = (checkpoint_values(a), checkpoint_values(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
        .fold(0.0f32, f32::max)
}

/// On the GPU: an uninterrupted 2-epoch run, and a second one that `interrupt` stops and
/// `uvae train --resume <resume_args>` continues, end within the parity tolerance of each
/// other. Returns (their folder, the uninterrupted run, the resumed one); None without a GPU
/// adapter.
fn gpu_resume_matches_whole(
    interrupt: impl FnOnce(&Path),
    resume_args: &[&str],
) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    if !have_gpu() {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let (whole, resumed) = (d.path().join("whole"), d.path().join("resumed"));
    run_ok(&gpu_args(&whole, 2));
    interrupt(&resumed);
    let o = resume(&resumed, resume_args);
    assert!(o.status.success(), "{}", text(&o));
    let worst = worst_relative(
        &whole.join("checkpoint.safetensors"),
        &resumed.join("checkpoint.safetensors"),
    );
    eprintln!("gpu: largest relative difference {worst:e}");
    assert!(worst < 1e-4, "worst {worst}");
    Some((d, whole, resumed))
}

/// Mid-epoch on the GPU: killed at a save in the middle of epoch 1 (20 steps an epoch, a save
/// every 5), resumed, the run ends within the parity tolerance of an uninterrupted one
/// (the GPU's float sums are restored as saved, so in practice it is the same run).
#[test]
fn a_gpu_run_killed_mid_epoch_resumes_to_the_uninterrupted_result() {
    let kill = |out: &Path| {
        let mut child = spawn_until(&gpu_args(out, 2), out, 5);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let at = state_step(out).unwrap();
        eprintln!("gpu: killed with the state at step {at}");
    };
    let Some((_d, _, killed)) = gpu_resume_matches_whole(kill, &[]) else {
        return;
    };
    assert_eq!(metrics(&killed).len(), 2);
    assert_eq!(
        temps(&killed),
        Vec::<String>::new(),
        "temporary files remain"
    );
}

/// The GPU: a run stopped after epoch 1 and resumed with `--epochs 2` (Adam's moments and
/// step count read back and uploaded) matches an uninterrupted 2-epoch run to the parity
/// tolerance.
#[test]
fn a_resumed_gpu_run_matches_an_uninterrupted_one() {
    let one_epoch = |out: &Path| {
        run_ok(&gpu_args(out, 1));
    };
    let Some((_d, whole, split)) = gpu_resume_matches_whole(one_epoch, &["--epochs", "2"]) else {
        return;
    };
    let (ma, mb) = (metrics(&whole), metrics(&split));
    assert_eq!(ma.len(), 2);
    assert_eq!(mb.len(), 2);
    let (oa, ob) = (
        ma[1]["train_objective"].as_f64().unwrap(),
        mb[1]["train_objective"].as_f64().unwrap(),
    );
    assert!((oa - ob).abs() < 1e-3 * oa.abs(), "{oa} vs {ob}");
}
