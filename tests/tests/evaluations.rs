//! Every evaluation kind as a Job the operator creates: one short real training run of the
//! `kontrast` worker (two pods, Gloo, Fashion-MNIST) that ends with kNN, the linear SVM, both
//! segmentation modes, DAVIS propagation and segment retrieval, each on data in its real on-disk
//! format (the synthetic VOC and DAVIS fixtures the worker's own tests use). Each result must
//! reach `status.results` and the operator's `kontrast_run_evaluation_result` gauges.
//!
//! Needs `kontrast` and `kontrast-operator` built beside the test binaries (`make test` builds
//! every binary first; alone: `cargo build -p kontrast-worker -p kontrast-operator --bins`).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kontrast_api::v1alpha1::{ContrastiveRun, EvaluationPhase, RunPhase};
use kontrast_operator::controller::{self, Context};
use kontrast_operator::metrics::Metrics;
use kontrast_tests::chart;
use kontrast_tests::cluster::cache_dir;
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

const NS: &str = "ml";
const RUN: &str = "evals";
/// Where Debian's `dataset-fashion-mnist` package (installed by `make setup`) puts the data set;
/// the fixture scripts draw their images from it.
const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
const DATA_HOST_PATH: &str = "/var/lib/kontrast/evals-fashion-mnist";
const VOC_HOST_PATH: &str = "/var/lib/kontrast/evals-voc";
const DAVIS_HOST_PATH: &str = "/var/lib/kontrast/evals-davis";
const CHECKPOINT_HOST_PATH: &str = "/var/lib/kontrast/evals-checkpoints";
/// Training, then six evaluation Jobs side by side on two cores.
const T: Duration = Duration::from_secs(600);

/// (evaluation, kind, the metrics it must report, each a percentage).
const EXPECTED: [(&str, &str, &[&str]); 6] = [
    ("knn", "knn", &["top1", "top5"]),
    ("svm", "linearSvm", &["mAP"]),
    ("seg-linear", "segmentation", &["mIoU", "pixelAccuracy"]),
    ("seg-finetune", "segmentation", &["mIoU", "pixelAccuracy"]),
    ("davis", "davis", &["J&F", "J", "F"]),
    ("retrieval", "retrieval", &["accuracy", "mIoU"]),
];

fn python() -> PathBuf {
    cache_dir().join("venv/bin/python")
}

