//! Semantic segmentation on PASCAL VOC (the `segmentation` evaluation), linear mode: a linear
//! probe of the frozen backbone's dense features, the cheap signal before full fine-tuning.
//!
//! - the query encoder's backbone, frozen and in evaluation mode (running BN statistics), run at
//!   output stride 16 as the protocol dilates it ([`ResNet::forward_layer4_dilated_t`]: layer4
//!   at stride 1, its 3×3 convolutions with dilation 2); its features are computed per batch
//!   without gradients;
//! - the features standardised per channel (batch norm without affine parameters) and scaled
//!   by `1/√F`, then a trainable 1×1 convolution with bias to the 21 VOC classes, bilinearly
//!   upsampled (`align_corners=False`) to the label size ([`LinearHead`]);
//! - per-pixel cross-entropy, [`IGNORE`] ignored; SGD (momentum [`MOMENTUM`], weight decay
//!   [`WEIGHT_DECAY`]) at [`LINEAR_LR`] for `epochs` epochs of `batch_size` images, the rate ×0.1
//!   at 2/3 and 8/9 of the epochs (the fine-tuning schedule of the reference code's 30 and 40
//!   of 45 epochs); images in a fresh seeded order every epoch;
//! - training pairs: flip, rotation `U(−5°, 5°)` with zoom `U(0.75, 1.25)`, resize to
//!   `side × side` (image bicubic, mask nearest), `side` = [`input_side`] of the training crop
//!   (512 at 224); validation pairs: the same resize only;
//! - scores on `val`: mIoU, mIoU over the classes present and pixel accuracy from a confusion
//!   matrix accumulated over the split ([`super::miou`]), at `side × side`.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat};
use kontrast_data::dataset::voc_segmentation::{
    VOC_SEGMENTATION_CLASSES, voc_segmentation_class_name,
};
use kontrast_data::resize::Filter;
use kontrast_data::segment::{IGNORE, SegAugment, SegBatch, SegDataset, SegLoader};
use kontrast_data::{DataError, LoaderConfig, SampleRng, View};
use serde_json::json;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

use crate::input::Normalizer;
use crate::model::resnet::ResNet;
use crate::train::sgd::{Sgd, SgdConfig};

use super::miou::{ConfusionMatrix, MiouError, SegmentationScores};
use super::segment_retrieval::input_side;
use super::segmentation_head::LinearHead;

/// Learning rate of the linear probe. The paper's 0.003 is for fine-tuning a whole network,
/// where every layer moves; a lone 1×1 layer on standardised inputs of unit mean square norm
/// ([`LinearHead`]) tolerates and needs far larger steps to move its logits by O(1) within a
/// few hundred steps, and 0.1 (with momentum 0.9) stays well inside the stable range of
/// logistic regression on such inputs.
pub const LINEAR_LR: f64 = 0.1;
/// SGD momentum (the paper's).
pub const MOMENTUM: f64 = 0.9;
/// SGD weight decay (the paper's), on the weight and the bias.
pub const WEIGHT_DECAY: f64 = 1e-4;
/// The training split: `trainaug` where the data set lists it (the paper's), else `train`.
pub const TRAINAUG_SPLIT: &str = "trainaug";
/// The training split without the augmented list.
pub const TRAIN_SPLIT: &str = "train";
/// The scored split.
pub const VAL_SPLIT: &str = "val";
/// Seeds the head's initialisation, the image order and the augmentations.
pub const SEED: u64 = 0;

/// Why the evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentationError {
    /// Only PASCAL VOC for now.
    #[error(
        "segmentation reads a PASCAL VOC data set, not {0:?} (Cityscapes needs its labelIds \
         mapped to trainIds first)"
    )]
    Format(EvaluationDatasetFormat),
    /// An unusable setting.
    #[error("segmentation: {0}")]
    Config(String),
    /// The data could not be read.
    #[error("segmentation data: {0}")]
    Data(#[from] DataError),
    /// Validation images that could not be decoded were left out, which would change the result.
    #[error(
        "{missing} of the {total} {VAL_SPLIT} images could not be decoded (first: {first}); \
         this evaluation needs every image"
    )]
    Undecodable {
        /// How many.
        missing: usize,
        /// Images in the split.
        total: usize,
        /// The first of them.
        first: String,
    },
    /// A mask holds a label that is not a class.
    #[error("{image}: {source}")]
    Labels {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: MiouError,
    },
    /// No training pixel carries a class.
    #[error("every training pixel is ignored: there is nothing to learn from")]
    NoTrainingPixels,
    /// The loss stopped being a number.
    #[error("the training loss of epoch {epoch} is {loss}")]
    Diverged {
        /// The epoch (1-based).
        epoch: u32,
        /// Its value.
        loss: f64,
    },
    /// Inconsistent shapes or a failed tensor conversion (a bug).
    #[error("internal segmentation error: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> SegmentationError {
    SegmentationError::Internal(e.to_string())
}

