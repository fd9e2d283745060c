//! `kontrast-node`: the local cluster's node (see `kontrast_tests::node`).
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kontrast_tests::node::{self, NodeConfig, images::ImageTable, registration::Capacity};

#[derive(Parser)]
#[command(
    name = "kontrast-node",
    about = "Runs the pods bound to one Node as local processes"
)]
struct Args {
    /// Kubeconfig of the node's identity.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Node name to register.
    #[arg(long, default_value = "kontrast-node")]
    name: String,
    /// Directory for pod logs, files and volumes.
    #[arg(long)]
    state_dir: PathBuf,
    /// Second octet N of the cluster's loopback block 127.N.0.0/16 (pod IPs come from it).
    #[arg(long)]
    pod_block: u8,
    /// Address to serve Prometheus HTTP service discovery on.
    #[arg(long)]
    discovery_listen: SocketAddr,
    /// Serving certificate of the kubelet API (kubectl logs); the API is off without it.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA that the apiserver's client certificate must chain to.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Allocatable CPU.
    #[arg(long, default_value = "16")]
    cpu: String,
    /// Allocatable memory.
    #[arg(long, default_value = "64Gi")]
    memory: String,
    /// Maximum pods.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Advertised nvidia.com/gpu count.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// PATTERN=DIR: containers whose image contains PATTERN find programs in DIR first.
    #[arg(long = "image")]
    images: Vec<String>,
    /// Host directory prefix hostPath volumes may use directly (repeatable).
    #[arg(long = "host-path")]
    host_paths: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "kontrast-node needs root: each pod gets its own mount and UTS namespace (for /etc/hosts, volumes and its host name)"
        );
    }
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let (apiserver_host, apiserver_port) = (
        config.cluster_url.host().unwrap_or("127.0.0.1").to_string(),
        config.cluster_url.port_u16().unwrap_or(443),
    );
    let client = kube::Client::try_from(config)?;
    let images = ImageTable::parse(&args.images).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let cfg = NodeConfig {
        name: args.name,
        state_dir: args.state_dir,
        octet: args.pod_block,
        host_ip: Ipv4Addr::new(127, args.pod_block, 0, 1),
        capacity: Capacity {
            cpu: args.cpu,
            memory: args.memory,
            pods: args.pods,
            gpus: args.gpus,
        },
        images,
        host_paths: args.host_paths,
        apiserver_host,
        apiserver_port,
        discovery_listen: args.discovery_listen,
        kubelet_tls: match (args.tls_cert, args.tls_key, args.client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(node::kubelet_api::KubeletTls {
                cert,
                key,
                client_ca,
            }),
            _ => None,
        },
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    node::run(client, cfg, shutdown).await?;
    Ok(())
}
