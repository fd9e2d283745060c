//! The two recipes a run starts from, with the numbers of the authors' scripts (RECIPE.md §1).
//! `precision` is fp32 in both, as in the reference code; bf16 on GPUs is the user's choice.

use crate::config::{
    Arch, CropConfig, CropsConfig, KnnLossConfig, LrSchedule, MocoConfig, OptimizerConfig,
    Precision, Preset, Recipe,
};

/// Channels of the first stage in torchvision's ResNets, so published checkpoints map 1:1.
pub const TORCHVISION_WIDTH: u32 = 64;
/// Global batch size of both presets. The CEL rules assume it when `recipe.batchSize` is unset.
pub const PRESET_BATCH_SIZE: u32 = 256;
/// Queue size of both presets. The CEL rules assume it when `recipe.moco.queueSize` is unset.
pub const PRESET_QUEUE_SIZE: u32 = 65_536;
/// Epochs of both presets. The CEL rules assume it when `recipe.epochs` is unset.
pub const PRESET_EPOCHS: u32 = 200;
/// Large crops per image in both presets.
pub const PRESET_LARGE_CROPS: u32 = 2;
/// Small crops per image of the `revisiting` preset (`mocov2` has none).
pub const REVISITING_SMALL_CROPS: u32 = 4;
/// kNN-loss settings a `knnLoss` block falls back to when its preset has none (the paper's).
pub const PAPER_KNN_LOSS: KnnLossConfig = KnnLossConfig {
    top_k: 20,
    weight: 0.4,
    warmup_epochs: 0,
};

impl Preset {
    /// The complete recipe of this preset.
    pub fn recipe(self) -> Recipe {
        let mocov2 = Recipe {
            arch: Arch::Resnet50,
            cifar_stem: false,
            width: TORCHVISION_WIDTH,
            epochs: PRESET_EPOCHS,
            batch_size: PRESET_BATCH_SIZE,
            optimizer: OptimizerConfig {
                lr: 0.3,
                momentum: 0.9,
                weight_decay: 1e-4,
                schedule: LrSchedule::Cosine,
            },
            moco: MocoConfig {
                dim: 128,
                queue_size: PRESET_QUEUE_SIZE,
                momentum: 0.999,
                temperature: 0.2,
                mlp: true,
            },
            crops: CropsConfig {
                large: CropConfig {
                    count: PRESET_LARGE_CROPS,
                    size: 224,
                    scale: [0.2, 1.0],
                },
                // Absent: the size and scale only matter once a user asks for small crops.
                small: CropConfig {
                    count: 0,
                    size: 96,
                    scale: [0.05, 0.14],
                },
                constrained: false,
            },
            auto_augment_crops: Vec::new(),
            knn_loss: None,
            precision: Precision::Fp32,
        };
        match self {
            Preset::Mocov2 => mocov2,
            Preset::Revisiting => Recipe {
                moco: MocoConfig {
                    momentum: 0.995,
                    ..mocov2.moco
                },
                crops: CropsConfig {
                    large: CropConfig {
                        count: PRESET_LARGE_CROPS,
                        size: 160,
                        scale: [0.2, 1.0],
                    },
                    small: CropConfig {
                        count: REVISITING_SMALL_CROPS,
                        size: 96,
                        scale: [0.05, 0.14],
                    },
                    constrained: true,
                },
                auto_augment_crops: vec![0, 2, 3, 4, 5],
                knn_loss: Some(PAPER_KNN_LOSS),
                ..mocov2
            },
        }
    }

    /// Small crops per image of this preset.
    pub fn small_crops(self) -> u32 {
        self.recipe().crops.small.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisiting_preset_has_the_papers_hyper_parameters() {
        let expected = Recipe {
            arch: Arch::Resnet50,
            cifar_stem: false,
            width: TORCHVISION_WIDTH,
            epochs: 200,
            batch_size: 256,
            optimizer: OptimizerConfig {
                lr: 0.3,
                momentum: 0.9,
                weight_decay: 1e-4,
                schedule: LrSchedule::Cosine,
            },
            moco: MocoConfig {
                dim: 128,
                queue_size: 65536,
                momentum: 0.995,
                temperature: 0.2,
                mlp: true,
            },
            crops: CropsConfig {
                large: CropConfig {
                    count: 2,
                    size: 160,
                    scale: [0.2, 1.0],
                },
                small: CropConfig {
                    count: 4,
                    size: 96,
                    scale: [0.05, 0.14],
                },
                constrained: true,
            },
            auto_augment_crops: vec![0, 2, 3, 4, 5],
            knn_loss: Some(KnnLossConfig {
                top_k: 20,
                weight: 0.4,
                warmup_epochs: 0,
            }),
            precision: Precision::Fp32,
        };
        assert_eq!(Preset::Revisiting.recipe(), expected);
    }

    #[test]
    fn mocov2_preset_has_the_moco_scripts_hyper_parameters() {
        let r = Preset::Mocov2.recipe();
        assert_eq!(r.arch, Arch::Resnet50);
        assert_eq!((r.epochs, r.batch_size), (200, 256));
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
                momentum: 0.999,
                temperature: 0.2,
                mlp: true
            }
        );
        assert_eq!(
            r.crops.large,
            CropConfig {
                count: 2,
                size: 224,
                scale: [0.2, 1.0]
            }
        );
        assert_eq!(r.crops.small.count, 0);
        assert!(!r.crops.constrained);
        assert!(r.auto_augment_crops.is_empty());
        assert_eq!(r.knn_loss, None);
        assert_eq!(r.precision, Precision::Fp32);
    }

    #[test]
    fn constants_the_cel_rules_assume_match_both_presets() {
        for preset in [Preset::Mocov2, Preset::Revisiting] {
            let r = preset.recipe();
            assert_eq!(r.epochs, PRESET_EPOCHS, "{preset:?}");
            assert_eq!(r.batch_size, PRESET_BATCH_SIZE, "{preset:?}");
            assert_eq!(r.moco.queue_size, PRESET_QUEUE_SIZE, "{preset:?}");
            assert_eq!(r.crops.large.count, PRESET_LARGE_CROPS, "{preset:?}");
        }
        assert_eq!(Preset::Revisiting.small_crops(), REVISITING_SMALL_CROPS);
        assert_eq!(Preset::Mocov2.small_crops(), 0);
    }
}
