//! The PodGroup of an attempt for a gang scheduler (Volcano or the scheduler-plugins
//! coscheduling plugin): all `nodes` pods are placed together or not at all. Built as a dynamic
//! object because neither API ships with Kubernetes.
use kontrast_api::v1alpha1::{ContrastiveRun, GangScheduler};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{metadata, run_labels};

/// Pod annotation naming a Volcano PodGroup.
pub const VOLCANO_GROUP_ANNOTATION: &str = "scheduling.k8s.io/group-name";
/// Pod label naming a coscheduling PodGroup.
pub const COSCHEDULING_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// The PodGroup API of `scheduler`.
pub fn api_resource(scheduler: GangScheduler) -> ApiResource {
    let gvk = match scheduler {
        GangScheduler::Volcano => {
            GroupVersionKind::gvk("scheduling.volcano.sh", "v1beta1", "PodGroup")
        }
        GangScheduler::Coscheduling => {
            GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup")
        }
    };
    ApiResource::from_gvk_with_plural(&gvk, "podgroups")
}

/// PodGroup name of `attempt`.
pub fn name(run: &str, attempt: u32) -> String {
    format!("{run}-{attempt}")
}

/// The PodGroup of `attempt`, when the run names a gang scheduler.
pub fn build(run: &ContrastiveRun, attempt: u32) -> Option<(GangScheduler, DynamicObject)> {
    let scheduling = run.spec.scheduling.as_ref()?;
    let scheduler = scheduling.gang_scheduler?;
    let run_name = run.metadata.name.clone().unwrap_or_default();
    let ar = api_resource(scheduler);
    let mut spec = json!({"minMember": run.spec.nodes});
    if scheduler == GangScheduler::Volcano
        && let Some(q) = &scheduling.queue_name
    {
        spec["queue"] = json!(q);
    }
    let obj = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata(run, &name(&run_name, attempt), &run_labels(run)),
        "spec": spec,
    });
    serde_json::from_value(obj).ok().map(|o| (scheduler, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scheduler: &str) -> ContrastiveRun {
        serde_json::from_value(json!({
            "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
            "metadata": {"name": "r", "namespace": "ml", "uid": "u"},
            "spec": {"image": "i", "nodes": 4, "dataset": {"format": "imagefolder", "path": "/d"},
                     "scheduling": {"gangScheduler": scheduler, "queueName": "q"}}
        }))
        .unwrap()
    }

    #[test]
    fn a_volcano_pod_group_asks_for_every_node_in_the_queue() {
        let (s, pg) = build(&run("volcano"), 2).unwrap();
        assert_eq!(s, GangScheduler::Volcano);
        assert_eq!(pg.metadata.name.as_deref(), Some("r-2"));
        assert_eq!(pg.data["spec"], json!({"minMember": 4, "queue": "q"}));
        assert_eq!(
            pg.types.unwrap().api_version,
            "scheduling.volcano.sh/v1beta1"
        );
    }

    #[test]
    fn a_coscheduling_pod_group_uses_the_scheduler_plugins_api() {
        let (_, pg) = build(&run("coscheduling"), 1).unwrap();
        assert_eq!(
            pg.types.unwrap().api_version,
            "scheduling.x-k8s.io/v1alpha1"
        );
        assert_eq!(pg.data["spec"], json!({"minMember": 4}));
    }
}
