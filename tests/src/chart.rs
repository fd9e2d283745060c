//! The Helm chart (`charts/kontrast`) on the local cluster: where the chart and helm are, the
//! binaries cargo built for the node to run, and `helm install` with the operator's metrics
//! port and the annotations that let the cluster's Prometheus find the operator pod.
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::cluster::{ClusterState, cache_dir};
use crate::error::{Error, Result};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `charts/kontrast`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/kontrast")
}

/// The helm binary the set-up installs (`$KONTRAST_CACHE/tools/bin/helm`).
pub fn helm() -> Result<PathBuf> {
    let path = cache_dir().join("tools/bin/helm");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingProgram {
            program: path.display().to_string(),
            hint: "run scripts/setup-tools.sh (or scripts/setup.sh)".into(),
        })
    }
}

/// helm with its configuration, caches and data under `home`, so it neither reads nor writes
/// the user's.
pub fn helm_command(home: &Path) -> Result<Command> {
    let mut cmd = Command::new(helm()?);
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(cmd)
}

/// `dir/name`, checked to be newer than every source cargo's dep-info file beside it lists, so
/// a test never runs a binary older than the code it means to exercise. `build` is the command
/// that brings it up to date, for the error.
pub fn fresh_binary(dir: &Path, name: &str, build: &str) -> Result<PathBuf, String> {
    let bin = dir.join(name);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&bin).ok_or_else(|| format!("{} is missing: {build}", bin.display()))?;
    let depinfo = dir.join(format!("{name}.d"));
    let deps = std::fs::read_to_string(&depinfo)
        .map_err(|e| format!("{}: {e}: {build}", depinfo.display()))?;
    // "target: dep dep …", spaces inside paths escaped as "\ ".
    let list = deps.split_once(": ").map(|(_, l)| l).unwrap_or_default();
    let escaped = list.replace("\\ ", "\u{0}");
    for dep in escaped.split_whitespace() {
        let dep = PathBuf::from(dep.replace('\u{0}', " "));
        if modified(&dep).is_none_or(|m| m > built) {
            return Err(format!(
                "{} is older than {} (or that file is gone): {build}",
                bin.display(),
                dep.display()
            ));
        }
    }
    Ok(bin)
}

/// The directory cargo put `node_bin` (a test's `CARGO_BIN_EXE_kontrast-node`) in, checked to
/// hold up-to-date `kontrast` and `kontrast-operator` binaries, which the node maps the product's
/// images to. Panics with the command that builds a missing or stale one.
pub fn product_binary_dir(node_bin: &Path) -> PathBuf {
    let dir = node_bin
        .parent()
        .expect("the node binary has a directory")
        .to_path_buf();
    for (bin, build) in [
        (
            "kontrast-operator",
            "cargo build -p kontrast-operator --bin kontrast-operator",
        ),
        ("kontrast", "cargo build -p kontrast-worker --bin kontrast"),
    ] {
        fresh_binary(&dir, bin, build).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

/// A TCP port free on every interface right now. The operator pod binds `0.0.0.0` in the node's
/// (the host's) network, so it needs a port of its own.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            action: "binding",
            path: PathBuf::from("0.0.0.0:0"),
            source,
        })
}

/// The `helm install` of the chart as release `release` into `namespace` of the cluster in
/// `state` (waiting for the operator to be ready), serving metrics on `metrics_port`, its pod
/// annotated for the cluster's Prometheus discovery (what the ServiceMonitor does in a real
/// cluster), with `--set` values `set` added.
pub fn install_command(
    home: &Path,
    state: &ClusterState,
    release: &str,
    namespace: &str,
    metrics_port: u16,
    set: &[&str],
) -> Result<Command> {
    let mut cmd = helm_command(home)?;
    let scrape = format!(
        r#"podAnnotations={{"prometheus.io/scrape":"true","prometheus.io/port":"{metrics_port}"}}"#
    );
    cmd.args(["install", release])
        .arg(chart_dir())
        .args(["--namespace", namespace, "--create-namespace"])
        .arg("--kubeconfig")
        .arg(&state.kubeconfig)
        .args(["--wait", "--timeout", "120s"])
        .args(["--set", &format!("metrics.port={metrics_port}")])
        .args(["--set-json", &scrape])
        .args(set.iter().flat_map(|s| ["--set", s]));
    Ok(cmd)
}

/// The name of an operator pod of the release in `namespace`, if one exists.
pub async fn operator_pod(client: &kube::Client, namespace: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels("app.kubernetes.io/component=operator");
    pods.list(&lp)
        .await
        .ok()?
        .items
        .into_iter()
        .find_map(|p| p.metadata.name)
}

/// The log of the release's operator pod (or why there is none), for failure messages.
pub async fn operator_log(client: &kube::Client, state: &ClusterState, namespace: &str) -> String {
    let Some(pod) = operator_pod(client, namespace).await else {
        return "(no operator pod)".into();
    };
    let log = state.pod_dir(namespace, &pod).join("logs/operator.log");
    std::fs::read_to_string(&log).unwrap_or_else(|e| format!("({}: {e})", log.display()))
}
