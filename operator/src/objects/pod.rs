//! A worker pod: one per node and attempt, carrying the environment contract of the worker
//! (`MASTER_ADDR`, `NODE_RANK`, …), the run config, dataset and checkpoint volumes, GPU requests,
//! a restricted security context and the labels/annotations that scheduling and monitoring use.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kontrast_api::config::RunConfig;
use kontrast_api::labels;
use kontrast_api::v1alpha1::{ContrastiveRun, GangScheduler};
use serde_json::{Value, json};

use super::config_map::{CONFIG_DIR, CONFIG_FILE};
use super::{cpu_threads, metadata, names, pod_group, run_labels, volumes};

/// Kueue's queue label.
pub const KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's pod-group label (gang admission of plain pods).
pub const KUEUE_POD_GROUP: &str = "kueue.x-k8s.io/pod-group-name";
/// Kueue's pod-group size annotation.
pub const KUEUE_POD_GROUP_COUNT: &str = "kueue.x-k8s.io/pod-group-total-count";
/// Non-root user the worker image runs as.
pub const WORKER_UID: i64 = 65532;
/// The extended resource GPUs are requested as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

fn env(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "value": value.to_string()})
}

/// The restricted container security context (Pod Security Standards, "restricted"). Pod-level
/// fields are in [`pod_security`]; the volumes decide the rest (see `volumes`).
pub fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// The pod-level security context. The uid and gid are the worker image's `USER`
/// (docker/worker.Dockerfile); `fsGroup` makes claimed volumes writable for checkpoints.
pub fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Requests and limits of a container: the spec's, plus `gpus` whole GPUs.
pub fn resources(run: &ContrastiveRun, gpus: u32) -> Value {
    let mut requests: BTreeMap<String, String> = BTreeMap::new();
    let mut limits: BTreeMap<String, String> = BTreeMap::new();
    if let Some(r) = &run.spec.resources {
        requests.extend(r.requests.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        limits.extend(r.limits.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    }
    if gpus > 0 {
        requests.insert(GPU_RESOURCE.into(), gpus.to_string());
        limits.insert(GPU_RESOURCE.into(), gpus.to_string());
    }
    json!({"requests": requests, "limits": limits})
}

/// Volumes and mounts shared by worker pods and evaluation pods: config, scratch, checkpoints.
pub fn common_volumes(
    run: &ContrastiveRun,
    checkpoint_read_only: bool,
) -> (Vec<Value>, Vec<Value>) {
    let name = run.metadata.name.clone().unwrap_or_default();
    let mut vols = vec![
        json!({"name": "config", "configMap": {"name": names::config_map(&name)}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let ckpt = &run.spec.checkpoint;
    match ckpt
        .volume
        .as_ref()
        .and_then(|v| volumes::volume("checkpoints", v, checkpoint_read_only))
    {
        Some(v) => vols.push(v),
        // Without a volume, checkpoints live as long as the pod: restarts start over. Documented.
        None => vols.push(json!({"name": "checkpoints", "emptyDir": {}})),
    }
    mounts.push(json!({"name": "checkpoints", "mountPath": ckpt.mount_path(), "readOnly": checkpoint_read_only}));
    (vols, mounts)
}

/// Scheduling fields passed through from `spec.scheduling`.
fn scheduling(
    run: &ContrastiveRun,
    spec: &mut Value,
    labels: &mut BTreeMap<String, String>,
    annotations: &mut BTreeMap<String, String>,
    group: &str,
    count: u32,
) {
    let Some(s) = &run.spec.scheduling else {
        return;
    };
    if let Some(n) = &s.scheduler_name {
        spec["schedulerName"] = json!(n);
    }
    if let Some(p) = &s.priority_class_name {
        spec["priorityClassName"] = json!(p);
    }
    if !s.node_selector.is_empty() {
        spec["nodeSelector"] = json!(s.node_selector);
    }
    if !s.tolerations.is_empty() {
        spec["tolerations"] = json!(s.tolerations);
    }
    match s.gang_scheduler {
        Some(GangScheduler::Volcano) => {
            annotations.insert(
                pod_group::VOLCANO_GROUP_ANNOTATION.into(),
                group.to_string(),
            );
            if s.scheduler_name.is_none() {
                spec["schedulerName"] = json!("volcano");
            }
        }
        Some(GangScheduler::Coscheduling) => {
            labels.insert(
                pod_group::COSCHEDULING_GROUP_LABEL.into(),
                group.to_string(),
            );
        }
        None => {}
    }
    if let Some(q) = &s.queue_name {
        labels.insert(KUEUE_QUEUE.into(), q.clone());
        labels.insert(KUEUE_POD_GROUP.into(), group.to_string());
        annotations.insert(KUEUE_POD_GROUP_COUNT.into(), count.to_string());
    }
}

/// The worker pod of `rank` in `attempt`.
pub fn build(run: &ContrastiveRun, config: &RunConfig, attempt: u32, rank: u32) -> Pod {
    let name = run.metadata.name.clone().unwrap_or_default();
    let ns = run
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let world = &config.world;
    let metrics_port = run.spec.metrics.port;
    let mut labels = run_labels(run);
    labels.insert(labels::ROLE.into(), "worker".into());
    labels.insert(labels::ATTEMPT.into(), attempt.to_string());
    labels.insert(labels::NODE_RANK.into(), rank.to_string());
    let mut annotations = BTreeMap::from([
        (labels::SCRAPE.to_string(), "true".to_string()),
        (labels::SCRAPE_PORT.to_string(), metrics_port.to_string()),
        (labels::SCRAPE_PATH.to_string(), "/metrics".to_string()),
    ]);
    let (mut vols, mut mounts) = common_volumes(run, false);
    if let Some(v) = run
        .spec
        .dataset
        .volume
        .as_ref()
        .and_then(|v| volumes::volume("dataset", v, true))
    {
        vols.push(v);
        mounts.push(json!({"name": "dataset", "mountPath": run.spec.dataset.mount_path(), "readOnly": true}));
    }
    if let Some((v, mount)) = run
        .spec
        .monitor
        .as_ref()
        .and_then(|m| m.knn.as_ref())
        .and_then(|knn| volumes::evaluation_dataset("monitor-dataset", &knn.dataset))
    {
        // A pod cannot mount twice at one path: a monitor split on the training data's volume
        // (e.g. both under one claim's mount) is already there.
        if !mounts.iter().any(|m| m["mountPath"] == mount["mountPath"]) {
            vols.push(v);
            mounts.push(mount);
        }
    }
    let checkpoint_dir = names::checkpoint_dir(run.spec.checkpoint.mount_path(), &name);
    let mut env = vec![
        env("MASTER_ADDR", names::rank_address(&name, &ns, 0)),
        env("MASTER_PORT", run.spec.master_port),
        env("NNODES", world.nodes),
        env("NODE_RANK", rank),
        env("NPROC_PER_NODE", world.procs_per_node),
        env("WORLD_SIZE", world.world_size),
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        env("KONTRAST_RUN", &name),
        env("KONTRAST_NAMESPACE", &ns),
        env("KONTRAST_ATTEMPT", attempt),
        env("KONTRAST_CONFIG", format!("{CONFIG_DIR}/{CONFIG_FILE}")),
        env("KONTRAST_CHECKPOINT_DIR", &checkpoint_dir),
        // Later attempts must find and load the newest valid checkpoint.
        env(
            "KONTRAST_RESUME",
            if attempt > 1 { "latest" } else { "none" },
        ),
    ];
    if let Some(threads) =
        cpu_threads::threads_per_rank(run.spec.resources.as_ref(), world.procs_per_node)
    {
        env.push(self::env("OMP_NUM_THREADS", threads));
    }
    let mut spec = json!({
        "restartPolicy": "Never",
        "hostname": names::hostname(rank),
        "subdomain": names::service(&name),
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": false,
        // The worker never calls the Kubernetes API: no token for the user's code to find.
        "automountServiceAccountToken": false,
        "securityContext": pod_security(),
        "containers": [{
            "name": "worker",
            "image": run.spec.image,
            "command": ["kontrast", "launch"],
            "env": env,
            "ports": [
                {"name": "rendezvous", "containerPort": run.spec.master_port, "protocol": "TCP"},
                {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
            ],
            "resources": resources(run, run.spec.gpus_per_node),
            "volumeMounts": mounts,
            "securityContext": container_security(),
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": vols,
    });
    if let Some(p) = run.spec.image_pull_policy {
        spec["containers"][0]["imagePullPolicy"] = json!(p.as_str());
    }
    let group = pod_group::name(&name, attempt);
    scheduling(
        run,
        &mut spec,
        &mut labels,
        &mut annotations,
        &group,
        world.nodes,
    );
    let mut meta = metadata(run, &names::pod(&name, attempt, rank), &labels);
    meta["annotations"] = json!(annotations);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
    }))
    .expect("a Pod built from typed parts deserialises")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::objects::pod_security::restricted_violations;

    /// A run in namespace `ml` whose dataset and checkpoints live on `dataset` and
    /// `checkpoints` (DataVolume JSON), with GPUs, resources and gang scheduling set, so every
    /// optional part of the pod is there.
    pub(crate) fn run_with(dataset: Value, checkpoints: Value) -> ContrastiveRun {
        serde_json::from_value(json!({
            "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
            "metadata": {"name": "r", "namespace": "ml", "uid": "u"},
            "spec": {
                "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
                "nodes": 2,
                "gpusPerNode": 1,
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                "dataset": {"format": "imagefolder", "path": "/data/train", "volume": dataset},
                "checkpoint": {"volume": checkpoints},
                "scheduling": {"gangScheduler": "volcano", "queueName": "q"},
                "evaluations": [{"name": "knn", "kind": "knn",
                                 "dataset": {"format": "imagefolder", "path": "/data/val", "volume": {"persistentVolumeClaim": {"claimName": "val"}}}}],
            }
        }))
        .expect("a valid run")
    }

    pub(crate) fn claims() -> ContrastiveRun {
        run_with(
            json!({"persistentVolumeClaim": {"claimName": "train"}}),
            json!({"persistentVolumeClaim": {"claimName": "ckpt"}}),
        )
    }

    fn pod_spec(run: &ContrastiveRun, attempt: u32, rank: u32) -> Value {
        let config = run.spec.resolve().expect("the run resolves");
        serde_json::to_value(build(run, &config, attempt, rank)).unwrap()["spec"].clone()
    }

    #[test]
    fn worker_pods_on_claims_meet_the_restricted_pod_security_standard() {
        let run = claims();
        for (attempt, rank) in [(1, 0), (1, 1), (2, 0)] {
            let spec = pod_spec(&run, attempt, rank);
            let violations = restricted_violations(&spec);
            assert!(violations.is_empty(), "{attempt}/{rank}: {violations:?}");
            // Beyond the standard: a read-only root (the image's HOME and caches are the /tmp
            // emptyDir) and no service account token.
            let c = &spec["containers"][0];
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == "/tmp"),
                "{c}"
            );
            assert_eq!(spec["automountServiceAccountToken"], false);
            for field in ["runAsUser", "runAsGroup", "fsGroup"] {
                assert_eq!(spec["securityContext"][field], WORKER_UID, "{field}");
            }
        }
        // Without any volume (checkpoints on an emptyDir) it holds too.
        let bare: ContrastiveRun = serde_json::from_value(json!({
            "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
            "metadata": {"name": "r", "namespace": "ml", "uid": "u"},
            "spec": {"image": "i", "nodes": 1, "dataset": {"format": "imagefolder", "path": "/d"}},
        }))
        .unwrap();
        assert_eq!(
            restricted_violations(&pod_spec(&bare, 1, 0)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn inline_nfs_needs_baseline_and_host_paths_need_privileged() {
        // The spec allows both; each is the only thing that leaves "restricted" (documented in
        // volumes.rs). NFS is within "baseline"; a host path is not even that.
        let nfs = run_with(
            json!({"nfs": {"server": "nas", "path": "/train"}}),
            json!({"persistentVolumeClaim": {"claimName": "ckpt"}}),
        );
        assert_eq!(
            restricted_violations(&pod_spec(&nfs, 1, 0)),
            ["volume dataset: nfs"]
        );
        let host = run_with(
            json!({"hostPath": {"path": "/data/train"}}),
            json!({"hostPath": {"path": "/var/lib/kontrast"}}),
        );
        assert_eq!(
            restricted_violations(&pod_spec(&host, 1, 0)),
            ["volume checkpoints: hostPath", "volume dataset: hostPath"]
        );
    }

    /// [`claims`] with a kNN monitor reading `path` on `volume` (DataVolume JSON).
    fn with_monitor(path: &str, volume: Value) -> ContrastiveRun {
        let mut run = claims();
        run.spec.monitor = serde_json::from_value(json!({"knn": {
            "everyEpochs": 5,
            "dataset": {"format": "fashionMnist", "path": path, "volume": volume},
        }}))
        .expect("a valid monitor");
        run
    }

    fn mounts_of(spec: &Value) -> Vec<(String, String, bool)> {
        spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["mountPath"].as_str().unwrap().to_owned(),
                    m["readOnly"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    #[test]
    fn every_worker_pod_mounts_the_monitor_dataset_read_only() {
        let run = with_monitor(
            "/monitor/fmnist",
            json!({"persistentVolumeClaim": {"claimName": "labelled"}, "mountPath": "/monitor"}),
        );
        for rank in [0, 1] {
            let spec = pod_spec(&run, 1, rank);
            assert!(
                mounts_of(&spec).contains(&("monitor-dataset".into(), "/monitor".into(), true)),
                "{rank}: {:?}",
                mounts_of(&spec)
            );
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "monitor-dataset")
                .expect("the monitor's volume");
            assert_eq!(
                volume["persistentVolumeClaim"],
                json!({"claimName": "labelled", "readOnly": true})
            );
            assert!(restricted_violations(&spec).is_empty());
        }
    }

    #[test]
    fn a_monitor_without_a_volume_or_on_the_training_mount_adds_no_mount() {
        let baseline = mounts_of(&pod_spec(&claims(), 1, 0));
        let mut in_image = claims();
        in_image.spec.monitor = serde_json::from_value(json!({"knn": {
            "dataset": {"format": "fashionMnist", "path": "/opt/fmnist"},
        }}))
        .unwrap();
        assert_eq!(mounts_of(&pod_spec(&in_image, 1, 0)), baseline);
        // The training data's claim mounted at /data/train also holds the monitor's split.
        let shared = with_monitor(
            "/data/train/labelled",
            json!({"persistentVolumeClaim": {"claimName": "train"}, "mountPath": "/data/train"}),
        );
        assert_eq!(mounts_of(&pod_spec(&shared, 1, 0)), baseline);
    }

    #[test]
    fn the_restricted_check_catches_what_it_should() {
        let bad = json!({
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                            "securityContext": {"privileged": true, "runAsUser": 0,
                                                "capabilities": {"add": ["SYS_ADMIN"]}}}],
        });
        let v = restricted_violations(&bad);
        for want in [
            "hostNetwork is true",
            "hostPID is true",
            "volume h: hostPath",
            "pod securityContext sets sysctls",
            "c: privileged",
            "c: allowPrivilegeEscalation is not false",
            "c: runAsNonRoot is not true",
            "c: runAsUser is 0",
            "c: seccompProfile is \"\"",
            "c: capabilities do not drop ALL",
            "c: adds capability \"SYS_ADMIN\"",
            "c: hostPort",
        ] {
            assert!(v.iter().any(|x| x == want), "{want} missing from {v:?}");
        }
    }

    #[test]
    fn the_worker_image_runs_as_the_uid_the_pods_ask_for() {
        // runAsNonRoot is only verifiable with a numeric USER, and the pods' runAsUser must be
        // that user, or files the image owns (and fsGroup's volume ownership) would not match.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/worker.Dockerfile");
        let dockerfile = std::fs::read_to_string(path).expect("reading worker.Dockerfile");
        // The last USER is the one the container runs as.
        let user = dockerfile
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("USER "))
            .expect("the worker image sets USER");
        assert_eq!(user.trim(), format!("{WORKER_UID}:{WORKER_UID}"));
        // The image's HOME and caches are under /tmp, the emptyDir the read-only root leaves
        // writable.
        assert!(dockerfile.contains("HOME=/tmp"), "{dockerfile}");
    }
}
