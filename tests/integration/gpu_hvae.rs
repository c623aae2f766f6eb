//! The two-stochastic-layer model (`--model hvae`) on the GPU against the CPU: the parity
//! section of `uvae check` on two shapes, and through the binary the first epoch of a tiny
//! two-layer training run on both backends and `uvae eval` of a two-layer checkpoint.

use unbiased_vae::apps::check::{self, ParityReport, ParityShape};

use crate::common::cli::{eval_agrees_on_cpu_and_gpu, first_epoch_agrees_on_cpu_and_gpu};
use crate::common::{any_adapter, arch2, assert_parity_passes, dispatches, have_gpu};

fn two_layer_suite(shape: &ParityShape) -> ParityReport {
    let report = check::run_two_layer(&any_adapter(), shape).expect("two-layer parity runs");
    assert_parity_passes(report, 30)
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
        arch: arch2(132, &[68, 36], 8, &[20], 4),
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

/// A tiny two-layer run, x 784 -> 16 -> z1 4 -> 8 -> z2 3 (and mirrored back), on 60 images.
const TINY: &str = "--model hvae --hidden 16 --latent 4 --hidden2 8 --latent2 3 \
    --train-limit 60 --valid-size 20 --epochs 1 --batch 10 --quiet";

/// Same seed, tiny two-layer config: the first epoch's objective and validation bound agree
/// to 1e-3 relative, for a fixed-size estimator and for SUMO (its tail lengths drawn on the
/// host, a subset program per minibatch on the device).
#[test]
fn two_layer_gpu_and_cpu_training_agree_on_the_first_epoch() {
    first_epoch_agrees_on_cpu_and_gpu(&format!("{TINY} --k 4 --val-k 4 --seed 3"));
}

/// `uvae eval --backend gpu` on a two-layer checkpoint (the architecture read from it)
/// agrees with the CPU within 0.01 nats.
#[test]
fn two_layer_gpu_eval_matches_cpu_within_a_hundredth_of_a_nat() {
    let args = format!("{TINY} --k 2 --val-k 2");
    eval_agrees_on_cpu_and_gpu("two-layer L_50 on 20 test images", &args);
}
