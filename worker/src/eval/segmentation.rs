//! Semantic segmentation on PASCAL VOC or Cityscapes (the `segmentation` evaluation) in one of
//! two modes; the data, classes and transforms are [`super::segmentation_data`]'s.
//!
//! Linear mode ([`evaluate`]), the cheap signal before full fine-tuning:
//! - the query encoder's backbone, frozen and in evaluation mode (running BN statistics), run at
//!   output stride 16 as the protocol dilates it ([`ResNet::forward_layer4_dilated_t`]: layer4
//!   at stride 1, its 3×3 convolutions with dilation 2); its features are computed per batch
//!   without gradients;
//! - the features standardised per channel (batch norm without affine parameters) and scaled
//!   by `1/√F`, then a trainable 1×1 convolution with bias to the classes, bilinearly
//!   upsampled (`align_corners=False`) to the label size ([`LinearHead`]);
//! - per-pixel cross-entropy, [`IGNORE`] ignored; SGD (momentum [`MOMENTUM`], weight decay
//!   [`WEIGHT_DECAY`]) at [`LINEAR_LR`] for `epochs` epochs of `batch_size` images, the rate ×0.1
//!   at 2/3 and 8/9 of the epochs (the fine-tuning schedule of the reference code's 30 and 40
//!   of 45 epochs); images in a fresh seeded order every epoch.
//!
//! Fine-tuning mode: [`super::finetune`]. Both score `val` the same way: mIoU, mIoU over the
//! classes present and pixel accuracy from a confusion matrix accumulated over the split
//! ([`super::miou`]), at the validation transform's size.
use std::sync::Arc;
use std::time::Instant;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat, SegmentationMode};
use kontrast_data::resize::Filter;
use kontrast_data::segment::{IGNORE, SegAugment, SegBatch, SegDataset, SegLoader};
use kontrast_data::{DataError, LoaderConfig, SampleRng};
use serde_json::json;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

use crate::input::Normalizer;
use crate::model::Moco;
use crate::model::resnet::ResNet;
use crate::train::sgd::{Sgd, SgdConfig};

use super::finetune::{self, Finetune};
use super::miou::{ConfusionMatrix, MiouError, SegmentationScores};
use super::segmentation_data::SegmentationData;
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
    /// Only PASCAL VOC and Cityscapes.
    #[error("segmentation reads a PASCAL VOC or Cityscapes data set, not {0:?}")]
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

/// What the linear probe trains and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    /// Training epochs.
    pub epochs: u32,
    /// Images per step.
    pub batch_size: usize,
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

/// A batch of equal-size pairs as the network sees it.
struct Inputs {
    /// N×3×h×w, normalised, on the device.
    x: Tensor,
    /// N·h·w labels on the host.
    masks: Vec<u8>,
    height: i64,
    width: i64,
}

/// A batch of equal-size pairs as network input on `device` and the masks on the host.
fn inputs(
    batch: &SegBatch,
    input: &Normalizer,
    device: Device,
) -> Result<Option<Inputs>, SegmentationError> {
    let Some((w, h, images, masks)) = batch.stacked() else {
        if batch.samples.is_empty() {
            return Ok(None);
        }
        return Err(internal("a resized batch holds images of several sizes"));
    };
    let n = batch.samples.len() as i64;
    let (height, width) = (h as i64, w as i64);
    let bytes = Tensor::from_slice(&images).view([n, 3, height, width]);
    Ok(Some(Inputs {
        x: input.normalize(&bytes.to_device(device)),
        masks,
        height,
        width,
    }))
}

/// An optimiser the training loop steps.
pub(crate) trait Optimiser {
    /// Clears the gradients.
    fn zero_grad(&mut self);
    /// One update at `lr`.
    fn step(&mut self, lr: f64);
}

impl Optimiser for Sgd {
    fn zero_grad(&mut self) {
        Sgd::zero_grad(self);
    }
    fn step(&mut self, lr: f64) {
        Sgd::step(self, lr);
    }
}

impl Optimiser for super::adam::Adam {
    fn zero_grad(&mut self) {
        super::adam::Adam::zero_grad(self);
    }
    fn step(&mut self, lr: f64) {
        super::adam::Adam::step(self, lr);
    }
}

/// How the shared loop trains: epochs, batch, threads and the rate of each epoch.
pub(crate) struct Schedule<'a> {
    /// Training epochs.
    pub epochs: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Data-loading threads.
    pub threads: usize,
    /// The learning rate of an epoch (0-based).
    pub lr: &'a dyn Fn(u32) -> f64,
}

fn loader_config(batch_size: usize, threads: usize, epoch: u32) -> LoaderConfig {
    LoaderConfig {
        batch_per_rank: batch_size,
        threads,
        seed: SEED,
        epoch: u64::from(epoch),
        ..LoaderConfig::default()
    }
}

