//! `kontrast eval` end to end: a short training run writes a checkpoint, the evaluation Job's
//! command evaluates it and leaves `{evaluation, kind, metrics}` in the termination log.
mod common;

use std::time::Duration;

use common::{Proc, fashion_mnist_subset, kontrast, small_run, write_config};
use kontrast_api::config::{
    EvaluationConfig, EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationTask,
};

#[test]
fn a_knn_evaluation_of_the_newest_checkpoint_lands_in_the_termination_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    // The test split is the training split and k is 1: every test image finds itself, so top-1
    // is 100 % whatever the training did — this checks the plumbing, not the representation.
    for kind in ["images-idx3", "labels-idx1"] {
        std::fs::copy(
            data.join(format!("train-{kind}-ubyte")),
            data.join(format!("t10k-{kind}-ubyte")),
        )
        .expect("copy the split");
    }
    let mut config = small_run(&data, 1, 1, 16, 32);
    config.evaluations.push(EvaluationConfig {
        name: "knn".into(),
        dataset: EvaluationDatasetConfig {
            format: EvaluationDatasetFormat::FashionMnist,
            path: data.display().to_string(),
        },
        gpus: 0,
        task: EvaluationTask::Knn {
            k: 1,
            temperature: 0.07,
        },
    });
    let config_path = write_config(dir.path(), &config);
    let checkpoints = dir.path().join("checkpoints");
    let (config_arg, checkpoint_arg) = (
        config_path.display().to_string(),
        checkpoints.display().to_string(),
    );
    let train = kontrast(
        dir.path(),
        &[
            "train",
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &checkpoint_arg,
            "--metrics-port",
            "0",
            "--data-threads",
            "0",
        ],
    );
    Proc::spawn(train, dir.path(), "train").assert_success(Duration::from_secs(120));

    let eval = kontrast(
        dir.path(),
        &[
            "eval",
            "--evaluation",
            "knn",
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &checkpoint_arg,
        ],
    );
    Proc::spawn(eval, dir.path(), "eval").assert_success(Duration::from_secs(120));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["evaluation"], "knn", "{result}");
    assert_eq!(result["kind"], "knn", "{result}");
    assert_eq!(result["checkpointEpoch"], 1, "{result}");
    let top1 = result["metrics"]["top1"].as_f64().expect("top1");
    assert!(
        top1 > 90.0,
        "top-1 {top1} when every test image is in the training set"
    );
}

#[test]
fn an_evaluation_missing_from_the_config_fails_permanently_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 16);
    let config_path = write_config(dir.path(), &small_run(&data, 1, 1, 16, 32));
    let config_arg = config_path.display().to_string();
    let eval = kontrast(
        dir.path(),
        &[
            "eval",
            "--evaluation",
            "voc",
            "--config",
            &config_arg,
            "--checkpoint-dir",
            "/nonexistent",
        ],
    );
    let mut proc = Proc::spawn(eval, dir.path(), "eval");
    let status = proc.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(78), "{}", proc.stderr());
    let message = std::fs::read_to_string(dir.path().join("termination-log")).unwrap_or_default();
    assert!(message.contains("\"voc\""), "{message}");
}
