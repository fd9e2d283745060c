//! Dynamic loss scaling for float16 training, as `torch.cuda.amp.GradScaler` does it: the loss
//! is multiplied by a large factor before the backward pass so that small float16 gradients do
//! not flush to zero; the gradients are divided by it again before the optimiser step. A step
//! whose gradients overflowed (inf or NaN) is skipped and the factor halves; after a long run of
//! finite steps it doubles, so it settles just below the overflow threshold.
use tch::{Kind, Tensor};

/// The schedule of the scale factor (GradScaler's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScalerConfig {
    /// The factor of the first step.
    pub init_scale: f64,
    /// Multiplies the factor after `growth_interval` finite steps in a row.
    pub growth_factor: f64,
    /// Multiplies the factor after a step with non-finite gradients.
    pub backoff_factor: f64,
    /// Finite steps in a row before the factor grows.
    pub growth_interval: u32,
}

impl Default for LossScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// A saved scaler state that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the loss scaler state {0}")]
pub struct LossScaleStateError(String);

/// The current scale factor and the count of finite steps since it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    config: LossScalerConfig,
    scale: f64,
    growth_tracker: u32,
}

impl LossScaler {
    /// A scaler at `config.init_scale`.
    pub fn new(config: LossScalerConfig) -> Self {
        Self {
            config,
            scale: config.init_scale,
            growth_tracker: 0,
        }
    }

    /// The current factor.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Finite steps in a row at the current factor.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// `loss · scale`: what to back-propagate.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Checks the gradients of `params` for inf and NaN and, when every one is finite, divides
    /// them by the factor (in place). Returns whether they were finite; non-finite gradients are
    /// left as they are (the step is to be skipped and the next one zeroes them).
    ///
    /// Call it after the gradients are averaged across the gang: a non-finite gradient on one rank
    /// is then non-finite on every rank, so all ranks take the same decision without another
    /// collective.
    pub fn unscale(&self, params: &[Tensor]) -> bool {
        let grads: Vec<Tensor> = params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        if !all_finite(&grads) {
            return false;
        }
        // A power of two for the usual factors, so the division is exact.
        let inverse = 1.0 / self.scale;
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(inverse);
            }
        });
        true
    }

    /// Moves the factor after a step: backs off when the gradients were not finite, grows after
    /// `growth_interval` finite steps in a row.
    pub fn update(&mut self, finite: bool) {
        if !finite {
            self.scale *= self.config.backoff_factor;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.config.growth_interval {
            self.scale *= self.config.growth_factor;
            self.growth_tracker = 0;
        }
    }

    /// `[scale, growth tracker]` as a float64 tensor, for checkpoints.
    pub fn state(&self) -> Tensor {
        Tensor::from_slice(&[self.scale, f64::from(self.growth_tracker)])
    }

    /// Restores a state saved by [`LossScaler::state`].
    pub fn load_state(&mut self, state: &Tensor) -> Result<(), LossScaleStateError> {
        if state.size() != [2] {
            return Err(LossScaleStateError(format!(
                "has shape {:?}, not [2]",
                state.size()
            )));
        }
        let values = state.to_kind(Kind::Double);
        let (scale, tracker) = (values.double_value(&[0]), values.double_value(&[1]));
        if !(scale.is_finite() && scale > 0.0) {
            return Err(LossScaleStateError(format!("has scale {scale}")));
        }
        if !(tracker >= 0.0 && tracker.fract() == 0.0 && tracker <= f64::from(u32::MAX)) {
            return Err(LossScaleStateError(format!("has growth tracker {tracker}")));
        }
        self.scale = scale;
        self.growth_tracker = tracker as u32;
        Ok(())
    }
}

/// Whether every element of every tensor is finite, in one reduction and one device sync.
fn all_finite(tensors: &[Tensor]) -> bool {
    if tensors.is_empty() {
        return true;
    }
    let per_tensor: Vec<Tensor> = tensors.iter().map(|t| t.isfinite().all()).collect();
    Tensor::stack(&per_tensor, 0).all().int64_value(&[]) != 0
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    fn param_with_grad(grad: &[f32]) -> Tensor {
        let p =
            Tensor::zeros([grad.len() as i64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::from_slice(grad);
        // d(p·g)/dp = g
        (&p * &g).sum(Kind::Float).backward();
        p
    }

    fn small() -> LossScaler {
        LossScaler::new(LossScalerConfig {
            growth_interval: 3,
            ..LossScalerConfig::default()
        })
    }

    #[test]
    fn the_defaults_are_gradscalers() {
        let s = LossScaler::new(LossScalerConfig::default());
        assert_eq!(s.scale(), 65536.0);
        assert_eq!(s.config.growth_interval, 2000);
        assert_eq!(s.config.growth_factor, 2.0);
        assert_eq!(s.config.backoff_factor, 0.5);
    }

    #[test]
    fn finite_gradients_are_unscaled_and_the_scale_grows_after_the_interval() {
        let mut s = small();
        let p = param_with_grad(&[65536.0, -131072.0, 0.5]);
        assert!(s.unscale(std::slice::from_ref(&p)));
        let g: Vec<f32> = Vec::try_from(p.grad()).unwrap();
        assert_eq!(g, [1.0, -2.0, 0.5 / 65536.0]);
        for expected_tracker in [1, 2] {
            s.update(true);
            assert_eq!(s.growth_tracker(), expected_tracker);
            assert_eq!(s.scale(), 65536.0);
        }
        s.update(true);
        assert_eq!((s.scale(), s.growth_tracker()), (131072.0, 0));
    }

    #[test]
    fn a_non_finite_gradient_skips_the_step_and_backs_off() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut s = small();
            s.update(true);
            s.update(true);
            let good = param_with_grad(&[1.0, 2.0]);
            let poisoned = param_with_grad(&[3.0, bad]);
            let finite = s.unscale(&[good.shallow_clone(), poisoned]);
            assert!(!finite, "{bad} must be caught");
            // Nothing was unscaled: the step is skipped as a whole.
            assert_eq!(Vec::<f32>::try_from(good.grad()).unwrap(), [1.0, 2.0]);
            s.update(finite);
            assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 0));
        }
    }

    #[test]
    fn scaling_the_loss_multiplies_by_the_factor() {
        let s = small();
        let loss = Tensor::from_slice(&[1.5f32]).sum(Kind::Float);
        assert_eq!(s.scale_loss(&loss).double_value(&[]), 1.5 * 65536.0);
        assert_eq!(s.scale_loss(&loss).kind(), Kind::Float);
    }

    #[test]
    fn parameters_without_gradients_are_ignored() {
        let s = small();
        let unused = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        assert!(s.unscale(&[unused]));
    }

    #[test]
    fn the_state_round_trips_and_bad_states_are_refused() {
        let mut s = small();
        s.update(false);
        s.update(true);
        let mut restored = small();
        restored.load_state(&s.state()).unwrap();
        assert_eq!(restored, s);
        for bad in [
            Tensor::from_slice(&[1.0f64]),
            Tensor::from_slice(&[0.0f64, 0.0]),
            Tensor::from_slice(&[f64::INFINITY, 0.0]),
            Tensor::from_slice(&[2.0f64, -1.0]),
            Tensor::from_slice(&[2.0f64, 0.5]),
        ] {
            assert!(small().load_state(&bad).is_err(), "{bad:?}");
        }
    }
}
