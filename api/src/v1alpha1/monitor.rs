//! Monitors evaluated while the run trains.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::evaluation::EvaluationDataset;
use super::limits::*;
use super::rules;

/// Defaults of the kNN monitor (the paper's kNN protocol, with caps that keep it cheap).
pub const DEFAULT_MONITOR_K: u32 = 20;
/// Default vote temperature of the kNN monitor.
pub const DEFAULT_MONITOR_TEMPERATURE: f64 = 0.07;
/// Default cap on the kNN monitor's memory bank.
pub const DEFAULT_MONITOR_TRAIN_IMAGES: u32 = 10_000;
/// Default cap on the kNN monitor's queries.
pub const DEFAULT_MONITOR_VAL_IMAGES: u32 = 2_000;

/// Representation-quality monitors evaluated during training.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSpec {
    /// Weighted kNN classification of a small labelled split every few epochs, on rank 0; its
    /// result appears in `status.progress.knnMonitor` and as the worker's
    /// `kontrast_knn_monitor_top1`/`_top5` gauges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn: Option<KnnMonitorSpec>,
}

/// The kNN monitor: the `knn` evaluation's protocol (k nearest cosine neighbours of the
/// L2-normalised pooled features, votes weighted exp(similarity / temperature)) on a capped
/// labelled split, run by rank 0 after every `everyEpochs`-th epoch and after the last.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::monitor_format_is_labelled())]
pub struct KnnMonitorSpec {
    /// Evaluate after every this many epochs (and after the last).
    #[serde(default = "default_every_epochs")]
    #[schemars(range(min = 1, max = MAX_EPOCHS))]
    pub every_epochs: u32,
    /// The labelled data: `fashionMnist` (the `train` IDX files are the memory bank, `t10k` the
    /// queries) or `imagefolder` (`train/` and `val/`). Its volume, if any, is mounted read-only
    /// into every worker pod.
    pub dataset: EvaluationDataset,
    /// Neighbours (default 20).
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = MAX_EVAL_K))]
    pub k: u32,
    /// Temperature of the vote weights, greater than 0 (default 0.07).
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE), extend("exclusiveMinimum" = true))]
    pub temperature: f64,
    /// Most memory-bank images, taken evenly spaced from the train split (default 10000).
    #[serde(default = "default_train_images")]
    #[schemars(range(min = 1, max = MAX_MONITOR_IMAGES))]
    pub max_train_images: u32,
    /// Most query images, taken evenly spaced from the test or val split (default 2000).
    #[serde(default = "default_val_images")]
    #[schemars(range(min = 1, max = MAX_MONITOR_IMAGES))]
    pub max_val_images: u32,
}

fn default_every_epochs() -> u32 {
    1
}

fn default_k() -> u32 {
    DEFAULT_MONITOR_K
}

fn default_temperature() -> f64 {
    DEFAULT_MONITOR_TEMPERATURE
}

fn default_train_images() -> u32 {
    DEFAULT_MONITOR_TRAIN_IMAGES
}

fn default_val_images() -> u32 {
    DEFAULT_MONITOR_VAL_IMAGES
}
