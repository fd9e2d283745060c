//! Bringing a whole local cluster up and down.
//!
//! `up` starts, in order and each only after the previous one answers: etcd, kube-apiserver
//! (token auth, RBAC, service-account keys, serving certificate), kube-controller-manager,
//! kube-scheduler, the local node ([`crate::node`]) and Prometheus. All of them listen on the
//! cluster's own loopback address ([`crate::loopback`]). The state directory holds the
//! certificates, kubeconfigs, logs, etcd's data, pod logs and volumes, and `cluster.json`,
//! from which `down` and `status` work.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::kubeconfig::{self, Identity};
use crate::loopback::LoopbackBlock;
use crate::pki::Pki;
use crate::process::{self, Lifetime, ProcessRecord, Supervised};
use crate::prometheus::{self, Prometheus};

/// The Kubernetes version the harness is built for.
pub const KUBERNETES_VERSION: &str = "v1.20.2";
/// Port of kube-apiserver on the cluster address.
pub const APISERVER_PORT: u16 = 6443;
/// Port of Prometheus on the cluster address.
pub const PROMETHEUS_PORT: u16 = 9090;
/// Port of the pod discovery endpoint on the cluster address.
pub const DISCOVERY_PORT: u16 = 9091;
const ETCD_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What the local node offers and how it maps images to programs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Node name.
    pub name: String,
    /// Allocatable CPU (Kubernetes quantity).
    pub cpu: String,
    /// Allocatable memory (Kubernetes quantity).
    pub memory: String,
    /// Maximum pods.
    pub pods: u32,
    /// Advertised `nvidia.com/gpu` count.
    pub gpus: u32,
    /// `IMAGE=DIR` entries: containers of an image whose name contains `IMAGE` find their programs
    /// in `DIR` first (see `docs/local-cluster.md`).
    pub images: Vec<String>,
    /// Host directories a `hostPath` volume may name directly; every other `hostPath` maps under
    /// the state directory.
    pub host_paths: Vec<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            name: "kontrast-node".into(),
            cpu: "16".into(),
            memory: "64Gi".into(),
            pods: 110,
            gpus: 0,
            images: Vec::new(),
            host_paths: vec![PathBuf::from("/usr/share/datasets")],
        }
    }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The state directory (created; an earlier cluster's data there, except `volumes/`, is removed).
    pub state_dir: PathBuf,
    /// Directory holding kube-apiserver, kube-controller-manager and kube-scheduler.
    pub kubernetes_bin: PathBuf,
    /// The `kontrast-node` binary.
    pub node_bin: PathBuf,
    /// Whether the processes die with the caller (tests) or outlive it (`kontrast-dev cluster up`).
    pub lifetime: Lifetime,
    /// The node's configuration.
    pub node: NodeOptions,
    /// How Prometheus scrapes.
    pub prometheus: prometheus::ScrapeOptions,
}

/// Where the set-up script puts the Kubernetes binaries: `$KONTRAST_K8S_BIN`, else
/// `$KONTRAST_CACHE/kubernetes/bin`, else `~/.cache/kontrast/kubernetes/bin`.
pub fn default_kubernetes_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("KONTRAST_K8S_BIN") {
        return dir.into();
    }
    cache_dir().join("kubernetes/bin")
}

/// The project's cache directory (`$KONTRAST_CACHE`, `$XDG_CACHE_HOME/kontrast` or `~/.cache/kontrast`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KONTRAST_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("kontrast");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".cache/kontrast")
}

impl ClusterOptions {
    /// Defaults for a cluster in `state_dir` whose node runs `node_bin`.
    pub fn new(state_dir: impl Into<PathBuf>, node_bin: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            kubernetes_bin: default_kubernetes_bin(),
            node_bin: node_bin.into(),
            lifetime: Lifetime::Attached,
            node: NodeOptions::default(),
            prometheus: prometheus::ScrapeOptions::default(),
        }
    }
}