/// Checks the settings both modes share.
pub(crate) fn check(
    epochs: u32,
    batch_size: usize,
    classes: usize,
) -> Result<(), SegmentationError> {
    if epochs == 0 || batch_size == 0 {
        return Err(SegmentationError::Config(format!(
            "epochs ({epochs}) and batch size ({batch_size}) must be positive"
        )));
    }
    if !(1..usize::from(IGNORE)).contains(&classes) {
        return Err(SegmentationError::Config(format!(
            "{classes} classes; 1–254 are possible"
        )));
    }
    Ok(())
}

/// Trains for `schedule.epochs` epochs of the training split in a fresh seeded order each:
/// `logits(x, height, width)` per batch, per-pixel cross-entropy ([`IGNORE`] ignored), one
/// `optimiser` step; one log line per epoch. Returns the mean loss per labelled pixel per epoch.
pub(crate) fn train(
    data: &SegmentationData,
    schedule: &Schedule<'_>,
    optimiser: &mut dyn Optimiser,
    mut logits: impl FnMut(&Tensor, i64, i64) -> Tensor,
    device: Device,
) -> Result<Vec<f64>, SegmentationError> {
    let input = Normalizer::new(device);
    let train = &data.train;
    let mut losses = Vec::with_capacity(schedule.epochs as usize);
    for epoch in 0..schedule.epochs {
        let epoch_started = Instant::now();
        let lr = (schedule.lr)(epoch);
        let mut order: Vec<usize> = (0..train.len()).collect();
        SampleRng::from_parts(&[SEED, u64::from(epoch), 0x5e6]).shuffle(&mut order);
        let loader = SegLoader::new(
            Arc::clone(train),
            order,
            data.train_augment,
            loader_config(schedule.batch_size, schedule.threads, epoch),
        )?;
        let (mut loss_sum, mut pixels, mut skipped) = (0.0f64, 0usize, 0usize);
        for batch in loader {
            let batch = batch?;
            skipped += batch.skipped;
            let Some(Inputs {
                x,
                masks,
                height: h,
                width: w,
            }) = inputs(&batch, &input, device)?
            else {
                continue;
            };
            let labelled = labelled_pixels(&masks, data.classes, &batch, train)?;
            // A batch of ignored pixels only has no loss (its mean would be 0/0).
            if labelled == 0 {
                continue;
            }
            let n = batch.samples.len() as i64;
            let target = Tensor::from_slice(&masks)
                .to_kind(Kind::Int64)
                .view([n, h, w])
                .to_device(device);
            let loss = logits(&x, h, w).cross_entropy_loss::<Tensor>(
                &target,
                None,
                Reduction::Mean,
                i64::from(IGNORE),
                0.0,
            );
            optimiser.zero_grad();
            loss.backward();
            optimiser.step(lr);
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
            epochs = schedule.epochs,
            loss,
            lr,
            seconds = epoch_started.elapsed().as_secs_f64(),
            "segmentation epoch"
        );
        losses.push(loss);
    }
    Ok(losses)
}

