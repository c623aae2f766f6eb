//! `uvae`: the command line over the `unbiased_vae` library (see `cli`).

mod cli;

use clap::Parser;

fn main() {
    cli::silence_display_probing();
    if let Err(e) = cli::run(cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
