//! The CLI as users of cargo-installed tools expect it: `figure --out` takes a file or a
//! folder, `reproduce --list` needs no `--out`, and `completions` prints a shell's script.

use crate::common::cli::{run, run_ok, uvae};

#[test]
fn figure_out_png_writes_the_table_beside_it_and_a_folder_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("pics/b.png");
    let base = ["figure", "bias", "--reps", "40", "--seed", "3", "--out"];
    let stdout = run_ok(&[&base[..], &[png.to_str().unwrap()]].concat());
    for ext in ["png", "csv", "json"] {
        let f = png.with_extension(ext);
        assert!(f.is_file(), "{} missing", f.display());
        assert!(stdout.contains(&f.display().to_string()), "{stdout}");
    }
    let folder = dir.path().join("figs");
    let stdout = run_ok(&[&base[..], &[folder.to_str().unwrap()]].concat());
    assert!(stdout.contains(&folder.join("bias.png").display().to_string()));
    let table = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        table(png.with_extension("csv")),
        table(folder.join("bias.csv")),
        "the same figure, named or in a folder"
    );
}

#[test]
fn reproduce_list_needs_no_out_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = uvae()
        .current_dir(dir.path())
        .args(["reproduce", "shi-cornish", "--list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("iwae-k5-seed0"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Running one still needs its folder.
    let o = run(&["reproduce", "shi-cornish"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("--out"), "{}", o.stderr);
}

#[test]
fn completions_cover_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run_ok(&["completions", shell]);
        for word in ["uvae", "reproduce", "grad-stats", "estimator", "hgauss"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("bash"), "{}", o.stderr);
}
