//! The resolved run configuration: what the operator writes into the run's ConfigMap and the
//! worker reads (`KONTRAST_CONFIG`). Presets and defaults are already applied and every rule has
//! been checked ([`ContrastiveRunSpec::resolve`](crate::v1alpha1::ContrastiveRunSpec::resolve)),
//! so nothing downstream re-validates. No Kubernetes types: the worker does not know the cluster.
//!
//! The small enums below are shared with the `ContrastiveRun` schema, which spells them the same.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `apiVersion` of the run-config document this crate writes and reads.
pub const API_VERSION: &str = "kontrast.dev/run-config/v1";
/// ConfigMap key (and file name) under which the operator stores the run config.
pub const CONFIG_KEY: &str = "run-config.json";

/// Named starting point of a recipe.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Preset {
    /// MoCo v2: two 224 px crops, no kNN loss.
    Mocov2,
    /// "Revisiting Contrastive Methods": constrained multi-crop, AutoAugment and the kNN loss.
    #[default]
    Revisiting,
}

/// Backbone architecture (torchvision ResNet v1.5).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Arch {
    /// ResNet-18, 512-d features.
    Resnet18,
    /// ResNet-50, 2048-d features.
    Resnet50,
}

impl Arch {
    /// Width of the backbone's pooled features (the kNN loss's second queue has this many rows).
    pub fn feature_dim(self) -> u32 {
        match self {
            Arch::Resnet18 => 512,
            Arch::Resnet50 => 2048,
        }
    }
}

/// Numeric precision of the forward and backward passes.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    /// Full precision everywhere.
    Fp32,
    /// bfloat16 autocast (GPU or CPU); master weights stay fp32.
    Bf16,
    /// float16 autocast with loss scaling; GPU only.
    Fp16,
}

/// Learning-rate schedule over epochs.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LrSchedule {
    /// `lr = base · 0.5 · (1 + cos(π · epoch / epochs))`, updated per epoch.
    Cosine,
    /// The base learning rate throughout.
    Constant,
}

/// On-disk layout of the pre-training images.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DatasetFormat {
    /// One sub-directory per class, images inside (labels ignored for pre-training).
    Imagefolder,
    /// A directory of images, searched recursively (COCO train2017).
    Flat,
    /// The Fashion-MNIST IDX files (`train-images-idx3-ubyte[.gz]` and friends).
    FashionMnist,
}

/// On-disk layout of an evaluation dataset.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EvaluationDatasetFormat {
    /// `train/` and `val/` directories, one sub-directory per class.
    Imagefolder,
    /// PASCAL VOC (`VOC2007`/`VOC2012`: `JPEGImages`, `Annotations`, `SegmentationClass`, `ImageSets`).
    Voc,
    /// Cityscapes (`leftImg8bit`, `gtFine` with `labelIds`).
    Cityscapes,
    /// DAVIS-2017 (`JPEGImages/480p`, `Annotations/480p`, `ImageSets/2017`).
    Davis,
    /// The Fashion-MNIST IDX files (train and test splits).
    FashionMnist,
}

/// What an evaluation measures.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EvaluationKind {
    /// Weighted k-nearest-neighbour classification on frozen features (`top1`).
    Knn,
    /// VOC07 one-vs-rest linear SVMs on frozen features (`mAP`).
    LinearSvm,
    /// Semantic segmentation by full fine-tuning (`mIoU`).
    Segmentation,
    /// DAVIS-2017 video object segmentation by label propagation (`J&F`).
    Davis,
    /// Segment retrieval by nearest prototype (`mIoU`).
    Retrieval,
}

/// segmentation only: `linear` (default) trains a linear probe on the frozen backbone's dilated
/// features; `finetune` fine-tunes the whole backbone with a two-layer 3×3 head, the paper's
/// protocol (voc: SGD lr 0.003, step decay; cityscapes: Adam lr 1e-4, poly decay).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum SegmentationMode {
    /// A linear probe: the frozen backbone's dilated features, standardised, and a 1×1
    /// convolution (the cheap signal).
    #[default]
    Linear,
    /// The paper's protocol: the whole backbone fine-tuned with a two-layer 3×3 head.
    Finetune,
}

impl EvaluationKind {
    /// The dataset formats this kind can read.
    pub fn formats(self) -> &'static [EvaluationDatasetFormat] {
        use EvaluationDatasetFormat::*;
        match self {
            EvaluationKind::Knn => &[Imagefolder, FashionMnist],
            EvaluationKind::LinearSvm => &[Voc, Imagefolder, FashionMnist],
            EvaluationKind::Segmentation => &[Voc, Cityscapes],
            EvaluationKind::Davis => &[Davis],
            EvaluationKind::Retrieval => &[Voc],
        }
    }
}

