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
use kontrast_operator::metrics::Metrics;
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

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
        })
        .await
        .expect("cluster starts");
        let crds: Api<CustomResourceDefinition> = Api::all(tc.client.clone());
        crds.create(
            &PostParams::default(),
            &kontrast_api::crd::crd_without_cel(),
        )
        .await
        .expect("CRD installs");
        wait::until("CRD established", T, Duration::from_millis(200), || {
            let crds = crds.clone();
            async move {
                let c = crds.get("contrastiveruns.kontrast.dev").await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await
        .unwrap();
        let ctx = Arc::new(Context {
            recorder: Recorder::new(
                tc.client.clone(),
                Reporter {
                    controller: "kontrast-operator".into(),
                    instance: Some("test".into()),
                },
            ),
            client: tc.client.clone(),
            metrics: Metrics::new().unwrap(),
            http: reqwest::Client::new(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(controller::run(ctx, None, 4, async move {
            let _ = rx.await;
        }));
        Self {
            tc,
            stop: Some(tx),
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

    async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(op) = self.operator.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
        }
        self.tc.finish();
    }
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
            json!({"steps": 10, "evalMetrics": {"knn": {"top1": 61.5, "top5": 88.25}}}),
            json!({"evaluations": [{"name": "knn", "kind": "knn", "dataset": {"format": "imagefolder", "path": "/data/r1", "volume": {"hostPath": {"path": "/data/r1"}}}}]}),
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
        assert_eq!(
            p.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
    }
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
    assert_eq!(status.restarts, 0);
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