/// The training pairs' transform at `side × side`: the reference code's VOC fine-tuning
/// augmentation with its 512 scaled to `side`.
pub fn training_augment(side: usize) -> SegAugment {
    SegAugment {
        resize: Some((side, side)),
        ..SegAugment::voc_train()
    }
}

/// The validation pairs' transform: resize to `side × side` (image bicubic, mask nearest).
pub fn validation_augment(side: usize) -> SegAugment {
    SegAugment {
        resize: Some((side, side)),
        filter: Filter::Bicubic,
        ..SegAugment::evaluation()
    }
}

/// The learning rate of epoch `epoch` (0-based) of `epochs`: `base`, ×0.1 from epoch
/// `⌊2·epochs/3⌋` and again from `⌊8·epochs/9⌋` (30 and 40 of 45), never before the second.
pub fn step_lr(base: f64, epoch: u32, epochs: u32) -> f64 {
    let milestone = |num: u32, den: u32| (epochs * num / den).max(1);
    let decays = [milestone(2, 3), milestone(8, 9)]
        .iter()
        .filter(|&&m| epoch >= m)
        .count();
    base * 0.1f64.powi(decays as i32)
}

/// What to train and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    /// Training epochs.
    pub epochs: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Training and validation resolution.
    pub side: usize,
    /// Classes (21 on VOC).
    pub classes: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Data-loading threads.
    pub threads: usize,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationResult {
    /// Scores on the validation split (fractions).
    pub scores: SegmentationScores,
    /// Mean training loss per labelled pixel, per epoch.
    pub losses: Vec<f64>,
    /// Validation images scored.
    pub images: usize,
}

/// Checks that every label of `masks` is a class or [`IGNORE`]; returns the labelled pixels.
fn labelled_pixels(
    masks: &[u8],
    classes: usize,
    batch: &SegBatch,
    data: &SegDataset,
) -> Result<usize, SegmentationError> {
    let pixels = masks.len() / batch.samples.len().max(1);
    if let Some(bad) = masks
        .iter()
        .position(|&t| t != IGNORE && usize::from(t) >= classes)
    {
        let sample = &batch.samples[bad / pixels.max(1)];
        return Err(SegmentationError::Labels {
            image: data.describe(sample.index),
            source: MiouError::Truth {
                pixel: bad % pixels.max(1),
                label: masks[bad],
                last: classes - 1,
            },
        });
    }
    Ok(masks.iter().filter(|&&t| t != IGNORE).count())
}

/// A batch of equal-size pairs as network input on `device` and the masks on the host.
fn inputs(
    batch: &SegBatch,
    side: usize,
    input: &Normalizer,
) -> Result<Option<(Tensor, Vec<u8>)>, SegmentationError> {
    let Some((_, _, images, masks)) = batch.stacked() else {
        if batch.samples.is_empty() {
            return Ok(None);
        }
        return Err(internal("a resized batch holds images of several sizes"));
    };
    let n = batch.samples.len();
    let x = input.apply(
        &View {
            size: side,
            data: images,
        },
        n,
    );
    Ok(Some((x, masks)))
}

