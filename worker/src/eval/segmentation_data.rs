//! The data of the `segmentation` evaluation: which splits of a PASCAL VOC or Cityscapes root,
//! how many classes, and the training and validation transforms at this run's scale.
//!
//! - VOC: `trainaug` (or `train`) and `val`; training pairs flipped, rotated `U(−5°, 5°)` with
//!   zoom `U(0.75, 1.25)`, resized to `side × side`; validation resized to `side × side`;
//!   `side` = [`input_side`] of the run's large crop (the reference's 512 at 224).
//! - Cityscapes: `train` and `val` (fine annotations, labelIds → 19 trainIds); the frames are
//!   `W × W/2` (2048 × 1024). At `side` = [`input_side`] the protocol is run at the scale
//!   `k = 2·side / W` (½ at a 224 crop): training pairs flipped, scaled `U(0.5·k, 2·k)` and
//!   cropped at random to `⌊3·side/4⌋²` (the paper's 768² at k = 1, padded with the mean
//!   colour and ignored labels); validation resized to `2·side × side` (the paper's full
//!   resolution at k = 1).
use std::path::Path;
use std::sync::Arc;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat};
use kontrast_data::dataset::cityscapes::CITYSCAPES_CLASSES;
use kontrast_data::dataset::voc_segmentation::{
    VOC_SEGMENTATION_CLASSES, voc_segmentation_class_name,
};
use kontrast_data::resize::Filter;
use kontrast_data::segment::{SegAugment, SegCrop, SegDataset};

use super::segment_retrieval::input_side;
use super::segmentation::{
    SegmentationError, TRAIN_SPLIT, TRAINAUG_SPLIT, VAL_SPLIT, training_augment, validation_augment,
};

/// The paper's Cityscapes scale range at full resolution.
pub const CITYSCAPES_SCALE: (f64, f64) = (0.5, 2.0);
/// The paper's Cityscapes crop (768²) as a fraction of the frame height (1024).
pub const CITYSCAPES_CROP_FRACTION: f64 = 0.75;

/// The splits, classes and transforms of one evaluation.
#[derive(Debug, Clone)]
pub struct SegmentationData {
    /// VOC or Cityscapes.
    pub format: EvaluationDatasetFormat,
    /// The training split's pairs.
    pub train: Arc<SegDataset>,
    /// Its name.
    pub train_split: &'static str,
    /// The scored split's pairs.
    pub val: Arc<SegDataset>,
    /// Classes (21 on VOC, 19 on Cityscapes).
    pub classes: usize,
    /// The training pairs' transform.
    pub train_augment: SegAugment,
    /// The validation pairs' transform (a fixed output size).
    pub val_augment: SegAugment,
}

impl SegmentationData {
    /// The splits of `evaluation`'s data set for a model pre-trained on `crop`-pixel crops.
    pub fn open(evaluation: &EvaluationConfig, crop: usize) -> Result<Self, SegmentationError> {
        let root = Path::new(&evaluation.dataset.path);
        let side = input_side(crop);
        match evaluation.dataset.format {
            EvaluationDatasetFormat::Voc => {
                let listed = |split: &str| {
                    root.join("ImageSets/Segmentation")
                        .join(format!("{split}.txt"))
                        .is_file()
                };
                let train_split = if listed(TRAINAUG_SPLIT) {
                    TRAINAUG_SPLIT
                } else {
                    TRAIN_SPLIT
                };
                Ok(Self {
                    format: EvaluationDatasetFormat::Voc,
                    train: Arc::new(SegDataset::voc(root, train_split)?),
                    train_split,
                    val: Arc::new(SegDataset::voc(root, VAL_SPLIT)?),
                    classes: VOC_SEGMENTATION_CLASSES,
                    train_augment: training_augment(side),
                    val_augment: validation_augment(side),
                })
            }
            EvaluationDatasetFormat::Cityscapes => {
                let train = SegDataset::cityscapes(root, TRAIN_SPLIT)?;
                // Every frame of the data set has one size; the first one's gives the scale.
                let (frame, _) = train.load(0)?;
                Ok(Self {
                    format: EvaluationDatasetFormat::Cityscapes,
                    train: Arc::new(train),
                    train_split: TRAIN_SPLIT,
                    val: Arc::new(SegDataset::cityscapes(root, VAL_SPLIT)?),
                    classes: CITYSCAPES_CLASSES.len(),
                    train_augment: cityscapes_training_augment(side, frame.width),
                    val_augment: cityscapes_validation_augment(side),
                })
            }
            other => Err(SegmentationError::Format(other)),
        }
    }

    /// The name of class `c`.
    pub fn class_name(&self, c: usize) -> &'static str {
        match self.format {
            EvaluationDatasetFormat::Cityscapes => CITYSCAPES_CLASSES.get(c).copied(),
            _ => voc_segmentation_class_name(c),
        }
        .unwrap_or("?")
    }

    /// The dilation of the fine-tuning head's 3×3 layers: 6 on VOC, 1 on Cityscapes.
    pub fn head_dilation(&self) -> i64 {
        match self.format {
            EvaluationDatasetFormat::Cityscapes => 1,
            _ => 6,
        }
    }

    /// The validation output `(width, height)`.
    pub fn val_size(&self) -> Option<(usize, usize)> {
        self.val_augment.fixed_output()
    }
}

/// Cityscapes training pairs at `side` for frames `frame_width` wide: flip, scale
/// `k·U(0.5, 2)` with `k = 2·side/frame_width`, random crop `⌊3·side/4⌋²` (mean-colour padding).
pub fn cityscapes_training_augment(side: usize, frame_width: usize) -> SegAugment {
    let k = 2.0 * side as f64 / frame_width.max(1) as f64;
    let crop = ((side as f64 * CITYSCAPES_CROP_FRACTION) as usize).max(1);
    SegAugment {
        scale: Some((CITYSCAPES_SCALE.0 * k, CITYSCAPES_SCALE.1 * k)),
        crop: Some(SegCrop {
            width: crop,
            height: crop,
            random: true,
        }),
        ..SegAugment::cityscapes_train()
    }
}

/// Cityscapes validation pairs: resized to `2·side × side` (image bicubic, mask nearest).
pub fn cityscapes_validation_augment(side: usize) -> SegAugment {
    SegAugment {
        resize: Some((2 * side, side)),
        filter: Filter::Bicubic,
        ..SegAugment::evaluation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cityscapes_runs_the_papers_transform_at_the_runs_scale() {
        // At a 224 crop: half resolution, 384² crops, scales 0.25–1.
        let side = input_side(224);
        assert_eq!(side, 512);
        let train = cityscapes_training_augment(side, 2048);
        assert_eq!(train.scale, Some((0.25, 1.0)));
        assert_eq!(train.fixed_output(), Some((384, 384)));
        assert!(train.flip && train.is_random() && train.rotate.is_none());
        assert!(train.validate().is_ok());
        let val = cityscapes_validation_augment(side);
        assert_eq!(val.fixed_output(), Some((1024, 512)));
        assert!(!val.is_random());
        // At the paper's scale (side 1024) it is the paper's: 0.5–2, 768², full resolution.
        let full = cityscapes_training_augment(1024, 2048);
        assert_eq!(full.scale, Some((0.5, 2.0)));
        assert_eq!(full.fixed_output(), Some((768, 768)));
        assert_eq!(
            cityscapes_validation_augment(1024).fixed_output(),
            Some((2048, 1024))
        );
    }
}
