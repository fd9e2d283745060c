//! `kontrast train`: the command line of one training process.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use tracing::error;

use crate::model::memory_format::Layout;
use crate::telemetry::TerminationLog;

use super::config::{self, Overrides};
use super::error::TrainError;
use super::trainer::{self, Options};

/// Whether to continue from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resume {
    /// Start from scratch (a new run).
    None,
    /// Continue from the newest valid checkpoint, if there is one.
    Latest,
}

/// Arguments of `kontrast train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run-config document (JSON, as the operator writes it). Without it the embedded quickstart
    /// run (Fashion-MNIST, ResNet-18) is used, adjusted by the flags below.
    #[arg(long, env = "KONTRAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data-set directory (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub dataset: Option<String>,
    /// Data-set format: fashionMnist, imagefolder or flat (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub dataset_format: Option<String>,
    /// Epochs (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub epochs: Option<u32>,
    /// Global batch size (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub batch_size: Option<u32>,
    /// Base learning rate (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub lr: Option<f64>,
    /// Queue length, a multiple of the batch size (embedded run only).
    #[arg(long, conflicts_with = "config")]
    pub queue_size: Option<u32>,
    /// Checkpoint directory; without it no checkpoints are written.
    #[arg(long, env = "KONTRAST_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Resume from the newest valid checkpoint, or start over.
    #[arg(long, env = "KONTRAST_RESUME", value_enum, default_value = "latest")]
    pub resume: Resume,
    /// Seed of the weights, the data order and the augmentations.
    #[arg(long, env = "KONTRAST_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Data-loading threads per process (0: on the training thread). Default: the cores
    /// available divided among the node's ranks, less one for the training thread.
    #[arg(long, env = "KONTRAST_DATA_THREADS")]
    pub data_threads: Option<usize>,
    /// Batches prepared ahead of training.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Log a progress line every this many steps.
    #[arg(long, env = "KONTRAST_LOG_EVERY", default_value_t = 10)]
    pub log_every: u64,
    /// Port of rank 0's `/metrics` and `/progress` (default: the run config's; 0 picks one).
    #[arg(long, env = "KONTRAST_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Seconds to wait for the rendezvous and for each collective before failing.
    #[arg(
        long,
        env = "KONTRAST_COLLECTIVE_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub collective_timeout_seconds: u64,
    /// Memory layout of the convolution weights: `auto` is channels-last (NHWC) on CUDA, where
    /// convolutions run faster in it, and NCHW on the CPU, where a step measured slower in it.
    #[arg(long, env = "KONTRAST_LAYOUT", value_enum, default_value = "auto")]
    pub layout: Layout,
}

fn default_data_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    (cores / local).saturating_sub(1).max(1)
}

fn train(args: &Args) -> Result<(), TrainError> {
    let config = match &args.config {
        Some(path) => config::load(path)?,
        None => config::standalone(&Overrides {
            dataset: args.dataset.clone(),
            dataset_format: args.dataset_format.clone(),
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            queue_size: args.queue_size,
        })?,
    };
    let options = Options {
        checkpoint_dir: args.checkpoint_dir.clone(),
        resume: args.resume == Resume::Latest,
        seed: args.seed,
        data_threads: args.data_threads.unwrap_or_else(default_data_threads),
        prefetch: args.prefetch.max(1),
        log_every: args.log_every,
        metrics_port: args.metrics_port,
        collective_timeout: Duration::from_secs(args.collective_timeout_seconds.max(1)),
        layout: args.layout,
    };
    trainer::run(&config, &options)?;
    Ok(())
}

/// Runs `kontrast train`; failures are logged, left as the termination message, and mapped to
/// the exit codes the operator understands (78 permanent, 1 retryable).
pub fn run(args: Args) -> ExitCode {
    match train(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let kind = if e.is_permanent() {
                "permanent"
            } else {
                "retryable"
            };
            error!(error = %e, kind, "training failed");
            let rank = std::env::var("RANK").unwrap_or_else(|_| "0".into());
            // Best effort: the exit code alone still tells the operator what to do.
            let _ = TerminationLog::from_env().write(&format!("rank {rank}: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
