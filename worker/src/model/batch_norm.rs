//! BatchNorm2d with PyTorch's state (`weight`, `bias`, `running_mean`, `running_var`,
//! `num_batches_tracked`), so checkpoints load into torchvision models with `strict=True`.
use tch::{Kind, Tensor};

use super::params::Scope;

/// PyTorch's defaults, which the recipe keeps.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// A 2-D batch normalisation layer.
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    /// Registers a layer over `channels` channels: weight 1, bias 0 (torchvision's init).
    pub fn new(mut scope: Scope<'_>, channels: i64) -> Self {
        let opts = scope.float();
        let weight = scope.parameter("weight", Tensor::ones([channels], opts));
        let bias = scope.parameter("bias", Tensor::zeros([channels], opts));
        let running_mean = scope.buffer("running_mean", Tensor::zeros([channels], opts));
        let running_var = scope.buffer("running_var", Tensor::ones([channels], opts));
        let num_batches_tracked = scope.buffer(
            "num_batches_tracked",
            Tensor::zeros([], (Kind::Int64, scope.device())),
        );
        Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
        }
    }

    /// Normalises `x` (N×C×H×W) with batch statistics in training mode (updating the running
    /// ones) and with the running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            MOMENTUM,
            EPS,
            true,
        )
    }
}
