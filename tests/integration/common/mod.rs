//! Shared by the integration tests: the CLI helpers ([`cli`]), the Monte-Carlo check harness
//! ([`mc`]), the backends under test ([`have_gpu`], [`backends`], [`on_cpu_and_gpu`]) and the
//! small models the backend tests step ([`arch`], [`tiny`]).

pub mod arrays;
pub mod cli;
pub mod mc;

use std::fmt;

use unbiased_vae::apps::check::ParityReport;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::backend::gpu::{AdapterChoice, GpuBackend};
use unbiased_vae::backend::Backend;
use unbiased_vae::model::{Arch, Layout, Params, TopLayer};

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

/// Runs `body` on the CPU and then on the GPU, for a test that compares the two: both results,
/// or None (skipped, before anything runs) without a GPU adapter, except under CI=true, where
/// [`have_gpu`] fails the test.
pub fn on_cpu_and_gpu<T>(mut body: impl FnMut(TestBackend) -> T) -> Option<(T, T)> {
    if !have_gpu() {
        return None;
    }
    Some((body(TestBackend::Cpu), body(TestBackend::Gpu)))
}

/// A Bernoulli model x_dim -> hidden... -> z_dim (and mirrored back).
pub fn arch(x_dim: usize, hidden: &[usize], z_dim: usize) -> Arch {
    Arch {
        x_dim,
        hidden: hidden.to_vec(),
        z_dim,
        likelihood: Default::default(),
        top: None,
        cond: None,
    }
}

/// [`arch`] with a second stochastic layer z_dim -> hidden2... -> z2.
pub fn arch2(x_dim: usize, hidden: &[usize], z_dim: usize, hidden2: &[usize], z2: usize) -> Arch {
    Arch {
        top: Some(TopLayer {
            hidden: hidden2.to_vec(),
            z_dim: z2,
        }),
        ..arch(x_dim, hidden, z_dim)
    }
}

/// A model on 30 binary pixels (`arch.x_dim` is 30; seed 3, output bias from a mean of 0.2 to
/// 0.78) and a minibatch of `batch` fixed images for it.
pub fn tiny(arch: &Arch, batch: usize) -> (Params, Vec<f32>) {
    assert_eq!(arch.x_dim, 30);
    let mean: Vec<f32> = (0..30).map(|j| 0.2 + 0.02 * j as f32).collect();
    let x = (0..batch * 30)
        .map(|i| ((i * 7) % 3 == 0) as u8 as f32)
        .collect();
    (Params::init(arch, 3, Some(&mean)), x)
}

/// (name, shape) of every tensor a PyTorch `nn.Sequential` of Linear / Tanh layers holds.
pub fn pytorch_tensors(prefix: &str, dims: &[usize]) -> Vec<(String, Vec<usize>)> {
    dims.windows(2)
        .enumerate()
        .flat_map(|(i, io)| {
            [
                (format!("{prefix}.{}.weight", 2 * i), vec![io[1], io[0]]),
                (format!("{prefix}.{}.bias", 2 * i), vec![io[1]]),
            ]
        })
        .collect()
}

/// How many times a parity run dispatched `kernel`.
/// Prints a parity section's table and asserts it has at least `min_rows` rows, none of
/// them failed; returns the report for further checks.
pub fn assert_parity_passes(report: ParityReport, min_rows: usize) -> ParityReport {
    let table = unbiased_vae::apps::check::format_table(&report);
    println!("{table}");
    assert!(report.rows.len() >= min_rows, "{table}");
    assert_eq!(report.failed(), 0, "{table}");
    report
}

pub fn dispatches(report: &ParityReport, kernel: &str) -> usize {
    report
        .kernels
        .iter()
        .find(|(k, _)| k == kernel)
        .map_or(0, |(_, n)| *n)
}

/// Tests that differ in their arguments only, one a line: `name: expression;` declares
/// `#[test] fn name() { expression; }`; attributes and doc comments before a line go to its
/// test.
macro_rules! test_table {
    ($($(#[$attr:meta])* $name:ident: $body:expr;)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                $body;
            }
        )+
    };
}
pub(crate) use test_table;
