//! Helpers for tests against a real local cluster: one cluster per test, its own namespace
//! objects, and waiting for pods to reach a phase. A cluster's state directory is removed when
//! the test passes and kept (its path printed) when it fails, for the logs.
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;

use crate::cluster::{Cluster, ClusterOptions};
use crate::error::{Error, Result};
use crate::wait;

/// A cluster owned by one test.
pub struct TestCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// An admin client.
    pub client: kube::Client,
    dir: PathBuf,
}

impl TestCluster {
    /// Starts a cluster for test `name` under `base` (the test's `CARGO_TARGET_TMPDIR`), whose
    /// node runs `node_bin`.
    pub async fn start(base: &str, name: &str, node_bin: &str) -> Result<Self> {
        Self::start_with(base, name, node_bin, |_| {}).await
    }

    /// Like [`TestCluster::start`], letting the test adjust the options first.
    pub async fn start_with(
        base: &str,
        name: &str,
        node_bin: &str,
        adjust: impl FnOnce(&mut ClusterOptions),
    ) -> Result<Self> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "kontrast_tests=info,kontrast_operator=info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let dir = PathBuf::from(base)
            .join("clusters")
            .join(format!("{name}-{}", std::process::id()));
        let mut opts = ClusterOptions::new(&dir, node_bin);
        adjust(&mut opts);
        let cluster = Cluster::up(opts).await?;
        let client = cluster.client().await?;
        Ok(Self {
            cluster,
            client,
            dir,
        })
    }

    /// A cluster whose node runs the product's `kontrast` binary (built in `bin`) for the
    /// worker image, with the `ContrastiveRun` CRD installed and namespace `ns` ready: what the
    /// suites that train for real start from.
    pub async fn with_real_worker(
        base: &str,
        name: &str,
        node_bin: &str,
        bin: &std::path::Path,
        ns: &str,
    ) -> Result<Self> {
        let worker = format!("kontrast-worker={}", bin.display());
        let tc = Self::start_with(base, name, node_bin, |o| o.node.images.push(worker)).await?;
        crate::crd::install(&tc.client).await?;
        tc.namespace(ns).await?;
        Ok(tc)
    }

    /// Creates namespace `name` and waits for its default service account and that account's
    /// token (the apiserver refuses pods before both exist).
    pub async fn namespace(&self, name: &str) -> Result<String> {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        wait::until(
            "default service account",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let sas = sas.clone();
                async move {
                    sas.get_opt("default")
                        .await
                        .ok()
                        .flatten()
                        .filter(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
                }
            },
        )
        .await?;
        Ok(name.to_string())
    }

    /// Creates a bound PersistentVolumeClaim `ns/name` (with a pre-bound hostPath PersistentVolume,
    /// since the scheduler only places pods whose claims are bound). Pods see the node's
    /// per-claim directory, [`crate::ClusterState::claim_dir`].
    pub async fn create_claim(&self, ns: &str, name: &str) -> Result<()> {
        use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
        let pv_name = format!("{ns}-{name}");
        let dir = self.cluster.state.claim_dir(ns, name);
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": "Retain",
                     "storageClassName": "", "hostPath": {"path": dir.display().to_string()},
                     "claimRef": {"namespace": ns, "name": name}}
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                     "resources": {"requests": {"storage": "10Gi"}}}
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        claims.create(&PostParams::default(), &pvc).await?;
        wait::until(
            &format!("claim {ns}/{name} bound"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let claims = claims.clone();
                async move {
                    claims.get_opt(name).await.ok().flatten().filter(|c| {
                        c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                    })
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Creates a pod from JSON in `ns`.
    pub async fn create_pod(&self, ns: &str, pod: serde_json::Value) -> Result<Pod> {
        let pod: Pod =
            serde_json::from_value(pod).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await?)
    }

    /// Waits until pod `ns/name` satisfies `ok`, returning it.
    pub async fn wait_pod(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        ok: impl Fn(&Pod) -> bool,
    ) -> Result<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        wait::until(
            &format!("pod {ns}/{name}"),
            timeout,
            Duration::from_millis(200),
            || {
                let api = api.clone();
                let ok = &ok;
                async move { api.get_opt(name).await.ok().flatten().filter(|p| ok(p)) }
            },
        )
        .await
    }

    /// Waits until pod `ns/name` is in one of `phases`.
    pub async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        phases: &[&str],
        timeout: Duration,
    ) -> Result<Pod> {
        self.wait_pod(ns, name, timeout, |p| {
            phase(p).is_some_and(|ph| phases.contains(&ph))
        })
        .await
    }

    /// Stops the cluster and removes its state directory (kept when the test is failing).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.cluster.stop_all();
        if std::thread::panicking() {
            eprintln!(
                "test failed; cluster state and logs kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The pod's phase.
pub fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// The first container's `state.terminated` as (exit code, message).
pub fn terminated(p: &Pod) -> Option<(i32, String)> {
    let t = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some((t.exit_code, t.message.clone().unwrap_or_default()))
}

/// The pod's IP.
pub fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

/// Everything the containers of pod `ns/name` wrote, from the node's log files.
pub fn pod_log(cluster: &Cluster, ns: &str, name: &str) -> String {
    let dir = cluster.state.pod_dir(ns, name).join("logs");
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    out
}

/// For a failing test's message: every pod of `ns` with its phase and termination, and the last
/// `tail` lines of its log.
pub async fn describe_pods(tc: &TestCluster, ns: &str, tail: usize) -> String {
    let mut out = String::new();
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), ns);
    let items = pods
        .list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in items {
        let name = p.metadata.name.clone().unwrap_or_default();
        out.push_str(&format!(
            "pod {name}: {} {:?}\n",
            phase(&p).unwrap_or("?"),
            terminated(&p)
        ));
        let log = pod_log(&tc.cluster, ns, &name);
        let lines: Vec<&str> = log.lines().collect();
        out.push_str(&format!(
            "--- last {tail} log lines\n{}\n",
            lines[lines.len().saturating_sub(tail)..].join("\n")
        ));
    }
    out
}
