//! Hostile documents against the two parsers of this crate: the `ContrastiveRun` spec (serde, then
//! `resolve()`) and the run-config document the worker reads (`RunConfig::from_json`). Valid
//! documents get values of every JSON type, huge and negative numbers, odd strings and missing
//! or extra keys at random places, plus byte-level damage to their text, with fixed seeds. Each
//! must parse and resolve, or be refused: by serde with a message, or by `resolve` with
//! violations that each name a `spec.` field. Never a panic (tests build with overflow checks).

#[path = "../../data/tests/fuzzing/mod.rs"]
mod fuzzing;

use fuzzing::{PeakAlloc, Rng, Tally, check, mutate, seeds};
use kontrast_api::config::RunConfig;
use kontrast_api::v1alpha1::{ContrastiveRun, ContrastiveRunSpec};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const MB: usize = 1 << 20;

/// A valid spec that sets most optional fields, so that mutations reach every check.
fn base_spec() -> Value {
    json!({
        "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "nodes": 2,
        "gpusPerNode": 0,
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        "dataset": {
            "format": "flat",
            "path": "/data/coco/train2017",
            "annotations": "/data/coco/annotations/instances_train2017.json",
            "volume": {"mountPath": "/data/coco", "persistentVolumeClaim": {"claimName": "coco"}}
        },
        "recipe": {
            "preset": "revisiting",
            "arch": "resnet18",
            "cifarStem": true,
            "width": 32,
            "epochs": 4,
            "batchSize": 64,
            "precision": "bf16",
            "optimizer": {"lr": 0.03, "momentum": 0.9, "weightDecay": 0.0001, "schedule": "cosine"},
            "moco": {"dim": 128, "queueSize": 4096, "momentum": 0.99, "temperature": 0.2, "mlp": true},
            "crops": {
                "large": {"count": 2, "size": 28, "scale": [0.2, 1.0]},
                "small": {"count": 4, "size": 14, "scale": [0.05, 0.14]},
                "constrained": true
            },
            "autoAugment": {"crops": [0, 2, 3]},
            "knnLoss": {"enabled": true, "topK": 20, "weight": 0.5, "warmupEpochs": 1}
        },
        "checkpoint": {
            "everyEpochs": 1,
            "keep": 2,
            "volume": {"nfs": {"server": "nfs.example", "path": "/exports/runs"}}
        },
        "failurePolicy": {"maxRestarts": 3, "stallTimeout": "1h30m"},
        "evaluations": [
            {"name": "knn", "kind": "knn", "k": 20, "temperature": 0.07,
             "dataset": {"format": "fashionMnist", "path": "/usr/share/datasets/fashion-mnist",
                         "volume": {"hostPath": {"path": "/usr/share/datasets/fashion-mnist"}}}},
            {"name": "voc07-svm", "kind": "linearSvm", "cost": 0.5, "gpus": 1,
             "dataset": {"format": "voc", "path": "/data/voc/VOC2007"}},
            {"name": "seg", "kind": "segmentation", "epochs": 3, "batchSize": 8,
             "dataset": {"format": "cityscapes", "path": "/data/cityscapes"}},
            {"name": "davis", "kind": "davis", "k": 10,
             "dataset": {"format": "davis", "path": "/data/davis"}}
        ],
        "metrics": {"port": 9400, "pushgateway": "http://pushgateway.monitoring:9091"},
        "suspend": false,
        "scheduling": {
            "schedulerName": "volcano",
            "queueName": "research",
            "priorityClassName": "batch-low",
            "nodeSelector": {"kontrast.dev/pool": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "gangScheduler": "volcano"
        },
        "masterPort": 29500
    })
}

/// A JSON value of a random type: boundary numbers, odd strings, small containers.
fn random_value(rng: &mut Rng, depth: u32) -> Value {
    let kind = rng.below(if depth > 2 { 4 } else { 6 });
    random_of(rng, depth, kind)
}

/// A random value of the same JSON type as `like` (so that it gets past serde to `resolve`).
fn random_like(rng: &mut Rng, like: &Value) -> Value {
    match like {
        Value::Number(_) => random_of(rng, 0, 2),
        Value::String(_) => random_of(rng, 0, 3),
        Value::Bool(_) => random_of(rng, 0, 1),
        _ => random_value(rng, 0),
    }
}

/// A random value of kind `kind`: null, bool, number, string, array or object.
fn random_of(rng: &mut Rng, depth: u32, kind: usize) -> Value {
    match kind {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => {
            let numbers = [
                json!(0),
                json!(1),
                json!(-1),
                json!(2),
                json!(u16::MAX),
                json!(u32::MAX),
                json!(u64::from(u32::MAX) + 1),
                json!(i64::MIN),
                json!(u64::MAX),
                json!(0.5),
                json!(-0.0),
                json!(1e-308),
                json!(1.7976931348623157e308),
                json!(-1e300),
                json!(3.0),
            ];
            rng.pick(&numbers).clone()
        }
        3 => {
            let strings = [
                "",
                "a",
                "..",
                "/",
                "/a/../b",
                "/data/coco",
                "knn",
                "flat",
                "voc",
                "resnet50",
                "fp16",
                "15m",
                "0s",
                "99999999999999999999h",
                "1.5.5h",
                "\u{b5}s",
                "1e999",
                "http://",
                "http://x y",
                "NaN",
                "-Infinity",
                "\u{0}",
                "\u{1F4A5}",
                "-",
                "A",
            ];
            let mut s = rng.pick(&strings).to_string();
            if rng.one_in(8) {
                s = s.repeat(1 + rng.below(400));
            }
            Value::String(s)
        }
        4 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = ["name", "kind", "count", "path", "", "k", "x"];
            Value::Object(
                (0..rng.below(4))
                    .map(|_| (rng.pick(&keys).to_string(), random_value(rng, depth + 1)))
                    .collect(),
            )
        }
    }
}