/// A running cluster as recorded in `<state>/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The loopback block's second octet.
    pub octet: u8,
    /// `127.N.0.1`.
    pub host: Ipv4Addr,
    /// `https://127.N.0.1:6443`.
    pub apiserver: String,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `http://127.N.0.1:9090`.
    pub prometheus: String,
    /// The pod discovery URL Prometheus polls.
    pub discovery: String,
    /// The node's name.
    pub node_name: String,
    /// Every process started, in start order.
    pub processes: Vec<ProcessRecord>,
}

impl ClusterState {
    fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("cluster.json")
    }

    /// Reads the state of the cluster in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::file(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::State {
            path: path.clone(),
            message: format!("{e} (is a cluster up in {}?)", state_dir.display()),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::State {
            path,
            message: e.to_string(),
        })
    }

    fn save(&self) -> Result<()> {
        let path = Self::file(&self.state_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text).io("writing", &tmp)?;
        std::fs::rename(&tmp, &path).io("renaming into", &path)
    }

    /// A client authenticated as the cluster admin.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.kubeconfig).await
    }

    /// A client for the cluster's Prometheus.
    pub fn prometheus(&self) -> Prometheus {
        Prometheus::new(&self.prometheus)
    }

    /// Where the node keeps pod `namespace/name`'s logs and volumes.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        crate::node::paths::pod_dir(&self.state_dir.join("node"), namespace, name)
    }

    /// The host directory behind a `hostPath` volume that is not on the node's allow-list.
    pub fn host_path_dir(&self, path: &Path) -> PathBuf {
        crate::node::paths::host_path_dir(&self.state_dir.join("node"), path)
    }

    /// The host directory behind `persistentVolumeClaim: {claimName}` volumes in `namespace`.
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        crate::node::paths::claim_dir(&self.state_dir.join("node"), namespace, claim)
    }
}

/// A cluster started by this process.
#[derive(Debug)]
pub struct Cluster {
    /// Its recorded state.
    pub state: ClusterState,
    procs: Vec<Supervised>,
}

/// Everything `up` needs while starting.
struct Starter {
    opts: ClusterOptions,
    host: Ipv4Addr,
    procs: Vec<Supervised>,
}

impl Starter {
    fn start(&mut self, name: &str, program: PathBuf, args: Vec<String>) -> Result<()> {
        let log = self.opts.state_dir.join("logs").join(format!("{name}.log"));
        tracing::info!(component = name, log = %log.display(), "starting");
        let p = process::spawn(name, &program, &args, &[], &log, self.opts.lifetime)?;
        self.procs.push(p);
        Ok(())
    }

