//! `uvae`: the command line over the `unbiased_vae` library (see `cli`).

mod cli;

use clap::{CommandFactory, FromArgMatches};

fn main() {
    cli::silence_display_probing();
    unbiased_vae::denormals::flush_process();
    let matches = cli::Cli::command().get_matches();
    let parsed = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = cli::run(parsed, &matches) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