/// Scores `predict(x, height, width)` (N×C×h×w logits, computed without gradients) on the
/// validation split: the scores and the number of images.
fn score(
    data: &SegmentationData,
    batch_size: usize,
    threads: usize,
    predict: impl Fn(&Tensor, i64, i64) -> Tensor,
    device: Device,
) -> Result<(SegmentationScores, usize), SegmentationError> {
    let input = Normalizer::new(device);
    let val = &data.val;
    let mut confusion = ConfusionMatrix::new(data.classes);
    let mut done = Vec::with_capacity(val.len());
    let loader = SegLoader::new(
        Arc::clone(val),
        (0..val.len()).collect(),
        data.val_augment,
        loader_config(batch_size, threads, 0),
    )?;
    for batch in loader {
        let batch = batch?;
        let Some(Inputs {
            x,
            masks,
            height: h,
            width: w,
        }) = inputs(&batch, &input, device)?
        else {
            continue;
        };
        let predictions = tch::no_grad(|| {
            predict(&x, h, w)
                .argmax(1, false)
                .to_kind(Kind::Uint8)
                .to_device(Device::Cpu)
        });
        let predictions = Vec::<u8>::try_from(predictions.flatten(0, -1)).map_err(internal)?;
        let pixels = (h * w) as usize;
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
    Ok((confusion.scores(), done.len()))
}

/// Logs the scores of `result`.
/// Scores `predict` on `val` for a network whose training gave `losses`, and logs the scores.
pub(crate) fn scored(
    data: &SegmentationData,
    batch_size: usize,
    threads: usize,
    predict: impl Fn(&Tensor, i64, i64) -> Tensor,
    device: Device,
    losses: Vec<f64>,
    started: Instant,
) -> Result<SegmentationResult, SegmentationError> {
    let (scores, images) = score(data, batch_size, threads, predict, device)?;
    let result = SegmentationResult {
        scores,
        losses,
        images,
    };
    log_scores(&result, started);
    Ok(result)
}

fn log_scores(result: &SegmentationResult, started: Instant) {
    info!(
        miou = result.scores.miou * 100.0,
        miou_present = result.scores.miou_present * 100.0,
        pixel_accuracy = result.scores.pixel_accuracy * 100.0,
        images = result.images,
        seconds = started.elapsed().as_secs_f64(),
        "segmentation scored"
    );
}

/// Trains the linear head on the training split and scores it on `val`.
pub fn evaluate(
    data: &SegmentationData,
    backbone: &ResNet,
    probe: &LinearProbe,
    device: Device,
) -> Result<SegmentationResult, SegmentationError> {
    check(probe.epochs, probe.batch_size, data.classes)?;
    let started = Instant::now();
    tch::manual_seed(SEED as i64);
    let head = LinearHead::new(backbone.feature_dim(), data.classes as i64, device);
    let mut sgd = Sgd::new(
        head.parameters(),
        SgdConfig {
            momentum: MOMENTUM,
            weight_decay: WEIGHT_DECAY,
        },
    );
    let lr = |epoch| step_lr(probe.lr, epoch, probe.epochs);
    let schedule = Schedule {
        epochs: probe.epochs,
        batch_size: probe.batch_size,
        threads: probe.threads,
        lr: &lr,
    };
    let losses = train(
        data,
        &schedule,
        &mut sgd,
        |x, h, w| {
            let features = tch::no_grad(|| backbone.forward_layer4_dilated_t(x, false));
            head.forward_t(&features.to_kind(Kind::Float), h, w, true)
        },
        device,
    )?;
    scored(
        data,
        probe.batch_size,
        probe.threads,
        |x, h, w| {
            let features = backbone.forward_layer4_dilated_t(x, false);
            head.forward_t(&features.to_kind(Kind::Float), h, w, false)
        },
        device,
        losses,
        started,
    )
}

/// The `segmentation` evaluation of a run config in `mode`: its VOC or Cityscapes data set
/// ([`SegmentationData`]) at the scale of the run's large crop; the metrics object of
/// `kontrast eval` (percent), with the mode and the first and last epochs' training loss.
#[allow(clippy::too_many_arguments)]
pub fn run(
    evaluation: &EvaluationConfig,
    crop: usize,
    moco: &Moco,
    threads: usize,
    device: Device,
    epochs: u32,
    batch_size: u32,
    mode: SegmentationMode,
) -> Result<serde_json::Value, SegmentationError> {
    let data = SegmentationData::open(evaluation, crop)?;
    let backbone = &moco.encoder_q().backbone;
    let (width, height) = data.val_size().unwrap_or_default();
    let result = match mode {
        SegmentationMode::Linear => {
            let probe = LinearProbe {
                epochs,
                batch_size: batch_size as usize,
                lr: LINEAR_LR,
                threads,
            };
            info!(
                format = ?data.format,
                train_split = data.train_split,
                train = data.train.len(),
                val = data.val.len(),
                width,
                height,
                epochs,
                batch_size,
                lr = probe.lr,
                "segmentation linear probe"
            );
            evaluate(&data, backbone, &probe, device)?
        }
        SegmentationMode::Finetune => {
            let config = Finetune::for_data(&data, epochs, batch_size as usize, threads);
            info!(
                format = ?data.format,
                train_split = data.train_split,
                train = data.train.len(),
                val = data.val.len(),
                width,
                height,
                epochs,
                batch_size,
                lr = config.lr,
                optimiser = ?config.optimiser,
                dilation = config.dilation,
                "segmentation fine-tuning"
            );
            // The query encoder's backbone: every parameter but the projection head's.
            let params = moco
                .trainable_named()
                .into_iter()
                .filter(|(name, _)| !name.starts_with("encoder_q.fc."))
                .map(|(_, t)| t)
                .collect();
            finetune::evaluate(&data, backbone, params, &config, device)?
        }
    };
    let iou: serde_json::Map<String, serde_json::Value> = result
        .scores
        .iou
        .iter()
        .enumerate()
        .map(|(c, v)| (data.class_name(c).to_string(), json!(v * 100.0)))
        .collect();
    let (first, last) = match (result.losses.first(), result.losses.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return Err(internal("no training epoch ran")),
    };
    Ok(json!({
        "mode": mode,
        "mIoU": result.scores.miou * 100.0,
        "mIoUPresent": result.scores.miou_present * 100.0,
        "pixelAccuracy": result.scores.pixel_accuracy * 100.0,
        "iou": iou,
        "trainLoss": {"first": first, "last": last},
        "images": result.images,
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
