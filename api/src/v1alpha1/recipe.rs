//! The training recipe as written: a preset and optional overrides. Every field but `preset` is
//! optional; an unset field takes the preset's value ([`Preset::recipe`]).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::rules;
use crate::config::{Arch, LrSchedule, Precision, Preset};

/// The training recipe: a preset, and overrides of any of its values.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rules::queue_divides_by_batch(),
    validation = rules::auto_augment_crops_exist(),
    validation = rules::knn_top_k_within_queue(),
    validation = rules::knn_warmup_before_end()
)]
pub struct RecipeSpec {
    /// Starting point: `mocov2` (MoCo v2: ResNet-50, two 224 px crops, m = 0.999) or `revisiting`
    /// ("Revisiting Contrastive Methods": two 160 px + four 96 px constrained crops, AutoAugment,
    /// kNN loss, m = 0.995). Both: 200 epochs, batch 256, SGD lr 0.3 cosine, queue 65536, T = 0.2.
    #[serde(default)]
    pub preset: Preset,
    /// Backbone: `resnet18` or `resnet50`. Preset: resnet50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<Arch>")]
    pub arch: Option<Arch>,
    /// Channels of the backbone's first stage, a multiple of 8; the four stages have width,
    /// 2·width, 4·width and 8·width planes (torchvision's ResNets: 64). Narrower networks suit
    /// small images and small machines; published checkpoints need 64. Preset: 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_WIDTH, max = MAX_WIDTH), extend("multipleOf" = WIDTH_MULTIPLE))]
    pub width: Option<u32>,
    /// Training epochs. Preset: 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EPOCHS))]
    pub epochs: Option<u32>,
    /// Global batch size, split evenly over all ranks (nodes × max(gpusPerNode, 1)). Preset: 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_BATCH_SIZE))]
    pub batch_size: Option<u32>,
    /// SGD settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerSpec>,
    /// MoCo settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moco: Option<MocoSpec>,
    /// Multi-crop settings. Crop indices: `0 .. large.count` are large (0 the query, 1 the key,
    /// further ones extra queries), then the small crops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crops: Option<CropsSpec>,
    /// Which crops may take the AutoAugment pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_augment: Option<AutoAugmentSpec>,
    /// The kNN loss (revisiting preset: topK 20, weight 0.4). Setting this block under `mocov2`
    /// enables it with the paper's values for unset fields; `enabled: false` switches it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_loss: Option<KnnLossSpec>,
    /// Numeric precision: `fp32`, `bf16` (autocast, GPU or CPU) or `fp16` (autocast with loss
    /// scaling, GPU only). Preset: fp32, as in the reference code; bf16 is the usual choice on GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<Precision>")]
    pub precision: Option<Precision>,
    /// CIFAR-style stem (3×3 stride-1 first convolution, no max-pool) for small images such as
    /// Fashion-MNIST. Preset: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cifar_stem: Option<bool>,
}

/// SGD overrides.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OptimizerSpec {
    /// Base learning rate, greater than 0 (not scaled with the batch size). Preset: 0.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_LR), extend("exclusiveMinimum" = true))]
    pub lr: Option<f64>,
    /// SGD momentum, in [0, 1). Preset: 0.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMaximum" = true))]
    pub momentum: Option<f64>,
    /// Weight decay on all parameters (batch-norm and biases included). Preset: 1e-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: `cosine` (per epoch, no warm-up) or `constant`. Preset: cosine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<LrSchedule>")]
    pub schedule: Option<LrSchedule>,
}

/// MoCo overrides.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MocoSpec {
    /// Output dimension of the projection head. Preset: 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_DIM, max = MAX_DIM))]
    pub dim: Option<u32>,
    /// Negatives in the queue; a multiple of `batchSize`. Preset: 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_QUEUE_SIZE))]
    pub queue_size: Option<u32>,
    /// Key-encoder momentum m, in [0, 1]. Preset: 0.999 (mocov2), 0.995 (revisiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub momentum: Option<f64>,
    /// Softmax temperature T, greater than 0. Preset: 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_TEMPERATURE), extend("exclusiveMinimum" = true))]
    pub temperature: Option<f64>,
    /// Two-layer MLP projection head. Preset: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp: Option<bool>,
}

/// Multi-crop overrides.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CropsSpec {
    /// Large crops. Preset: 2 × 224 px (mocov2) or 2 × 160 px (revisiting), scale [0.2, 1.0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large: Option<LargeCropsSpec>,
    /// Small crops, queries only. Preset: none (mocov2) or 4 × 96 px, scale [0.05, 0.14] (revisiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small: Option<SmallCropsSpec>,
    /// Resample each small crop until it overlaps the key crop by at least 10 % of its area.
    /// Preset: false (mocov2), true (revisiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constrained: Option<bool>,
}

/// Large-crop overrides.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::crop_scale_ordered())]
pub struct LargeCropsSpec {
    /// Large crops per image, at least 2: crop 0 is the query, crop 1 the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_LARGE_CROPS, max = MAX_LARGE_CROPS))]
    pub count: Option<u32>,
    /// Output side in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_CROP_SIZE, max = MAX_CROP_SIZE))]
    pub size: Option<u32>,
    /// `[min, max]` fraction of the image area a crop covers, each in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crop_scale")]
    pub scale: Option<[f64; 2]>,
}

/// Small-crop overrides.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::crop_scale_ordered())]
pub struct SmallCropsSpec {
    /// Small crops per image; 0 disables them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_SMALL_CROPS))]
    pub count: Option<u32>,
    /// Output side in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_CROP_SIZE, max = MAX_CROP_SIZE))]
    pub size: Option<u32>,
    /// `[min, max]` fraction of the image area a crop covers, each in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crop_scale")]
    pub scale: Option<[f64; 2]>,
}

/// AutoAugment overrides.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoAugmentSpec {
    /// Indices of the crops that take AutoAugment (ImageNet policy) instead of the standard
    /// augmentations with probability 0.5. Never 1: the key crop always gets the standard ones.
    /// Preset: none (mocov2), [0, 2, 3, 4, 5] (revisiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_AUTO_AUGMENT_CROPS), inner(range(max = MAX_AUTO_AUGMENT_CROPS - 1)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub crops: Option<Vec<u32>>,
}

/// kNN-loss overrides.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KnnLossSpec {
    /// Whether the loss is on. Unset: on (giving this block under `mocov2` turns it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Neighbours per query, chosen from the queue by backbone-feature similarity. Default: 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_KNN_TOP_K))]
    pub top_k: Option<u32>,
    /// Weight of the auxiliary loss added to InfoNCE. Default: 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = MAX_KNN_WEIGHT))]
    pub weight: Option<f64>,
    /// Epochs before the loss is switched on (the paper's warm-up scripts use 5 at 200 epochs).
    /// Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_EPOCHS))]
    pub warmup_epochs: Option<u32>,
}

fn crop_scale(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "number",
            "format": "double",
            "minimum": 0.0,
            "exclusiveMinimum": true,
            "maximum": 1.0
        },
        "minItems": 2,
        "maxItems": 2
    })
}
