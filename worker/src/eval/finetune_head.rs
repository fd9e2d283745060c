//! The fine-tuning segmentation head of the paper's code: Conv3×3(F→256, dilation d, padding d,
//! no bias) → BN → ReLU → Conv3×3(256→256, d) → BN → ReLU → Conv1×1(256→C, no bias), then
//! bilinear upsampling (`align_corners=False`) to the label size. Its tensors carry the names
//! of the same `torch.nn.Sequential`'s `state_dict` (`0.weight`, `1.running_mean`, …), so a
//! PyTorch head loads them 1:1.
use tch::{Device, Kind, Tensor};

/// Channels of the two 3×3 layers.
pub const WIDTH: i64 = 256;
/// Batch-norm momentum of the running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;
/// Batch-norm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// A batch norm's affine parameters and running statistics.
#[derive(Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl Norm {
    /// PyTorch's initialisation: weight 1, bias 0, mean 0, variance 1.
    fn new(channels: i64, device: Device) -> Self {
        let opts = (Kind::Float, device);
        Self {
            weight: Tensor::ones([channels], opts).set_requires_grad(true),
            bias: Tensor::zeros([channels], opts).set_requires_grad(true),
            running_mean: Tensor::zeros([channels], opts),
            running_var: Tensor::ones([channels], opts),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            false,
        )
    }
}

/// The head; `forward_t` with `train` normalises with the batch's statistics and updates the
/// running ones, as `nn.BatchNorm2d` in training mode.
#[derive(Debug)]
pub struct FinetuneHead {
    conv1: Tensor,
    bn1: Norm,
    conv2: Tensor,
    bn2: Norm,
    classifier: Tensor,
    dilation: i64,
}

/// PyTorch's default `Conv2d` weight initialisation (Kaiming-uniform with a = √5, which is
/// `U(±1/√fan_in)`), drawn from tch's global generator.
fn conv_weight(cout: i64, cin: i64, k: i64, device: Device) -> Tensor {
    let bound = 1.0 / ((cin * k * k).max(1) as f64).sqrt();
    ((Tensor::rand([cout, cin, k, k], (Kind::Float, device)) * 2.0 - 1.0) * bound)
        .set_requires_grad(true)
}

impl FinetuneHead {
    /// A head from `features` channels to `classes` logits with 3×3 layers dilated by
    /// `dilation` (6 on VOC, 1 on Cityscapes).
    pub fn new(features: i64, classes: i64, dilation: i64, device: Device) -> Self {
        Self {
            conv1: conv_weight(WIDTH, features, 3, device),
            bn1: Norm::new(WIDTH, device),
            conv2: conv_weight(WIDTH, WIDTH, 3, device),
            bn2: Norm::new(WIDTH, device),
            classifier: conv_weight(classes, WIDTH, 1, device),
            dilation,
        }
    }

    /// N×F×h×w features → N×C×`height`×`width` logits.
    pub fn forward_t(&self, features: &Tensor, height: i64, width: i64, train: bool) -> Tensor {
        let d = self.dilation;
        let conv3 = |x: &Tensor, w: &Tensor| x.conv2d(w, None::<Tensor>, [1, 1], [d, d], [d, d], 1);
        let x = self
            .bn1
            .forward_t(&conv3(features, &self.conv1), train)
            .relu();
        let x = self.bn2.forward_t(&conv3(&x, &self.conv2), train).relu();
        x.conv2d(&self.classifier, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
            .upsample_bilinear2d([height, width], false, None, None)
    }

    /// The trainable tensors.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.named()
            .into_iter()
            .filter(|(name, _)| name.ends_with("weight") || name.ends_with("bias"))
            .map(|(_, t)| t)
            .collect()
    }

    /// Every tensor under its `nn.Sequential` `state_dict` name (layers 0–6; 2 and 5 are the
    /// ReLUs), parameters and running statistics.
    pub fn named(&self) -> Vec<(&'static str, Tensor)> {
        let t = Tensor::shallow_clone;
        vec![
            ("0.weight", t(&self.conv1)),
            ("1.weight", t(&self.bn1.weight)),
            ("1.bias", t(&self.bn1.bias)),
            ("1.running_mean", t(&self.bn1.running_mean)),
            ("1.running_var", t(&self.bn1.running_var)),
            ("3.weight", t(&self.conv2)),
            ("4.weight", t(&self.bn2.weight)),
            ("4.bias", t(&self.bn2.bias)),
            ("4.running_mean", t(&self.bn2.running_mean)),
            ("4.running_var", t(&self.bn2.running_var)),
            ("6.weight", t(&self.classifier)),
        ]
    }

    /// Overwrites the tensor named `name` (see [`named`](Self::named)) with `value`, e.g. to
    /// load a reference's weights; false when there is no such tensor or the shape differs.
    pub fn set(&self, name: &str, value: &Tensor) -> bool {
        let Some((_, mut target)) = self.named().into_iter().find(|(n, _)| *n == name) else {
            return false;
        };
        if target.size() != value.size() {
            return false;
        }
        tch::no_grad(|| target.copy_(value));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parameters_and_initialisation() {
        tch::manual_seed(3);
        let head = FinetuneHead::new(16, 5, 2, Device::Cpu);
        let features = Tensor::randn([2, 16, 4, 6], (Kind::Float, Device::Cpu));
        let logits = head.forward_t(&features, 32, 48, true);
        assert_eq!(logits.size(), [2, 5, 32, 48]);
        let params = head.parameters();
        // Three convolutions and two (weight, bias) pairs; no convolution has a bias.
        assert_eq!(params.len(), 7);
        logits.sum(Kind::Float).backward();
        for (name, p) in head.named() {
            let trainable = name.ends_with("weight") || name.ends_with("bias");
            assert_eq!(p.requires_grad(), trainable, "{name}");
        }
        assert!(params.iter().all(|p| p.grad().defined()));
        let bound = 1.0 / (16.0f64 * 9.0).sqrt();
        assert!(head.conv1.abs().max().double_value(&[]) <= bound);
        // Training mode moved the running mean; evaluation mode leaves it.
        assert!(
            head.bn1
                .running_mean
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
        let before = head.bn2.running_var.copy();
        let _ = tch::no_grad(|| head.forward_t(&features, 8, 8, false));
        assert_eq!(before, head.bn2.running_var);
        assert!(!head.set("7.weight", &before));
        assert!(!head.set(
            "4.running_var",
            &Tensor::zeros([3], (Kind::Float, Device::Cpu))
        ));
        assert!(head.set("4.running_var", &(&before * 2.0)));
        assert_eq!(head.bn2.running_var, before * 2.0);
    }
}
