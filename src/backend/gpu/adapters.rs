//! Adapter discovery: listing what wgpu sees (`uvae devices`) and picking the one a run
//! opens (--adapter, software fallbacks).

use anyhow::{bail, Context, Result};

/// A description of an adapter for `uvae devices` and run logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timestamp_query: bool,
    pub subgroup: bool,
    pub max_storage_binding_mib: u64,
}

pub(super) fn summarize(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let f = a.features();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
        subgroup: f.contains(wgpu::Features::SUBGROUP),
        max_storage_binding_mib: a.limits().max_storage_buffer_binding_size >> 20,
    }
}

/// Vulkan, Metal and DX12 (WGPU_BACKEND overrides): the GL path adds nothing for compute
/// and probes displays on headless machines.
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc.with_env())
}

/// Every adapter wgpu can see, in its order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let adapters =
        pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY.with_env()));
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// Which adapter to open.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Case-insensitive substring of the adapter name; None: the best one.
    pub name: Option<String>,
    /// Accept software adapters (lavapipe, WARP) when choosing the best one.
    pub allow_software: bool,
    /// Use the workgroup-memory reductions even where the adapter has subgroups.
    pub disable_subgroups: bool,
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The adapter `choice` names, or the best hardware one (software too where allowed).
pub(super) fn pick_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let adapters =
        pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY.with_env()));
    let picked = match &choice.name {
        Some(name) => {
            let want = name.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            let seen = if names.is_empty() {
                "wgpu sees none: install a Vulkan, Metal or DX12 driver (on Debian: mesa-vulkan-drivers) or use --backend cpu".to_string()
            } else {
                format!("the adapters are: {}", names.join(", "))
            };
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .with_context(|| {
                    format!("no GPU adapter name contains '{name}' (--adapter); {seen}")
                })?
        }
        None => {
            let software: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            match adapters
                .into_iter()
                .filter(|a| choice.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
                .min_by_key(|a| rank(a.get_info().device_type))
            {
                Some(a) => a,
                None if software.is_empty() => bail!(
                    "no GPU adapter found (wgpu sees no Vulkan, Metal or DX12 device); install a driver \
                     (on Debian: mesa-vulkan-drivers) or use --backend cpu"
                ),
                None => bail!(
                    "only software adapters found ({}); --backend gpu uses them, auto prefers the CPU backend",
                    software.join(", ")
                ),
            }
        }
    };
    Ok(picked)
}
