//! `uvae devices`: the adapters wgpu sees.

use anyhow::Result;
use unbiased_vae::backend::gpu;

pub fn run_devices(json: bool) -> Result<()> {
    let adapters = gpu::list_adapters();
    if json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapters found (none through Vulkan, Metal, DX12 or OpenGL; install a driver, on Debian mesa-vulkan-drivers); --backend cpu works everywhere");
        return Ok(());
    }
    println!(
        "{:<3} {:<40} {:<8} {:<14} {:<24} {:<9} {:<8} max binding",
        "#", "name", "backend", "type", "driver", "timestamp", "subgroup"
    );
    for a in &adapters {
        let driver = format!("{} {}", a.driver, a.driver_info);
        println!(
            "{:<3} {:<40} {:<8} {:<14} {:<24} {:<9} {:<8} {} MiB",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            driver.trim(),
            if a.timestamp_query { "yes" } else { "no" },
            if a.subgroup { "yes" } else { "no" },
            a.max_storage_binding_mib
        );
    }
    Ok(())
}
