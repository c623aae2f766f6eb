//! Shared by the GPU test files.

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
