//! `uvae train` and `uvae eval` on the GPU against the CPU, through the binary.

use serde_json::Value;

use crate::common::cli::{metrics_lines, uvae};
use crate::common::have_gpu;

/// Same seed, small config: the first epoch's objective agrees to 1e-3 relative.
#[test]
fn gpu_and_cpu_training_agree_on_the_first_epoch() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut objectives = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = tmp.path().join(backend);
        uvae()
            .args([
                "train",
                "--backend",
                backend,
                "--train-limit",
                "200",
                "--valid-size",
                "40",
                "--epochs",
                "1",
                "--batch",
                "20",
                "--k",
                "4",
            ])
            .args([
                "--hidden",
                "48",
                "--latent",
                "8",
                "--val-k",
                "8",
                "--estimator",
                "iwae-dreg",
                "--out",
            ])
            .arg(&out)
            .assert()
            .success();
        let m = metrics_lines(&out);
        objectives.push((
            m[0]["train_objective"].as_f64().unwrap(),
            m[0]["val_lk"].as_f64().unwrap(),
        ));
    }
    let ((oc, vc), (og, vg)) = (objectives[0], objectives[1]);
    println!("first-epoch objective: cpu {oc:.6} gpu {og:.6}; validation: cpu {vc:.6} gpu {vg:.6}");
    assert!(
        ((og - oc) / oc).abs() < 1e-3,
        "objectives differ: cpu {oc} gpu {og}"
    );
    assert!(
        ((vg - vc) / vc).abs() < 1e-3,
        "validation bounds differ: cpu {vc} gpu {vg}"
    );
}

/// `uvae eval --backend gpu` agrees with the CPU within 0.01 nats on a subset.
#[test]
fn gpu_eval_matches_cpu_within_a_hundredth_of_a_nat() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    uvae()
        .args([
            "train",
            "--backend",
            "cpu",
            "--train-limit",
            "200",
            "--valid-size",
            "40",
            "--epochs",
            "1",
            "--batch",
            "20",
            "--k",
            "2",
        ])
        .args(["--hidden", "48", "--latent", "8", "--val-k", "4", "--out"])
        .arg(&run)
        .assert()
        .success();
    let mut means = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = uvae()
            .args([
                "eval",
                "--backend",
                backend,
                "--k",
                "50",
                "--limit",
                "20",
                "--json",
                "--checkpoint",
            ])
            .arg(run.join("checkpoint.safetensors"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        means.push(v["mean"].as_f64().unwrap());
    }
    println!(
        "L_50 on 20 test images: cpu {:.6} gpu {:.6}",
        means[0], means[1]
    );
    assert!(
        (means[0] - means[1]).abs() < 0.01,
        "cpu {} gpu {}",
        means[0],
        means[1]
    );
}

/// `uvae check` prints the table and exits 0 when everything passes.
#[test]
fn check_command_prints_a_passing_table() {
    if !have_gpu() {
        return;
    }
    let out = uvae().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("weights: coefficients jvi-dreg") && text.contains("0 failed"),
        "{text}"
    );
}
