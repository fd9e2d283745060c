//! `kontrast-standin`: a stand-in for the worker in operator tests. It honours the worker's
//! contract (environment, progress endpoint, exit codes, termination message) with scripted
//! behaviour instead of training, so the operator's gang logic can be tested quickly and exactly.
//!
//! Behaviour comes from flags, each optionally limited to one rank and attempt, e.g.
//! `kontrast-standin --steps 30 --fail-exit 1 --fail-rank 1 --fail-attempt 1`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "kontrast-standin")]
struct Args {
    /// Steps to "train"; one step every --step-ms.
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Milliseconds per step.
    #[arg(long, default_value_t = 100)]
    step_ms: u64,
    /// Exit with this code after --fail-after-steps steps (on the chosen rank/attempt).
    #[arg(long)]
    fail_exit: Option<i32>,
    /// Step at which --fail-exit or --stall happens.
    #[arg(long, default_value_t = 5)]
    fail_after_steps: u64,
    /// Only this NODE_RANK fails/stalls (default: every rank).
    #[arg(long)]
    fail_rank: Option<u32>,
    /// Only this KONTRAST_ATTEMPT fails/stalls (default: every attempt).
    #[arg(long)]
    fail_attempt: Option<u32>,
    /// Stop making progress (but keep running) instead of exiting.
    #[arg(long)]
    stall: bool,
    /// Termination message written at exit (JSON for evaluation stand-ins).
    #[arg(long)]
    message: Option<String>,
    /// Port of the progress endpoint (rank 0 only; the worker contract's metrics port).
    #[arg(long, default_value_t = 9400)]
    port: u16,
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.parse().ok()
}

fn write_message(msg: &str) {
    let path =
        std::env::var("KONTRAST_TERMINATION_LOG").unwrap_or_else(|_| "/dev/termination-log".into());
    let _ = std::fs::write(path, msg);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let rank = env_u32("NODE_RANK").unwrap_or(0);
    let attempt = env_u32("KONTRAST_ATTEMPT").unwrap_or(1);
    let targeted =
        args.fail_rank.is_none_or(|r| r == rank) && args.fail_attempt.is_none_or(|a| a == attempt);
    eprintln!(
        "standin: rank {rank} attempt {attempt} env NNODES={:?} WORLD_SIZE={:?} MASTER_ADDR={:?} resume={:?}",
        std::env::var("NNODES").ok(),
        std::env::var("WORLD_SIZE").ok(),
        std::env::var("MASTER_ADDR").ok(),
        std::env::var("KONTRAST_RESUME").ok()
    );
    let step = Arc::new(AtomicU64::new(0));
    if rank == 0 {
        let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
        let addr: SocketAddr = format!("{ip}:{}", args.port)
            .parse()
            .context("POD_IP and --port form no address")?;
        let (s, total) = (step.clone(), args.steps);
        let app = Router::new().route(
            "/progress",
            get(move || {
                let s = s.load(Ordering::SeqCst);
                async move {
                    axum::Json(serde_json::json!({
                        "epoch": s / 10, "step": s, "totalSteps": total, "loss": 10.0 / (1.0 + s as f64), "imagesPerSecond": 100.0
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    for s in 1..=args.steps {
        tokio::time::sleep(Duration::from_millis(args.step_ms)).await;
        if targeted && s == args.fail_after_steps {
            if args.stall {
                eprintln!("standin: stalling at step {s}");
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
            if let Some(code) = args.fail_exit {
                write_message(&format!(
                    "standin: failing with exit code {code} at step {s}"
                ));
                eprintln!("standin: exit {code}");
                std::process::exit(code);
            }
        }
        step.store(s, Ordering::SeqCst);
    }
    write_message(args.message.as_deref().unwrap_or("standin: done"));
    Ok(())
}
