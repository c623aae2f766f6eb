//! `uvae train` and `uvae eval` on the GPU against the CPU, through the binary.

use crate::common::cli::{assert_agree, eval_agrees_on_cpu_and_gpu, run, train_on_cpu_and_gpu};
use crate::common::have_gpu;

/// A small MNIST run: one epoch of 10 steps.
const SMALL: &str =
    "--train-limit 200 --valid-size 40 --epochs 1 --batch 20 --hidden 48 --latent 8";

/// Same seed, small config: the first epoch's objective agrees to 1e-3 relative.
#[test]
fn gpu_and_cpu_training_agree_on_the_first_epoch() {
    let args = format!("{SMALL} --k 4 --val-k 8");
    for (_, c, g) in train_on_cpu_and_gpu(&args, &["iwae-dreg"]).unwrap_or_default() {
        assert_agree("first epoch", &c[0], &g[0], "train_objective", 1e-3);
        assert_agree("first epoch", &c[0], &g[0], "val_lk", 1e-3);
    }
}

/// `uvae eval --backend gpu` agrees with the CPU within 0.01 nats on a subset.
#[test]
fn gpu_eval_matches_cpu_within_a_hundredth_of_a_nat() {
    let args = format!("{SMALL} --k 2 --val-k 4");
    eval_agrees_on_cpu_and_gpu("L_50 on 20 test images", &args);
}

/// `uvae check` prints the table and exits 0 when everything passes.
#[test]
fn check_command_prints_a_passing_table() {
    if !have_gpu() {
        return;
    }
    let out = run(&["check"]);
    println!("{}", out.stdout);
    assert!(out.code == Some(0), "{}", out.context(&["check"]));
    let text = out.stdout;
    assert!(
        text.contains("weights: coefficients jvi-dreg") && text.contains("0 failed"),
        "{text}"
    );
}
