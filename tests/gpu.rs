//! GPU against the CPU reference. On a machine without a GPU adapter these tests skip with a
//! message, except in CI (CI=true), where a missing adapter is a failure: CI installs
//! lavapipe (mesa-vulkan-drivers) so they always run there.

use unbiased_vae::backend::gpu::{list_adapters, AdapterChoice};
use unbiased_vae::model::Arch;
use unbiased_vae::parity::{self, ParityShape};

/// True when a GPU adapter exists; panics in CI when none does.
fn have_gpu() -> bool {
    let adapters = list_adapters();
    if adapters.is_empty() {
        let ci = std::env::var("CI")
            .map(|v| v == "true" || v == "1")
            .unwrap_or(false);
        assert!(
            !ci,
            "CI=true but wgpu found no adapter: install mesa-vulkan-drivers (lavapipe)"
        );
        eprintln!("SKIPPED: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
        return false;
    }
    eprintln!(
        "adapters: {:?}",
        adapters
            .iter()
            .map(|a| format!("{} ({})", a.name, a.backend))
            .collect::<Vec<_>>()
    );
    true
}

fn any_adapter() -> AdapterChoice {
    AdapterChoice {
        name: None,
        allow_software: true,
        disable_subgroups: false,
    }
}

fn assert_suite(shape: &ParityShape) {
    let (device, rows) = parity::run_suite(&any_adapter(), shape).expect("parity suite runs");
    let table = parity::format_table(&device, &rows);
    println!("{table}");
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "parity failures on {device}: {failed:?}\n{table}"
    );
}

/// Every kernel and estimator on the default tiny shape (rows 21, widths 70/33/17/10/5).
#[test]
fn parity_suite_default_shape() {
    if !have_gpu() {
        return;
    }
    assert_suite(&ParityShape::default());
}

/// A second shape spanning several 64 x 64 GEMM tiles in rows and columns, with one
/// hidden layer and an odd latent size (Box-Muller blocks straddle rows).
#[test]
fn parity_suite_multi_tile_shape() {
    if !have_gpu() {
        return;
    }
    assert_suite(&ParityShape {
        arch: Arch {
            x_dim: 131,
            hidden: vec![67],
            z_dim: 3,
        },
        batch: 5,
        n: 19,
    });
}

/// The workgroup-memory fallback of the reductions, on an adapter that has subgroups too.
#[test]
fn parity_suite_without_subgroups() {
    if !have_gpu() {
        return;
    }
    let choice = AdapterChoice {
        name: None,
        allow_software: true,
        disable_subgroups: true,
    };
    let (device, rows) =
        parity::run_suite(&choice, &ParityShape::default()).expect("parity suite runs");
    let table = parity::format_table(&device, &rows);
    println!("{table}");
    assert!(device.contains("workgroup reductions"), "{device}");
    assert!(rows.iter().all(|r| r.pass), "{table}");
}
