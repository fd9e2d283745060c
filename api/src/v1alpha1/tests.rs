//! The three layers of validation against each other: every invalid spec in the table is refused
//! by `resolve` naming the field, and by the schema or a CEL rule as an apiserver would.

use serde_json::{Value, json};

use super::*;
use crate::config::{
    Arch, CropConfig, EvaluationTask, KnnLossConfig, LrSchedule, MocoConfig, OptimizerConfig,
    Precision, Preset, RunConfig, SegmentationMode,
};
use crate::testing::{cel_errors, merged, object, schema_errors};

/// A small valid CPU run: Fashion-MNIST, resnet18, the revisiting preset scaled down.
fn base() -> Value {
    json!({
        "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
        "nodes": 2,
        "dataset": {
            "format": "fashionMnist",
            "path": "/usr/share/datasets/fashion-mnist",
            "volume": {"hostPath": {"path": "/usr/share/datasets/fashion-mnist"}}
        },
        "recipe": {
            "arch": "resnet18",
            "cifarStem": true,
            "epochs": 2,
            "batchSize": 64,
            "moco": {"queueSize": 4096},
            "crops": {"large": {"size": 28}, "small": {"size": 14}}
        },
        "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "runs"}}, "keep": 2},
        "evaluations": [{
            "name": "knn",
            "kind": "knn",
            "k": 20,
            "dataset": {"format": "fashionMnist", "path": "/usr/share/datasets/fashion-mnist"}
        }]
    })
}

fn spec_of(value: &Value) -> ContrastiveRunSpec {
    serde_json::from_value(value.clone()).expect("the spec deserialises")
}

/// Paths the schema and the CEL rules report for a spec.
fn server_errors(spec: &Value) -> Vec<(String, String)> {
    let object = object(spec);
    let mut errors = schema_errors(&object);
    errors.extend(cel_errors(&object, None));
    errors
}

#[test]
fn the_base_spec_passes_every_layer() {
    let spec = base();
    assert_eq!(server_errors(&spec), []);
    assert!(spec_of(&spec).resolve().is_ok());
}

