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

/// An instance of `backends`, made without a display.
fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc.with_env())
}

/// The adapters a run may open: those of Vulkan, Metal and DX12, or the backends
/// `WGPU_BACKEND` names. Only when neither finds one are wgpu's OpenGL adapters probed: GL
/// adds nothing for compute where the others exist, and its display probing is slow and,
/// on headless machines, noisy (the CLI silences EGL's warnings at its start). The flag says
/// whether the adapters are GL's fallback.
fn enumerate() -> (Vec<wgpu::Adapter>, bool) {
    let chosen = wgpu::Backends::from_env();
    let backends = chosen.unwrap_or(wgpu::Backends::PRIMARY);
    let found = pollster::block_on(instance(backends).enumerate_adapters(backends));
    if !found.is_empty() || chosen.is_some() {
        return (found, false);
    }
    let gl = wgpu::Backends::GL;
    (
        pollster::block_on(instance(gl).enumerate_adapters(gl)),
        true,
    )
}

/// Every adapter wgpu can see, in its order (GL's only when no other exists).
pub fn list_adapters() -> Vec<AdapterSummary> {
    enumerate()
        .0
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
    let (adapters, gl_fallback) = enumerate();
    let picked = match &choice.name {
        Some(name) => {
            let want = name.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            let seen = if names.is_empty() {
                "wgpu sees none (Vulkan, Metal, DX12 or OpenGL): install a driver (on Debian: mesa-vulkan-drivers) or use --backend cpu".to_string()
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
                    "no GPU adapter found (wgpu sees no Vulkan, Metal, DX12 or OpenGL device); install a driver \
                     (on Debian: mesa-vulkan-drivers) or use --backend cpu"
                ),
                None => bail!(
                    "only software adapters found ({}); --backend gpu uses them, auto prefers the CPU backend",
                    software.join(", ")
                ),
            }
        }
    };
    if gl_fallback {
        // Once a process: a protocol opens one context per run.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "notice: no Vulkan, Metal or DX12 adapter; using {} through wgpu's OpenGL backend",
                picked.get_info().name
            )
        });
    }
    Ok(picked)
}
