//! An evaluation Job: `kontrast eval` on the final checkpoint, one Job per `spec.evaluations[]`
//! entry. The container writes its result JSON to the termination message, where the operator
//! reads it.
use k8s_openapi::api::batch::v1::Job;
use kontrast_api::labels;
use kontrast_api::v1alpha1::{ContrastiveRun, EvaluationSpec};
use serde_json::json;

use super::config_map::{CONFIG_DIR, CONFIG_FILE};
use super::pod::{container_security, pod_security, resources};
use super::{metadata, names, run_labels, volumes};

/// The Job of `evaluation`.
pub fn build(run: &ContrastiveRun, evaluation: &EvaluationSpec) -> Job {
    let name = run.metadata.name.clone().unwrap_or_default();
    let ns = run
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut labels = run_labels(run);
    labels.insert(labels::ROLE.into(), "eval".into());
    labels.insert(labels::EVALUATION.into(), evaluation.name.clone());
    let (mut vols, mut mounts) = super::pod::common_volumes(run, true);
    if let Some((v, mount)) = volumes::evaluation_dataset("eval-dataset", &evaluation.dataset) {
        vols.push(v);
        mounts.push(mount);
    }
    let metrics = &run.spec.metrics;
    let mut env = vec![
        json!({"name": "KONTRAST_RUN", "value": name}),
        json!({"name": "KONTRAST_NAMESPACE", "value": ns}),
        json!({"name": "KONTRAST_EVALUATION", "value": evaluation.name}),
        json!({"name": "KONTRAST_CONFIG", "value": format!("{CONFIG_DIR}/{CONFIG_FILE}")}),
        json!({"name": "KONTRAST_CHECKPOINT_DIR", "value": names::checkpoint_dir(run.spec.checkpoint.mount_path(), &name)}),
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
    ];
    if let Some(gw) = &metrics.pushgateway {
        env.push(json!({"name": "KONTRAST_PUSHGATEWAY", "value": gw}));
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, &names::eval_job(&name, &evaluation.name), &labels),
        "spec": {
            // A failed evaluation is reported, not retried: its inputs do not change.
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": false,
                    // Evaluation never calls the Kubernetes API either (see pod.rs).
                    "automountServiceAccountToken": false,
                    "securityContext": pod_security(),
                    "containers": [{
                        "name": "eval",
                        "image": run.spec.image,
                        "command": ["kontrast", "eval", "--evaluation", evaluation.name],
                        "env": env,
                        "resources": resources(run, evaluation.gpus),
                        "volumeMounts": mounts,
                        "securityContext": container_security(),
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                    "volumes": vols,
                },
            },
        },
    }))
    .expect("a Job built from typed parts deserialises")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::objects::pod::WORKER_UID;
    use crate::objects::pod::tests::{claims, run_with};
    use crate::objects::pod_security::restricted_violations;

    fn template(run: &ContrastiveRun) -> Value {
        let job = build(run, &run.spec.evaluations[0]);
        serde_json::to_value(job).unwrap()["spec"]["template"]["spec"].clone()
    }

    #[test]
    fn evaluation_pods_on_claims_meet_the_restricted_pod_security_standard() {
        let spec = template(&claims());
        assert_eq!(restricted_violations(&spec), Vec::<String>::new());
        assert_eq!(
            spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["securityContext"]["runAsUser"], WORKER_UID);
        // The checkpoints are only read here.
        let ckpt = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "checkpoints")
            .cloned();
        assert_eq!(ckpt.map(|m| m["readOnly"].clone()), Some(json!(true)));
    }

    #[test]
    fn evaluation_pods_on_host_paths_leave_restricted_for_their_volumes_only() {
        // The training dataset is not mounted for evaluation; the checkpoints and the
        // evaluation's own dataset are.
        let host = run_with(
            json!({"hostPath": {"path": "/data/train"}}),
            json!({"hostPath": {"path": "/var/lib/kontrast"}}),
        );
        assert_eq!(
            restricted_violations(&template(&host)),
            ["volume checkpoints: hostPath"]
        );
    }
}
