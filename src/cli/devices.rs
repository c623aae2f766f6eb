//! `uvae devices` (the adapters wgpu sees) and `uvae check` (a GPU against the CPU reference).

use super::console::{Mode, WorkBar};
use anyhow::Result;
use unbiased_vae::backend::gpu::{self, AdapterChoice};
use unbiased_vae::parity;

pub fn run_check(adapter: Option<String>, json: bool) -> Result<()> {
    let choice = AdapterChoice {
        name: adapter,
        allow_software: true,
        disable_subgroups: false,
    };
    let spinner = WorkBar::spinner(Mode::detect(json), "GPU against the CPU reference");
    let report = parity::run_suite(&choice, &Default::default())?;
    drop(spinner);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", parity::format_table(&report));
    }
    if report.failed() > 0 {
        anyhow::bail!(
            "{} parity checks failed on {}",
            report.failed(),
            report.device
        );
    }
    Ok(())
}

pub fn run_devices(json: bool) -> Result<()> {
    let adapters = gpu::list_adapters();
    if json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapters found (install a Vulkan, Metal or DX12 driver; on Debian: mesa-vulkan-drivers); --backend cpu works everywhere");
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
