//! One optimisation step: forward, backward, gradient averaging across the gang, SGD, enqueue.
use std::time::Duration;

use crate::model::{CollectiveError, Gang, Moco, ModelError, Views};

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
    /// The loss is not finite: training diverged.
    #[error("the loss is {0}: training diverged (lower the learning rate)")]
    NonFinite(f64),
}

/// Runs one step at learning rate `lr`. The queue is updated after the backward pass, so the
/// negatives of this step are the previous steps' keys, as in the reference.
pub fn train_step(
    moco: &Moco,
    sgd: &mut Sgd,
    views: &Views,
    lr: f64,
    knn_active: bool,
    gang: Option<&dyn Gang>,
    sync: Option<&mut dyn GradientSync>,
) -> Result<StepReport, StepError> {
    sgd.zero_grad();
    let forward = moco.forward(views, knn_active, gang)?;
    let total = forward.losses.total.double_value(&[]);
    if !total.is_finite() {
        return Err(StepError::NonFinite(total));
    }
    forward.losses.total.backward();
    let all_reduce = match sync {
        Some(s) => s.sync().map_err(StepError::GradientSync)?,
        None => Duration::ZERO,
    };
    sgd.step(lr);
    moco.enqueue(&forward.keys, forward.key_features.as_ref())?;
    Ok(StepReport {
        losses: StepLosses {
            info_nce: forward.losses.info_nce.double_value(&[]),
            knn: forward.losses.knn.as_ref().map(|t| t.double_value(&[])),
            total,
        },
        all_reduce,
    })
}