    /// Fails with the component's log tail if any started process has exited.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    component: p.record.name.clone(),
                    status,
                    log: p.record.log.clone(),
                    tail: process::tail(&p.record.log, 30),
                });
            }
        }
        Ok(())
    }

    /// Polls `probe` until it succeeds, failing early when a process dies.
    async fn wait_for<F, Fut>(&mut self, component: &str, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let started = std::time::Instant::now();
        let mut last_error;
        loop {
            self.check_alive()?;
            match probe().await {
                Ok(()) => {
                    tracing::info!(
                        component,
                        seconds = started.elapsed().as_secs_f32(),
                        "ready"
                    );
                    return Ok(());
                }
                Err(e) => last_error = e,
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::NotReady {
                    component: component.to_string(),
                    seconds: START_TIMEOUT.as_secs(),
                    last_error,
                    log: self
                        .opts
                        .state_dir
                        .join("logs")
                        .join(format!("{component}.log")),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn http_ok(client: &reqwest::Client, url: &str, token: Option<&str>) -> Result<(), String> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "{url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        ))
    }
}

fn require(program: &Path, hint: &str) -> Result<()> {
    if program.is_file() {
        Ok(())
    } else {
        Err(Error::MissingProgram {
            program: program.display().to_string(),
            hint: hint.to_string(),
        })
    }
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingProgram {
            program: program.to_string(),
            hint: "run scripts/setup-packages.sh (Debian packages etcd-server, prometheus)".into(),
        })
}

fn s(v: impl std::fmt::Display) -> String {
    v.to_string()
}

impl Cluster {
    /// Starts a cluster and waits until every component answers and the node is Ready.
    pub async fn up(opts: ClusterOptions) -> Result<Self> {
        let k8s = opts.kubernetes_bin.clone();
        let setup_hint = "run scripts/setup-kubernetes.sh (or `make setup`)";
        for b in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            require(&k8s.join(b), setup_hint)?;
        }
        require(
            &opts.node_bin,
            "build it with `cargo build -p kontrast-tests`",
        )?;
        let etcd = which("etcd")?;
        let prometheus_bin = which("prometheus")?;

        let dir = opts.state_dir.clone();
        std::fs::create_dir_all(&dir).io("creating", &dir)?;
        if let Ok(old) = ClusterState::load(&dir)
            && old.processes.iter().any(process::is_running)
        {
            return Err(Error::State {
                path: ClusterState::file(&dir),
                message: "a cluster is already running in this state directory; run `kontrast-dev cluster down` first".into(),
            });
        }
        for sub in [
            "etcd",
            "pki",
            "logs",
            "kubeconfig",
            "prometheus",
            "controller-manager",
            "scheduler",
            "apiserver",
        ] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).io("removing", &p)?;
            }
        }
        for sub in ["logs", "kubeconfig", "prometheus"] {
            std::fs::create_dir_all(dir.join(sub)).io("creating", dir.join(sub))?;
        }

        let block = LoopbackBlock::claim()?;
        block.inherit_into_children()?;
        let host = block.host();
        tracing::info!(%host, state = %dir.display(), "claimed loopback block");
        let pki = Pki::generate(&dir.join("pki"), host, SERVICE_IP)?;

        let identities = vec![
            Identity {
                name: "admin",
                user: "kontrast-admin".into(),
                groups: vec!["system:masters"],
                token: kubeconfig::random_token()?,
            },
            Identity {
                name: "controller-manager",
                user: "system:kube-controller-manager".into(),
                groups: vec![],
                token: kubeconfig::random_token()?,
            },
            Identity {
                name: "scheduler",
                user: "system:kube-scheduler".into(),
                groups: vec![],
                token: kubeconfig::random_token()?,
            },
            // The node runs pods of every namespace and serves cluster-wide discovery; it is
            // harness infrastructure, so it gets admin rights rather than the Node authorizer's.
            Identity {
                name: "node",
                user: format!("system:node:{}", opts.node.name),
                groups: vec!["system:nodes", "system:masters"],
                token: kubeconfig::random_token()?,
            },
        ];
        let tokens = dir.join("pki/tokens.csv");
        kubeconfig::write_token_file(&tokens, &identities)?;
        let server = format!("https://{host}:{APISERVER_PORT}");
        let mut kubeconfigs = std::collections::HashMap::new();
        for id in &identities {
            let path = if id.name == "admin" {
                dir.join("kubeconfig.yaml")
            } else {
                dir.join(format!("kubeconfig/{}.yaml", id.name))
            };
            kubeconfigs.insert(
                id.name,
                kubeconfig::write_kubeconfig(&path, &server, &pki.ca_cert, id)?,
            );
        }
        let admin_token = identities[0].token.clone();

        let mut st = Starter {
            opts: opts.clone(),
            host,
            procs: Vec::new(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .add_root_certificate(
                reqwest::Certificate::from_pem(
                    &std::fs::read(&pki.ca_cert).io("reading", &pki.ca_cert)?,
                )
                .map_err(Error::Http)?,
            )
            .build()?;

        // etcd
        let etcd_url = format!("http://{host}:{ETCD_PORT}");
        let peer_url = format!("http://{host}:{ETCD_PEER_PORT}");
        st.start(
            "etcd",
            etcd,
            vec![
                s("--name=kontrast"),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=kontrast={peer_url}"),
                s("--initial-cluster-state=new"),
                s("--logger=zap"),
                s("--log-level=warn"),
            ],
        )?;
        let health = format!("{etcd_url}/health");
        st.wait_for("etcd", || http_ok(&http, &health, None))
            .await?;

        // kube-apiserver
        let issuer = "https://kubernetes.default.svc.cluster.local";
        st.start(
            "kube-apiserver",
            k8s.join("kube-apiserver"),
            vec![
                format!("--advertise-address={host}"),
                format!("--bind-address={host}"),
                format!("--secure-port={APISERVER_PORT}"),
                s("--insecure-port=0"),
                format!("--etcd-servers={etcd_url}"),
                format!("--tls-cert-file={}", pki.apiserver_cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                format!("--token-auth-file={}", tokens.display()),
                format!(
                    "--kubelet-client-certificate={}",
                    pki.kubelet_client_cert.display()
                ),
                format!("--kubelet-client-key={}", pki.kubelet_client_key.display()),
                format!("--kubelet-certificate-authority={}", pki.ca_cert.display()),
                s("--kubelet-preferred-address-types=InternalIP"),
                s("--authorization-mode=RBAC"),
                format!("--service-account-key-file={}", pki.sa_pub.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ),
                format!("--service-account-issuer={issuer}"),
                format!("--api-audiences={issuer}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                s("--allow-privileged=true"),
                format!("--cert-dir={}", dir.join("apiserver").display()),
                s("--profiling=false"),
                s("--v=1"),
            ],
        )?;
        let readyz = format!("{server}/readyz");
        st.wait_for("kube-apiserver", || {
            http_ok(&http, &readyz, Some(&admin_token))
        })
        .await?;

        // kube-controller-manager and kube-scheduler
        let cm = kubeconfigs["controller-manager"].display().to_string();
        st.start(
            "kube-controller-manager",
            k8s.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={cm}"),
                format!("--authentication-kubeconfig={cm}"),
                format!("--authorization-kubeconfig={cm}"),
                format!("--bind-address={host}"),
                s("--secure-port=10257"),
                s("--port=0"),
                s("--leader-elect=false"),
                // No kubelet reports node health here, so the node lifecycle controller would only
                // taint and evict; the local node heartbeats instead.
                s("--controllers=*,-nodelifecycle"),
                format!(
                    "--service-account-private-key-file={}",
                    pki.sa_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                s("--use-service-account-credentials=true"),
                format!("--cert-dir={}", dir.join("controller-manager").display()),
                s("--v=1"),
            ],
        )?;
        let sched = kubeconfigs["scheduler"].display().to_string();
        st.start(
            "kube-scheduler",
            k8s.join("kube-scheduler"),
            vec![
                format!("--kubeconfig={sched}"),
                format!("--authentication-kubeconfig={sched}"),
                format!("--authorization-kubeconfig={sched}"),
                format!("--bind-address={host}"),
                s("--secure-port=10259"),
                s("--port=0"),
                s("--leader-elect=false"),
                format!("--cert-dir={}", dir.join("scheduler").display()),
                s("--v=1"),
            ],
        )?;

        // the local node
        let node = &opts.node;
        let mut node_args = vec![
            format!("--kubeconfig={}", kubeconfigs["node"].display()),
            format!("--name={}", node.name),
            format!("--state-dir={}", dir.join("node").display()),
            format!("--pod-block={}", block.octet()),
            format!("--discovery-listen={host}:{DISCOVERY_PORT}"),
            format!("--tls-cert={}", pki.node_cert.display()),
            format!("--tls-key={}", pki.node_key.display()),
            format!("--client-ca={}", pki.ca_cert.display()),
            format!("--cpu={}", node.cpu),
            format!("--memory={}", node.memory),
            format!("--pods={}", node.pods),
            format!("--gpus={}", node.gpus),
        ];
        node_args.extend(node.images.iter().map(|i| format!("--image={i}")));
        node_args.extend(
            node.host_paths
                .iter()
                .map(|p| format!("--host-path={}", p.display())),
        );
        st.start("kontrast-node", opts.node_bin.clone(), node_args)?;
        let client = kubeconfig::client(&dir.join("kubeconfig.yaml")).await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let node_name = node.name.clone();
        st.wait_for("kontrast-node", || {
            let nodes = nodes.clone();
            let name = node_name.clone();
            async move {
                let n = nodes.get(&name).await.map_err(|e| e.to_string())?;
                if crate::node::registration::is_ready_and_untainted(&n) {
                    Ok(())
                } else {
                    Err(format!("node {name} not Ready or still tainted"))
                }
            }
        })
        .await?;

        // Prometheus
        let discovery = format!("http://{host}:{DISCOVERY_PORT}/sd/pods");
        let prom_cfg = dir.join("prometheus/prometheus.yml");
        prometheus::write_config_with(&prom_cfg, &discovery, &opts.prometheus)?;
        let prom_url = format!("http://{host}:{PROMETHEUS_PORT}");
        st.start(
            "prometheus",
            prometheus_bin,
            vec![
                format!("--config.file={}", prom_cfg.display()),
                format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus/data").display()
                ),
                format!("--web.listen-address={host}:{PROMETHEUS_PORT}"),
                s("--web.enable-lifecycle"),
                s("--log.level=warn"),
            ],
        )?;
        let ready = format!("{prom_url}/-/ready");
        st.wait_for("prometheus", || http_ok(&http, &ready, None))
            .await?;

        // The controller-manager is working once it has made the default service account and its
        // token, which pods need before the apiserver admits them.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        st.wait_for("kube-controller-manager", || {
            let sas = sas.clone();
            async move {
                let sa = sas.get("default").await.map_err(|e| e.to_string())?;
                if sa.secrets.is_some_and(|s| !s.is_empty()) {
                    Ok(())
                } else {
                    Err("default service account has no token yet".into())
                }
            }
        })
        .await?;

        let state = ClusterState {
            state_dir: dir.clone(),
            octet: block.octet(),
            host: st.host,
            apiserver: server,
            kubeconfig: dir.join("kubeconfig.yaml"),
            prometheus: prom_url,
            discovery,
            node_name: node.name.clone(),
            processes: st.procs.iter().map(|p| p.record.clone()).collect(),
        };
        state.save()?;
        // The lock stays held through the inherited descriptors of the processes just started.
        drop(block);
        Ok(Self {
            state,
            procs: std::mem::take(&mut st.procs),
        })
    }

    /// A client authenticated as the cluster admin.
    pub async fn client(&self) -> Result<kube::Client> {
        self.state.client().await
    }

    /// Lets the processes outlive this handle; `down` stops them later.
    pub fn detach(mut self) -> ClusterState {
        for p in std::mem::take(&mut self.procs) {
            p.detach();
        }
        self.state.clone()
    }

    /// Stops every process, last started first.
    pub fn down(mut self) {
        self.stop_all();
    }

    /// Stops one component (`etcd`, `kube-apiserver`, …) as `down` would, leaving the others
    /// running: the outage a control-plane restart causes.
    pub fn stop_component(&mut self, name: &str) -> Result<()> {
        self.component(name)?.stop(Duration::from_secs(10));
        Ok(())
    }

    /// Starts a component stopped by [`Cluster::stop_component`] again, as `up` started it, and
    /// records its new pid. It does not wait for the component to answer.
    pub fn start_component(&mut self, name: &str) -> Result<()> {
        let p = self.component(name)?;
        p.start_again()?;
        let record = p.record.clone();
        if let Some(r) = self.state.processes.iter_mut().find(|r| r.name == name) {
            *r = record;
        }
        self.state.save()
    }

    fn component(&mut self, name: &str) -> Result<&mut Supervised> {
        let state = self.state.state_dir.clone();
        self.procs
            .iter_mut()
            .find(|p| p.record.name == name)
            .ok_or_else(|| Error::State {
                path: ClusterState::file(&state),
                message: format!("no component {name} in this cluster"),
            })
    }

    /// Stops every process, last started first (also done on drop).
    pub fn stop_all(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            tracing::info!(component = %p.record.name, pid = p.record.pid, "stopping");
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Stops the cluster recorded in `state_dir`, last started first. Processes already gone, or
/// pids now used by other programs, are skipped.
pub fn down(state_dir: &Path) -> Result<ClusterState> {
    let state = ClusterState::load(state_dir)?;
    for record in state.processes.iter().rev() {
        if process::is_running(record) {
            tracing::info!(component = %record.name, pid = record.pid, "stopping");
            process::stop_record(record, Duration::from_secs(10));
        }
    }
    Ok(state)
}

/// Per-component liveness of the cluster in `state_dir`.
pub fn process_status(state: &ClusterState) -> Vec<(ProcessRecord, bool)> {
    state
        .processes
        .iter()
        .map(|r| (r.clone(), process::is_running(r)))
        .collect()
}
