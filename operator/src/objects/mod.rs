//! The objects a `ContrastiveRun` owns, each built from the run by a pure function: the
//! run-config ConfigMap, the headless Service, the worker Pods of an attempt and the evaluation
//! Jobs. Everything carries the run's labels and a controller owner reference, so the garbage
//! collector removes it with the run.
pub mod config_map;
pub mod cpu_threads;
pub mod job;
pub mod names;
pub mod pod;
pub mod pod_group;
pub mod pod_security;
pub mod service;
pub mod volumes;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kontrast_api::labels;
use kontrast_api::v1alpha1::ContrastiveRun;
use kube::Resource;

/// Labels every owned object carries.
pub fn run_labels(run: &ContrastiveRun) -> BTreeMap<String, String> {
    let name = run.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kontrast".to_string()),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kontrast-operator".to_string(),
        ),
        (labels::RUN.to_string(), name),
    ])
}

/// Metadata of an object `name` owned by `run`, in the run's namespace.
pub fn metadata(
    run: &ContrastiveRun,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "namespace": run.metadata.namespace.as_deref().unwrap_or("default"),
        "labels": labels,
        "ownerReferences": owner(run),
    })
}

/// The controller owner reference to `run`.
pub fn owner(run: &ContrastiveRun) -> Vec<OwnerReference> {
    run.controller_owner_ref(&()).into_iter().collect()
}
