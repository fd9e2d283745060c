//! `kontrast`: the worker binary. Subcommands are added as the training and evaluation halves land.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod info;

#[derive(Parser)]
#[command(
    name = "kontrast",
    version,
    about = "Contrastive pre-training and evaluation on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what this worker can use: libtorch build, devices, threads (JSON).
    Info,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Info => {
            let report = info::Report::probe()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
