//! GPU against the CPU reference. On a machine without a GPU adapter these tests skip with a
//! message, except in CI (CI=true), where a missing adapter is a failure: CI installs
//! lavapipe (mesa-vulkan-drivers) so they always run there.

use unbiased_vae::apps::check::{self, ParityReport, ParityShape};
use unbiased_vae::backend::gpu::AdapterChoice;

use crate::common::{any_adapter, arch, dispatches, have_gpu};

fn suite(choice: &AdapterChoice, shape: &ParityShape) -> ParityReport {
    let report = check::run_suite(choice, shape).expect("parity suite runs");
    let table = check::format_table(&report);
    println!("{table}");
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "parity failures on {}: {failed:?}\n{table}",
        report.device
    );
    report
}

/// Every kernel and estimator on the default tiny shape (rows 21, widths 70/33/17/10/5):
/// nothing a multiple of 4, so the scalar GEMM runs.
#[test]
fn parity_suite_default_shape() {
    if !have_gpu() {
        return;
    }
    let report = suite(&any_adapter(), &ParityShape::default());
    assert!(dispatches(&report, "gemm") > 0, "{:?}", report.kernels);
}

/// A second shape spanning several 64 x 64 GEMM tiles in rows and columns, with one
/// hidden layer and an odd latent size (Box-Muller blocks straddle rows).
#[test]
fn parity_suite_multi_tile_shape() {
    if !have_gpu() {
        return;
    }
    suite(
        &any_adapter(),
        &ParityShape {
            arch: arch(131, &[67], 3),
            batch: 5,
            n: 19,
        },
    );
}

/// Every width a multiple of 4, so the GEMMs take the vec4 path (checked, not assumed).
#[test]
fn parity_suite_vec4_aligned_shape() {
    if !have_gpu() {
        return;
    }
    let report = suite(
        &any_adapter(),
        &ParityShape {
            arch: arch(132, &[68, 36], 4),
            batch: 4,
            n: 8,
        },
    );
    assert!(
        dispatches(&report, "gemm_vec4") >= 10,
        "vec4 GEMMs not used: {:?}",
        report.kernels
    );
}

/// Any adapter, its subgroups left unused.
fn without_subgroups() -> AdapterChoice {
    AdapterChoice {
        disable_subgroups: true,
        ..any_adapter()
    }
}

/// The workgroup-memory fallback of the reductions, on an adapter that has subgroups too.
#[test]
fn parity_suite_without_subgroups() {
    if !have_gpu() {
        return;
    }
    let report = suite(&without_subgroups(), &ParityShape::default());
    assert!(
        report.device.contains("workgroup reductions"),
        "{}",
        report.device
    );
}
