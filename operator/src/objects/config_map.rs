//! The ConfigMap holding the resolved run configuration the worker reads.
use k8s_openapi::api::core::v1::ConfigMap;
use kontrast_api::config::RunConfig;
use kontrast_api::v1alpha1::ContrastiveRun;
use serde_json::json;

use super::{metadata, names, run_labels};

/// File name of the config inside the mounted ConfigMap.
pub use kontrast_api::config::CONFIG_KEY as CONFIG_FILE;
/// Where worker containers see the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/kontrast";

/// The run-config ConfigMap.
pub fn build(run: &ContrastiveRun, config: &RunConfig) -> ConfigMap {
    let name = run.metadata.name.clone().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(run, &names::config_map(&name), &run_labels(run)),
        "data": {CONFIG_FILE: config.to_json()},
    }))
    .expect("a ConfigMap built from typed parts deserialises")
}
