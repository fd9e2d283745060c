//! `kontrast-node`: the cluster's node. There is no kubelet and no container runtime here, so
//! this process plays both: it registers a `Node`, keeps it Ready, and runs every pod bound to it
//! as local processes ([`pod`]), each with its own loopback IP ([`addresses`]), host name,
//! `/etc/hosts` ([`hosts`]) and volumes ([`volumes`]). It also serves Prometheus' pod discovery.
//! What it does not do (images, probes, cgroups, users) is listed in `docs/local-cluster.md`.

pub mod addresses;
pub mod container;
pub mod env;
pub mod hosts;
pub mod images;
pub mod kubelet_api;
pub mod paths;
pub mod pod;
pub mod registration;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

use addresses::AddressPool;
use hosts::HostsTable;
use images::ImageTable;
use pod::{StopReason, StopRequest};
use registration::Capacity;

/// The node's configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// State directory (pod logs, volumes).
    pub state_dir: PathBuf,
    /// Loopback block octet for pod IPs.
    pub octet: u8,
    /// The node's own address (`127.N.0.1`).
    pub host_ip: Ipv4Addr,
    /// What it advertises.
    pub capacity: Capacity,
    /// Image → program directory table.
    pub images: ImageTable,
    /// Allowed real `hostPath` prefixes.
    pub host_paths: Vec<PathBuf>,
    /// apiserver host for in-cluster clients (`KUBERNETES_SERVICE_HOST`).
    pub apiserver_host: String,
    /// apiserver port.
    pub apiserver_port: u16,
    /// Where to serve Prometheus HTTP discovery.
    pub discovery_listen: SocketAddr,
    /// TLS material of the kubelet API (`kubectl logs`); served on `host_ip:10250` when set.
    pub kubelet_tls: Option<kubelet_api::KubeletTls>,
}

/// Port of the node's kubelet API.
pub const KUBELET_PORT: u16 = 10250;

/// State shared by the node loop and its pod tasks.
pub struct Shared {
    /// API client.
    pub client: kube::Client,
    /// Configuration.
    pub cfg: NodeConfig,
    /// Every running pod's hosts file.
    pub hosts: Mutex<HostsTable>,
    /// Pod IPs.
    pub pool: Mutex<AddressPool>,
    /// `namespace/name` of pods whose task runs (log followers stop when their pod leaves).
    pub active: Mutex<HashSet<String>>,
}

struct Handle {
    stop: watch::Sender<Option<StopRequest>>,
    task: tokio::task::JoinHandle<()>,
}

const HEARTBEAT: Duration = Duration::from_secs(10);

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

async fn finalise_deletion(api: Api<Pod>, name: String, uid: String) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "finalising deletion failed"),
    }
}

/// The pod loop's bookkeeping.
struct Pods {
    shared: Arc<Shared>,
    running: HashMap<String, Handle>,
    finished: HashSet<String>,
    done: mpsc::UnboundedSender<String>,
}

