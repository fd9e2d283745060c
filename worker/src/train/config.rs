//! Where a training process gets its run config: the file the operator mounts
//! (`KONTRAST_CONFIG`), a file given on the command line, or — outside Kubernetes — the embedded
//! quickstart run, adjusted by a few flags and validated by the same rules as a
//! `ContrastiveRun`.
use std::path::Path;

use kontrast_api::config::RunConfig;
use kontrast_api::v1alpha1::ContrastiveRunSpec;
use serde_json::{Value, json};

use super::error::TrainError;

/// The quickstart run (`examples/quickstart.yaml`) on one machine: the small-data recipe of
/// `docs/training.md` on Fashion-MNIST from Debian's `dataset-fashion-mnist` — MoCo v2 with a
/// width-8 ResNet-18 at the images' full 28 px (CIFAR stem), which learns per epoch as fast as
/// the full width for a fraction of the compute, with the Revisiting kNN loss and lr 0.12: the
/// variant whose kNN accuracy passes raw pixels within 15 minutes on two cores.
fn quickstart_spec() -> Value {
    json!({
        "image": "kontrast",
        "nodes": 1,
        "gpusPerNode": 0,
        "dataset": {"format": "fashionMnist", "path": "/usr/share/datasets/fashion-mnist"},
        "recipe": {
            "preset": "mocov2",
            "arch": "resnet18",
            "width": 8,
            "cifarStem": true,
            "epochs": 12,
            "batchSize": 128,
            "optimizer": {"lr": 0.12},
            "moco": {"queueSize": 4096, "momentum": 0.99, "temperature": 0.1},
            "knnLoss": {"topK": 20, "weight": 0.4, "warmupEpochs": 0},
            "crops": {"large": {"size": 28}}
        },
        "checkpoint": {"keep": 2}
    })
}

/// Changes to the embedded run, from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `dataset.path`.
    pub dataset: Option<String>,
    /// `dataset.format` (camelCase, as in the manifest).
    pub dataset_format: Option<String>,
    /// `recipe.epochs`.
    pub epochs: Option<u32>,
    /// `recipe.batchSize`.
    pub batch_size: Option<u32>,
    /// `recipe.optimizer.lr`.
    pub lr: Option<f64>,
    /// `recipe.moco.queueSize`.
    pub queue_size: Option<u32>,
}

/// Reads and checks a run-config document (JSON, as the operator writes it).
pub fn load(path: &Path) -> Result<RunConfig, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    RunConfig::from_json(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

/// The embedded quickstart run with `overrides` applied, resolved like a `ContrastiveRun`.
pub fn standalone(overrides: &Overrides) -> Result<RunConfig, TrainError> {
    let mut spec = quickstart_spec();
    if let Some(p) = &overrides.dataset {
        spec["dataset"]["path"] = json!(p);
    }
    if let Some(f) = &overrides.dataset_format {
        spec["dataset"]["format"] = json!(f);
    }
    if let Some(e) = overrides.epochs {
        spec["recipe"]["epochs"] = json!(e);
    }
    if let Some(b) = overrides.batch_size {
        spec["recipe"]["batchSize"] = json!(b);
    }
    if let Some(lr) = overrides.lr {
        spec["recipe"]["optimizer"]["lr"] = json!(lr);
    }
    if let Some(q) = overrides.queue_size {
        spec["recipe"]["moco"]["queueSize"] = json!(q);
    }
    let spec: ContrastiveRunSpec = serde_json::from_value(spec)
        .map_err(|e| TrainError::Config(format!("command-line overrides: {e}")))?;
    spec.resolve()
        .map_err(|e| TrainError::Config(format!("command-line overrides: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_run_resolves() {
        let config = standalone(&Overrides::default()).expect("quickstart resolves");
        assert_eq!(config.world.world_size, 1);
        assert_eq!(config.recipe.batch_size, 128);
        assert_eq!((config.recipe.width, config.recipe.epochs), (8, 12));
        let knn = config
            .recipe
            .knn_loss
            .expect("the quickstart uses the kNN loss");
        assert_eq!((knn.top_k, knn.warmup_epochs), (20, 0));
    }

    #[test]
    fn an_override_breaking_a_rule_is_rejected_with_the_field_named() {
        let err = standalone(&Overrides {
            queue_size: Some(1000),
            ..Overrides::default()
        })
        .expect_err("1000 is not a multiple of 128");
        assert!(err.to_string().contains("queueSize"), "{err}");
    }
}