/// Where an apiserver catches a case.
enum Server {
    /// The OpenAPI schema (any apiserver) or a CEL rule (1.28+), at this path.
    At(&'static str),
    /// Neither: the operator's `resolve` is the only check.
    OperatorOnly,
}
use Server::*;

struct Case {
    name: &'static str,
    patch: Value,
    field: &'static str,
    server: Server,
}

fn case(name: &'static str, patch: Value, field: &'static str, server: Server) -> Case {
    Case {
        name,
        patch,
        field,
        server,
    }
}

fn eval(extra: Value) -> Value {
    merged(&base()["evaluations"][0], &extra)
}

fn invalid_specs() -> Vec<Case> {
    vec![
        case(
            "no nodes",
            json!({"nodes": 0}),
            "spec.nodes",
            At("spec.nodes"),
        ),
        case(
            "too many nodes",
            json!({"nodes": 2000}),
            "spec.nodes",
            At("spec.nodes"),
        ),
        case(
            "too many gpus",
            json!({"gpusPerNode": 17}),
            "spec.gpusPerNode",
            At("spec.gpusPerNode"),
        ),
        case(
            "empty image",
            json!({"image": ""}),
            "spec.image",
            At("spec.image"),
        ),
        case(
            "relative dataset path",
            json!({"dataset": {"path": "data/fmnist"}}),
            "spec.dataset.path",
            At("spec.dataset.path"),
        ),
        case(
            "dataset path climbing out",
            json!({"dataset": {"path": "/data/../etc"}}),
            "spec.dataset.path",
            At("spec.dataset.path"),
        ),
        case(
            "volume with two sources",
            json!({"dataset": {"volume": {"nfs": {"server": "nas", "path": "/export"}}}}),
            "spec.dataset.volume",
            At("spec.dataset.volume"),
        ),
        case(
            "volume with no source",
            json!({"dataset": {"volume": {"hostPath": null, "mountPath": "/usr/share"}}}),
            "spec.dataset.volume",
            At("spec.dataset.volume"),
        ),
        case(
            "dataset outside its volume",
            json!({"dataset": {"volume": {"mountPath": "/mnt/data"}}}),
            "spec.dataset.path",
            At("spec.dataset.path"),
        ),
        case(
            "annotation file for a non-flat data set",
            json!({"dataset": {"annotations": "/usr/share/datasets/fashion-mnist/list.json"}}),
            "spec.dataset.annotations",
            At("spec.dataset.annotations"),
        ),
        case(
            "annotation file path climbing out",
            json!({"dataset": {"format": "flat", "annotations": "/usr/share/datasets/../../etc/x.json"}}),
            "spec.dataset.annotations",
            At("spec.dataset.annotations"),
        ),
        case(
            "annotation file outside the dataset volume",
            json!({"dataset": {"format": "flat", "annotations": "/etc/instances.json"}}),
            "spec.dataset.annotations",
            OperatorOnly,
        ),
        case(
            "backbone narrower than 8 channels",
            json!({"recipe": {"width": 4}}),
            "spec.recipe.width",
            At("spec.recipe.width"),
        ),
        case(
            "backbone width not a multiple of 8",
            json!({"recipe": {"width": 12}}),
            "spec.recipe.width",
            At("spec.recipe.width"),
        ),
        case(
            "zero epochs",
            json!({"recipe": {"epochs": 0}}),
            "spec.recipe.epochs",
            At("spec.recipe.epochs"),
        ),
        case(
            "batch not splitting over the ranks",
            json!({"recipe": {"batchSize": 63, "moco": {"queueSize": 4032}}}),
            "spec.recipe.batchSize",
            At("spec.recipe.batchSize"),
        ),
        case(
            "one image per rank",
            json!({"recipe": {"batchSize": 2}}),
            "spec.recipe.batchSize",
            At("spec.recipe.batchSize"),
        ),
        case(
            "queue not a multiple of the batch",
            json!({"recipe": {"moco": {"queueSize": 4000}}}),
            "spec.recipe.moco.queueSize",
            At("spec.recipe.moco.queueSize"),
        ),
        case(
            "preset queue not a multiple of the batch",
            json!({"recipe": {"batchSize": 96, "moco": null}}),
            "spec.recipe.moco.queueSize",
            At("spec.recipe.moco.queueSize"),
        ),
        case(
            "zero learning rate",
            json!({"recipe": {"optimizer": {"lr": 0.0}}}),
            "spec.recipe.optimizer.lr",
            At("spec.recipe.optimizer.lr"),
        ),
        case(
            "sgd momentum of one",
            json!({"recipe": {"optimizer": {"momentum": 1.0}}}),
            "spec.recipe.optimizer.momentum",
            At("spec.recipe.optimizer.momentum"),
        ),
        case(
            "zero temperature",
            json!({"recipe": {"moco": {"temperature": 0.0}}}),
            "spec.recipe.moco.temperature",
            At("spec.recipe.moco.temperature"),
        ),
        case(
            "a single large crop",
            json!({"recipe": {"crops": {"large": {"count": 1}}}}),
            "spec.recipe.crops.large.count",
            At("spec.recipe.crops.large.count"),
        ),
        case(
            "crop scale upside down",
            json!({"recipe": {"crops": {"small": {"scale": [0.5, 0.1]}}}}),
            "spec.recipe.crops.small.scale",
            At("spec.recipe.crops.small.scale"),
        ),
        case(
            "crop scale of zero",
            json!({"recipe": {"crops": {"large": {"scale": [0.0, 1.0]}}}}),
            "spec.recipe.crops.large.scale[0]",
            At("spec.recipe.crops.large.scale[0]"),
        ),
        case(
            "autoaugment on the key crop",
            json!({"recipe": {"autoAugment": {"crops": [0, 1]}}}),
            "spec.recipe.autoAugment.crops[1]",
            At("spec.recipe.autoAugment.crops"),
        ),
        case(
            "autoaugment on a missing crop",
            json!({"recipe": {"autoAugment": {"crops": [0, 6]}}}),
            "spec.recipe.autoAugment.crops[1]",
            At("spec.recipe.autoAugment.crops"),
        ),
        case(
            "fewer small crops than the preset's autoaugment list",
            json!({"recipe": {"crops": {"small": {"count": 2}}}}),
            "spec.recipe.autoAugment.crops[3]",
            OperatorOnly,
        ),
        case(
            "more knn neighbours than the queue holds",
            json!({"recipe": {"moco": {"queueSize": 512}, "knnLoss": {"topK": 1000}}}),
            "spec.recipe.knnLoss.topK",
            At("spec.recipe.knnLoss.topK"),
        ),
        case(
            "knn warm-up never ending",
            json!({"recipe": {"knnLoss": {"warmupEpochs": 2}}}),
            "spec.recipe.knnLoss.warmupEpochs",
            At("spec.recipe.knnLoss.warmupEpochs"),
        ),
        case(
            "fp16 on cpu",
            json!({"recipe": {"precision": "fp16"}}),
            "spec.recipe.precision",
            At("spec.recipe.precision"),
        ),
        case(
            "keep no checkpoint",
            json!({"checkpoint": {"keep": 0}}),
            "spec.checkpoint.keep",
            At("spec.checkpoint.keep"),
        ),
        case(
            "read-only checkpoint volume",
            json!({"checkpoint": {"volume": {"persistentVolumeClaim": {"readOnly": true}}}}),
            "spec.checkpoint.volume.persistentVolumeClaim.readOnly",
            At("spec.checkpoint.volume"),
        ),
        case(
            "too many restarts",
            json!({"failurePolicy": {"maxRestarts": 101}}),
            "spec.failurePolicy.maxRestarts",
            At("spec.failurePolicy.maxRestarts"),
        ),
        case(
            "stall timeout in words",
            json!({"failurePolicy": {"stallTimeout": "15 minutes"}}),
            "spec.failurePolicy.stallTimeout",
            At("spec.failurePolicy.stallTimeout"),
        ),
        case(
            "stall timeout too short",
            json!({"failurePolicy": {"stallTimeout": "5s"}}),
            "spec.failurePolicy.stallTimeout",
            At("spec.failurePolicy.stallTimeout"),
        ),
        case(
            "evaluation name not a dns label",
            json!({"evaluations": [eval(json!({"name": "KNN"}))]}),
            "spec.evaluations[0].name",
            At("spec.evaluations[0].name"),
        ),
        case(
            "duplicate evaluation names",
            json!({"evaluations": [eval(json!({})), eval(json!({"k": 5}))]}),
            "spec.evaluations[1].name",
            At("spec.evaluations"),
        ),
        case(
            "segmentation on fashion-mnist",
            json!({"evaluations": [eval(json!({"kind": "segmentation", "k": null}))]}),
            "spec.evaluations[0].dataset.format",
            At("spec.evaluations[0].dataset.format"),
        ),
        case(
            "k on a linear svm",
            json!({"evaluations": [eval(json!({"kind": "linearSvm"}))]}),
            "spec.evaluations[0].k",
            At("spec.evaluations[0].k"),
        ),
        case(
            "segmentation mode on another kind",
            json!({"evaluations": [eval(json!({"mode": "finetune"}))]}),
            "spec.evaluations[0].mode",
            At("spec.evaluations[0].mode"),
        ),
        case(
            "too many evaluations",
            json!({"evaluations": (0..17).map(|i| eval(json!({"name": format!("knn-{i}")}))).collect::<Vec<_>>()}),
            "spec.evaluations",
            At("spec.evaluations"),
        ),
        case(
            "privileged metrics port",
            json!({"metrics": {"port": 80}}),
            "spec.metrics.port",
            At("spec.metrics.port"),
        ),
        case(
            "rendezvous on the metrics port",
            json!({"masterPort": 9400}),
            "spec.masterPort",
            At("spec.masterPort"),
        ),
        case(
            "pushgateway without a scheme",
            json!({"metrics": {"pushgateway": "pushgateway:9091"}}),
            "spec.metrics.pushgateway",
            At("spec.metrics.pushgateway"),
        ),
        case(
            "gpus through resources",
            json!({"resources": {"limits": {"nvidia.com/gpu": 1}}}),
            "spec.resources.limits.nvidia.com/gpu",
            OperatorOnly,
        ),
        case(
            "cpu request in words",
            json!({"resources": {"requests": {"cpu": "lots"}}}),
            "spec.resources.requests.cpu",
            At("spec.resources.requests.cpu"),
        ),
        case(
            "kueue queue name with a space",
            json!({"scheduling": {"queueName": "team queue"}}),
            "spec.scheduling.queueName",
            At("spec.scheduling.queueName"),
        ),
        case(
            "claim name with capitals",
            json!({"checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "Runs"}}}}),
            "spec.checkpoint.volume.persistentVolumeClaim.claimName",
            At("spec.checkpoint.volume.persistentVolumeClaim.claimName"),
        ),
        case(
            "toleration with an unknown operator",
            json!({"scheduling": {"tolerations": [{"key": "gpu", "operator": "In"}]}}),
            "spec.scheduling.tolerations[0].operator",
            OperatorOnly,
        ),
        case(
            "stall timeout overflowing every duration type",
            json!({"failurePolicy": {"stallTimeout": "99999999999999999999h"}}),
            "spec.failurePolicy.stallTimeout",
            At("spec.failurePolicy.stallTimeout"),
        ),
        case(
            "negative cpu request",
            json!({"resources": {"requests": {"cpu": "-1"}}}),
            "spec.resources.requests.cpu",
            At("spec.resources.requests.cpu"),
        ),
        case(
            "memory request above its limit",
            json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
            "spec.resources.requests.memory",
            OperatorOnly,
        ),
        case(
            "resource name kubernetes does not know",
            json!({"resources": {"requests": {"gpu": "1"}}}),
            "spec.resources.requests.gpu",
            OperatorOnly,
        ),
        case(
            "checkpoints on the node's root",
            json!({"checkpoint": {"volume": {"persistentVolumeClaim": null, "hostPath": {"path": "/"}}}}),
            "spec.checkpoint.volume.hostPath.path",
            At("spec.checkpoint.volume.hostPath.path"),
        ),
        case(
            "docker socket as the dataset volume",
            json!({"dataset": {"volume": {"hostPath": {"path": "/var/run/docker.sock"}}}}),
            "spec.dataset.volume.hostPath.path",
            At("spec.dataset.volume.hostPath.path"),
        ),
        case(
            "host path hiding /etc behind a double slash",
            json!({"dataset": {"volume": {"hostPath": {"path": "//etc"}}}}),
            "spec.dataset.volume.hostPath.path",
            At("spec.dataset.volume.hostPath.path"),
        ),
        case(
            "evaluation data above the kubelet's state",
            json!({"evaluations": [eval(json!({"dataset": {"volume": {"hostPath": {"path": "/var/lib"}}}}))]}),
            "spec.evaluations[0].dataset.volume.hostPath.path",
            At("spec.evaluations[0].dataset.volume.hostPath.path"),
        ),
        case(
            "knn monitor on segmentation data",
            json!({"monitor": {"knn": monitor(json!({"dataset": {"format": "voc"}}))}}),
            "spec.monitor.knn.dataset.format",
            At("spec.monitor.knn.dataset.format"),
        ),
        case(
            "knn monitor every 0 epochs",
            json!({"monitor": {"knn": monitor(json!({"everyEpochs": 0}))}}),
            "spec.monitor.knn.everyEpochs",
            At("spec.monitor.knn.everyEpochs"),
        ),
        case(
            "knn monitor at temperature 0",
            json!({"monitor": {"knn": monitor(json!({"temperature": 0.0}))}}),
            "spec.monitor.knn.temperature",
            At("spec.monitor.knn.temperature"),
        ),
        case(
            "knn monitor with no neighbours",
            json!({"monitor": {"knn": monitor(json!({"k": 0}))}}),
            "spec.monitor.knn.k",
            At("spec.monitor.knn.k"),
        ),
        case(
            "knn monitor bank beyond the cap",
            json!({"monitor": {"knn": monitor(json!({"maxTrainImages": 100_001}))}}),
            "spec.monitor.knn.maxTrainImages",
            At("spec.monitor.knn.maxTrainImages"),
        ),
        case(
            "knn monitor without queries",
            json!({"monitor": {"knn": monitor(json!({"maxValImages": 0}))}}),
            "spec.monitor.knn.maxValImages",
            At("spec.monitor.knn.maxValImages"),
        ),
        case(
            "knn monitor data outside its volume",
            json!({"monitor": {"knn": monitor(json!({"dataset": {"volume": {"persistentVolumeClaim": {"claimName": "labelled"}, "mountPath": "/labelled"}}}))}}),
            "spec.monitor.knn.dataset.path",
            At("spec.monitor.knn.dataset.path"),
        ),
    ]
}

/// A valid kNN monitor with `extra` merged in.
fn monitor(extra: Value) -> Value {
    merged(
        &json!({"dataset": {"format": "fashionMnist", "path": "/usr/share/datasets/fashion-mnist"}}),
        &extra,
    )
}

#[test]
fn a_knn_monitor_resolves_with_the_paper_defaults() {
    let spec = merged(&base(), &json!({"monitor": {"knn": monitor(json!({}))}}));
    assert!(
        server_errors(&spec).is_empty(),
        "{:?}",
        server_errors(&spec)
    );
    let m = spec_of(&spec)
        .resolve()
        .expect("valid")
        .monitor
        .expect("the monitor");
    assert_eq!((m.every_epochs, m.k, m.temperature), (1, 20, 0.07));
    assert_eq!(
        (m.max_train_images, m.max_val_images),
        (DEFAULT_MONITOR_TRAIN_IMAGES, DEFAULT_MONITOR_VAL_IMAGES)
    );
    assert_eq!(
        m.dataset.format,
        crate::config::EvaluationDatasetFormat::FashionMnist
    );
    // Every fifth epoch of 12, and the last.
    let m = crate::config::KnnMonitorConfig {
        every_epochs: 5,
        ..m
    };
    let due: Vec<u32> = (1..=12).filter(|&e| m.due(e, 12)).collect();
    assert_eq!(due, [5, 10, 12]);
    // Without `monitor`, or with an empty one, nothing runs.
    assert_eq!(spec_of(&base()).resolve().expect("valid").monitor, None);
    let empty = merged(&base(), &json!({"monitor": {}}));
    assert_eq!(spec_of(&empty).resolve().expect("valid").monitor, None);
}

#[test]
fn every_invalid_spec_is_refused_by_resolve_naming_the_field() {
    let mut failures = Vec::new();
    for case in invalid_specs() {
        let spec = merged(&base(), &case.patch);
        match spec_of(&spec).resolve() {
            Ok(_) => failures.push(format!("{}: resolve accepted it", case.name)),
            Err(e) if !e.fields().any(|f| f == case.field) => failures.push(format!(
                "{}: expected {}, resolve reported {e}",
                case.name, case.field
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_invalid_spec_is_refused_by_the_schema_or_a_cel_rule_where_one_applies() {
    let mut failures = Vec::new();
    for case in invalid_specs() {
        let errors = server_errors(&merged(&base(), &case.patch));
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        match case.server {
            At(path) if !paths.contains(&path) => {
                failures.push(format!("{}: expected {path}, got {errors:?}", case.name))
            }
            OperatorOnly if !errors.is_empty() => failures.push(format!(
                "{}: expected only the operator to object, got {errors:?}",
                case.name
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_table_has_at_least_twenty_cases_with_distinct_names() {
    let cases = invalid_specs();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert!(cases.len() >= 20);
    assert_eq!(names.len(), cases.len());
}

#[test]
fn every_violation_message_says_what_would_be_valid() {
    for case in invalid_specs() {
        let Err(e) = spec_of(&merged(&base(), &case.patch)).resolve() else {
            continue;
        };
        for v in e.violations {
            let hint = ["must", "use", "e.g.", "needs", "not", "instead"];
            assert!(
                hint.iter().any(|h| v.message.contains(h)),
                "{}: {v} gives no hint",
                case.name
            );
        }
    }
}

#[test]
fn all_violations_are_reported_at_once() {
    let spec = merged(
        &base(),
        &json!({"nodes": 0, "recipe": {"epochs": 0}, "metrics": {"port": 80}}),
    );
    let e = spec_of(&spec).resolve().expect_err("invalid");
    let fields: Vec<&str> = e.fields().collect();
    assert_eq!(
        fields,
        ["spec.nodes", "spec.recipe.epochs", "spec.metrics.port"]
    );
}

#[test]
fn a_spec_error_reads_as_one_line_naming_each_field() {
    let spec = merged(&base(), &json!({"nodes": 0, "masterPort": 9400}));
    let text = spec_of(&spec).resolve().expect_err("invalid").to_string();
    assert!(!text.contains('\n'));
    assert!(
        text.starts_with("invalid ContrastiveRun spec: spec.nodes: must be between 1 and 1024")
    );
    assert!(text.contains("; spec.masterPort: must differ from spec.metrics.port (9400)"));
}

#[test]
fn image_dataset_and_recipe_cannot_change_after_creation() {
    let old = object(&base());
    for (field, patch) in [
        (
            "spec.image",
            json!({"image": "ghcr.io/kontrast-dev/kontrast-worker:0.2.0"}),
        ),
        (
            "spec.dataset",
            json!({"dataset": {"path": "/usr/share/datasets/fashion-mnist/"}}),
        ),
        ("spec.recipe", json!({"recipe": {"epochs": 3}})),
    ] {
        let new = object(&merged(&base(), &patch));
        let errors = cel_errors(&new, Some(&old));
        assert!(
            errors
                .iter()
                .any(|(p, m)| p == field && m.contains("immutable")),
            "{field}: {errors:?}"
        );
    }
}

#[test]
fn suspending_and_changing_evaluations_are_allowed_updates() {
    let old = object(&base());
    let new = object(&merged(
        &base(),
        &json!({"suspend": true, "nodes": 2, "evaluations": [eval(json!({"k": 50}))], "failurePolicy": {"maxRestarts": 5}}),
    ));
    assert_eq!(cel_errors(&new, Some(&old)), []);
}

#[test]
fn cel_rules_fall_back_to_the_preset_values_like_resolve() {
    // 65536 (preset queue) % 96 != 0, but a 96-multiple queue set explicitly is fine.
    let bad = merged(&base(), &json!({"recipe": {"batchSize": 96, "moco": null}}));
    let good = merged(
        &base(),
        &json!({"recipe": {"batchSize": 96, "moco": {"queueSize": 4800}}}),
    );
    assert!(!cel_errors(&object(&bad), None).is_empty());
    assert_eq!(cel_errors(&object(&good), None), []);
    assert!(spec_of(&good).resolve().is_ok());
    // mocov2 has no small crops, so crop 2 exists only once the spec adds small crops.
    let mocov2 =
        json!({"recipe": {"preset": "mocov2", "crops": null, "autoAugment": {"crops": [0, 2]}}});
    assert!(!cel_errors(&object(&merged(&base(), &mocov2)), None).is_empty());
    let with_small = merged(
        &mocov2,
        &json!({"recipe": {"crops": {"small": {"count": 1}}}}),
    );
    assert_eq!(cel_errors(&object(&merged(&base(), &with_small)), None), []);
}

#[test]
fn every_cel_rule_compiles_and_stays_within_the_cost_budget() {
    use kube::core::cel::{WarningKind, compile_schema, estimate_rule_cost};
    fn walk(schema: &Value, path: &str, problems: &mut Vec<String>) {
        let compiled = compile_schema(schema);
        for e in compiled.compilation_errors() {
            problems.push(format!("{path}: {e}"));
        }
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = rule["rule"].as_str().unwrap_or_default();
            // (kube-cel's scope check mistakes comprehension variables for free ones.)
            for w in estimate_rule_cost(rule, &compiled) {
                if matches!(
                    w.kind,
                    WarningKind::CostExceeded | WarningKind::MissingBounds
                ) {
                    problems.push(format!("{path}: {}: {rule}", w.message));
                }
            }
        }
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            walk(child, &format!("{path}.{name}"), problems);
        }
        if schema["items"].is_object() {
            walk(&schema["items"], &format!("{path}[]"), problems);
        }
    }
    let mut problems = Vec::new();
    walk(crate::testing::schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn schema_defaults_and_serde_defaults_agree() {
    let minimal = json!({
        "image": "kontrast:dev",
        "dataset": {"format": "flat", "path": "/data"},
        "evaluations": [{"name": "svm", "kind": "linearSvm", "dataset": {"format": "voc", "path": "/voc"}}],
    });
    let defaulted = kube::core::cel::apply_defaults(crate::testing::schema(), &object(&minimal));
    assert_eq!(spec_of(&defaulted["spec"]), spec_of(&minimal));
    assert_ne!(defaulted["spec"], minimal, "the schema carries defaults");
}

#[test]
fn revisiting_preset_resolves_to_the_papers_hyper_parameters() {
    let spec = spec_of(&json!({
        "image": "kontrast:dev",
        "dataset": {"format": "flat", "path": "/data/coco/train2017"},
    }));
    let config = spec.resolve().expect("valid");
    assert_eq!(config.preset, Preset::Revisiting);
    let r = &config.recipe;
    assert_eq!((r.arch, r.epochs, r.batch_size), (Arch::Resnet50, 200, 256));
    assert_eq!(
        r.optimizer,
        OptimizerConfig {
            lr: 0.3,
            momentum: 0.9,
            weight_decay: 1e-4,
            schedule: LrSchedule::Cosine
        }
    );
    assert_eq!(
        r.moco,
        MocoConfig {
            dim: 128,
            queue_size: 65536,
            momentum: 0.995,
            temperature: 0.2,
            mlp: true
        }
    );
    assert_eq!(
        (r.crops.large, r.crops.small, r.crops.constrained),
        (
            CropConfig {
                count: 2,
                size: 160,
                scale: [0.2, 1.0]
            },
            CropConfig {
                count: 4,
                size: 96,
                scale: [0.05, 0.14]
            },
            true
        )
    );
    assert_eq!(r.auto_augment_crops, [0, 2, 3, 4, 5]);
    assert_eq!(
        r.knn_loss,
        Some(KnnLossConfig {
            top_k: 20,
            weight: 0.4,
            warmup_epochs: 0
        })
    );
    assert_eq!((r.precision, r.cifar_stem), (Precision::Fp32, false));
    assert_eq!(config.world.batch_size_per_rank, 256);
}

#[test]
fn overrides_replace_only_the_fields_they_name() {
    let config = spec_of(&base()).resolve().expect("valid");
    let r = &config.recipe;
    assert_eq!(
        (r.arch, r.cifar_stem, r.epochs, r.batch_size),
        (Arch::Resnet18, true, 2, 64)
    );
    assert_eq!(r.moco.queue_size, 4096);
    assert_eq!(r.moco.momentum, 0.995, "the preset's");
    assert_eq!((r.crops.large.size, r.crops.large.count), (28, 2));
    assert_eq!((r.crops.small.size, r.crops.small.count), (14, 4));
    assert_eq!(r.crops.small.scale, [0.05, 0.14], "the preset's");
}

#[test]
fn the_per_rank_batch_is_the_global_batch_over_the_world() {
    let gpu = merged(
        &base(),
        &json!({"nodes": 2, "gpusPerNode": 8, "recipe": {"batchSize": 256}}),
    );
    let world = spec_of(&gpu).resolve().expect("valid").world;
    assert_eq!(
        (
            world.procs_per_node,
            world.world_size,
            world.batch_size_per_rank
        ),
        (8, 16, 16)
    );
    let cpu = spec_of(&base()).resolve().expect("valid").world;
    assert_eq!(
        (cpu.procs_per_node, cpu.world_size, cpu.batch_size_per_rank),
        (1, 2, 32)
    );
}

#[test]
fn a_knn_loss_block_under_mocov2_turns_the_papers_loss_on() {
    let spec = merged(
        &base(),
        &json!({"recipe": {"preset": "mocov2", "crops": null, "knnLoss": {"topK": 10}}}),
    );
    let r = spec_of(&spec).resolve().expect("valid").recipe;
    assert_eq!(
        r.knn_loss,
        Some(KnnLossConfig {
            top_k: 10,
            weight: 0.4,
            warmup_epochs: 0
        })
    );
    let plain = merged(
        &base(),
        &json!({"recipe": {"preset": "mocov2", "crops": null}}),
    );
    assert_eq!(
        spec_of(&plain).resolve().expect("valid").recipe.knn_loss,
        None
    );
}

#[test]
fn knn_loss_enabled_false_switches_the_presets_loss_off() {
    let spec = merged(&base(), &json!({"recipe": {"knnLoss": {"enabled": false}}}));
    assert_eq!(
        spec_of(&spec).resolve().expect("valid").recipe.knn_loss,
        None
    );
    assert_eq!(server_errors(&spec), []);
}

#[test]
fn evaluation_parameters_default_by_kind_and_dataset() {
    let spec = merged(
        &base(),
        &json!({"evaluations": [
            {"name": "knn", "kind": "knn", "dataset": {"format": "imagefolder", "path": "/in"}},
            {"name": "svm", "kind": "linearSvm", "dataset": {"format": "voc", "path": "/voc"}},
            {"name": "seg-voc", "kind": "segmentation", "dataset": {"format": "voc", "path": "/voc"}},
            {"name": "seg-city", "kind": "segmentation", "mode": "finetune", "dataset": {"format": "cityscapes", "path": "/city"}},
            {"name": "davis", "kind": "davis", "gpus": 1, "dataset": {"format": "davis", "path": "/davis"}},
            {"name": "retrieval", "kind": "retrieval", "dataset": {"format": "voc", "path": "/voc"}},
        ]}),
    );
    let config = spec_of(&spec).resolve().expect("valid");
    let tasks: Vec<EvaluationTask> = config.evaluations.iter().map(|e| e.task).collect();
    assert_eq!(
        tasks,
        [
            EvaluationTask::Knn {
                k: 20,
                temperature: 0.07
            },
            EvaluationTask::LinearSvm { cost: 0.5 },
            EvaluationTask::Segmentation {
                epochs: 45,
                batch_size: 16,
                mode: SegmentationMode::Linear
            },
            EvaluationTask::Segmentation {
                epochs: 150,
                batch_size: 8,
                mode: SegmentationMode::Finetune
            },
            EvaluationTask::Davis {
                k: 10,
                temperature: 0.07
            },
            EvaluationTask::Retrieval,
        ]
    );
    assert_eq!(config.evaluation("davis").map(|e| e.gpus), Some(1));
}

#[test]
fn the_segmentation_mode_round_trips_and_defaults_to_linear() {
    for (text, mode) in [
        ("linear", SegmentationMode::Linear),
        ("finetune", SegmentationMode::Finetune),
    ] {
        assert_eq!(serde_json::to_value(mode).expect("serialise"), json!(text));
        let spec: EvaluationSpec = serde_json::from_value(json!({
            "name": "seg", "kind": "segmentation", "mode": text,
            "dataset": {"format": "voc", "path": "/voc"}
        }))
        .expect("deserialise");
        assert_eq!(spec.mode, Some(mode));
        let again: EvaluationSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("serialise"))
                .expect("deserialise");
        assert_eq!(again, spec);
        // The resolved task carries it through the run config the Job reads.
        let task = EvaluationTask::Segmentation {
            epochs: 3,
            batch_size: 2,
            mode,
        };
        let back: EvaluationTask =
            serde_json::from_value(serde_json::to_value(task).expect("serialise"))
                .expect("deserialise");
        assert_eq!(back, task);
    }
    assert!(
        serde_json::from_value::<SegmentationMode>(json!("Finetune")).is_err(),
        "camelCase only"
    );
    assert_eq!(SegmentationMode::default(), SegmentationMode::Linear);
    // A resolved config written before the field reads as the linear probe.
    let old: EvaluationTask =
        serde_json::from_value(json!({"kind": "segmentation", "epochs": 45, "batchSize": 16}))
            .expect("deserialise");
    assert_eq!(
        old,
        EvaluationTask::Segmentation {
            epochs: 45,
            batch_size: 16,
            mode: SegmentationMode::Linear
        }
    );
}

#[test]
fn the_operator_refuses_a_segmentation_mode_on_another_kind() {
    let spec = merged(
        &base(),
        &json!({"evaluations": [eval(json!({"mode": "linear"}))]}),
    );
    let err = spec_of(&spec)
        .resolve()
        .expect_err("mode on knn")
        .to_string();
    assert!(
        err.contains("spec.evaluations[0].mode")
            && err.contains("applies only to kind segmentation"),
        "{err}"
    );
}

#[test]
fn the_run_config_round_trips_through_json() {
    let config = spec_of(&merged(
        &base(),
        &json!({"metrics": {"pushgateway": "http://pushgateway:9091"}}),
    ))
    .resolve()
    .expect("valid");
    let text = config.to_json();
    assert_eq!(RunConfig::from_json(&text).expect("reads back"), config);
    let json: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(json["apiVersion"], "kontrast.dev/run-config/v1");
    assert_eq!(json["evaluations"][0]["kind"], "knn");
    assert_eq!(json["world"]["batchSizePerRank"], 32);
}

#[test]
fn a_run_config_of_another_version_is_refused() {
    let mut json: Value =
        serde_json::from_str(&spec_of(&base()).resolve().expect("valid").to_json()).expect("JSON");
    json["apiVersion"] = "kontrast.dev/run-config/v2".into();
    let e = RunConfig::from_json(&json.to_string()).expect_err("other version");
    assert!(e.to_string().contains("run-config/v2"), "{e}");
}

#[test]
fn mount_paths_default_to_the_data_they_hold() {
    let spec = spec_of(&base());
    assert_eq!(
        spec.dataset.mount_path(),
        "/usr/share/datasets/fashion-mnist"
    );
    assert_eq!(spec.checkpoint.mount_path(), DEFAULT_CHECKPOINT_MOUNT_PATH);
    let volume = spec.checkpoint.volume.as_ref().expect("set");
    assert!(
        matches!(volume.source(), Some(VolumeSource::PersistentVolumeClaim(p)) if p.claim_name == "runs")
    );
}

mod examples {
    use super::*;

    fn example(name: &str) -> (Value, ContrastiveRun) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let value: Value = serde_saphyr::from_str(&text).expect("the example is YAML");
        let run: ContrastiveRun =
            serde_json::from_value(value.clone()).expect("the example is a ContrastiveRun");
        (value, run)
    }

    fn check(name: &str) -> RunConfig {
        let (value, run) = example(name);
        let mut errors = schema_errors(&value);
        errors.extend(cel_errors(&value, None));
        assert_eq!(errors, [], "{name}: the apiserver would refuse it");
        run.spec.resolve().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_quickstart_example_is_a_valid_two_node_cpu_run() {
        let config = check("quickstart.yaml");
        assert_eq!((config.world.nodes, config.world.gpus_per_node), (2, 0));
        assert_eq!(config.recipe.arch, Arch::Resnet18);
        assert!(config.recipe.cifar_stem);
        // The tuned small-data recipe of docs/training.md: 12 epochs at lr 0.12 with the kNN loss.
        assert_eq!(config.recipe.epochs, 12);
        assert_eq!(config.recipe.optimizer.lr, 0.12);
        assert_eq!(
            config.recipe.knn_loss,
            Some(KnnLossConfig {
                top_k: 20,
                weight: 0.4,
                warmup_epochs: 0
            })
        );
        assert_eq!(
            config.evaluations[0].task.kind(),
            crate::config::EvaluationKind::Knn
        );
    }

    #[test]
    fn the_coco_revisiting_example_is_a_valid_sixteen_gpu_run() {
        let config = check("coco-revisiting.yaml");
        assert_eq!((config.world.world_size, config.recipe.epochs), (16, 200));
        assert_eq!(config.preset, Preset::Revisiting);
        let kinds: Vec<_> = config.evaluations.iter().map(|e| e.task.kind()).collect();
        use crate::config::EvaluationKind::*;
        assert_eq!(kinds, [LinearSvm, Segmentation, Davis]);
        assert!(matches!(
            config.evaluations[1].task,
            crate::config::EvaluationTask::Segmentation {
                mode: crate::config::SegmentationMode::Finetune,
                epochs: 45,
                batch_size: 16,
            }
        ));
    }

    #[test]
    fn the_mocov2_example_is_valid() {
        let config = check("mocov2.yaml");
        assert_eq!(config.preset, Preset::Mocov2);
        assert_eq!(config.recipe.knn_loss, None);
    }
}
