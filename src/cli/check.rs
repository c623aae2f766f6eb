//! `uvae check`: a GPU against the CPU reference, kernel by kernel.

use super::console::{Mode, WorkBar};
use anyhow::Result;
use unbiased_vae::apps::check;
use unbiased_vae::backend::gpu::AdapterChoice;

pub fn run(adapter: Option<String>, json: bool) -> Result<()> {
    let choice = AdapterChoice {
        name: adapter,
        allow_software: true,
        disable_subgroups: false,
    };
    let spinner = WorkBar::spinner(Mode::detect(json), "GPU against the CPU reference");
    let report = check::run_suite(&choice, &Default::default())?;
    drop(spinner);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", check::format_table(&report));
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
