//! One optimisation step: forward (under autocast in mixed precision), backward, gradient
//! averaging across the gang, SGD (unless fp16 gradients overflowed), enqueue.
use std::time::Duration;

use crate::model::{AutocastError, CollectiveError, Gang, Moco, ModelError, Views};

use super::loss_scale::LossScaler;
use super::precision::MixedPrecision;
use super::sgd::Sgd;

/// Averages the query encoder's gradients across the gang (a bucketed all-reduce).
pub trait GradientSync {
    /// Replaces every gradient by its mean over the ranks; returns the time spent communicating.
    fn sync(&mut self) -> Result<Duration, CollectiveError>;
}

/// The losses of one step, as numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    /// InfoNCE.
    pub info_nce: f64,
    /// The unweighted kNN term, when active.
    pub knn: Option<f64>,
    /// What was back-propagated.
    pub total: f64,
}

/// What a step reports besides its effect on the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// This rank's losses.
    pub losses: StepLosses,
    /// Time spent in the gradient all-reduce.
    pub all_reduce: Duration,
    /// The loss scale factor the gradients were computed with (fp16 only).
    pub loss_scale: Option<f64>,
    /// The gradients overflowed at that factor, so the optimiser step was skipped (fp16 only).
    pub skipped: bool,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The forward pass or the enqueue failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Gradient averaging failed.
    #[error("gradient all-reduce failed: {0}")]
    GradientSync(#[source] CollectiveError),
    /// Autocast could not be entered for the forward pass.
    #[error("mixed precision: {0}")]
    Autocast(#[from] AutocastError),
    /// The loss is not finite: training diverged.
    #[error("the loss is {0}: training diverged (lower the learning rate)")]
    NonFinite(f64),
}

/// Runs one step at learning rate `lr` in fp32 (or the model's dtype). The queue is updated
/// after the backward pass, so the negatives of this step are the previous steps' keys, as in the
/// reference.
pub fn train_step(
    moco: &Moco,
    sgd: &mut Sgd,
    views: &Views,
    lr: f64,
    knn_active: bool,
    gang: Option<&dyn Gang>,
    sync: Option<&mut dyn GradientSync>,
) -> Result<StepReport, StepError> {
    let mut fp32 = MixedPrecision::fp32();
    train_step_with_precision(moco, sgd, views, lr, knn_active, gang, sync, &mut fp32)
}

/// [`train_step`] in `precision`. As in PyTorch's AMP recipe, only the forward pass (encoders,
/// momentum update, losses) runs under autocast; the backward pass runs each op in the dtype its
/// forward used. With a loss scaler the loss is scaled before the backward pass, and a step whose
/// averaged gradients are not finite is skipped: the query encoder and the SGD momentum keep
/// their values while the key encoder has already taken its momentum step towards them, which is
/// harmless. Its keys are still enqueued: they come from the key encoder without gradients and do
/// not depend on the overflow. A non-finite loss is an error in every precision: the scale only
/// acts on the backward pass, so skipping could not cure it.
#[allow(
    clippy::too_many_arguments,
    reason = "train_step's arguments plus the precision"
)]
pub fn train_step_with_precision(
    moco: &Moco,
    sgd: &mut Sgd,
    views: &Views,
    lr: f64,
    knn_active: bool,
    gang: Option<&dyn Gang>,
    sync: Option<&mut dyn GradientSync>,
    precision: &mut MixedPrecision,
) -> Result<StepReport, StepError> {
    sgd.zero_grad();
    let forward = {
        let _autocast = precision.enter_forward()?;
        moco.forward(views, knn_active, gang)?
    };
    let total = forward.losses.total.double_value(&[]);
    if !total.is_finite() {
        return Err(StepError::NonFinite(total));
    }
    let loss_scale = precision.scaler().map(LossScaler::scale);
    match precision.scaler() {
        Some(scaler) => scaler.scale_loss(&forward.losses.total).backward(),
        None => forward.losses.total.backward(),
    }
    let all_reduce = match sync {
        Some(s) => s.sync().map_err(StepError::GradientSync)?,
        None => Duration::ZERO,
    };
    // The gradients are averaged across the gang by now, so an overflow on any rank is an
    // overflow on every rank: all of them skip (and back off) together.
    let finite = match precision.scaler_mut() {
        Some(scaler) => {
            let finite = scaler.unscale(&moco.trainable());
            scaler.update(finite);
            finite
        }
        None => true,
    };
    if finite {
        sgd.step(lr);
    }
    moco.enqueue(&forward.keys, forward.key_features.as_ref())?;
    Ok(StepReport {
        losses: StepLosses {
            info_nce: forward.losses.info_nce.double_value(&[]),
            knn: forward.losses.knn.as_ref().map(|t| t.double_value(&[])),
            total,
        },
        all_reduce,
        loss_scale,
        skipped: !finite,
    })
}
