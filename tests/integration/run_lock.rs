//! One process owns a run directory: a second `train --out D` or `train --resume D` while
//! one runs fails naming D and the holder and leaves D as it was; a holder killed with
//! SIGKILL frees D; three `reproduce` workers share a protocol's folder, each run done once,
//! with the results of a single worker; a worker killed mid-run leaves its run to the next.
//! The holder is paused (SIGSTOP) while the other process tries, so the tests do not race.

#![cfg(unix)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use unbiased_vae::run_lock::{DirLock, RUN_LOCK};

fn uvae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uvae"));
    c.env("RUST_BACKTRACE", "0");
    c
}

/// `uvae ARGS` started in the background, its stdout dropped, its stderr as given.
fn start(args: &[String], stderr: Stdio) -> Child {
    uvae()
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kill -SIG pid` through the shell's builtin.
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {}", child.id())])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Waits until `ready` holds for `child` (polling), then pauses it; `ready` is checked again
/// while it is paused, so what the test sees stays true until it continues it.
fn pause_when(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process ended before {what}"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "never {what}");
        if ready() {
            signal(child, "STOP");
            if ready() {
                return;
            }
            signal(child, "CONT");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `dir`'s lock file names `pid` (the holder writes it once it holds the lock).
fn lock_names(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join(RUN_LOCK)).is_ok_and(|t| t.starts_with(&format!("pid {pid} ")))
}

/// Every file in `dir` with its length and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

fn epochs(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A small CPU run of a few seconds: 20 steps per epoch, a save every 5 steps.
fn train_args(out: &Path, epochs: usize) -> Vec<String> {
    format!(
        "train --backend cpu --threads 1 --train-limit 400 --valid-size 100 --batch 20 --k 3 --epochs {epochs} --hidden 16 --latent 4 --val-k 4 --checkpoint-every 5 --quiet --out"
    )
    .split_whitespace()
    .map(String::from)
    .chain([out.to_str().unwrap().to_string()])
    .collect()
}

/// While `holder` is paused holding `dir`, `uvae args` fails naming `dir` and the holder's
/// pid, and changes nothing in `dir`.
fn refused_while_held(holder: &Child, dir: &Path, args: &[String]) {
    let before = snapshot(dir);
    let o = uvae().args(args).output().unwrap();
    let all = text(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
    let pid = format!("pid {} on host ", holder.id());
    for part in [dir.to_str().unwrap(), "is in use", &pid, RUN_LOCK] {
        assert!(all.contains(part), "{args:?}: {part:?} not in {all}");
    }
    assert!(!all.contains("panicked"), "{all}");
    assert_eq!(snapshot(dir), before, "{args:?} touched {}", dir.display());
}

#[test]
fn a_second_train_or_resume_in_a_held_directory_fails_and_leaves_it_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("same");
    let mut a = start(&train_args(&d, 4), Stdio::piped());
    let pid = a.id();
    pause_when(&mut a, "it held --out", || {
        lock_names(&d, pid) && d.join("train-state.safetensors").exists()
    });
    // The same run, and another one with --force: neither runs, neither writes.
    refused_while_held(&a, &d, &train_args(&d, 4));
    let mut forced = train_args(&d, 4);
    forced.extend(["--lr", "0.01", "--force"].map(String::from));
    refused_while_held(&a, &d, &forced);
    signal(&a, "CONT");
    let o = a.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(epochs(&d), [1, 2, 3, 4], "each epoch once, in order");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["lr"], 1e-3, "the holder's configuration");

    // Two resumes that extend the run: one runs, the other fails.
    let resume: Vec<String> = ["train", "--resume", d.to_str().unwrap(), "--epochs", "7"]
        .map(String::from)
        .to_vec();
    let mut b = start(&resume, Stdio::piped());
    let pid = b.id();
    pause_when(&mut b, "it held --resume", || lock_names(&d, pid));
    refused_while_held(&b, &d, &resume);
    signal(&b, "CONT");
    let o = b.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        epochs(&d),
        [1, 2, 3, 4, 5, 6, 7],
        "each epoch once, in order"
    );
    assert_eq!(DirLock::holder(&d).unwrap(), None, "released at exit");
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("killed");
    let mut a = start(&train_args(&d, 3), Stdio::null());
    let pid = a.id();
    pause_when(&mut a, "its first save", || {
        lock_names(&d, pid) && d.join("train-state.safetensors").exists()
    });
    assert!(DirLock::holder(&d).unwrap().is_some(), "held while paused");
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    // The file still names the dead process; the lock died with it.
    assert!(lock_names(&d, pid));
    assert_eq!(DirLock::holder(&d).unwrap(), None);
    let o = uvae()
        .args(["train", "--resume", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(epochs(&d), [1, 2, 3]);
}

/// Six cheap runs (three rows, two seeds) at a tiny budget, one thread each.
const PROTOCOL: [&str; 24] = [
    "reproduce",
    "shi-cornish",
    "--runs",
    "iwae-k5,ml-rr-cost5,sumo-m1",
    "--seeds",
    "2",
    "--backend",
    "cpu",
    "--threads",
    "1",
    "--epochs",
    "1",
    "--train-limit",
    "200",
    "--valid-size",
    "100",
    "--eval-k",
    "8",
    "--eval-limit",
    "40",
    "--test-k",
    "4",
    "--test-limit",
    "40",
];

const RUNS: [&str; 6] = [
    "iwae-k5-seed0",
    "iwae-k5-seed1",
    "ml-rr-cost5-seed0",
    "ml-rr-cost5-seed1",
    "sumo-m1-seed0",
    "sumo-m1-seed1",
];

fn worker(out: &Path) -> Child {
    uvae()
        .args(PROTOCOL)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A result without its timings.
fn untimed(mut v: Value) -> Value {
    for key in ["train_seconds", "eval_seconds"] {
        v.as_object_mut().unwrap().remove(key).expect(key);
    }
    v
}

/// results.json and results.md without the timings, and every run's result.json.
fn results(out: &Path) -> (Value, String, Vec<Value>) {
    let mut table = json(&out.join("results.json"));
    let runs: Vec<Value> = table["runs"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(untimed)
        .collect();
    table["runs"] = Value::Array(runs);
    // results.md's seventh column is the training time.
    let md = std::fs::read_to_string(out.join("results.md"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split('|').collect();
            if cells.len() == 15 && !l.starts_with("|---") && !l.starts_with("| run ") {
                cells[7] = " - ";
            }
            cells.join("|")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let each = RUNS
        .iter()
        .map(|r| {
            let dir = out.join(r);
            assert_eq!(epochs(&dir), [1], "{r}: one epoch, once");
            untimed(json(&dir.join("result.json")))
        })
        .collect();
    (table, md, each)
}

/// The protocol by one worker, computed once per test binary.
fn single_worker() -> &'static Path {
    use std::sync::OnceLock;
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let o = worker(tmp.path()).wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        tmp
    })
    .path()
}

fn assert_same_results(out: &Path) {
    let (table, md, each) = results(out);
    let (t1, md1, e1) = results(single_worker());
    // Only the rows not asked for (--runs) are pending.
    assert_eq!(table["pending"].as_array().unwrap().len(), 6, "{table}");
    assert_eq!(each, e1, "each run's result.json");
    assert_eq!(table, t1, "results.json");
    assert_eq!(md, md1, "results.md");
}

#[test]
fn three_workers_share_a_protocol_each_run_done_once_with_one_workers_results() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    // Output to files, so the workers' ends can be watched without reading pipes.
    let mut workers: Vec<(Child, PathBuf, Instant)> = (0..3)
        .map(|i| {
            let log = tmp.path().join(format!("worker{i}.log"));
            let f = std::fs::File::create(&log).unwrap();
            let child = uvae()
                .args(PROTOCOL)
                .arg("--out")
                .arg(&out)
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .unwrap();
            (child, log, Instant::now())
        })
        .collect();
    let mut ends: Vec<Option<Instant>> = vec![None; 3];
    while ends.iter().any(Option::is_none) {
        for (i, (child, log, _)) in workers.iter_mut().enumerate() {
            if ends[i].is_none() {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(log).unwrap();
                    assert!(status.success(), "worker {i}:\n{log}");
                    ends[i] = Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Each lived while the others did: the last to start started before the first ended.
    let last_start = workers.iter().map(|w| w.2).max().unwrap();
    let first_end = ends.iter().flatten().min().copied().unwrap();
    assert!(last_start < first_end, "the workers overlapped");
    let logs: String = workers
        .iter()
        .map(|w| std::fs::read_to_string(&w.1).unwrap())
        .collect();
    for r in RUNS {
        let trained = logs
            .lines()
            .filter(|l| l.contains(&format!("] {r} (")) && l.ends_with("training 1 epochs"))
            .count();
        assert_eq!(trained, 1, "{r} trained once:\n{logs}");
    }
    assert!(
        !logs.contains("resuming") && !logs.contains("failed"),
        "{logs}"
    );
    assert_same_results(&out);
}

#[test]
fn a_worker_killed_mid_run_leaves_its_run_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p");
    let mut a = worker(&out);
    let b = worker(&out);
    let pid = a.id();
    // A run of a's, trained from its first save on and not yet finished.
    let held = |out: &PathBuf| {
        RUNS.iter().map(|r| out.join(r)).find(|d| {
            lock_names(d, pid)
                && d.join("train-state.safetensors").exists()
                && !d.join("result.json").exists()
        })
    };
    pause_when(&mut a, "a run half done", || held(&out).is_some());
    let victim = held(&out).unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    let ob = b.wait_with_output().unwrap();
    assert!(ob.status.success(), "{}", text(&ob));
    let oc = worker(&out).wait_with_output().unwrap();
    assert!(oc.status.success(), "{}", text(&oc));
    let name = victim.file_name().unwrap().to_str().unwrap();
    let logs = format!("{}{}", text(&ob), text(&oc));
    // Resumed from its training state (or only scored, when a killed at the epoch's end).
    assert!(
        logs.lines().any(|l| l.contains(&format!("] {name} ("))
            && (l.contains("resuming") || l.contains("trained; scoring"))),
        "{name} resumed:\n{logs}"
    );
    assert!(text(&oc).contains("done: 6 of 12"), "{}", text(&oc));
    assert_same_results(&out);
}