/// JSON pointers of every value in `doc` (the root included).
fn pointers(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    walk(
                        child,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out);
    out
}

/// One to three structural mutations of `doc`; returns what they were.
fn mutate_value(rng: &mut Rng, doc: &mut Value) -> String {
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let all = pointers(doc);
        let at = rng.pick(&all).clone();
        match rng.below(4) {
            0 | 1 => {
                let value = match doc.pointer(&at) {
                    Some(like) if rng.one_in(2) => random_like(rng, like),
                    _ => random_value(rng, 0),
                };
                what.push(format!("{at} = {}", short(&value)));
                if let Some(slot) = doc.pointer_mut(&at) {
                    *slot = value;
                }
            }
            2 => {
                // Remove the value from its parent.
                let Some((parent, key)) = at.rsplit_once('/') else {
                    continue;
                };
                let key = key.replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&key);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = key.parse::<usize>()
                            && i < items.len()
                        {
                            items.remove(i);
                        }
                    }
                    _ => {}
                }
                what.push(format!("{at} removed"));
            }
            _ => {
                // Duplicate an array's item (a second evaluation of the same name, ...), or add
                // a random key to an object.
                let value = random_value(rng, 1);
                match doc.pointer_mut(&at) {
                    Some(Value::Array(items)) if !items.is_empty() => {
                        let item = items[rng.below(items.len())].clone();
                        items.push(item);
                        what.push(format!("{at}: an item repeated"));
                    }
                    Some(Value::Object(map)) => {
                        what.push(format!("{at}/extra = {}", short(&value)));
                        map.insert("extra".into(), value);
                    }
                    _ => {}
                }
            }
        }
    }
    what.join(", ")
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A mutated spec document: structural edits, or byte damage to its text.
fn mutated_text(rng: &mut Rng, base: &Value) -> (String, String) {
    if rng.one_in(4) {
        let text = serde_json::to_string(base).expect("serialises");
        let (bytes, what) = mutate(rng, text.as_bytes());
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            format!("text: {what}"),
        )
    } else {
        let mut doc = base.clone();
        let what = mutate_value(rng, &mut doc);
        (doc.to_string(), what)
    }
}

