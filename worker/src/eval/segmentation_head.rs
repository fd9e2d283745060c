//! The linear segmentation head: the frozen features standardised per channel (batch norm
//! without affine parameters, as MAE's linear probe normalises frozen features) and scaled by
//! `1/√F`, a 1×1 convolution with bias from the feature width `F` to one logit per class, then
//! bilinear upsampling (`align_corners=False`) to the label size.
//!
//! Why the normalisation: raw post-ReLU features of a self-supervised checkpoint have an
//! arbitrary scale, and the largest stable SGD step of a linear classifier shrinks with the
//! squared norm of its input, so one learning rate would diverge on one checkpoint and crawl on
//! another. Standardised and scaled, every location's input has unit mean square norm whatever
//! the checkpoint and width; at evaluation the normalisation is a fixed affine map, so the
//! whole head stays linear in the features.
use tch::{Device, Kind, Tensor};

/// Batch-norm momentum of the running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;
/// Batch-norm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// Running per-channel statistics and a trainable 1×1 convolution (`classes × features × 1 × 1`
/// weight, `classes` bias).
#[derive(Debug)]
pub struct LinearHead {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    scale: f64,
}

impl LinearHead {
    /// PyTorch's default `Conv2d` initialisation (Kaiming-uniform with a = √5 for the weight,
    /// which for a 1×1 kernel is `U(±1/√features)`, and the same bound for the bias), drawn from
    /// tch's global generator.
    pub fn new(features: i64, classes: i64, device: Device) -> Self {
        let bound = 1.0 / (features.max(1) as f64).sqrt();
        let uniform = |shape: &[i64]| {
            ((Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0) * bound)
                .set_requires_grad(true)
        };
        Self {
            weight: uniform(&[classes, features, 1, 1]),
            bias: uniform(&[classes]),
            running_mean: Tensor::zeros([features], (Kind::Float, device)),
            running_var: Tensor::ones([features], (Kind::Float, device)),
            scale: bound,
        }
    }

    /// N×F×h×w features → N×C×`height`×`width` logits; `train` normalises with the batch's
    /// statistics and updates the running ones, else uses the running ones.
    pub fn forward_t(&self, features: &Tensor, height: i64, width: i64, train: bool) -> Tensor {
        let standardised = features.batch_norm(
            None::<&Tensor>,
            None,
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            false,
        );
        (standardised * self.scale)
            .conv2d(&self.weight, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1)
            .upsample_bilinear2d([height, width], false, None, None)
    }

    /// The trainable tensors, weight then bias.
    pub fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.shallow_clone(), self.bias.shallow_clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_a_per_cell_affine_map_upsampled_bilinearly() {
        tch::manual_seed(1);
        let head = LinearHead::new(4, 3, Device::Cpu);
        let features = Tensor::randn([2, 4, 3, 5], (Kind::Float, Device::Cpu));
        let features = features * 7.0 + 3.0;
        let logits = head.forward_t(&features, 12, 20, true);
        assert_eq!(logits.size(), [2, 3, 12, 20]);
        // The same as an explicit matrix product per cell of the standardised features scaled
        // by 1/√4, then the same upsampling.
        let [w, b] = [&head.parameters()[0], &head.parameters()[1]];
        let dims = [0i64, 2, 3];
        let mean = features.mean_dim(dims.as_slice(), true, Kind::Float);
        let var = features.var_correction(dims.as_slice(), 0, true);
        let standardised = (&features - &mean) / (var + BN_EPS).sqrt() * 0.5;
        let cells = standardised
            .permute([0, 2, 3, 1])
            .matmul(&w.view([3, 4]).tr())
            + b;
        let expected = cells
            .permute([0, 3, 1, 2])
            .upsample_bilinear2d([12, 20], false, None, None);
        let diff = (&logits - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        // Every parameter receives a gradient.
        logits.sum(Kind::Float).backward();
        for p in head.parameters() {
            assert!(p.grad().defined() && p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
        assert!(w.abs().max().double_value(&[]) <= 0.5);
        // The running statistics moved a tenth of the way to the batch's (unbiased variance).
        let expected_mean = mean.view([4]) * BN_MOMENTUM;
        let diff = (&head.running_mean - expected_mean)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        let n = (2 * 3 * 5) as f64;
        let unbiased = features.var_correction(dims.as_slice(), 1, false);
        let expected_var = unbiased * BN_MOMENTUM + (1.0 - BN_MOMENTUM);
        assert!(
            (&head.running_var - expected_var)
                .abs()
                .max()
                .double_value(&[])
                < 1e-4
        );
        assert!(n > 1.0);
        // Evaluation uses the running statistics and leaves them alone.
        let before = head.running_mean.copy();
        let _ = tch::no_grad(|| head.forward_t(&features, 12, 20, false));
        assert_eq!(before, head.running_mean);
    }
}