/// Trains the linear head on `train` and scores it on `val`.
pub fn evaluate(
    train: &Arc<SegDataset>,
    val: &Arc<SegDataset>,
    backbone: &ResNet,
    probe: &LinearProbe,
    device: Device,
) -> Result<SegmentationResult, SegmentationError> {
    if probe.epochs == 0 || probe.batch_size == 0 || probe.side == 0 {
        return Err(SegmentationError::Config(format!(
            "epochs ({}), batch size ({}) and side ({}) must be positive",
            probe.epochs, probe.batch_size, probe.side
        )));
    }
    if !(1..usize::from(IGNORE)).contains(&probe.classes) {
        return Err(SegmentationError::Config(format!(
            "{} classes; 1–254 are possible",
            probe.classes
        )));
    }
    let started = Instant::now();
    let side = probe.side as i64;
    let input = Normalizer::new(device);
    tch::manual_seed(SEED as i64);
    let head = LinearHead::new(backbone.feature_dim(), probe.classes as i64, device);
    let mut sgd = Sgd::new(
        head.parameters(),
        SgdConfig {
            momentum: MOMENTUM,
            weight_decay: WEIGHT_DECAY,
        },
    );
    let loader_config = |epoch: u32| LoaderConfig {
        batch_per_rank: probe.batch_size,
        threads: probe.threads,
        seed: SEED,
        epoch: u64::from(epoch),
        ..LoaderConfig::default()
    };
    let mut losses = Vec::with_capacity(probe.epochs as usize);
    for epoch in 0..probe.epochs {
        let epoch_started = Instant::now();
        let lr = step_lr(probe.lr, epoch, probe.epochs);
        let mut order: Vec<usize> = (0..train.len()).collect();
        SampleRng::from_parts(&[SEED, u64::from(epoch), 0x5e6]).shuffle(&mut order);
        let loader = SegLoader::new(
            Arc::clone(train),
            order,
            training_augment(probe.side),
            loader_config(epoch),
        )?;
        let (mut loss_sum, mut pixels, mut skipped) = (0.0f64, 0usize, 0usize);
        for batch in loader {
            let batch = batch?;
            skipped += batch.skipped;
            let Some((x, masks)) = inputs(&batch, probe.side, &input)? else {
                continue;
            };
            let labelled = labelled_pixels(&masks, probe.classes, &batch, train)?;
            // A batch of ignored pixels only has no loss (its mean would be 0/0).
            if labelled == 0 {
                continue;
            }
            let n = batch.samples.len() as i64;
            let features = tch::no_grad(|| backbone.forward_layer4_dilated_t(&x, false));
            let target = Tensor::from_slice(&masks)
                .to_kind(Kind::Int64)
                .view([n, side, side])
                .to_device(device);
            let logits = head.forward_t(&features.to_kind(Kind::Float), side, side, true);
            let loss = logits.cross_entropy_loss::<Tensor>(
                &target,
                None,
                Reduction::Mean,
                i64::from(IGNORE),
                0.0,
            );
            sgd.zero_grad();
            loss.backward();
            sgd.step(lr);
            loss_sum += loss.double_value(&[]) * labelled as f64;
            pixels += labelled;
        }
        if pixels == 0 {
            return Err(SegmentationError::NoTrainingPixels);
        }
        let loss = loss_sum / pixels as f64;
        if !loss.is_finite() {
            return Err(SegmentationError::Diverged {
                epoch: epoch + 1,
                loss,
            });
        }
        if skipped > 0 {
            warn!(
                epoch = epoch + 1,
                skipped, "undecodable training pairs were left out"
            );
        }
        info!(
            epoch = epoch + 1,
            epochs = probe.epochs,
            loss,
            lr,
            seconds = epoch_started.elapsed().as_secs_f64(),
            "segmentation epoch"
        );
        losses.push(loss);
    }

    let mut confusion = ConfusionMatrix::new(probe.classes);
    let mut done = Vec::with_capacity(val.len());
    let loader = SegLoader::new(
        Arc::clone(val),
        (0..val.len()).collect(),
        validation_augment(probe.side),
        loader_config(0),
    )?;
    let pixels = probe.side * probe.side;
    for batch in loader {
        let batch = batch?;
        let Some((x, masks)) = inputs(&batch, probe.side, &input)? else {
            continue;
        };
        let predictions = tch::no_grad(|| {
            let features = backbone.forward_layer4_dilated_t(&x, false);
            head.forward_t(&features.to_kind(Kind::Float), side, side, false)
                .argmax(1, false)
                .to_kind(Kind::Uint8)
                .to_device(Device::Cpu)
        });
        let predictions = Vec::<u8>::try_from(predictions.flatten(0, -1)).map_err(internal)?;
        for (sample, (p, t)) in batch.samples.iter().zip(
            predictions
                .chunks_exact(pixels)
                .zip(masks.chunks_exact(pixels)),
        ) {
            confusion
                .update(p, t)
                .map_err(|source| SegmentationError::Labels {
                    image: val.describe(sample.index),
                    source,
                })?;
            done.push(sample.index);
        }
    }
    // The loader leaves undecodable pairs out of their batch; the indices say which remain.
    if done.len() < val.len() {
        let mut present = vec![false; val.len()];
        for &i in &done {
            present[i] = true;
        }
        let first = present.iter().position(|p| !p).unwrap_or(0);
        return Err(SegmentationError::Undecodable {
            missing: val.len() - done.len(),
            total: val.len(),
            first: val.describe(first),
        });
    }
    let result = SegmentationResult {
        scores: confusion.scores(),
        losses,
        images: done.len(),
    };
    info!(
        miou = result.scores.miou * 100.0,
        miou_present = result.scores.miou_present * 100.0,
        pixel_accuracy = result.scores.pixel_accuracy * 100.0,
        images = result.images,
        seconds = started.elapsed().as_secs_f64(),
        "segmentation scored"
    );
    Ok(result)
}