/// The resolved configuration of one run: versioned, complete and already valid.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunConfig {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The preset the recipe started from (informational: every value below is explicit).
    pub preset: Preset,
    /// The pre-training images.
    pub dataset: DatasetConfig,
    /// How many processes train and where.
    pub world: WorldConfig,
    /// The training recipe.
    pub recipe: Recipe,
    /// Checkpoint cadence; the directory comes from `KONTRAST_CHECKPOINT_DIR`.
    pub checkpoint: CheckpointConfig,
    /// Where rank 0 serves metrics and progress.
    pub metrics: MetricsConfig,
    /// Evaluations run after training, in order.
    pub evaluations: Vec<EvaluationConfig>,
    /// The kNN monitor evaluated during training; `None` when off. Documents written before the
    /// field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<KnnMonitorConfig>,
}

/// Pre-training dataset.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatasetConfig {
    /// On-disk layout.
    pub format: DatasetFormat,
    /// Absolute path inside the container.
    pub path: String,
    /// `flat` only: a COCO-style annotation file listing the images (relative to `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<String>,
}

/// The process layout. The rendezvous itself comes from the environment (`MASTER_ADDR`, ...);
/// the worker checks that the environment agrees with this.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorldConfig {
    /// Number of nodes (pods).
    pub nodes: u32,
    /// GPUs per node; 0 trains on CPU over Gloo.
    pub gpus_per_node: u32,
    /// Processes per node: one per GPU, or one on CPU.
    pub procs_per_node: u32,
    /// `nodes · procsPerNode`.
    pub world_size: u32,
    /// `recipe.batchSize / worldSize`: the batch each rank loads and encodes.
    pub batch_size_per_rank: u32,
}

/// A complete recipe: a preset with the spec's overrides applied.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recipe {
    /// Backbone.
    pub arch: Arch,
    /// CIFAR-style stem (3×3 stride-1 first convolution, no max-pool) for small images.
    pub cifar_stem: bool,
    /// Channels of the first stage (64 in torchvision); stages have 1, 2, 4 and 8 times as many.
    /// Documents written before the field existed mean torchvision's width.
    #[serde(default = "torchvision_width")]
    pub width: u32,
    /// Training epochs.
    pub epochs: u32,
    /// Global batch size (all ranks together).
    pub batch_size: u32,
    /// SGD settings.
    pub optimizer: OptimizerConfig,
    /// MoCo settings.
    pub moco: MocoConfig,
    /// Multi-crop settings.
    pub crops: CropsConfig,
    /// Indices of the crops that may take the AutoAugment pipeline (never 1, the key crop).
    pub auto_augment_crops: Vec<u32>,
    /// The kNN loss; `None` when disabled.
    pub knn_loss: Option<KnnLossConfig>,
    /// Numeric precision.
    pub precision: Precision,
}

fn torchvision_width() -> u32 {
    crate::v1alpha1::TORCHVISION_WIDTH
}

/// SGD with momentum.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizerConfig {
    /// Base learning rate (not scaled with the batch size).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay on all parameters.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
}

/// MoCo settings.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MocoConfig {
    /// Output (projection) dimension.
    pub dim: u32,
    /// Number of negatives in the queue; a multiple of the global batch.
    pub queue_size: u32,
    /// Key-encoder momentum `m`.
    pub momentum: f64,
    /// Softmax temperature `T`.
    pub temperature: f64,
    /// Two-layer MLP projection head.
    pub mlp: bool,
}

/// Crop settings: indices `0..large.count` are large crops (0 the query, 1 the key), then the small ones.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CropsConfig {
    /// Large crops.
    pub large: CropConfig,
    /// Small crops (`count` 0 disables them).
    pub small: CropConfig,
    /// Constrain small crops to overlap the key crop.
    pub constrained: bool,
}

impl CropsConfig {
    /// Crops per image, large and small (saturating: `resolve` checks the counts after summing).
    pub fn total(&self) -> u32 {
        self.large.count.saturating_add(self.small.count)
    }
}

/// One family of random-resized crops.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CropConfig {
    /// Crops per image.
    pub count: u32,
    /// Output side in pixels.
    pub size: u32,
    /// `[min, max]` fraction of the image area.
    pub scale: [f64; 2],
}

/// The kNN loss of "Revisiting Contrastive Methods".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnnLossConfig {
    /// Neighbours per query.
    pub top_k: u32,
    /// Weight of the auxiliary loss.
    pub weight: f64,
    /// Epochs before the loss is switched on.
    pub warmup_epochs: u32,
}

