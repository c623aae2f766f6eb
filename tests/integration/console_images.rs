//! What users see: the console of `uvae train` in a log (no progress-bar control characters,
//! epoch lines kept; `--quiet`: only the final line), and the PNG grids of `uvae sample` and
//! `uvae reconstruct` (decoded, sized and not blank).

use crate::common::cli::{arg, run, run_ok, run_success, words, Output};
use std::path::Path;

/// A tiny CPU run into `out`, with extra `flags`.
fn train(out: &Path, flags: &[&str]) -> Output {
    let mut args = words(
        "train --backend cpu --threads 2 --train-limit 100 --epochs 2 --batch 50 --k 2 --val-k 2 \
         --valid-size 10 --hidden 8 --latent 2 --out",
    );
    args.push(arg(out));
    args.extend(flags);
    run(&args)
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
    let (stdout, stderr) = (o.stdout, o.stderr);
    assert!(o.code == Some(0), "{stderr}");
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
    let (stdout, stderr) = (o.stdout, o.stderr);
    assert!(o.code == Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with("done: final validation"), "{stdout}");
    assert!(
        stderr.trim().is_empty(),
        "quiet run wrote to stderr: {stderr}"
    );
    // An error still shows.
    let bad = train(&dir.path().join("bad"), &["--quiet", "--lr", "-1"]);
    assert!(bad.code != Some(0));
    assert!(bad.stderr.contains("--lr"));
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

/// The PNG at `path` is a grid of `cols` x `rows` tiles of 28 pixels with a 1-pixel border
/// between and around, each pixel drawn `scale` x `scale`, and not blank.
fn assert_grid(path: &str, cols: u32, rows: u32, scale: u32) {
    let img = image::open(path).unwrap().to_luma8();
    assert_eq!(
        img.dimensions(),
        ((cols * 29 + 1) * scale, (rows * 29 + 1) * scale)
    );
    let v = pixel_variance(&img);
    assert!(v > NOT_BLANK, "blank: {v}");
}

#[test]
fn sample_and_reconstruct_draw_deterministic_grids() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    assert!(train(&run_dir, &[]).code == Some(0));
    let ckpt = run_dir.join("checkpoint.safetensors");
    let png = |name: &str| arg(&dir.path().join(name)).to_string();
    let c = arg(&ckpt);
    // Twelve tiles in rows of four, from the prior with `seed`.
    let sample = |name: &str, seed: &str| {
        let mut args = words("sample --n 12 --cols 4 --checkpoint");
        let out = png(name);
        args.extend([c, "--seed", seed, "--out", &out]);
        run_ok(&args)
    };
    sample("a.png", "3");
    sample("b.png", "3");
    sample("c.png", "4");
    // The default --scale is 2.
    assert_grid(&png("a.png"), 4, 3, 2);
    assert_eq!(
        std::fs::read(png("a.png")).unwrap(),
        std::fs::read(png("b.png")).unwrap()
    );
    assert_ne!(
        std::fs::read(png("a.png")).unwrap(),
        std::fs::read(png("c.png")).unwrap()
    );

    let mut args =
        words("reconstruct --n 6 --pairs-per-row 3 --scale 3 --backend cpu --checkpoint");
    let out = png("r.png");
    args.extend([c, "--out", &out]);
    run_ok(&args);
    assert_grid(&png("r.png"), 6, 2, 3);
}

#[test]
fn pictures_of_a_non_image_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let toy = dir.path().join("toy");
    let mut args = words("train --model toy --backend cpu --epochs 1 --batch 32 --k 2 --val-k 2");
    args.extend(["--out", arg(&toy)]);
    run_success(&args);
    let ckpt = toy.join("checkpoint.safetensors");
    let png = dir.path().join("x.png");
    let o = run(&["sample", "--checkpoint", arg(&ckpt), "--out", arg(&png)]);
    let err = o.stderr;
    assert!(
        o.code != Some(0) && err.contains("--checkpoint") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dir.path().join("x.png").exists());
}
