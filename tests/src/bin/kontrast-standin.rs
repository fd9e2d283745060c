//! `kontrast-standin`: a stand-in for the `kontrast` worker in operator tests. It honours the
//! worker's contract — `kontrast launch` / `kontrast eval --evaluation NAME`, the environment,
//! the run config at `$KONTRAST_CONFIG`, rank 0's `/progress` endpoint, exit codes and the
//! termination message — with scripted behaviour instead of training.
//!
//! The script is `standin.json` in the run's dataset directory (so one manifest field, the
//! dataset, selects it), e.g. `{"steps": 30, "failExit": 1, "failRank": 1, "failAttempt": 1}`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::get;
use kontrast_api::progress::{KnnMonitorFailure, Report};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", default)]
struct Script {
    /// Steps to "train"; one every `step_ms`.
    steps: u64,
    step_ms: u64,
    /// Exit with this code at `fail_after_steps` (on the chosen rank/attempt).
    fail_exit: Option<i32>,
    fail_after_steps: u64,
    fail_rank: Option<u32>,
    fail_attempt: Option<u32>,
    /// Stop making progress instead of exiting.
    stall: bool,
    /// Metrics each evaluation reports.
    eval_metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Evaluations that fail.
    eval_fail: Vec<String>,
    /// Report this kNN monitor failure from the first "epoch" on.
    monitor_failure: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            steps: 20,
            step_ms: 100,
            fail_exit: None,
            fail_after_steps: 5,
            fail_rank: None,
            fail_attempt: None,
            stall: false,
            eval_metrics: BTreeMap::new(),
            eval_fail: Vec::new(),
            monitor_failure: None,
        }
    }
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.parse().ok()
}

fn write_message(msg: &str) {
    let _ = std::fs::write("/dev/termination-log", msg);
}

/// The progress report after `step` of `total` steps (ten steps make an "epoch").
fn report(step: u64, total: u64, monitor_failure: Option<&str>) -> Report {
    let epoch = (step / 10) as u32;
    Report {
        epoch,
        step,
        total_steps: total,
        loss: Some(10.0 / (1.0 + step as f64)),
        images_per_second: Some(100.0),
        checkpoint: None,
        knn_monitor: None,
        knn_monitor_failure: monitor_failure
            .filter(|_| epoch > 0)
            .map(|error| KnnMonitorFailure {
                epoch,
                error: error.to_string(),
            }),
    }
}

fn load() -> Result<(serde_json::Value, Script)> {
    let path = std::env::var("KONTRAST_CONFIG").context("KONTRAST_CONFIG is not set")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let dataset = config["dataset"]["path"]
        .as_str()
        .unwrap_or("/")
        .to_string();
    let script_path = std::path::Path::new(&dataset).join("standin.json");
    let script = match std::fs::read_to_string(&script_path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("parsing {}", script_path.display()))?,
        Err(_) => Script::default(),
    };
    Ok((config, script))
}

async fn launch(config: serde_json::Value, s: Script) -> Result<()> {
    let rank = env_u32("NODE_RANK").unwrap_or(0);
    let attempt = env_u32("KONTRAST_ATTEMPT").unwrap_or(1);
    let targeted =
        s.fail_rank.is_none_or(|r| r == rank) && s.fail_attempt.is_none_or(|a| a == attempt);
    for var in [
        "MASTER_ADDR",
        "MASTER_PORT",
        "NNODES",
        "WORLD_SIZE",
        "KONTRAST_CHECKPOINT_DIR",
        "KONTRAST_RESUME",
    ] {
        eprintln!("standin: {var}={}", std::env::var(var).unwrap_or_default());
    }
    let step = Arc::new(AtomicU64::new(0));
    if rank == 0 {
        let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
        let port = config["metrics"]["port"].as_u64().unwrap_or(9400);
        let addr: SocketAddr = format!("{ip}:{port}")
            .parse()
            .context("POD_IP and the metrics port form no address")?;
        let (s2, total, failure) = (step.clone(), s.steps, s.monitor_failure.clone());
        let app = Router::new().route(
            "/progress",
            get(move || {
                let s = s2.load(Ordering::SeqCst);
                let r = report(s, total, failure.as_deref());
                async move { axum::Json(r) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    for n in 1..=s.steps {
        tokio::time::sleep(Duration::from_millis(s.step_ms)).await;
        if targeted && n == s.fail_after_steps {
            if s.stall {
                eprintln!("standin: stalling at step {n}");
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
            if let Some(code) = s.fail_exit {
                write_message(&format!(
                    "standin: rank {rank} failing with exit code {code} at step {n}"
                ));
                std::process::exit(code);
            }
        }
        step.store(n, Ordering::SeqCst);
    }
    // Rank 0's final progress report is its termination message (the worker contract).
    let last = report(s.steps, s.steps, s.monitor_failure.as_deref());
    write_message(&serde_json::to_string(&last)?);
    Ok(())
}

fn eval(name: &str, s: &Script) -> Result<()> {
    if s.eval_fail.iter().any(|n| n == name) {
        write_message(&format!("standin: evaluation {name} failed on purpose"));
        std::process::exit(1);
    }
    let metrics = s.eval_metrics.get(name).cloned().unwrap_or_default();
    write_message(
        &serde_json::json!({"evaluation": name, "kind": "standin", "metrics": metrics}).to_string(),
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, script) = load()?;
    match args.first().map(String::as_str) {
        Some("launch") => launch(config, script).await,
        Some("eval") => {
            let name = args
                .iter()
                .skip_while(|a| *a != "--evaluation")
                .nth(1)
                .context("eval needs --evaluation NAME")?;
            eval(name, &script)
        }
        other => bail!("kontrast-standin: unknown command {other:?} (expected launch or eval)"),
    }
}