/// Parses and resolves a spec: serde's error, or `resolve`'s violations, each naming a field.
fn resolve(text: &str) -> Result<Option<RunConfig>, String> {
    let spec: ContrastiveRunSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match spec.resolve() {
        Ok(config) => Ok(Some(config)),
        Err(e) => {
            assert!(!e.violations.is_empty(), "a SpecError without violations");
            for v in &e.violations {
                assert!(
                    v.field.starts_with("spec."),
                    "violation without a field: {v}"
                );
                assert!(
                    !v.message.trim().is_empty(),
                    "violation without a message: {v}"
                );
            }
            // A refused spec is not an error of the parser: report it as accepted input.
            Ok(None)
        }
    }
}

#[test]
fn the_base_documents_are_valid() {
    let config = resolve(&base_spec().to_string())
        .expect("parses")
        .expect("resolves");
    let again = RunConfig::from_json(&config.to_json()).expect("round-trips");
    assert_eq!(again, config);
}

#[test]
fn specs_with_hostile_values_resolve_or_name_the_field() {
    const TEST: &str = "specs_with_hostile_values_resolve_or_name_the_field";
    let base = base_spec();
    let (mut resolved, mut refused) = (0u64, 0u64);
    let mut tally = Tally::default();
    for seed in seeds(TEST, 4000) {
        let mut rng = Rng::new(seed);
        let (text, what) = mutated_text(&mut rng, &base);
        tally.add(check(TEST, seed, &what, 64 * text.len() + MB, || {
            let outcome = resolve(&text)?;
            match &outcome {
                Some(config) => {
                    resolved += 1;
                    // What the operator writes, the worker reads back unchanged.
                    let again = RunConfig::from_json(&config.to_json())
                        .expect("a resolved config reads back");
                    assert_eq!(&again, config);
                }
                None => refused += 1,
            }
            // The whole resource parses the same way.
            let object = format!(
                r#"{{"apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
                    "metadata": {{"name": "r"}}, "spec": {text}}}"#
            );
            let _ = serde_json::from_str::<ContrastiveRun>(&object);
            Ok::<_, String>(())
        }));
    }
    tally.report(TEST);
    println!("{TEST}: {resolved} resolved, {refused} refused by resolve()");
    if !fuzzing::replaying() {
        assert!(resolved > 0 && refused > 0 && tally.refused > 0);
    }
}

#[test]
fn run_config_documents_with_hostile_values_parse_or_fail_with_a_message() {
    const TEST: &str = "run_config_documents_with_hostile_values_parse_or_fail_with_a_message";
    let config = resolve(&base_spec().to_string())
        .expect("parses")
        .expect("resolves");
    let base: Value = serde_json::from_str(&config.to_json()).expect("JSON");
    let mut tally = Tally::default();
    for seed in seeds(TEST, 4000) {
        let mut rng = Rng::new(seed);
        let (text, what) = mutated_text(&mut rng, &base);
        tally.add(check(TEST, seed, &what, 64 * text.len() + MB, || {
            let parsed = RunConfig::from_json(&text)?;
            let again = RunConfig::from_json(&parsed.to_json()).expect("reads back");
            assert_eq!(again, parsed);
            Ok::<_, kontrast_api::config::ConfigError>(())
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn crop_counts_whose_sum_overflows_are_violations_not_a_panic() {
    // Regression: large.count + small.count overflowed u32 in the crop total (a debug panic).
    let mut spec = base_spec();
    spec["recipe"]["crops"]["large"]["count"] = json!(u32::MAX);
    spec["recipe"]["crops"]["small"]["count"] = json!(1);
    let spec: ContrastiveRunSpec = serde_json::from_value(spec).expect("parses");
    let err = spec.resolve().expect_err("absurd crop counts");
    let fields: Vec<&str> = err.fields().collect();
    assert!(fields.contains(&"spec.recipe.crops.large.count"), "{err}");
}
