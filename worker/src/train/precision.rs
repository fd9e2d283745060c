//! How a run's steps compute, from `recipe.precision`: fp32 throughout; bf16 autocast in the
//! forward pass; or fp16 autocast with dynamic loss scaling (CUDA only). Master weights, gradients
//! and optimiser state stay fp32 in every mode.
use std::collections::BTreeMap;

use kontrast_api::config::Precision;
use tch::{Device, Kind, Tensor};

use crate::model::{AutocastError, AutocastGuard, autocast_kind};

use super::loss_scale::{LossScaleStateError, LossScaler, LossScalerConfig};

/// Checkpoint name of the loss scaler's state (fp16 runs only).
pub const LOSS_SCALER_TENSOR: &str = "amp.loss_scaler";

/// A precision this run cannot train in.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    /// float16 autocast on the CPU is slow and its loss scaling untested; the recipe reserves
    /// fp16 for GPUs.
    #[error(
        "precision fp16 needs CUDA (float16 autocast with loss scaling is GPU only), but this run \
         trains on the CPU: use precision bf16 or fp32 there"
    )]
    Fp16NeedsCuda,
    /// Autocast is not available on the device.
    #[error("precision {precision:?}: {source}")]
    Autocast {
        /// The requested precision.
        precision: Precision,
        /// Why.
        #[source]
        source: AutocastError,
    },
}

/// The autocast dtype of the forward pass and the loss scaler, as the steps of a run use them.
#[derive(Debug)]
pub struct MixedPrecision {
    device: Device,
    autocast: Option<Kind>,
    scaler: Option<LossScaler>,
}

impl MixedPrecision {
    /// Plain fp32 (or whatever dtype the model is in): no autocast, no loss scaling.
    pub fn fp32() -> Self {
        Self {
            device: Device::Cpu,
            autocast: None,
            scaler: None,
        }
    }

    /// The mode of `precision` on `device`; fp16 gets a loss scaler with GradScaler's defaults.
    pub fn new(precision: Precision, device: Device) -> Result<Self, PrecisionError> {
        if precision == Precision::Fp16 && !device.is_cuda() {
            return Err(PrecisionError::Fp16NeedsCuda);
        }
        let autocast = autocast_kind(precision);
        if let Some(kind) = autocast {
            // Enters and leaves once, so an unsupported device fails here rather than at step 1.
            drop(
                AutocastGuard::enter(device, kind)
                    .map_err(|source| PrecisionError::Autocast { precision, source })?,
            );
        }
        let scaler =
            (precision == Precision::Fp16).then(|| LossScaler::new(LossScalerConfig::default()));
        Ok(Self {
            device,
            autocast,
            scaler,
        })
    }

    /// Adds (or replaces) the loss scaler: how tests exercise loss scaling on the CPU.
    pub fn with_loss_scaler(mut self, scaler: LossScaler) -> Self {
        self.scaler = Some(scaler);
        self
    }

    /// The dtype of the forward pass's autocast, if any.
    pub fn autocast_kind(&self) -> Option<Kind> {
        self.autocast
    }

    /// Autocast for the forward pass, until the guard is dropped; `None` in fp32.
    pub fn enter_forward(&self) -> Result<Option<AutocastGuard>, AutocastError> {
        self.autocast
            .map(|kind| AutocastGuard::enter(self.device, kind))
            .transpose()
    }

    /// The loss scaler (fp16).
    pub fn scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The loss scaler (fp16), to update after a step.
    pub fn scaler_mut(&mut self) -> Option<&mut LossScaler> {
        self.scaler.as_mut()
    }

    /// Tensors to checkpoint: the loss scaler's state, when there is one.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.scaler
            .iter()
            .map(|s| (LOSS_SCALER_TENSOR.to_string(), s.state()))
            .collect()
    }

    /// Restores the loss scaler from checkpointed tensors; a checkpoint without its state (e.g.
    /// written before loss scaling existed) leaves the scaler at its initial factor, which backs
    /// off to a working one within a few skipped steps.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<(), LossScaleStateError> {
        match (&mut self.scaler, tensors.get(LOSS_SCALER_TENSOR)) {
            (Some(scaler), Some(state)) => scaler.load_state(state),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_on_the_cpu_is_refused_naming_the_precision() {
        let err = MixedPrecision::new(Precision::Fp16, Device::Cpu).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("precision fp16"), "{message}");
        assert!(message.contains("CUDA"), "{message}");
    }

    #[test]
    fn each_precision_sets_autocast_and_loss_scaling() {
        let fp32 = MixedPrecision::new(Precision::Fp32, Device::Cpu).unwrap();
        assert_eq!(fp32.autocast_kind(), None);
        assert!(fp32.scaler().is_none() && fp32.state().is_empty());
        assert!(fp32.enter_forward().unwrap().is_none());
        let bf16 = MixedPrecision::new(Precision::Bf16, Device::Cpu).unwrap();
        assert_eq!(bf16.autocast_kind(), Some(Kind::BFloat16));
        assert!(bf16.scaler().is_none());
    }

    #[test]
    fn the_scaler_state_is_checkpointed() {
        let mut mp = MixedPrecision::fp32().with_loss_scaler(LossScaler::new(Default::default()));
        if let Some(s) = mp.scaler_mut() {
            s.update(false);
        }
        let saved: BTreeMap<String, Tensor> = mp.state().into_iter().collect();
        let mut restored =
            MixedPrecision::fp32().with_loss_scaler(LossScaler::new(Default::default()));
        restored.load_state(&saved).unwrap();
        assert_eq!(restored.scaler().map(LossScaler::scale), Some(32768.0));
        // Absent from an older checkpoint: the scaler keeps its initial factor.
        let mut fresh =
            MixedPrecision::fp32().with_loss_scaler(LossScaler::new(Default::default()));
        fresh.load_state(&BTreeMap::new()).unwrap();
        assert_eq!(fresh.scaler().map(LossScaler::scale), Some(65536.0));
    }
}
