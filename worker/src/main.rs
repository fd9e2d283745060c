//! `kontrast`: the worker binary. Only wiring: the work lives in the `kontrast_worker` library.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kontrast_worker::info;

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
    /// Train one rank (started by `launch`), or a whole single-process run on this machine.
    Train(kontrast_worker::train::cli::Args),
    /// Run one evaluation of the run on its newest checkpoint (the evaluation Jobs' command).
    Eval(kontrast_worker::eval::cli::Args),
    /// Convert a PyTorch MoCo checkpoint (`torch.save`) into a checkpoint of a run config.
    Import(kontrast_worker::import::cli::Args),
    /// Start and supervise this node's ranks (`kontrast train` by default); the pod's command.
    Launch(kontrast_worker::launch::Args),
    /// Join the gang (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and check its collectives and
    /// all-reduce bandwidth (one JSON line per rank).
    Collectives(kontrast_worker::dist::check::Args),
}

fn main() -> Result<ExitCode> {
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
        Command::Train(args) => return Ok(kontrast_worker::train::cli::run(args)),
        Command::Eval(args) => return Ok(kontrast_worker::eval::cli::run(args)),
        Command::Import(args) => kontrast_worker::import::cli::run(args)?,
        Command::Launch(args) => return Ok(kontrast_worker::launch::run(args)?),
        Command::Collectives(args) => return Ok(kontrast_worker::dist::check::run(args)?),
    }
    Ok(ExitCode::SUCCESS)
}
