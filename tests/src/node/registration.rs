//! The node's `Node` object: registration, readiness, taints and heartbeats.
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::status::now;

/// Taints the node removes: nothing here reports node health other than this process.
const NOT_READY_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// What the node advertises.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// CPU quantity.
    pub cpu: String,
    /// Memory quantity.
    pub memory: String,
    /// Pod count.
    pub pods: u32,
    /// `nvidia.com/gpu` count.
    pub gpus: u32,
}

fn resources(c: &Capacity) -> Value {
    json!({"cpu": c.cpu, "memory": c.memory, "pods": c.pods.to_string(), "nvidia.com/gpu": c.gpus.to_string(), "ephemeral-storage": "100Gi"})
}

fn conditions(ready: bool) -> Value {
    let t = now();
    let c = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": t});
    json!([
        c(
            "Ready",
            if ready { "True" } else { "False" },
            if ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            },
            if ready {
                "kontrast-node is posting ready status"
            } else {
                "kontrast-node is stopping"
            }
        ),
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "no memory pressure"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "no PID pressure"
        ),
    ])
}

fn node_status(c: &Capacity, ip: Ipv4Addr, name: &str, ready: bool) -> Value {
    json!({"status": {
        "capacity": resources(c),
        "allocatable": resources(c),
        "conditions": conditions(ready),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": super::KUBELET_PORT}},
        "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "kontrast local node",
            "containerRuntimeVersion": "kontrast-node://processes", "kubeletVersion": crate::cluster::KUBERNETES_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    }})
}

/// Creates (or takes over) the Node, posts Ready and clears the not-ready taints.
pub async fn register(
    nodes: &Api<Node>,
    name: &str,
    c: &Capacity,
    ip: Ipv4Addr,
) -> kube::Result<()> {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "kontrast.dev/local-node": "true",
        }},
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e),
    }
    heartbeat(nodes, name, c, ip, true).await?;
    clear_taints(nodes, name).await
}

/// Posts the node's status (Ready or not) with a fresh heartbeat time.
pub async fn heartbeat(
    nodes: &Api<Node>,
    name: &str,
    c: &Capacity,
    ip: Ipv4Addr,
    ready: bool,
) -> kube::Result<()> {
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(node_status(c, ip, name, ready)),
        )
        .await
        .map(|_| ())
}

/// Removes the not-ready/unreachable taints the apiserver puts on new nodes.
pub async fn clear_taints(nodes: &Api<Node>, name: &str) -> kube::Result<()> {
    let node = nodes.get(name).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let kept: Vec<_> = taints
        .iter()
        .filter(|t| !NOT_READY_TAINTS.contains(&t.key.as_str()))
        .cloned()
        .collect();
    if kept.len() != taints.len() {
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": kept}})),
            )
            .await?;
    }
    Ok(())
}

/// Whether the node reports Ready and carries no not-ready taint.
pub fn is_ready_and_untainted(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| NOT_READY_TAINTS.contains(&t.key.as_str()))
        });
    ready && !tainted
}
