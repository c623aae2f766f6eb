//! The conditional model (`--model cvae`) on the GPU against the CPU: the parity section of
//! `uvae check` on two shapes, and through the binary the first epoch of a tiny conditional
//! training run on both backends and `uvae eval` of a conditional checkpoint.

use unbiased_vae::apps::check::{self, ParityReport, ParityShape};

use crate::common::cli::{eval_agrees_on_cpu_and_gpu, first_epoch_agrees_on_cpu_and_gpu};
use crate::common::{any_adapter, assert_parity_passes, dispatches, have_gpu};

fn conditional_suite(shape: &ParityShape) -> ParityReport {
    let report = check::run_conditional(&any_adapter(), shape).expect("conditional parity runs");
    assert_parity_passes(report, 30)
}

/// Log-weights, z, the gradient of IWAE, IWAE-DReG, STL, RWS and a subset program (encoder,
/// prior and decoder apart), fused and chunked steps, evaluation and the coupled chains, GPU
/// against CPU, on `uvae check`'s tiny conditional shape (scalar GEMMs); the context's
/// bias-row GEMM and the kernels of the conditional model ran.
#[test]
fn conditional_parity_rows_pass() {
    if !have_gpu() {
        return;
    }
    let report = conditional_suite(&check::conditional_shape());
    for kernel in ["cond_split", "cond_log_weights", "cond_upstream"] {
        assert!(
            dispatches(&report, kernel) > 0,
            "{kernel}: {:?}",
            report.kernels
        );
    }
}

/// The same rows with every width a multiple of 4 and 1,024 sample rows, so the per-row
/// GEMMs take the vec4 path and the weight gradients split k (checked, not assumed).
#[test]
fn conditional_parity_vec4_split_k_shape() {
    if !have_gpu() {
        return;
    }
    let report = conditional_suite(&ParityShape {
        arch: check::conditional_arch(64, 28, &[36, 20], 8),
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

/// A tiny conditional run, x 784 (c: the top 14 rows) -> 16 -> z 4 (the prior 392 -> 16 ->
/// 8), on 60 images.
const TINY: &str = "--model cvae --hidden 16 --latent 4 \
    --train-limit 60 --valid-size 20 --epochs 1 --batch 10 --quiet";

/// Same seed, tiny conditional config: the first epoch's objective and validation bound
/// agree to 1e-3 relative, for a fixed-size estimator and for SUMO (its tail lengths drawn on
/// the host, a subset program per minibatch on the device).
#[test]
fn conditional_gpu_and_cpu_training_agree_on_the_first_epoch() {
    first_epoch_agrees_on_cpu_and_gpu(&format!("{TINY} --k 4 --val-k 4 --seed 3"));
}

/// `uvae eval --backend gpu` on a conditional checkpoint (the architecture and split read
/// from it) agrees with the CPU within 0.01 nats.
#[test]
fn conditional_gpu_eval_matches_cpu_within_a_hundredth_of_a_nat() {
    let args = format!("{TINY} --k 2 --val-k 2");
    eval_agrees_on_cpu_and_gpu("conditional L_50 on 20 test images", &args);
}
