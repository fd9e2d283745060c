//! `kontrast-dev`: starts, stops and inspects the local Kubernetes cluster.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kontrast_tests::cluster::{self, Cluster, ClusterOptions, ClusterState};
use kontrast_tests::process::Lifetime;

#[derive(Parser)]
#[command(
    name = "kontrast-dev",
    about = "The Kontrast local development cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Manage the local cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Benchmarks that need a cluster of their own.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Many ContrastiveRuns applied at once against the operator binary: time until every gang's
    /// pods exist, operator CPU and memory, apiserver requests (docs/benchmarks.md).
    OperatorScale {
        /// State directory of the benchmark's cluster (started and stopped by the benchmark).
        #[arg(long, default_value = ".state/bench-operator-scale")]
        state_dir: PathBuf,
        /// The operator binary (default: the one beside this program).
        #[arg(long)]
        operator: Option<PathBuf>,
        /// Runs applied at once.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Pods per run.
        #[arg(long, default_value_t = 4)]
        pods: u32,
        /// Seconds of quiet steady state measured afterwards.
        #[arg(long, default_value_t = 60)]
        steady_seconds: u64,
        /// The operator's --concurrency.
        #[arg(long, default_value_t = 8)]
        concurrency: u16,
    },
}

#[derive(clap::Args)]
struct StateArg {
    /// State directory of the cluster.
    #[arg(long, env = "KONTRAST_STATE", default_value = ".state/cluster")]
    state_dir: PathBuf,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Start etcd, kube-apiserver, controller-manager, scheduler, the local node and Prometheus.
    Up {
        #[command(flatten)]
        state: StateArg,
        /// Stay in the foreground and stop everything on Ctrl-C.
        #[arg(long)]
        foreground: bool,
        /// nvidia.com/gpu the node advertises.
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// Extra PATTERN=DIR image mappings (the kontrast images map to this binary's directory).
        #[arg(long = "image")]
        images: Vec<String>,
        /// Prometheus's scrape and discovery interval (a Prometheus duration).
        #[arg(long, default_value = kontrast_tests::prometheus::SCRAPE_INTERVAL)]
        scrape_interval: String,
        /// Scrape as the chart's ServiceMonitor and PodMonitor do: honour the series' own labels
        /// (the operator's per-run namespace) and skip worker pods other than node rank 0.
        #[arg(long)]
        chart_monitors: bool,
    },
    /// Stop every process of the cluster, by pid.
    Down {
        #[command(flatten)]
        state: StateArg,
    },
    /// Show which processes run and whether the apiserver, node and Prometheus answer.
    Status {
        #[command(flatten)]
        state: StateArg,
    },
}

fn print_state(s: &ClusterState) {
    println!("cluster up in {}", s.state_dir.display());
    println!("  apiserver   {}", s.apiserver);
    println!("  kubeconfig  {}", s.kubeconfig.display());
    println!("  prometheus  {}", s.prometheus);
    println!("  pod IPs     127.{}.x.y", s.octet);
    println!("  use it:     export KUBECONFIG={}", s.kubeconfig.display());
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = match Cli::parse().command {
        Top::Cluster { command } => command,
        Top::Bench {
            command:
                BenchCmd::OperatorScale {
                    state_dir,
                    operator,
                    runs,
                    pods,
                    steady_seconds,
                    concurrency,
                },
        } => {
            let exe_dir = std::env::current_exe()?
                .parent()
                .map(PathBuf::from)
                .context("locating kontrast-dev's directory")?;
            let state_dir = std::path::absolute(&state_dir)?;
            std::fs::create_dir_all(&state_dir)?;
            let opts = kontrast_tests::operator_scale::Options {
                state_dir,
                node_bin: exe_dir.join("kontrast-node"),
                operator_bin: operator.unwrap_or_else(|| exe_dir.join("kontrast-operator")),
                runs,
                pods,
                steady: Duration::from_secs(steady_seconds),
                concurrency,
            };
            let report = kontrast_tests::operator_scale::run(&opts)
                .await
                .context("the operator-scale benchmark")?;
            println!("{}", report.render(&opts));
            return Ok(());
        }
    };
    match command {
        ClusterCmd::Up {
            state,
            foreground,
            gpus,
            images,
            scrape_interval,
            chart_monitors,
        } => {
            let exe_dir = std::env::current_exe()?
                .parent()
                .map(PathBuf::from)
                .context("locating kontrast-dev's directory")?;
            let mut opts = ClusterOptions::new(
                std::path::absolute(&state.state_dir)?,
                exe_dir.join("kontrast-node"),
            );
            opts.lifetime = if foreground {
                Lifetime::Attached
            } else {
                Lifetime::Detached
            };
            opts.node.gpus = gpus;
            opts.prometheus = kontrast_tests::prometheus::ScrapeOptions {
                interval: scrape_interval,
                chart_monitors,
            };
            opts.node.images = images;
            opts.node
                .images
                .push(format!("kontrast-worker={}", exe_dir.display()));
            opts.node
                .images
                .push(format!("kontrast-operator={}", exe_dir.display()));
            // Ctrl-C while starting drops the half-started cluster, which stops what was started.
            let cluster = tokio::select! {
                c = Cluster::up(opts) => c.context("starting the cluster")?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process started so far was stopped"),
            };
            print_state(&cluster.state);
            if foreground {
                println!("running in the foreground; Ctrl-C stops it");
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                cluster.down();
                println!("cluster stopped");
            } else {
                cluster.detach();
            }
        }
        ClusterCmd::Down { state } => {
            let s = cluster::down(&state.state_dir)?;
            println!(
                "cluster in {} stopped ({} processes)",
                s.state_dir.display(),
                s.processes.len()
            );
        }
        ClusterCmd::Status { state } => {
            let s = ClusterState::load(&state.state_dir)?;
            print_state(&s);
            let mut healthy = true;
            for (r, alive) in cluster::process_status(&s) {
                println!(
                    "  {:<24} pid {:<8} {}",
                    r.name,
                    r.pid,
                    if alive { "running" } else { "STOPPED" }
                );
                healthy &= alive;
            }
            match tokio::time::timeout(Duration::from_secs(5), async {
                let client = s.client().await?;
                let v = client.apiserver_version().await?;
                Ok::<_, anyhow::Error>(v.git_version)
            })
            .await
            {
                Ok(Ok(v)) => println!("  apiserver version {v}"),
                Ok(Err(e)) => {
                    healthy = false;
                    println!("  apiserver: {e}");
                }
                Err(_) => {
                    healthy = false;
                    println!("  apiserver: no answer within 5s");
                }
            }
            if !healthy {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
