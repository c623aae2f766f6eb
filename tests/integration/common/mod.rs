//! Shared by the integration tests: the CLI helpers ([`cli`]), the Monte-Carlo check harness
//! ([`mc`]), and the backends under test ([`have_gpu`], [`backends`]).

pub mod cli;
pub mod mc;

use std::fmt;

use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::gpu::{AdapterChoice, GpuBackend};
use unbiased_vae::backend::Backend;
use unbiased_vae::model::Layout;

/// True when wgpu sees a GPU adapter. Without one the caller skips, except in CI
/// (CI=true or 1), where a missing adapter fails the test: CI installs lavapipe.
pub fn have_gpu() -> bool {
    let adapters = unbiased_vae::backend::gpu::list_adapters();
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

/// Any adapter, software ones (lavapipe) included, with subgroups where it has them.
pub fn any_adapter() -> AdapterChoice {
    AdapterChoice {
        name: None,
        allow_software: true,
        disable_subgroups: false,
    }
}

/// A backend a test body runs on (candle's one body per device: `for b in backends()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Cpu,
    Gpu,
}

impl TestBackend {
    /// The CLI's `--backend` value, also the name failure messages carry.
    pub fn name(self) -> &'static str {
        match self {
            TestBackend::Cpu => "cpu",
            TestBackend::Gpu => "gpu",
        }
    }

    /// A backend holding `values`: the CPU with `threads` threads, or the GPU on
    /// [`any_adapter`]; `row_limit` caps the sample rows per pass (chunked steps).
    pub fn create(
        self,
        layout: &Layout,
        values: &[f32],
        threads: usize,
        row_limit: Option<usize>,
    ) -> Box<dyn Backend> {
        match self {
            TestBackend::Cpu => {
                let mut b = CpuBackend::new(layout, values, threads)
                    .unwrap_or_else(|e| panic!("{self}: backend: {e:#}"));
                b.set_row_limit(row_limit);
                Box::new(b)
            }
            TestBackend::Gpu => {
                let mut b = GpuBackend::new(layout, values, &any_adapter())
                    .unwrap_or_else(|e| panic!("{self}: backend: {e:#}"));
                b.set_row_limit(row_limit);
                Box::new(b)
            }
        }
    }
}

impl fmt::Display for TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backends to run a test body on: the CPU always, the GPU (lavapipe in CI) when wgpu
/// finds an adapter. Without one the GPU is skipped with a message, except under CI=true,
/// where [`have_gpu`] fails the test.
pub fn backends() -> Vec<TestBackend> {
    let mut b = vec![TestBackend::Cpu];
    if have_gpu() {
        b.push(TestBackend::Gpu);
    }
    b
}
