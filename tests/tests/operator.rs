//! The operator against the real local cluster: ContrastiveRuns become gangs of pods running the
//! stand-in worker (`kontrast-standin`, mapped to the `kontrast` program of the image
//! `kontrast-standin`), restarts, failures, evaluations and invalid specs.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kontrast_api::v1alpha1::{ContrastiveRun, RunPhase};
use kontrast_operator::controller::{self, Context};
use kontrast_operator::leader::{self, LeaseConfig};
use kontrast_operator::metrics::Metrics;
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

type OperatorHandle = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Starts an in-process operator; with `lease`, it first wins leader election as that identity.
fn start_operator(client: &kube::Client, lease: Option<&str>) -> OperatorHandle {
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "kontrast-operator".into(),
                instance: Some("test".into()),
            },
        ),
        client: client.clone(),
        metrics: Metrics::new().unwrap(),
        http: reqwest::Client::new(),
        owned: kontrast_operator::cache::Owned::start(client, None),
        stall: Default::default(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let lease = lease.map(|identity| LeaseConfig {
        namespace: "default".into(),
        name: "kontrast-operator".into(),
        identity: identity.into(),
        duration: Duration::from_secs(6),
        renew: Duration::from_secs(2),
    });
    let client = client.clone();
    let task = tokio::spawn(async move {
        let mut rx = rx;
        let mut leading = None;
        if let Some(cfg) = lease {
            let leases = Api::namespaced(client, "default");
            tokio::select! {
                l = leader::acquire(leases, cfg) => leading = Some(l),
                _ = &mut rx => return,
            }
        }
        controller::run(ctx, None, 4, async move {
            match leading.as_mut() {
                Some(l) => tokio::select! {
                    _ = rx => {}
                    _ = l.wait_for(|leads| !leads) => {}
                },
                None => {
                    let _ = rx.await;
                }
            }
        })
        .await;
    });
    (tx, task)
}