impl Pods {
    fn on_apply(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &ns);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(h) = self.running.get(&uid) {
            if deleting && h.stop.borrow().is_none() {
                tracing::info!(pod = %name, grace = ?grace_of(&pod), "pod deleted: stopping its processes");
                let _ = h.stop.send(Some(StopRequest {
                    grace: grace_of(&pod),
                    reason: StopReason::Deleted,
                }));
            }
            return;
        }
        if deleting {
            tokio::spawn(finalise_deletion(api, name, uid));
            return;
        }
        if self.finished.contains(&uid) {
            return;
        }
        let status = pod.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            self.finished.insert(uid);
            return;
        }
        if status.pod_ip.is_some() {
            // Started by an earlier run of this node; its processes died with it.
            self.finished.insert(uid);
            tracing::warn!(pod = %name, "pod was running before the node restarted: reporting it Failed");
            tokio::spawn(async move {
                let body = serde_json::json!({"status": {"phase": "Failed", "reason": "NodeRestarted",
                    "message": "the local node restarted; the pod's processes are gone"}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(body))
                    .await;
            });
            return;
        }
        let ip = match self.shared.pool.lock().ok().and_then(|mut p| p.allocate()) {
            Some(ip) => ip,
            None => {
                tracing::error!(pod = %name, "no pod address left in the loopback block");
                return;
            }
        };
        tracing::info!(pod = %name, namespace = %ns, %ip, "starting pod");
        let (tx, rx) = watch::channel(None);
        let shared = self.shared.clone();
        let done = self.done.clone();
        let uid2 = uid.clone();
        let task = tokio::spawn(async move {
            pod::run(shared, pod, ip, rx).await;
            let _ = done.send(uid2);
        });
        self.running.insert(uid, Handle { stop: tx, task });
    }

    fn on_delete(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(h) = self.running.get(&uid) {
            let _ = h.stop.send(Some(StopRequest {
                grace: Duration::ZERO,
                reason: StopReason::Gone,
            }));
        }
        self.finished.remove(&uid);
    }

    async fn shutdown(&mut self) {
        for h in self.running.values() {
            let _ = h.stop.send(Some(StopRequest {
                grace: Duration::from_secs(2),
                reason: StopReason::NodeShutdown,
            }));
        }
        for (_, h) in self.running.drain() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h.task).await;
        }
    }
}

/// Runs the node until `shutdown` resolves; then stops every pod's processes.
pub async fn run(
    client: kube::Client,
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    registration::register(&nodes, &cfg.name, &cfg.capacity, cfg.host_ip).await?;
    tracing::info!(node = %cfg.name, "registered and Ready");

    let heartbeat = {
        let (nodes, name, cap, ip) = (
            nodes.clone(),
            cfg.name.clone(),
            cfg.capacity.clone(),
            cfg.host_ip,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = registration::heartbeat(&nodes, &name, &cap, ip, true).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                if let Err(e) = registration::clear_taints(&nodes, &name).await {
                    tracing::warn!(error = %e, "clearing taints failed");
                }
            }
        })
    };
    let discovery = {
        let (client, addr) = (client.clone(), cfg.discovery_listen);
        tokio::spawn(async move {
            if let Err(e) = crate::discovery::serve(client, addr).await {
                tracing::error!(%addr, error = %e, "discovery endpoint failed");
            }
        })
    };

    let shared = Arc::new(Shared {
        client: client.clone(),
        pool: Mutex::new(AddressPool::new(cfg.octet)),
        hosts: Mutex::new(HostsTable::default()),
        active: Mutex::new(HashSet::new()),
        cfg: cfg.clone(),
    });
    let kubelet = cfg.kubelet_tls.clone().map(|tls| {
        let (shared, addr) = (
            shared.clone(),
            SocketAddr::from((cfg.host_ip, KUBELET_PORT)),
        );
        tokio::spawn(async move {
            if let Err(e) = kubelet_api::serve(shared, addr, tls).await {
                tracing::error!(%addr, error = %e, "kubelet API failed");
            }
        })
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut pods = Pods {
        shared,
        running: HashMap::new(),
        finished: HashSet::new(),
        done: done_tx,
    };
    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.name));
    let mut events = watcher(api, wc).default_backoff().boxed();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(uid) = done_rx.recv() => {
                pods.running.remove(&uid);
                pods.finished.insert(uid);
            }
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => pods.on_apply(p),
                Some(Ok(watcher::Event::Delete(p))) => pods.on_delete(&p),
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error (retrying)"),
                None => break,
            }
        }
    }
    tracing::info!("node stopping: terminating pods");
    pods.shutdown().await;
    heartbeat.abort();
    discovery.abort();
    if let Some(k) = kubelet {
        k.abort();
    }
    let _ = registration::heartbeat(&nodes, &cfg.name, &cfg.capacity, cfg.host_ip, false).await;
    Ok(())
}