/// The `segmentation` evaluation of a run config (linear mode): its VOC data set's `trainaug`
/// (or `train`) and `val` splits at [`input_side`] of the run's large crop; the metrics object
/// of `kontrast eval` (percent), with the first and last epochs' training loss.
pub fn run(
    evaluation: &EvaluationConfig,
    crop: usize,
    backbone: &ResNet,
    threads: usize,
    device: Device,
    epochs: u32,
    batch_size: u32,
) -> Result<serde_json::Value, SegmentationError> {
    if evaluation.dataset.format != EvaluationDatasetFormat::Voc {
        return Err(SegmentationError::Format(evaluation.dataset.format));
    }
    let root = Path::new(&evaluation.dataset.path);
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
    let train = Arc::new(SegDataset::voc(root, train_split)?);
    let val = Arc::new(SegDataset::voc(root, VAL_SPLIT)?);
    let probe = LinearProbe {
        epochs,
        batch_size: batch_size as usize,
        side: input_side(crop),
        classes: VOC_SEGMENTATION_CLASSES,
        lr: LINEAR_LR,
        threads,
    };
    info!(
        train_split,
        train = train.len(),
        val = val.len(),
        side = probe.side,
        epochs,
        batch_size,
        lr = probe.lr,
        "segmentation linear probe"
    );
    let result = evaluate(&train, &val, backbone, &probe, device)?;
    let iou: serde_json::Map<String, serde_json::Value> = result
        .scores
        .iou
        .iter()
        .enumerate()
        .map(|(c, v)| {
            let name = voc_segmentation_class_name(c).unwrap_or("?");
            (name.to_string(), json!(v * 100.0))
        })
        .collect();
    let (first, last) = match (result.losses.first(), result.losses.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return Err(internal("no training epoch ran")),
    };
    Ok(json!({
        "mIoU": result.scores.miou * 100.0,
        "mIoUPresent": result.scores.miou_present * 100.0,
        "pixelAccuracy": result.scores.pixel_accuracy * 100.0,
        "iou": iou,
        "trainLoss": {"first": first, "last": last},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_drops_tenfold_at_two_thirds_and_eight_ninths() {
        let lrs: Vec<f64> = (0..45).map(|e| step_lr(1.0, e, 45)).collect();
        assert!(lrs[..30].iter().all(|&l| l == 1.0));
        assert!(lrs[30..40].iter().all(|&l| (l - 0.1).abs() < 1e-15));
        assert!(lrs[40..].iter().all(|&l| (l - 0.01).abs() < 1e-15));
        // Short runs keep the base rate for their first epoch.
        assert_eq!(step_lr(0.1, 0, 1), 0.1);
        assert_eq!(step_lr(1.0, 0, 3), 1.0);
        assert!((step_lr(1.0, 2, 3) - 0.01).abs() < 1e-15);
    }

    #[test]
    fn augmentations_resize_to_the_side_and_only_training_is_random() {
        let train = training_augment(36);
        assert_eq!(train.resize, Some((36, 36)));
        assert!(train.flip && train.rotate.is_some() && train.is_random());
        let val = validation_augment(36);
        assert_eq!(val.fixed_output(), Some((36, 36)));
        assert!(!val.is_random());
        assert_eq!(val.filter, Filter::Bicubic);
    }
}
