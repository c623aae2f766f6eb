//! The two-stochastic-layer model (`--model hvae`) on the GPU against the CPU: the parity
//! section of `uvae check` on two shapes, and through the binary the first epoch of a tiny
//! two-layer training run on both backends and `uvae eval` of a two-layer checkpoint.

use unbiased_vae::apps::check::{self, ParityReport, ParityShape};
use unbiased_vae::model::{Arch, TopLayer};

use crate::common::cli::{metrics_lines, uvae};
use crate::common::{any_adapter, have_gpu};

fn two_layer_suite(shape: &ParityShape) -> ParityReport {
    let report = check::run_two_layer(&any_adapter(), shape).expect("two-layer parity runs");
    let table = check::format_table(&report);
    println!("{table}");
    assert!(report.rows.len() >= 30, "{table}");
    assert_eq!(report.failed(), 0, "{table}");
    report
}

fn dispatches(report: &ParityReport, kernel: &str) -> usize {
    report
        .kernels
        .iter()
        .find(|(k, _)| k == kernel)
        .map_or(0, |(_, n)| *n)
}

/// Noise, z1, z2, log-weights, the gradient of IWAE, IWAE-DReG, STL, RWS and a subset
/// program, fused and chunked steps, evaluation and the coupled chains, GPU against CPU, on
/// `uvae check`'s tiny two-layer shape (scalar GEMMs).
#[test]
fn two_layer_parity_rows_pass() {
    if !have_gpu() {
        return;
    }
    let report = two_layer_suite(&check::two_layer_shape());
    assert!(dispatches(&report, "gemm") > 0, "{:?}", report.kernels);
}

/// The same rows with every width a multiple of 4 and 1,024 sample rows, so the per-row
/// GEMMs take the vec4 path and the weight gradients split k (k of at least 1,024, the
/// shortest the automatic choice splits; checked, not assumed).
#[test]
fn two_layer_parity_vec4_split_k_shape() {
    if !have_gpu() {
        return;
    }
    let report = two_layer_suite(&ParityShape {
        arch: Arch {
            x_dim: 132,
            hidden: vec![68, 36],
            z_dim: 8,
            likelihood: Default::default(),
            top: Some(TopLayer {
                hidden: vec![20],
                z_dim: 4,
            }),
        },
        batch: 4,
        n: 256,
    });
    let vec4 = dispatches(&report, "gemm_vec4") + dispatches(&report, "gemm_vec4_32");
    assert!(
        vec4 >= 10 && dispatches(&report, "splitk_reduce") > 0,
        "vec4 / split-K GEMMs not used: {:?}",
        report.kernels
    );
}

/// x 784 -> 16 -> z1 4 -> 8 -> z2 3 (and mirrored back): a tiny two-layer model.
const SIZES: [&str; 8] = [
    "--hidden",
    "16",
    "--latent",
    "4",
    "--hidden2",
    "8",
    "--latent2",
    "3",
];

/// Same seed, tiny two-layer config: the first epoch's objective and validation bound agree
/// to 1e-3 relative, for a fixed-size estimator and for SUMO (its tail lengths drawn on the
/// host, a subset program per minibatch on the device).
#[test]
fn two_layer_gpu_and_cpu_training_agree_on_the_first_epoch() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for estimator in ["iwae-dreg", "sumo"] {
        let mut objectives = Vec::new();
        for backend in ["cpu", "gpu"] {
            let out = tmp.path().join(format!("{estimator}-{backend}"));
            uvae()
                .args(["train", "--model", "hvae", "--backend", backend])
                .args(["--train-limit", "60", "--valid-size", "20", "--epochs", "1"])
                .args(["--batch", "10", "--k", "4", "--val-k", "4", "--seed", "3"])
                .args(SIZES)
                .args(["--estimator", estimator, "--quiet", "--out"])
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
        println!(
            "{estimator} first-epoch objective: cpu {oc:.6} gpu {og:.6}; validation: cpu {vc:.6} gpu {vg:.6}"
        );
        assert!(
            ((og - oc) / oc).abs() < 1e-3,
            "{estimator}: objectives differ: cpu {oc} gpu {og}"
        );
        assert!(
            ((vg - vc) / vc).abs() < 1e-3,
            "{estimator}: validation bounds differ: cpu {vc} gpu {vg}"
        );
    }
}

/// `uvae eval --backend gpu` on a two-layer checkpoint (the architecture read from it)
/// agrees with the CPU within 0.01 nats.
#[test]
fn two_layer_gpu_eval_matches_cpu_within_a_hundredth_of_a_nat() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    uvae()
        .args(["train", "--model", "hvae", "--backend", "cpu"])
        .args(["--train-limit", "60", "--valid-size", "20", "--epochs", "1"])
        .args(["--batch", "10", "--k", "2", "--val-k", "2", "--quiet"])
        .args(SIZES)
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    let mut means = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = uvae()
            .args(["eval", "--backend", backend, "--k", "50", "--limit", "20"])
            .args(["--json", "--checkpoint"])
            .arg(run.join("checkpoint.safetensors"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        means.push(v["mean"].as_f64().unwrap());
    }
    println!(
        "two-layer L_50 on 20 test images: cpu {:.6} gpu {:.6}",
        means[0], means[1]
    );
    assert!(
        (means[0] - means[1]).abs() < 0.01,
        "cpu {} gpu {}",
        means[0],
        means[1]
    );
}
