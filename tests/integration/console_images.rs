//! What users see: the console of `uvae train` in a log (no progress-bar control characters,
//! epoch lines kept; `--quiet`: only the final line), and the PNG grids of `uvae sample` and
//! `uvae reconstruct` (decoded, sized and not blank).

use crate::common::cli::uvae;
use std::path::Path;

/// A tiny CPU run into `out`, with extra `flags`.
fn train(out: &Path, flags: &[&str]) -> std::process::Output {
    uvae()
        .args([
            "train",
            "--backend",
            "cpu",
            "--threads",
            "2",
            "--train-limit",
            "100",
        ])
        .args(["--epochs", "2", "--batch", "50", "--k", "2", "--val-k", "2"])
        .args([
            "--valid-size",
            "10",
            "--hidden",
            "8",
            "--latent",
            "2",
            "--out",
        ])
        .arg(out)
        .args(flags)
        .output()
        .unwrap()
}

/// Escape (ANSI sequences), carriage return (bar redraws) or a cursor-hiding sequence.
fn has_control(s: &str) -> bool {
    s.chars().any(|c| c == '\x1b' || c == '\r')
}

#[test]
fn a_logged_run_prints_epoch_lines_and_no_bars() {
    let dir = tempfile::tempdir().unwrap();
    // Under the test harness stderr and stdout are pipes, as in CI or `| tee`.
    let o = train(&dir.path().join("run"), &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    for epoch in ["epoch   1", "epoch   2"] {
        assert!(stdout.contains(epoch), "no '{epoch}' line:\n{stdout}");
    }
    assert!(stdout.contains("done: final validation"), "{stdout}");
    assert!(
        !has_control(&stdout) && !has_control(&stderr),
        "control characters in a logged run:\nstdout {stdout:?}\nstderr {stderr:?}"
    );
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

#[test]
fn quiet_prints_only_the_final_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = train(&dir.path().join("run"), &["--quiet"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with("done: final validation"), "{stdout}");
    assert!(
        stderr.trim().is_empty(),
        "quiet run wrote to stderr: {stderr}"
    );
    // An error still shows.
    let bad = train(&dir.path().join("bad"), &["--quiet", "--lr", "-1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--lr"));
}

/// The variance of the pixels: a blank (one-colour) picture has 0.
fn pixel_variance(img: &image::GrayImage) -> f64 {
    let n = img.pixels().len() as f64;
    let mean = img.pixels().map(|p| p[0] as f64).sum::<f64>() / n;
    img.pixels()
        .map(|p| (p[0] as f64 - mean).powi(2))
        .sum::<f64>()
        / n
}

/// A picture counts as not blank above this pixel variance (grey levels squared): a grid's
/// border alone, one grey, has 0; digits on a dark background reach hundreds.
const NOT_BLANK: f64 = 100.0;

#[test]
fn sample_and_reconstruct_draw_deterministic_grids() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train(&run, &[]).status.success());
    let ckpt = run.join("checkpoint.safetensors");
    let run_ok = |args: &[&str]| {
        let o = uvae().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let png = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let c = ckpt.to_str().unwrap();
    // Twelve tiles in rows of four, from the prior with `seed`.
    let sample = |name: &str, seed: &str| {
        run_ok(&[
            "sample",
            "--checkpoint",
            c,
            "--out",
            &png(name),
            "--n",
            "12",
            "--cols",
            "4",
            "--seed",
            seed,
        ])
    };
    sample("a.png", "3");
    sample("b.png", "3");
    sample("c.png", "4");
    let a = image::open(png("a.png")).unwrap().to_luma8();
    // 4 x 3 tiles of 28 pixels with a 1-pixel border between and around.
    assert_eq!(a.dimensions(), (4 * 29 + 1, 3 * 29 + 1));
    assert!(
        pixel_variance(&a) > NOT_BLANK,
        "blank: {}",
        pixel_variance(&a)
    );
    assert_eq!(
        std::fs::read(png("a.png")).unwrap(),
        std::fs::read(png("b.png")).unwrap()
    );
    assert_ne!(
        std::fs::read(png("a.png")).unwrap(),
        std::fs::read(png("c.png")).unwrap()
    );

    run_ok(&[
        "reconstruct",
        "--checkpoint",
        c,
        "--out",
        &png("r.png"),
        "--n",
        "6",
        "--pairs-per-row",
        "3",
        "--backend",
        "cpu",
    ]);
    let r = image::open(png("r.png")).unwrap().to_luma8();
    assert_eq!(r.dimensions(), (6 * 29 + 1, 2 * 29 + 1));
    assert!(
        pixel_variance(&r) > NOT_BLANK,
        "blank: {}",
        pixel_variance(&r)
    );
}

#[test]
fn pictures_of_a_non_image_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("toy");
    let o = uvae()
        .args([
            "train",
            "--model",
            "toy",
            "--backend",
            "cpu",
            "--epochs",
            "1",
            "--batch",
            "32",
        ])
        .args(["--k", "2", "--val-k", "2", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = uvae()
        .args(["sample", "--checkpoint"])
        .arg(run.join("checkpoint.safetensors"))
        .arg("--out")
        .arg(dir.path().join("x.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--checkpoint") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dir.path().join("x.png").exists());
}
