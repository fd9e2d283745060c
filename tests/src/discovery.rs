//! Prometheus HTTP service discovery for pods, derived live from the apiserver.
//!
//! A pod is a target when it has a pod IP, is Running and carries `prometheus.io/scrape: "true"`
//! with a `prometheus.io/port`. Each target gets the labels the chart's PodMonitor gives worker
//! pods: `namespace`, `pod`, and every `kontrast.dev/<x>` pod label as `<x>`
//! ([`kontrast_api::labels::series_label`]); `prometheus.io/path` becomes `__metrics_path__`.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use kontrast_api::labels;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

/// One entry of the HTTP SD response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetGroup {
    /// `ip:port`.
    pub targets: Vec<String>,
    /// Labels attached to every series scraped from the target.
    pub labels: BTreeMap<String, String>,
}

/// The target group for `pod`, or `None` when it is not to be scraped (yet).
pub fn target_for(pod: &Pod) -> Option<TargetGroup> {
    let meta = &pod.metadata;
    let ann = meta.annotations.as_ref()?;
    if ann.get(labels::SCRAPE).map(String::as_str) != Some("true") {
        return None;
    }
    let port: u16 = ann.get(labels::SCRAPE_PORT)?.parse().ok()?;
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_ref()?;
    let mut out = BTreeMap::new();
    out.insert(
        "namespace".to_string(),
        meta.namespace.clone().unwrap_or_default(),
    );
    out.insert("pod".to_string(), meta.name.clone().unwrap_or_default());
    if let Some(path) = ann.get(labels::SCRAPE_PATH) {
        out.insert("__metrics_path__".to_string(), path.clone());
    }
    for (k, v) in meta.labels.iter().flatten() {
        if let Some(name) = labels::series_label(k) {
            out.insert(name, v.clone());
        }
    }
    Some(TargetGroup {
        targets: vec![format!("{ip}:{port}")],
        labels: out,
    })
}

async fn pods(State(client): State<kube::Client>) -> Response {
    let api: Api<Pod> = Api::all(client);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let groups: Vec<TargetGroup> = list.items.iter().filter_map(target_for).collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                axum::Json(groups),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing pods for discovery failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("listing pods failed: {e}"),
            )
                .into_response()
        }
    }
}

/// Serves `GET /sd/pods` on `addr` until the future is dropped.
pub async fn serve(client: kube::Client, addr: SocketAddr) -> std::io::Result<()> {
    let app = Router::new()
        .route("/sd/pods", get(pods))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus HTTP service discovery at /sd/pods");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ann: &[(&str, &str)], labels: &[(&str, &str)], phase: &str, ip: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "r-w-1-0", "namespace": "ns",
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_,_>>(),
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_,_>>(),
            },
            "status": {"phase": phase, "podIP": ip},
        }))
        .unwrap()
    }

    #[test]
    fn an_annotated_running_pod_is_a_target_with_run_labels() {
        let p = pod(
            &[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "9400"),
            ],
            &[
                ("kontrast.dev/run", "r"),
                ("kontrast.dev/node-rank", "0"),
                ("app", "x"),
            ],
            "Running",
            Some("127.12.1.1"),
        );
        let g = target_for(&p).unwrap();
        assert_eq!(g.targets, vec!["127.12.1.1:9400"]);
        assert_eq!(g.labels["namespace"], "ns");
        assert_eq!(g.labels["pod"], "r-w-1-0");
        assert_eq!(g.labels["run"], "r");
        assert_eq!(g.labels["node_rank"], "0");
        assert!(!g.labels.contains_key("app"));
    }

    #[test]
    fn pods_without_the_annotation_a_port_or_an_ip_are_not_targets() {
        let scrape = [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9400"),
        ];
        assert!(
            target_for(&pod(
                &[("prometheus.io/port", "9400")],
                &[],
                "Running",
                Some("127.1.1.1")
            ))
            .is_none()
        );
        assert!(
            target_for(&pod(
                &[("prometheus.io/scrape", "true")],
                &[],
                "Running",
                Some("127.1.1.1")
            ))
            .is_none()
        );
        assert!(target_for(&pod(&scrape, &[], "Running", None)).is_none());
        assert!(target_for(&pod(&scrape, &[], "Pending", Some("127.1.1.1"))).is_none());
    }

    #[test]
    fn the_path_annotation_sets_the_metrics_path() {
        let p = pod(
            &[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "80"),
                ("prometheus.io/path", "/m"),
            ],
            &[],
            "Running",
            Some("127.1.1.1"),
        );
        assert_eq!(target_for(&p).unwrap().labels["__metrics_path__"], "/m");
    }
}
