//! `kontrast-operator`: wires the HTTP endpoints, leader election and the controller.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use kontrast_operator::controller::{self, Context};
use kontrast_operator::http::{self, Health};
use kontrast_operator::leader::{self, LeaseConfig};
use kontrast_operator::metrics::Metrics;
use kube::runtime::events::{Recorder, Reporter};

#[derive(Parser)]
#[command(
    name = "kontrast-operator",
    version,
    about = "Reconciles ContrastiveRuns into gangs of worker pods and evaluation Jobs"
)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KONTRAST_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "KONTRAST_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Runs reconciled at the same time.
    #[arg(long, env = "KONTRAST_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Take a Lease before reconciling, so that several replicas are safe.
    #[arg(long, env = "KONTRAST_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "kontrast-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "KONTRAST_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    client
        .apiserver_version()
        .await
        .context("reaching the Kubernetes API")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let health = Health {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        leading: Arc::new(AtomicBool::new(false)),
    };
    let server = tokio::spawn(http::serve(args.metrics_addr, health.clone()));

    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("kontrast-operator-{}", std::process::id()))
    });
    let mut lost = None;
    let leases = kube::Api::namespaced(client.clone(), &args.lease_namespace);
    let lease_cfg = LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
        renew: Duration::from_secs(5),
    };
    if args.leader_elect {
        tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");
        lost = Some(tokio::select! {
            rx = leader::acquire(leases.clone(), lease_cfg.clone()) => rx,
            _ = shutdown_signal() => return Ok(()),
        });
    }
    health.leading.store(true, Ordering::SeqCst);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "kontrast-operator".into(),
                instance: Some(identity),
            },
        ),
        owned: kontrast_operator::cache::Owned::start(&client, args.namespace.as_deref()),
        stall: Default::default(),
        client,
        metrics,
        http: reqwest::Client::new(),
    });
    let mut lost_rx = lost.clone();
    let stop = async move {
        match lost_rx.as_mut() {
            Some(rx) => tokio::select! {
                _ = shutdown_signal() => {}
                _ = rx.wait_for(|leading| !leading) => tracing::error!("leadership lost: stopping"),
            },
            None => shutdown_signal().await,
        }
    };
    controller::run(ctx, args.namespace, args.concurrency, stop).await;
    health.leading.store(false, Ordering::SeqCst);
    server.abort();
    if let Some(rx) = lost {
        if !*rx.borrow() {
            anyhow::bail!("leadership lost");
        }
        leader::release(&leases, &lease_cfg).await;
    }
    Ok(())
}
