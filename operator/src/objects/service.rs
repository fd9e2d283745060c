//! The headless Service that gives every worker pod a stable DNS name
//! (`rank-N.<run>-workers.<ns>.svc`), published before the pods are ready so that the
//! rendezvous can start.
use k8s_openapi::api::core::v1::Service;
use kontrast_api::labels;
use kontrast_api::v1alpha1::ContrastiveRun;
use serde_json::json;

use super::{metadata, names, run_labels};

/// The headless Service of `run`.
pub fn build(run: &ContrastiveRun) -> Service {
    let name = run.metadata.name.clone().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(run, &names::service(&name), &run_labels(run)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {labels::RUN: name, labels::ROLE: "worker"},
            "ports": [
                {"name": "rendezvous", "port": run.spec.master_port, "targetPort": run.spec.master_port, "protocol": "TCP"},
                {"name": "metrics", "port": run.spec.metrics.port, "targetPort": run.spec.metrics.port, "protocol": "TCP"},
            ],
        },
    }))
    .expect("a Service built from typed parts deserialises")
}
