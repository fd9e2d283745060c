//! Evaluations run as Jobs once training has succeeded.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::dataset::DataVolume;
use super::limits::*;
use super::rules;
use crate::config::{EvaluationDatasetFormat, EvaluationKind, SegmentationMode};

/// One evaluation of the trained encoder.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rules::evaluation_format_suits_kind(),
    validation = rules::parameter_only_for("k", &[EvaluationKind::Knn, EvaluationKind::Davis]),
    validation = rules::parameter_only_for("temperature", &[EvaluationKind::Knn, EvaluationKind::Davis]),
    validation = rules::parameter_only_for("cost", &[EvaluationKind::LinearSvm]),
    validation = rules::parameter_only_for("epochs", &[EvaluationKind::Segmentation]),
    validation = rules::parameter_only_for("batchSize", &[EvaluationKind::Segmentation]),
    validation = rules::parameter_only_for("mode", &[EvaluationKind::Segmentation])
)]
pub struct EvaluationSpec {
    /// Unique name (a DNS label); its results appear under `status.results.<name>`.
    #[schemars(length(min = 1, max = MAX_DNS_LABEL_LENGTH), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// Protocol: `knn` (weighted kNN top-1), `linearSvm` (VOC07 SVM mAP), `segmentation`
    /// (mIoU of a linear probe or of fine-tuning, see `mode`), `davis` (DAVIS-2017 propagation
    /// J&F) or `retrieval` (segment retrieval).
    pub kind: EvaluationKind,
    /// The evaluation data. knn reads imagefolder or fashionMnist; linearSvm voc, imagefolder or
    /// fashionMnist; segmentation voc or cityscapes; davis davis; retrieval voc.
    pub dataset: EvaluationDataset,
    /// Neighbours: knn (default 20) or davis (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EVAL_K))]
    pub k: Option<u32>,
    /// Temperature, greater than 0: knn vote weights or davis affinities (default 0.07).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE), extend("exclusiveMinimum" = true))]
    pub temperature: Option<f64>,
    /// linearSvm cost C, greater than 0 (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_SVM_COST), extend("exclusiveMinimum" = true))]
    pub cost: Option<f64>,
    /// segmentation training epochs, either mode (default 45 on voc, 150 on cityscapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EVAL_EPOCHS))]
    pub epochs: Option<u32>,
    /// segmentation training batch size, either mode (default 16 on voc, 8 on cityscapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EVAL_BATCH_SIZE))]
    pub batch_size: Option<u32>,
    /// segmentation only: `linear` (default) or `finetune` (the description is the type's:
    /// the schema generator keeps that one for an optional enum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SegmentationMode>,
    /// GPUs of the evaluation Job; 0 runs it on CPU.
    #[serde(default)]
    #[schemars(range(max = MAX_GPUS_PER_NODE))]
    pub gpus: u32,
}

/// An evaluation dataset.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::dataset_inside_mount())]
pub struct EvaluationDataset {
    /// On-disk layout: `imagefolder` (`train/` and `val/`, a sub-directory per class), `voc`,
    /// `cityscapes`, `davis` or `fashionMnist`.
    pub format: EvaluationDatasetFormat,
    /// Absolute path of the dataset inside the container that reads it (the evaluation Job's, or
    /// every worker pod's for the kNN monitor), without `..` components.
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub path: String,
    /// Volume holding the dataset, mounted read-only unless it says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DataVolume>,
}

impl EvaluationDataset {
    /// Where to mount the dataset's volume.
    pub fn mount_path(&self) -> &str {
        match &self.volume {
            Some(volume) => volume.mount_path_or(&self.path),
            None => &self.path,
        }
    }
}