async fn stop_operator((tx, task): OperatorHandle) {
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

struct Harness {
    tc: TestCluster,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    operator: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start(name: &str) -> Self {
        let base = env!("CARGO_TARGET_TMPDIR");
        let image =
            PathBuf::from(base).join(format!("standin-image-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&image).unwrap();
        let link = image.join("kontrast");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kontrast-standin"), &link).unwrap();
        let tc = TestCluster::start_with(base, name, env!("CARGO_BIN_EXE_kontrast-node"), |o| {
            o.node
                .images
                .push(format!("kontrast-standin={}", image.display()));
            o.node.gpus = 4;
        })
        .await
        .expect("cluster starts");
        kontrast_tests::crd::install(&tc.client)
            .await
            .expect("CRD installs");
        let (stop, operator) = start_operator(&tc.client, None);
        Self {
            tc,
            stop: Some(stop),
            operator: Some(operator),
        }
    }

    /// Writes the stand-in's script into the dataset directory `/data/<dir>` and applies a run.
    async fn run(
        &self,
        ns: &str,
        name: &str,
        script: serde_json::Value,
        spec: serde_json::Value,
    ) -> Api<ContrastiveRun> {
        let data = format!("/data/{name}");
        let dir = self.tc.cluster.state.host_path_dir(Path::new(&data));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("standin.json"), script.to_string()).unwrap();
        let mut body = json!({
            "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
            "metadata": {"name": name},
            "spec": {
                "image": "ghcr.io/kontrast-dev/kontrast-standin:test",
                "nodes": 2,
                "dataset": {"format": "imagefolder", "path": data, "volume": {"hostPath": {"path": data}}},
                "recipe": {"preset": "mocov2", "arch": "resnet18", "epochs": 1, "batchSize": 4, "moco": {"queueSize": 64}},
                "failurePolicy": {"maxRestarts": 2, "stallTimeout": "20s"},
            }
        });
        if let (Some(b), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        let runs: Api<ContrastiveRun> = Api::namespaced(self.tc.client.clone(), ns);
        let run: ContrastiveRun = serde_json::from_value(body).unwrap();
        runs.create(&PostParams::default(), &run)
            .await
            .expect("the apiserver accepts the run");
        runs
    }

    async fn wait_phase(
        &self,
        runs: &Api<ContrastiveRun>,
        name: &str,
        phase: RunPhase,
    ) -> ContrastiveRun {
        wait::until(
            &format!("run {name} {phase:?}"),
            T,
            Duration::from_millis(300),
            || {
                let runs = runs.clone();
                async move {
                    runs.get(name)
                        .await
                        .ok()
                        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(phase))
                }
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; last: {:?}",
                futures::executor::block_on(runs.get(name))
                    .ok()
                    .and_then(|r| r.status)
            )
        })
    }

    /// Stops the harness's operator (to restart it, or to run replicas of its own).
    async fn stop_operator(&mut self) {
        if let (Some(tx), Some(op)) = (self.stop.take(), self.operator.take()) {
            stop_operator((tx, op)).await;
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.tc.client.clone(), ns)
    }

    async fn worker_pod_names(&self, ns: &str, run: &str) -> Vec<String> {
        let lp = ListParams::default()
            .labels(&format!("kontrast.dev/run={run},kontrast.dev/role=worker"));
        let mut names: Vec<String> = self
            .pods(ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }

    async fn finish(mut self) {
        self.stop_operator().await;
        self.tc.finish();
    }
}

fn kubectl(h: &Harness, args: &[&str]) -> String {
    let bin = kontrast_tests::cluster::default_kubernetes_bin().join("kubectl");
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(&h.tc.cluster.state.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_of(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_trains_on_a_gang_then_evaluates_and_reports_its_results() {
    let h = Harness::start("op-success").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h
        .run(
            &ns,
            "r1",
            json!({
                "steps": 10,
                "evalMetrics": {"knn": {"top1": 61.5, "top5": 88.25}},
                "monitorFailure": "spec.monitor.knn.dataset /data/r1: no image decodes",
            }),
            json!({"gpusPerNode": 1, "evaluations": [{"name": "knn", "kind": "knn", "dataset": {"format": "imagefolder", "path": "/data/r1", "volume": {"hostPath": {"path": "/data/r1"}}}}]}),
        )
        .await;
    let run = h.wait_phase(&runs, "r1", RunPhase::Succeeded).await;
    let status = run.status.unwrap();
    assert_eq!(status.results["knn"]["top1"], 61.5);
    assert_eq!(status.results["knn"]["top5"], 88.25);
    assert_eq!((status.attempt, status.restarts), (Some(1), 0));
    assert_eq!(
        status.progress.as_ref().map(|p| p.step),
        Some(10),
        "the final progress of rank 0 was recorded"
    );
    let failure = status
        .progress
        .as_ref()
        .and_then(|p| p.knn_monitor_failure.clone())
        .expect("the kNN monitor's failure is in status.progress");
    assert_eq!(
        (failure.epoch, failure.error.as_str()),
        (1, "spec.monitor.knn.dataset /data/r1: no image decodes")
    );
    assert_eq!(status.observed_generation, run.metadata.generation);

    let cm = Api::<ConfigMap>::namespaced(h.tc.client.clone(), &ns)
        .get("r1-config")
        .await
        .unwrap();
    let config = kontrast_api::config::RunConfig::from_json(
        &cm.data.unwrap()[kontrast_api::config::CONFIG_KEY],
    )
    .unwrap();
    assert_eq!(
        (config.world.world_size, config.world.batch_size_per_rank),
        (2, 2)
    );
    let svc = Api::<Service>::namespaced(h.tc.client.clone(), &ns)
        .get("r1-workers")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let pods = Api::<Pod>::namespaced(h.tc.client.clone(), &ns)
        .list(&ListParams::default().labels("kontrast.dev/role=worker"))
        .await
        .unwrap();
    let mut names: Vec<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["r1-w-1-0", "r1-w-1-1"]);
    for p in &pods.items {
        assert_eq!(
            env_of(p, "MASTER_ADDR").as_deref(),
            Some("rank-0.r1-workers.ml.svc.cluster.local")
        );
        assert_eq!(env_of(p, "WORLD_SIZE").as_deref(), Some("2"));
        assert_eq!(env_of(p, "KONTRAST_RESUME").as_deref(), Some("none"));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(
            limits["nvidia.com/gpu"].0, "1",
            "each pod asks for its node's GPUs"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.allow_privilege_escalation, sc.run_as_non_root),
            (Some(false), Some(true))
        );
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let psc = p.spec.as_ref().unwrap().security_context.as_ref().unwrap();
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(
            p.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
    }
    // What users see through kubectl: printer columns and the field documentation.
    let table = kubectl(&h, &["get", "crun", "-n", "ml"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "EPOCH", "RESTARTS", "LOSS", "AGE"],
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().starts_with("r1 "), "{table}");
    assert!(table.contains("Succeeded"), "{table}");
    let explain = kubectl(&h, &["explain", "contrastiverun.spec.recipe"]);
    assert!(
        explain.contains("preset") && explain.contains("revisiting"),
        "{explain}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_rank_restarts_the_whole_gang_which_then_resumes() {
    let h = Harness::start("op-restart").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h.run(&ns, "r2", json!({"steps": 10, "failExit": 1, "failRank": 1, "failAttempt": 1, "failAfterSteps": 3}), json!({})).await;
    let run = h.wait_phase(&runs, "r2", RunPhase::Succeeded).await;
    let status = run.status.unwrap();
    assert_eq!(
        (status.attempt, status.restarts, status.disruptions),
        (Some(2), 1, 0)
    );
    let failure = status.last_failure.unwrap();
    assert_eq!(
        (failure.rank, failure.exit_code, failure.attempt),
        (Some(1), Some(1), Some(1))
    );
    assert!(
        failure.message.contains("failing with exit code 1"),
        "{}",
        failure.message
    );
    let pods = Api::<Pod>::namespaced(h.tc.client.clone(), &ns)
        .list(&ListParams::default().labels("kontrast.dev/run=r2"))
        .await
        .unwrap();
    assert!(
        pods.items
            .iter()
            .all(|p| p.metadata.labels.as_ref().unwrap()["kontrast.dev/attempt"] == "2"),
        "attempt 1 pods are gone"
    );
    assert!(
        pods.items
            .iter()
            .all(|p| env_of(p, "KONTRAST_RESUME").as_deref() == Some("latest"))
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(h.tc.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let restart = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("RankFailed"))
        .expect("a RankFailed event");
    assert_eq!(
        restart.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("r2")
    );
    assert!(
        restart.note.as_deref().unwrap_or("").contains("rank 1"),
        "{:?}",
        restart.note
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_exit_code_fails_the_run_without_a_restart() {
    let h = Harness::start("op-permanent").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h
        .run(
            &ns,
            "r3",
            json!({"steps": 10, "failExit": 78, "failRank": 0, "failAfterSteps": 2}),
            json!({}),
        )
        .await;
    let run = h.wait_phase(&runs, "r3", RunPhase::Failed).await;
    let status = run.status.unwrap();
    assert_eq!(status.restarts, 0, "{status:?}");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason, "PermanentError");
    assert!(
        failed.message.contains("exit code 78"),
        "{}",
        failed.message
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_naming_the_field_and_creates_nothing() {
    let h = Harness::start("op-invalid").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    // Accepted by the 1.20 apiserver (the divisibility rule is CEL), caught by the operator.
    let runs = h.run(&ns, "r4", json!({}), json!({"recipe": {"preset": "mocov2", "arch": "resnet18", "batchSize": 4, "moco": {"queueSize": 66}}})).await;
    let run = h.wait_phase(&runs, "r4", RunPhase::Failed).await;
    let ready = run
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        ready.message.contains("spec.recipe.moco.queueSize"),
        "{}",
        ready.message
    );
    assert!(
        Api::<ConfigMap>::namespaced(h.tc.client.clone(), &ns)
            .get_opt("r4-config")
            .await
            .unwrap()
            .is_none()
    );
    let pods = Api::<Pod>::namespaced(h.tc.client.clone(), &ns)
        .list(&ListParams::default().labels("kontrast.dev/run=r4"))
        .await
        .unwrap();
    assert!(pods.items.is_empty());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_gang_is_restarted_after_the_stall_timeout() {
    let h = Harness::start("op-stall").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let script = json!({"steps": 10, "stall": true, "failAfterSteps": 3, "failAttempt": 1});
    let runs = h
        .run(
            &ns,
            "r5",
            script,
            json!({"failurePolicy": {"maxRestarts": 2, "stallTimeout": "10s"}}),
        )
        .await;
    let run = h.wait_phase(&runs, "r5", RunPhase::Succeeded).await;
    let status = run.status.unwrap();
    assert_eq!((status.attempt, status.restarts), (Some(2), 1));
    let failure = status.last_failure.unwrap();
    assert_eq!(failure.reason, "Stalled");
    assert!(
        failure.message.contains("stallTimeout 10s"),
        "{}",
        failure.message
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_stops_the_gang_and_resuming_starts_a_new_uncounted_attempt() {
    let h = Harness::start("op-suspend").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h.run(&ns, "r6", json!({"steps": 150}), json!({})).await;
    h.wait_phase(&runs, "r6", RunPhase::Training).await;
    let patch = |suspend: bool| kube::api::Patch::Merge(json!({"spec": {"suspend": suspend}}));
    runs.patch("r6", &kube::api::PatchParams::default(), &patch(true))
        .await
        .unwrap();
    h.wait_phase(&runs, "r6", RunPhase::Suspended).await;
    wait::until(
        "suspended pods gone",
        T,
        Duration::from_millis(300),
        || async { h.worker_pod_names(&ns, "r6").await.is_empty().then_some(()) },
    )
    .await
    .unwrap();
    let script =
        h.tc.cluster
            .state
            .host_path_dir(Path::new("/data/r6"))
            .join("standin.json");
    std::fs::write(&script, json!({"steps": 5}).to_string()).unwrap();
    runs.patch("r6", &kube::api::PatchParams::default(), &patch(false))
        .await
        .unwrap();
    let status = h
        .wait_phase(&runs, "r6", RunPhase::Succeeded)
        .await
        .status
        .unwrap();
    assert_eq!((status.attempt, status.restarts), (Some(2), 0));
    assert_eq!(
        h.worker_pod_names(&ns, "r6").await,
        ["r6-w-2-0", "r6-w-2-1"]
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_run_garbage_collects_everything_it_owns() {
    let h = Harness::start("op-gc").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let evals = json!({"evaluations": [{"name": "knn", "kind": "knn",
        "dataset": {"format": "imagefolder", "path": "/data/r7", "volume": {"hostPath": {"path": "/data/r7"}}}}]});
    let runs = h
        .run(
            &ns,
            "r7",
            json!({"steps": 3, "evalMetrics": {"knn": {"top1": 1.0}}}),
            evals,
        )
        .await;
    h.wait_phase(&runs, "r7", RunPhase::Succeeded).await;
    runs.delete("r7", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let client = h.tc.client.clone();
    wait::until(
        "owned objects collected",
        T,
        Duration::from_millis(500),
        || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let lp = ListParams::default().labels("kontrast.dev/run=r7");
                let pods = Api::<Pod>::namespaced(client.clone(), &ns)
                    .list(&lp)
                    .await
                    .ok()?
                    .items
                    .len();
                let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .list(&lp)
                    .await
                    .ok()?
                    .items
                    .len();
                let svcs = Api::<Service>::namespaced(client.clone(), &ns)
                    .list(&lp)
                    .await
                    .ok()?
                    .items
                    .len();
                let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client, &ns)
                    .list(&lp)
                    .await
                    .ok()?
                    .items
                    .len();
                (pods + cms + svcs + jobs == 0).then_some(())
            }
        },
    )
    .await
    .unwrap();
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarted_mid_run_continues_without_duplicate_pods() {
    let mut h = Harness::start("op-restart-operator").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    // Long enough (30 s) that the operator is stopped while the gang is still training, even on a loaded machine.
    let runs = h.run(&ns, "r8", json!({"steps": 300}), json!({})).await;
    h.wait_phase(&runs, "r8", RunPhase::Training).await;
    h.stop_operator().await;
    let before = h.worker_pod_names(&ns, "r8").await;
    assert_eq!(before, ["r8-w-1-0", "r8-w-1-1"]);
    let (tx, task) = start_operator(&h.tc.client, None);
    h.stop = Some(tx);
    h.operator = Some(task);
    let status = h
        .wait_phase(&runs, "r8", RunPhase::Succeeded)
        .await
        .status
        .unwrap();
    assert_eq!((status.attempt, status.restarts), (Some(1), 0));
    assert_eq!(h.worker_pod_names(&ns, "r8").await, before);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_operator_replicas_only_the_lease_holder_reconciles_and_the_other_takes_over() {
    let mut h = Harness::start("op-leader").await;
    h.stop_operator().await;
    let a = start_operator(&h.tc.client, Some("replica-a"));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(h.tc.client.clone(), "default");
    let holder_is = |who: &'static str| {
        let leases = leases.clone();
        move || {
            let leases = leases.clone();
            async move {
                let l = leases.get_opt("kontrast-operator").await.ok()??;
                (l.spec?.holder_identity.as_deref() == Some(who)).then_some(())
            }
        }
    };
    wait::until(
        "replica-a leads",
        T,
        Duration::from_millis(200),
        holder_is("replica-a"),
    )
    .await
    .unwrap();
    let b = start_operator(&h.tc.client, Some("replica-b"));
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h.run(&ns, "r9", json!({"steps": 5}), json!({})).await;
    h.wait_phase(&runs, "r9", RunPhase::Succeeded).await;
    let holder = leases
        .get("kontrast-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(
        holder.as_deref(),
        Some("replica-a"),
        "the standby never took the lease while the leader renewed it"
    );
    // The leader vanishes without releasing: the standby takes over once the lease expires.
    a.1.abort();
    wait::until(
        "replica-b takes over",
        T,
        Duration::from_millis(500),
        holder_is("replica-b"),
    )
    .await
    .unwrap();
    let runs2 = h.run(&ns, "r10", json!({"steps": 5}), json!({})).await;
    h.wait_phase(&runs2, "r10", RunPhase::Succeeded).await;
    stop_operator(b).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_that_keeps_failing_exhausts_max_restarts_and_fails_the_run_with_the_reason() {
    let h = Harness::start("op-exhausted").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let script = json!({"steps": 10, "failExit": 1, "failRank": 0, "failAfterSteps": 2});
    let runs = h
        .run(
            &ns,
            "r11",
            script,
            json!({"failurePolicy": {"maxRestarts": 1, "stallTimeout": "1m"}}),
        )
        .await;
    let status = h
        .wait_phase(&runs, "r11", RunPhase::Failed)
        .await
        .status
        .unwrap();
    assert_eq!((status.attempt, status.restarts), (Some(2), 1));
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason, "RestartsExhausted");
    assert!(
        failed.message.contains("maxRestarts (1) exhausted"),
        "{}",
        failed.message
    );
    wait::until(
        "failed run's pods removed",
        T,
        Duration::from_millis(300),
        || async {
            h.worker_pod_names(&ns, "r11")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await
    .unwrap();
    h.finish().await;
}

/// Invalid runs against the real apiserver: each is refused by the CRD schema (422 naming the
/// field) or accepted and then marked `InvalidSpec` by the operator naming the field; either way
/// no owned object appears. Hostile values (huge or mistyped numbers, path traversal, system
/// host paths, absurd resources, unicode names) included; docs/hostile-input.md lists the cases.
/// Unknown fields are pruned rather than refused, and the operator still runs a valid run after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_or_marked_invalid_naming_the_field_and_create_nothing() {
    let h = Harness::start("op-invalid-table").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let eval = |name: &str| json!({"name": name, "kind": "knn", "dataset": {"format": "imagefolder", "path": "/data/x"}});
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("zero-nodes", json!({"nodes": 0}), "spec.nodes"),
        ("negative-nodes", json!({"nodes": -1}), "spec.nodes"),
        ("huge-nodes", json!({"nodes": 100000}), "spec.nodes"),
        (
            "too-many-gpus",
            json!({"gpusPerNode": 64}),
            "spec.gpusPerNode",
        ),
        ("empty-image", json!({"image": ""}), "spec.image"),
        (
            "unknown-preset",
            json!({"recipe": {"preset": "simclr"}}),
            "spec.recipe.preset",
        ),
        (
            "unknown-arch",
            json!({"recipe": {"arch": "vit"}}),
            "spec.recipe.arch",
        ),
        (
            "zero-epochs",
            json!({"recipe": {"epochs": 0}}),
            "spec.recipe.epochs",
        ),
        (
            "batch-not-divisible",
            json!({"recipe": {"batchSize": 5, "moco": {"queueSize": 65}}}),
            "spec.recipe.batchSize",
        ),
        (
            "queue-not-divisible",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 66}}}),
            "spec.recipe.moco.queueSize",
        ),
        (
            "zero-temperature",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64, "temperature": 0}}}),
            "spec.recipe.moco.temperature",
        ),
        (
            "momentum-above-one",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64, "momentum": 1.5}}}),
            "spec.recipe.moco.momentum",
        ),
        (
            "negative-lr",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64}, "optimizer": {"lr": -0.1}}}),
            "spec.recipe.optimizer.lr",
        ),
        (
            "reversed-crop-scale",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64}, "crops": {"large": {"scale": [0.9, 0.2]}}}}),
            "spec.recipe.crops.large.scale",
        ),
        (
            "crop-scale-above-one",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64}, "crops": {"small": {"count": 2, "scale": [0.05, 1.5]}}}}),
            "spec.recipe.crops.small.scale",
        ),
        (
            "autoaugment-on-key-crop",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64}, "autoAugment": {"crops": [1]}}}),
            "spec.recipe.autoAugment.crops",
        ),
        (
            "relative-dataset-path",
            json!({"dataset": {"format": "imagefolder", "path": "data/x"}}),
            "spec.dataset.path",
        ),
        (
            "dataset-path-traversal",
            json!({"dataset": {"format": "imagefolder", "path": "/data/../etc"}}),
            "spec.dataset.path",
        ),
        (
            "unknown-dataset-format",
            json!({"dataset": {"format": "tfrecord", "path": "/data/x"}}),
            "spec.dataset.format",
        ),
        (
            "missing-dataset-path",
            json!({"dataset": {"path": null}}),
            "spec.dataset.path",
        ),
        (
            "duplicate-evaluations",
            json!({"evaluations": [eval("knn"), eval("knn")]}),
            "spec.evaluations",
        ),
        (
            "bad-evaluation-name",
            json!({"evaluations": [eval("Bad_Name")]}),
            "spec.evaluations[0].name",
        ),
        (
            "bad-stall-timeout",
            json!({"failurePolicy": {"stallTimeout": "soon"}}),
            "spec.failurePolicy.stallTimeout",
        ),
        (
            "zero-checkpoints-kept",
            json!({"checkpoint": {"keep": 0}}),
            "spec.checkpoint.keep",
        ),
        (
            "privileged-master-port",
            json!({"masterPort": 80}),
            "spec.masterPort",
        ),
        (
            "fp16-on-cpu",
            json!({"recipe": {"batchSize": 4, "moco": {"queueSize": 64}, "precision": "fp16"}}),
            "spec.recipe.precision",
        ),
        (
            "name-too-long-for-dns-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            json!({}),
            "metadata.name",
        ),
        // Hostile input: numbers far out of range or of the wrong type.
        (
            "epochs-ten-to-the-twelve",
            json!({"recipe": {"epochs": 1_000_000_000_000u64}}),
            "spec.recipe.epochs",
        ),
        (
            "batch-two-to-the-forty",
            json!({"recipe": {"batchSize": 1u64 << 40}}),
            "spec.recipe.batchSize",
        ),
        (
            "queue-beyond-the-limit",
            json!({"recipe": {"moco": {"queueSize": 2_097_152}}}),
            "spec.recipe.moco.queueSize",
        ),
        (
            "lr-1e308",
            json!({"recipe": {"optimizer": {"lr": 1e308}}}),
            "spec.recipe.optimizer.lr",
        ),
        (
            "float-epochs",
            json!({"recipe": {"epochs": 1.5}}),
            "spec.recipe.epochs",
        ),
        (
            "string-batch-size",
            json!({"recipe": {"batchSize": "4"}}),
            "spec.recipe.batchSize",
        ),
        ("float-nodes", json!({"nodes": 2.5}), "spec.nodes"),
        (
            "negative-gpus",
            json!({"gpusPerNode": -1}),
            "spec.gpusPerNode",
        ),
        (
            "crop-of-100000-pixels",
            json!({"recipe": {"crops": {"large": {"size": 100_000}}}}),
            "spec.recipe.crops.large.size",
        ),
        (
            "master-port-70000",
            json!({"masterPort": 70_000}),
            "spec.masterPort",
        ),
        (
            // Syntactically a duration; kube's own parser would overflow on it.
            "stall-timeout-overflowing",
            json!({"failurePolicy": {"stallTimeout": "99999999999999999999h"}}),
            "spec.failurePolicy.stallTimeout",
        ),
        (
            // 1024 × 16 = 16384 ranks, each within its limit, for a batch of 4.
            "gang-of-16384-ranks",
            json!({"nodes": 1024, "gpusPerNode": 16}),
            "spec.recipe.batchSize",
        ),
        // Paths that climb out or point at the node's system directories.
        (
            "checkpoint-mount-traversal",
            json!({"checkpoint": {"volume": {"mountPath": "/checkpoints/../etc", "persistentVolumeClaim": {"claimName": "runs"}}}}),
            "spec.checkpoint.volume.mountPath",
        ),
        (
            "checkpoint-host-path-traversal",
            json!({"checkpoint": {"volume": {"hostPath": {"path": "/var/lib/kontrast/../../../etc"}}}}),
            "spec.checkpoint.volume.hostPath.path",
        ),
        (
            "checkpoint-on-the-node-root",
            json!({"checkpoint": {"volume": {"hostPath": {"path": "/"}}}}),
            "spec.checkpoint.volume.hostPath.path",
        ),
        (
            "dataset-on-the-docker-socket",
            json!({"dataset": {"volume": {"hostPath": {"path": "/var/run/docker.sock"}}}}),
            "spec.dataset.volume.hostPath.path",
        ),
        (
            "dataset-on-etc-double-slash",
            json!({"dataset": {"volume": {"hostPath": {"path": "//etc"}}}}),
            "spec.dataset.volume.hostPath.path",
        ),
        (
            "annotations-traversal",
            json!({"dataset": {"format": "flat", "annotations": "/data/x/../../etc/shadow"}}),
            "spec.dataset.annotations",
        ),
        (
            "dataset-path-of-1100-chars",
            json!({"dataset": {"path": format!("/{}", "a".repeat(1100))}}),
            "spec.dataset.path",
        ),
        (
            "evaluation-path-traversal",
            json!({"evaluations": [{"name": "knn", "kind": "knn", "dataset": {"format": "imagefolder", "path": "/data/x/../../etc"}}]}),
            "spec.evaluations[0].dataset.path",
        ),
        (
            "evaluation-on-kubelet-state",
            json!({"evaluations": [{"name": "knn", "kind": "knn", "dataset": {"format": "imagefolder", "path": "/data/x", "volume": {"hostPath": {"path": "/var/lib/kubelet"}}}}]}),
            "spec.evaluations[0].dataset.volume.hostPath.path",
        ),
        // Absurd or malformed resource asks.
        (
            "negative-cpu",
            json!({"resources": {"requests": {"cpu": "-1"}}}),
            "spec.resources.requests.cpu",
        ),
        (
            "malformed-memory",
            json!({"resources": {"requests": {"memory": "1 Ei"}}}),
            "spec.resources.requests.memory",
        ),
        (
            "exbibyte-request-over-limit",
            json!({"resources": {"requests": {"memory": "1Ei"}, "limits": {"memory": "1Gi"}}}),
            "spec.resources.requests.memory",
        ),
        (
            "unknown-resource-name",
            json!({"resources": {"requests": {"gpu": "1"}}}),
            "spec.resources.requests.gpu",
        ),
        (
            "gpus-through-resources",
            json!({"resources": {"limits": {"nvidia.com/gpu": "8"}}}),
            "spec.resources.limits.nvidia.com/gpu",
        ),
        // Names and strings.
        (
            "unicode-evaluation-name",
            json!({"evaluations": [eval("knn-ü")]}),
            "spec.evaluations[0].name",
        ),
        (
            "evaluation-name-of-64-chars",
            json!({"evaluations": [eval(&"k".repeat(64))]}),
            "spec.evaluations[0].name",
        ),
        (
            "too-many-evaluations",
            json!({"evaluations": (0..17).map(|i| eval(&format!("knn-{i}"))).collect::<Vec<_>>()}),
            "spec.evaluations",
        ),
        ("läuft", json!({}), "metadata.name"),
        ("Capital-Run", json!({}), "metadata.name"),
        (
            "image-with-whitespace",
            json!({"image": "ghcr.io/kontrast-dev/kontrast standin:test"}),
            "spec.image",
        ),
        (
            "image-of-2000-chars",
            json!({"image": format!("ghcr.io/{}:test", "a".repeat(2000))}),
            "spec.image",
        ),
        (
            "pushgateway-file-url",
            json!({"metrics": {"pushgateway": "file:///etc/passwd"}}),
            "spec.metrics.pushgateway",
        ),
        (
            "node-selector-bad-key",
            json!({"scheduling": {"nodeSelector": {"bad key!": "x"}}}),
            "spec.scheduling.nodeSelector.bad key!",
        ),
        (
            "toleration-unknown-operator",
            json!({"scheduling": {"tolerations": [{"key": "gpu", "operator": "In"}]}}),
            "spec.scheduling.tolerations[0].operator",
        ),
    ];
    let runs: Api<ContrastiveRun> = Api::namespaced(h.tc.client.clone(), &ns);
    let dynamic_runs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        h.tc.client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<ContrastiveRun>(&()),
    );
    let mut accepted = Vec::new();
    let mut outcomes = Vec::new();
    for (name, patch, field) in &cases {
        let body = run_object(name, patch);
        match dynamic_runs.create(&PostParams::default(), &body).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{name}: {s:?}");
                // The 1.20 apiserver names list items without their index (spec.evaluations.name).
                let unindexed: String = field
                    .split('[')
                    .map(|part| part.split_once(']').map_or(part, |(_, rest)| rest))
                    .collect();
                assert!(
                    s.message.contains(field) || s.message.contains(&unindexed),
                    "{name}: refusal does not name {field}: {}",
                    s.message
                );
                outcomes.push((*name, "refused (422)", *field));
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => accepted.push((*name, *field)),
        }
    }
    for (name, field) in &accepted {
        let run = h.wait_phase(&runs, name, RunPhase::Failed).await;
        let ready = run
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.reason, "InvalidSpec", "{name}");
        assert!(
            ready.message.contains(field),
            "{name}: InvalidSpec does not name {field}: {}",
            ready.message
        );
        outcomes.push((*name, "InvalidSpec", *field));
    }
    // The table of docs/hostile-input.md.
    for (name, outcome, field) in &outcomes {
        eprintln!("| {name} | {outcome} | {field} |");
    }
    eprintln!(
        "{} cases: {} refused by the schema, {} marked InvalidSpec by the operator",
        cases.len(),
        cases.len() - accepted.len(),
        accepted.len()
    );
    let owned = ListParams::default().labels("kontrast.dev/run");
    assert!(
        Api::<ConfigMap>::namespaced(h.tc.client.clone(), &ns)
            .list(&owned)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(h.pods(&ns).list(&owned).await.unwrap().items.is_empty());
    assert!(
        Api::<Service>::namespaced(h.tc.client.clone(), &ns)
            .list(&owned)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Unknown fields are neither refused nor kept: the structural schema prunes them, so a
    // field the API does not have (a subPath, hostNetwork) cannot reach the pods.
    let unknown = run_object(
        "unknown-fields",
        &json!({
            "hostNetwork": true,
            "privileged": true,
            "checkpoint": {"subPath": "../../etc"},
            "dataset": {"volume": {"hostPath": {"path": "/data/x", "type": "Socket"}}},
        }),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pruned = dynamic_runs
        .create(&dry_run, &unknown)
        .await
        .expect("unknown fields are pruned, not refused");
    let spec = &pruned.data["spec"];
    assert!(spec.get("hostNetwork").is_none(), "{spec}");
    assert!(spec.get("privileged").is_none(), "{spec}");
    assert!(spec["checkpoint"].get("subPath").is_none(), "{spec}");
    assert!(
        spec["dataset"]["volume"]["hostPath"].get("type").is_none(),
        "{spec}"
    );
    assert_eq!(spec["dataset"]["volume"]["hostPath"]["path"], "/data/x");

    // After all that, the operator still reconciles a valid run: its gang appears.
    dynamic_runs
        .create(
            &PostParams::default(),
            &run_object("still-works", &json!({})),
        )
        .await
        .expect("the valid run is accepted");
    let pods = wait::until(
        "the valid run's worker pods",
        T,
        Duration::from_millis(300),
        || async {
            let names = h.worker_pod_names(&ns, "still-works").await;
            (names.len() == 2).then_some(names)
        },
    )
    .await
    .unwrap();
    assert_eq!(pods.len(), 2);
    h.finish().await;
}

/// A run of the invalid-spec table: its small valid base spec with `patch` merged in.
fn run_object(name: &str, patch: &serde_json::Value) -> kube::api::DynamicObject {
    let mut spec = json!({
        "image": "ghcr.io/kontrast-dev/kontrast-standin:test", "nodes": 2,
        "dataset": {"format": "imagefolder", "path": "/data/x"},
        "recipe": {"preset": "mocov2", "arch": "resnet18", "epochs": 1, "batchSize": 4, "moco": {"queueSize": 64}},
    });
    merge(&mut spec, patch);
    let body = json!({"apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun", "metadata": {"name": name}, "spec": spec});
    serde_json::from_value(body).expect("a ContrastiveRun object")
}

fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                // null deletes, as in a JSON merge patch.
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The `kontrast-operator` binary as users run it: leader election on, health and metrics
/// endpoints, a run reconciled, SIGTERM handled by giving the Lease back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_serves_health_and_metrics_reconciles_and_releases_its_lease_on_sigterm()
 {
    let mut h = Harness::start("op-binary").await;
    h.stop_operator().await;
    let bin =
        PathBuf::from(env!("CARGO_BIN_EXE_kontrast-node")).with_file_name("kontrast-operator");
    assert!(
        bin.exists(),
        "{} is missing: `make test` builds every binary first (cargo build --workspace --bins)",
        bin.display()
    );
    let addr = format!("{}:8080", h.tc.cluster.state.host);
    let log =
        h.tc.cluster
            .state
            .state_dir
            .join("logs/kontrast-operator.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(&bin)
        .args([
            "--leader-elect",
            "--identity",
            "binary",
            "--metrics-addr",
            &addr,
        ])
        .env("KUBECONFIG", &h.tc.cluster.state.kubeconfig)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            http.get(format!("http://{addr}{path}"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
    };
    let ready = wait::until("operator ready", T, Duration::from_millis(200), || {
        get("/readyz")
    })
    .await
    .unwrap();
    assert!(ready.starts_with("ok"), "{ready}");
    assert_eq!(get("/healthz").await.as_deref(), Some("ok\n"));
    let ns = h.tc.namespace("ml").await.unwrap();
    let runs = h.run(&ns, "r12", json!({"steps": 5}), json!({})).await;
    h.wait_phase(&runs, "r12", RunPhase::Succeeded).await;
    let metrics = get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"kontrast_run_phase{namespace="ml",phase="Succeeded",run="r12"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kontrast_operator_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "operator exit: {status}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        h.tc.client.clone(),
        "default",
    )
    .get("kontrast-operator")
    .await
    .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the lease was given back on SIGTERM"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_a_gang_scheduler_gets_a_pod_group_per_attempt() {
    let h = Harness::start("op-podgroup").await;
    // Volcano's PodGroup API (only its shape matters here; the default scheduler places the pods).
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "podgroups.scheduling.volcano.sh"},
        "spec": {"group": "scheduling.volcano.sh", "scope": "Namespaced",
                 "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup"},
                 "versions": [{"name": "v1beta1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(h.tc.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let ns = h.tc.namespace("ml").await.unwrap();
    let scheduling = json!({"scheduling": {"gangScheduler": "volcano", "schedulerName": "default-scheduler", "queueName": "research"}});
    let runs = h.run(&ns, "r13", json!({"steps": 5}), scheduling).await;
    h.wait_phase(&runs, "r13", RunPhase::Succeeded).await;
    let ar = kontrast_operator::objects::pod_group::api_resource(
        kontrast_api::v1alpha1::GangScheduler::Volcano,
    );
    let groups: Api<kube::api::DynamicObject> = Api::namespaced_with(h.tc.client.clone(), &ns, &ar);
    let group = groups
        .get("r13-1")
        .await
        .expect("the attempt's PodGroup exists");
    assert_eq!(
        group.data["spec"],
        json!({"minMember": 2, "queue": "research"})
    );
    assert_eq!(group.metadata.owner_references.unwrap()[0].name, "r13");
    let pod = h.pods(&ns).get("r13-w-1-0").await.unwrap();
    assert_eq!(
        pod.metadata.annotations.unwrap()["scheduling.k8s.io/group-name"],
        "r13-1"
    );
    assert_eq!(
        pod.metadata.labels.unwrap()["kueue.x-k8s.io/queue-name"],
        "research"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_evaluation_is_reported_on_its_own_and_keeps_the_training_result() {
    let h = Harness::start("op-eval-fail").await;
    let ns = h.tc.namespace("ml").await.unwrap();
    let dataset = json!({"format": "imagefolder", "path": "/data/r14", "volume": {"hostPath": {"path": "/data/r14"}}});
    let evals = json!({"evaluations": [
        {"name": "knn", "kind": "knn", "dataset": dataset},
        {"name": "svm", "kind": "linearSvm", "dataset": dataset},
    ]});
    let script = json!({"steps": 5, "evalMetrics": {"knn": {"top1": 70.0}}, "evalFail": ["svm"]});
    let runs = h.run(&ns, "r14", script, evals).await;
    let status = h
        .wait_phase(&runs, "r14", RunPhase::Succeeded)
        .await
        .status
        .unwrap();
    assert_eq!(status.results["knn"]["top1"], 70.0);
    assert!(!status.results.contains_key("svm"));
    let svm = status.evaluations.iter().find(|e| e.name == "svm").unwrap();
    assert_eq!(svm.phase, kontrast_api::v1alpha1::EvaluationPhase::Failed);
    assert!(
        svm.message
            .as_deref()
            .unwrap_or("")
            .contains("failed on purpose"),
        "{svm:?}"
    );
    let evaluating = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Evaluating")
        .unwrap();
    assert_eq!(evaluating.reason, "EvaluationFailed");
    assert_eq!(
        status.progress.map(|p| p.step),
        Some(5),
        "the training result stays"
    );
    h.finish().await;
}
