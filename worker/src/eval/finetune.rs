//! Semantic segmentation by full fine-tuning (the `segmentation` evaluation's `finetune` mode),
//! the paper's protocol:
//! - the query encoder's backbone at output stride 16 ([`ResNet::forward_layer4_dilated_t`]),
//!   trainable, its batch norms in training mode (batch statistics, running ones updated);
//! - the head of [`FinetuneHead`] (two dilated 3×3 layers with BN and ReLU, a 1×1 classifier,
//!   bilinear upsampling to the label size), dilation 6 on VOC and 1 on Cityscapes;
//! - per-pixel cross-entropy, [`IGNORE`](kontrast_data::segment::IGNORE) ignored;
//! - VOC: SGD ([`Sgd`], `torch.optim.SGD`) lr [`VOC_LR`], momentum 0.9, weight decay 1e-4 on
//!   backbone and head, ×0.1 at 2/3 and 8/9 of the epochs ([`step_lr`]);
//! - Cityscapes: Adam ([`Adam`], `torch.optim.Adam` with L2 decay) lr [`CITYSCAPES_LR`],
//!   weight decay 1e-4, poly decay `(1 − epoch/epochs)^0.9` ([`poly_lr`]);
//! - the last epoch's network scored on `val` in evaluation mode, as the linear probe is.
use std::time::Instant;

use kontrast_api::config::EvaluationDatasetFormat;
use tch::{Device, Kind, Tensor};

use crate::model::resnet::ResNet;
use crate::train::sgd::{Sgd, SgdConfig};

use super::adam::{Adam, AdamConfig};
use super::finetune_head::FinetuneHead;
use super::poly_lr::poly_lr;
use super::segmentation::{
    MOMENTUM, Optimiser, SEED, Schedule, SegmentationError, SegmentationResult, WEIGHT_DECAY,
    check, scored, step_lr, train,
};
use super::segmentation_data::SegmentationData;

/// The paper's VOC fine-tuning rate (SGD).
pub const VOC_LR: f64 = 0.003;
/// The paper's Cityscapes fine-tuning rate (Adam).
pub const CITYSCAPES_LR: f64 = 1e-4;

/// The optimiser and its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinetuneOptimiser {
    /// SGD with momentum, the rate ×0.1 at 2/3 and 8/9 of the epochs (VOC).
    SgdStep,
    /// Adam, the rate decayed by the poly schedule (Cityscapes).
    AdamPoly,
}

impl FinetuneOptimiser {
    /// The rate of epoch `epoch` (0-based) of `epochs` from `base`.
    pub fn lr(self, base: f64, epoch: u32, epochs: u32) -> f64 {
        match self {
            FinetuneOptimiser::SgdStep => step_lr(base, epoch, epochs),
            FinetuneOptimiser::AdamPoly => poly_lr(base, epoch, epochs),
        }
    }
}

/// What to fine-tune and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Finetune {
    /// Training epochs.
    pub epochs: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// The optimiser and schedule.
    pub optimiser: FinetuneOptimiser,
    /// Dilation (and padding) of the head's 3×3 layers.
    pub dilation: i64,
    /// Data-loading threads.
    pub threads: usize,
}

impl Finetune {
    /// The paper's settings for `data` (VOC: SGD, step decay, dilation 6; Cityscapes: Adam,
    /// poly decay, dilation 1).
    pub fn for_data(
        data: &SegmentationData,
        epochs: u32,
        batch_size: usize,
        threads: usize,
    ) -> Self {
        let (lr, optimiser) = match data.format {
            EvaluationDatasetFormat::Cityscapes => (CITYSCAPES_LR, FinetuneOptimiser::AdamPoly),
            _ => (VOC_LR, FinetuneOptimiser::SgdStep),
        };
        Self {
            epochs,
            batch_size,
            lr,
            optimiser,
            dilation: data.head_dilation(),
            threads,
        }
    }
}

/// Fine-tunes `backbone` (whose trainable tensors are `backbone_params`) with a fresh head on
/// the training split and scores the result on `val`. The backbone's weights and running
/// statistics change.
pub fn evaluate(
    data: &SegmentationData,
    backbone: &ResNet,
    backbone_params: Vec<Tensor>,
    config: &Finetune,
    device: Device,
) -> Result<SegmentationResult, SegmentationError> {
    check(config.epochs, config.batch_size, data.classes)?;
    if config.dilation < 1 {
        return Err(SegmentationError::Config(format!(
            "head dilation {} must be positive",
            config.dilation
        )));
    }
    let started = Instant::now();
    tch::manual_seed(SEED as i64);
    let head = FinetuneHead::new(
        backbone.feature_dim(),
        data.classes as i64,
        config.dilation,
        device,
    );
    let mut params = backbone_params;
    params.extend(head.parameters());
    let mut optimiser: Box<dyn Optimiser> = match config.optimiser {
        FinetuneOptimiser::SgdStep => Box::new(Sgd::new(
            params,
            SgdConfig {
                momentum: MOMENTUM,
                weight_decay: WEIGHT_DECAY,
            },
        )),
        FinetuneOptimiser::AdamPoly => Box::new(Adam::new(
            params,
            AdamConfig::with_weight_decay(WEIGHT_DECAY),
        )),
    };
    let lr = |epoch| config.optimiser.lr(config.lr, epoch, config.epochs);
    let schedule = Schedule {
        epochs: config.epochs,
        batch_size: config.batch_size,
        threads: config.threads,
        lr: &lr,
    };
    let losses = train(
        data,
        &schedule,
        optimiser.as_mut(),
        |x, h, w| {
            let features = backbone.forward_layer4_dilated_t(x, true);
            head.forward_t(&features.to_kind(Kind::Float), h, w, true)
        },
        device,
    )?;
    scored(
        data,
        config.batch_size,
        config.threads,
        |x, h, w| {
            let features = backbone.forward_layer4_dilated_t(x, false);
            head.forward_t(&features.to_kind(Kind::Float), h, w, false)
        },
        device,
        losses,
        started,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_optimiser_follows_its_schedule() {
        let sgd = FinetuneOptimiser::SgdStep;
        assert_eq!(sgd.lr(VOC_LR, 0, 45), VOC_LR);
        assert!((sgd.lr(VOC_LR, 30, 45) - VOC_LR * 0.1).abs() < 1e-15);
        assert!((sgd.lr(VOC_LR, 44, 45) - VOC_LR * 0.01).abs() < 1e-15);
        let adam = FinetuneOptimiser::AdamPoly;
        assert_eq!(adam.lr(CITYSCAPES_LR, 0, 150), CITYSCAPES_LR);
        let half = CITYSCAPES_LR * 0.5f64.powf(0.9);
        assert!((adam.lr(CITYSCAPES_LR, 75, 150) - half).abs() < 1e-18);
    }
}
