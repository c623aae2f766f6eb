//! The two-stochastic-layer model (`--model hvae`) on the GPU against the CPU: the parity
//! section of `uvae check` on a tiny two-layer model, and the first epoch of a tiny
//! two-layer training run on both backends through the binary.

use unbiased_vae::model::{Arch, TopLayer};
use unbiased_vae::parity::{self, ParityReport, ParityShape};

use crate::common::cli::{metrics_lines, uvae};
use crate::common::{any_adapter, have_gpu};

fn two_layer_suite(shape: &ParityShape) -> ParityReport {
    let report = parity::run_two_layer(&any_adapter(), shape).expect("two-layer parity runs");
    let table = parity::format_table(&report);
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
    let report = two_layer_suite(&parity::two_layer_shape());
    assert!(dispatches(&report, "gemm") > 0, "{:?}", report.kernels);
}

/// The same rows with every width a multiple of 4 and 208 sample rows, so the per-row
/// GEMMs take the vec4 path and the weight gradients split k (checked, not assumed).
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
        n: 52,
    });
    assert!(
        dispatches(&report, "gemm_vec4") >= 10 && dispatches(&report, "splitk_reduce") > 0,
        "vec4 / split-K GEMMs not used: {:?}",
        report.kernels
    );
}

/// Same seed, tiny two-layer config: the first epoch's objective agrees to 1e-3 relative.
#[test]
fn two_layer_gpu_and_cpu_training_agree_on_the_first_epoch() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut objectives = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = tmp.path().join(backend);
        uvae()
            .args(["train", "--model", "hvae", "--backend", backend])
            .args(["--train-limit", "60", "--valid-size", "20", "--epochs", "1"])
            .args(["--batch", "10", "--k", "4", "--val-k", "4", "--seed", "3"])
            .args([
                "--hidden",
                "16",
                "--latent",
                "4",
                "--hidden2",
                "8",
                "--latent2",
                "3",
            ])
            .args(["--estimator", "iwae-dreg", "--quiet", "--out"])
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