/// Checkpoint cadence.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many epochs (and after the last).
    pub every_epochs: u32,
    /// Keep the newest this many.
    pub keep: u32,
}

/// Metrics endpoint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsConfig {
    /// Port of rank 0's `/metrics` and progress endpoint.
    pub port: u16,
    /// Pushgateway the evaluation jobs push their results to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushgateway: Option<String>,
}

/// One evaluation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationConfig {
    /// Unique name (a DNS label); the key of its results in the run's status.
    pub name: String,
    /// The evaluation dataset.
    pub dataset: EvaluationDatasetConfig,
    /// GPUs of the evaluation job (0: CPU).
    pub gpus: u32,
    /// What to measure, with every parameter resolved.
    #[serde(flatten)]
    pub task: EvaluationTask,
}

/// An evaluation dataset.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationDatasetConfig {
    /// On-disk layout.
    pub format: EvaluationDatasetFormat,
    /// Absolute path inside the container.
    pub path: String,
}

/// The kNN monitor: weighted kNN on a capped labelled split, evaluated by rank 0 during training.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnnMonitorConfig {
    /// Evaluate after every this many epochs (≥ 1) and after the last.
    pub every_epochs: u32,
    /// The labelled data (`imagefolder` or `fashionMnist`).
    pub dataset: EvaluationDatasetConfig,
    /// Neighbours.
    pub k: u32,
    /// Similarity temperature of the vote weights.
    pub temperature: f64,
    /// Most memory-bank images (evenly spaced over the train split).
    pub max_train_images: u32,
    /// Most query images (evenly spaced over the test or val split).
    pub max_val_images: u32,
}

impl KnnMonitorConfig {
    /// Whether the monitor runs after `done` of `epochs` epochs.
    pub fn due(&self, done: u32, epochs: u32) -> bool {
        done.is_multiple_of(self.every_epochs.max(1)) || done == epochs
    }
}

/// An evaluation protocol and its parameters.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum EvaluationTask {
    /// Weighted kNN on frozen features.
    Knn {
        /// Neighbours.
        k: u32,
        /// Similarity temperature of the vote weights.
        temperature: f64,
    },
    /// VOC07 linear SVMs.
    LinearSvm {
        /// SVM cost `C`.
        cost: f64,
    },
    /// Segmentation: a linear probe or fine-tuning.
    Segmentation {
        /// Training epochs.
        epochs: u32,
        /// Training batch size.
        batch_size: u32,
        /// Linear probe or full fine-tuning (configs written before the field: linear).
        #[serde(default)]
        mode: SegmentationMode,
    },
    /// DAVIS label propagation.
    Davis {
        /// Neighbours per location.
        k: u32,
        /// Affinity temperature.
        temperature: f64,
    },
    /// Segment retrieval (top-1 prototype).
    Retrieval,
}

impl EvaluationTask {
    /// The kind of this task.
    pub fn kind(&self) -> EvaluationKind {
        match self {
            EvaluationTask::Knn { .. } => EvaluationKind::Knn,
            EvaluationTask::LinearSvm { .. } => EvaluationKind::LinearSvm,
            EvaluationTask::Segmentation { .. } => EvaluationKind::Segmentation,
            EvaluationTask::Davis { .. } => EvaluationKind::Davis,
            EvaluationTask::Retrieval => EvaluationKind::Retrieval,
        }
    }
}

/// Why a run-config document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid JSON of the expected shape.
    #[error("the run config is not valid JSON of the expected shape: {0}")]
    Json(#[source] serde_json::Error),
    /// The document is of another version.
    #[error("the run config has apiVersion {found:?}; this build reads {expected:?}")]
    UnsupportedVersion {
        /// The version found.
        found: String,
        /// The version this build reads.
        expected: &'static str,
    },
}

impl RunConfig {
    /// Parse a run-config document, refusing other versions.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            api_version: String,
        }
        // The version is checked first, so another version's shape is reported as such.
        let head: Head = serde_json::from_str(text).map_err(ConfigError::Json)?;
        if head.api_version != API_VERSION {
            return Err(ConfigError::UnsupportedVersion {
                found: head.api_version,
                expected: API_VERSION,
            });
        }
        serde_json::from_str(text).map_err(ConfigError::Json)
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("RunConfig serialises to JSON")
    }

    /// The evaluation named `name`.
    pub fn evaluation(&self, name: &str) -> Option<&EvaluationConfig> {
        self.evaluations.iter().find(|e| e.name == name)
    }
}