/// Runs a Python script of the repository with `args`, failing with its stderr.
fn script(path: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg(chart::repo_root().join(path))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} (scripts/setup-python.sh): {e}", python().display()));
    assert!(
        out.status.success(),
        "{path} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn volume(host_path: &str) -> Value {
    json!({"hostPath": {"path": host_path}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_evaluation_kind_runs_as_an_operator_job_and_reports_to_status_and_metrics() {
    let bin = chart::product_binary_dir(Path::new(env!("CARGO_BIN_EXE_kontrast-node")));
    let tc = TestCluster::with_real_worker(
        env!("CARGO_TARGET_TMPDIR"),
        "evaluations",
        env!("CARGO_BIN_EXE_kontrast-node"),
        &bin,
        NS,
    )
    .await
    .expect("cluster starts");

    // The data, in each protocol's on-disk format, on the node's host paths.
    let state = tc.cluster.state.clone();
    let host = |p: &str| state.host_path_dir(Path::new(p));
    let data = host(DATA_HOST_PATH);
    let (data, voc, davis) = (
        data.to_string_lossy().into_owned(),
        host(VOC_HOST_PATH).to_string_lossy().into_owned(),
        host(DAVIS_HOST_PATH).to_string_lossy().into_owned(),
    );
    script(
        "scripts/fashion-mnist-subset.py",
        &["--train", "1024", "--test", "256", "--out", &data],
    );
    script(
        "tests/reference/miou_reference.py",
        &["voc-seg-fixture", FASHION_MNIST, &voc, "24", "8"],
    );
    script(
        "tests/reference/davis_reference.py",
        &["fixture", FASHION_MNIST, &davis],
    );

    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            tc.client.clone(),
            Reporter {
                controller: "kontrast-operator".into(),
                instance: Some("evaluations".into()),
            },
        ),
        client: tc.client.clone(),
        metrics: Metrics::new().expect("metrics"),
        http: reqwest::Client::new(),
        owned: kontrast_operator::cache::Owned::start(&tc.client, None),
        stall: Default::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(controller::run(ctx.clone(), None, 4, async move {
        let _ = stopped.await;
    }));

    let fashion = json!({"format": "fashionMnist", "path": "/data/eval",
                         "volume": volume(DATA_HOST_PATH)});
    let voc_data = json!({"format": "voc", "path": "/data/voc", "volume": volume(VOC_HOST_PATH)});
    let run: ContrastiveRun = serde_json::from_value(json!({
        "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
        "metadata": {"name": RUN},
        "spec": {
            "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
            "nodes": 2,
            "gpusPerNode": 0,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "dataset": {"format": "fashionMnist", "path": "/data/fashion-mnist",
                        "volume": volume(DATA_HOST_PATH)},
            "recipe": {"preset": "mocov2", "arch": "resnet18", "width": 8, "cifarStem": true,
                       "epochs": 1, "batchSize": 64,
                       "moco": {"queueSize": 256, "momentum": 0.99, "temperature": 0.1},
                       "crops": {"large": {"size": 28}}},
            "checkpoint": {"volume": volume(CHECKPOINT_HOST_PATH), "everyEpochs": 1},
            "failurePolicy": {"maxRestarts": 0, "stallTimeout": "5m"},
            "evaluations": [
                {"name": "knn", "kind": "knn", "dataset": fashion},
                {"name": "svm", "kind": "linearSvm", "dataset": fashion},
                {"name": "seg-linear", "kind": "segmentation", "mode": "linear",
                 "epochs": 2, "batchSize": 4, "dataset": voc_data},
                {"name": "seg-finetune", "kind": "segmentation", "mode": "finetune",
                 "epochs": 1, "batchSize": 4, "dataset": voc_data},
                {"name": "davis", "kind": "davis",
                 "dataset": {"format": "davis", "path": "/data/davis",
                             "volume": volume(DAVIS_HOST_PATH)}},
                {"name": "retrieval", "kind": "retrieval", "dataset": voc_data},
            ],
        }
    }))
    .expect("a ContrastiveRun");
    let runs: Api<ContrastiveRun> = Api::namespaced(tc.client.clone(), NS);
    runs.create(&PostParams::default(), &run)
        .await
        .expect("the apiserver accepts the run");

    let finished = wait::until("the run finishes", T, Duration::from_secs(1), || {
        let runs = runs.clone();
        async move {
            let run = runs.get(RUN).await.ok()?;
            let phase = run.status.as_ref()?.phase?;
            matches!(phase, RunPhase::Succeeded | RunPhase::Failed).then_some(run)
        }
    })
    .await;
    let run = match finished {
        Ok(run) => run,
        Err(e) => panic!(
            "{e}\n{}",
            kontrast_tests::testing::describe_pods(&tc, NS, 15).await
        ),
    };
    let status = run.status.expect("status");
    assert_eq!(status.phase, Some(RunPhase::Succeeded), "{status:#?}");

    let gauges = ctx.metrics.render();
    for (name, kind, metrics) in EXPECTED {
        let eval = status
            .evaluations
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("evaluation {name} in {status:#?}"));
        assert_eq!(eval.phase, EvaluationPhase::Succeeded, "{kind}: {eval:?}");
        let results = status
            .results
            .get(name)
            .unwrap_or_else(|| panic!("no results of {name}: {:?}", status.results));
        for metric in metrics {
            let value = results
                .get(*metric)
                .copied()
                .unwrap_or_else(|| panic!("{name} lacks {metric}: {results:?}"));
            assert!(
                value.is_finite() && (0.0..=100.0).contains(&value),
                "{name} {metric} = {value}"
            );
            let series = format!(
                "kontrast_run_evaluation_result{{evaluation=\"{name}\",metric=\"{metric}\",\
                 namespace=\"{NS}\",run=\"{RUN}\"}} "
            );
            let exported = gauges
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no gauge {series}in\n{gauges}"));
            assert_eq!(exported, value, "{series}");
        }
        println!("[evaluations] {name:<13} {kind:<13} {results:?}");
    }

    let _ = stop.send(());
    let _ = operator.await;
}
