//! ResNet-18 and ResNet-50 in torchvision's v1.5 layout (stride on the bottleneck's 3×3),
//! registered under torchvision's `state_dict` names so published checkpoints map 1:1, with
//! torchvision's default initialisation.
use kontrast_api::config::Arch;
use tch::Tensor;

use super::batch_norm::BatchNorm2d;
use super::params::Scope;

/// A bias-free 2-D convolution.
#[derive(Debug)]
pub struct Conv2d {
    weight: Tensor,
    stride: i64,
    padding: i64,
    dilation: i64,
}

impl Conv2d {
    /// Registers `name.weight` (out×in×k×k), Kaiming-normal with fan-out and ReLU gain, as
    /// torchvision's ResNet does.
    fn new(scope: &mut Scope<'_>, name: &str, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        let init = Tensor::randn([cout, cin, k, k], scope.float()) * std;
        let weight = scope.sub(name).parameter("weight", init);
        Self {
            weight,
            stride,
            padding: k / 2,
            dilation: 1,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with_stride(x, self.stride)
    }

    /// The convolution at `stride` instead of its own (for a layer run at stride 1).
    fn forward_with_stride(&self, x: &Tensor, stride: i64) -> Tensor {
        self.forward_dilated(x, stride, self.dilation)
    }

    /// The convolution at `stride` and `dilation`, padded by `dilation × (k / 2)` so a 3×3
    /// keeps the spatial size at stride 1 (a 1×1 is unaffected by either).
    fn forward_dilated(&self, x: &Tensor, stride: i64, dilation: i64) -> Tensor {
        let padding = self.padding * dilation;
        x.conv2d(
            &self.weight,
            None::<Tensor>,
            [stride, stride],
            [padding, padding],
            [dilation, dilation],
            1,
        )
    }
}

/// The shortcut of a block whose shape changes: 1×1 convolution + BN (`downsample.0/1`).
#[derive(Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

/// A residual block: basic (two 3×3) for ResNet-18, bottleneck (1×1, 3×3, 1×1) for ResNet-50.
#[derive(Debug)]
struct Block {
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm2d>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(mut scope: Scope<'_>, arch: Arch, cin: i64, planes: i64, stride: i64) -> Self {
        let (specs, cout): (Vec<(i64, i64, i64, i64)>, i64) = match arch {
            // (in, out, kernel, stride) per convolution.
            Arch::Resnet18 => (
                vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
                planes,
            ),
            Arch::Resnet50 => (
                vec![
                    (cin, planes, 1, 1),
                    (planes, planes, 3, stride),
                    (planes, planes * 4, 1, 1),
                ],
                planes * 4,
            ),
        };
        let mut convs = Vec::new();
        let mut bns = Vec::new();
        for (i, (a, b, k, s)) in specs.into_iter().enumerate() {
            convs.push(Conv2d::new(
                &mut scope,
                &format!("conv{}", i + 1),
                a,
                b,
                k,
                s,
            ));
            bns.push(BatchNorm2d::new(scope.sub(format!("bn{}", i + 1)), b));
        }
        let downsample = (stride != 1 || cin != cout).then(|| {
            let mut ds = scope.sub("downsample");
            let conv = Conv2d::new(&mut ds, "0", cin, cout, 1, stride);
            let bn = BatchNorm2d::new(ds.sub("1"), cout);
            Downsample { conv, bn }
        });
        Self {
            convs,
            bns,
            downsample,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_strided_t(x, train, None)
    }

    /// The block with every convolution at `stride` when given, else at its own.
    fn forward_strided_t(&self, x: &Tensor, train: bool, stride: Option<i64>) -> Tensor {
        self.forward_general_t(x, train, stride, 1)
    }

    /// The block with every convolution at `stride` when given (else its own) and dilated by
    /// `dilation` (1: none).
    fn forward_general_t(
        &self,
        x: &Tensor,
        train: bool,
        stride: Option<i64>,
        dilation: i64,
    ) -> Tensor {
        let conv = |c: &Conv2d, x: &Tensor| {
            c.forward_dilated(x, stride.unwrap_or(c.stride), c.dilation * dilation)
        };
        // The ReLUs and the residual sum run in place, as torchvision's blocks do: each would
        // otherwise allocate an activation-sized tensor that autograd keeps until the backward
        // pass. Safe here because every `y` is a fresh batch-norm output, whose backward needs
        // its input, not its output.
        let last = self.convs.len() - 1;
        let mut y = x.shallow_clone();
        for (i, (c, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            y = bn.forward_t(&conv(c, &y), train);
            if i != last {
                let _ = y.relu_();
            }
        }
        let identity = match &self.downsample {
            Some(d) => d.bn.forward_t(&conv(&d.conv, x), train),
            None => x.shallow_clone(),
        };
        let _ = y.g_add_(&identity).relu_();
        y
    }
}

/// A ResNet trunk without its classifier: image batch → pooled features.
#[derive(Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    max_pool: bool,
    layers: Vec<Vec<Block>>,
    feature_dim: i64,
}

impl ResNet {
    /// Registers the trunk's tensors in `scope`. `cifar_stem` swaps the 7×7/2 convolution and the
    /// max-pool for one 3×3/1 convolution (for images of a few dozen pixels); `width` is the
    /// first stage's channel count (torchvision: 64), doubled at each later stage.
    pub fn new(mut scope: Scope<'_>, arch: Arch, cifar_stem: bool, width: i64) -> Self {
        let w = width;
        let conv1 = if cifar_stem {
            Conv2d::new(&mut scope, "conv1", 3, w, 3, 1)
        } else {
            Conv2d::new(&mut scope, "conv1", 3, w, 7, 2)
        };
        let bn1 = BatchNorm2d::new(scope.sub("bn1"), w);
        let (depths, expansion) = match arch {
            Arch::Resnet18 => ([2, 2, 2, 2], 1),
            Arch::Resnet50 => ([3, 4, 6, 3], 4),
        };
        let mut cin = w;
        let mut layers = Vec::new();
        for (l, (&depth, planes)) in depths.iter().zip([w, 2 * w, 4 * w, 8 * w]).enumerate() {
            let mut layer_scope = scope.sub(format!("layer{}", l + 1));
            let mut blocks = Vec::new();
            for b in 0..depth {
                let stride = if l > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block::new(layer_scope.sub(b), arch, cin, planes, stride));
                cin = planes * expansion;
            }
            layers.push(blocks);
        }
        Self {
            conv1,
            bn1,
            max_pool: !cifar_stem,
            layers,
            feature_dim: cin,
        }
    }

    /// Width of the pooled features (512 or 2048).
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// N×3×H×W images → N×C pooled features.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem_t(x, train);
        for layer in &self.layers {
            for block in layer {
                y = block.forward_t(&y, train);
            }
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn stem_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.bn1.forward_t(&self.conv1.forward(x), train);
        let _ = y.relu_();
        if self.max_pool {
            y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
        } else {
            y
        }
    }

    /// N×3×H×W images → N×C₃×h×w feature maps of layer3 run at stride 1 (layer4 and the pooling
    /// left out), as dense-correspondence evaluations modify a ResNet (videowalk's
    /// `ResNet.modify`: every convolution of layer3 at stride 1, no dilation), so the maps keep
    /// layer2's resolution: [`layer3_stride`](Self::layer3_stride) pixels per cell.
    pub fn forward_layer3_unstrided_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem_t(x, train);
        for (l, layer) in self.layers.iter().take(3).enumerate() {
            let stride = (l == 2).then_some(1);
            for block in layer {
                y = block.forward_strided_t(&y, train, stride);
            }
        }
        y
    }

    /// Input pixels per cell of [`forward_layer3_unstrided_t`](Self::forward_layer3_unstrided_t)'s
    /// maps: 8 with torchvision's stem, 2 with the CIFAR stem.
    pub fn layer3_stride(&self) -> i64 {
        let stem = if self.max_pool { 4 } else { 1 };
        stem * 2
    }

    /// N×3×H×W images → N×C×h×w feature maps of layer4 run at output stride 16, as the
    /// segmentation protocol dilates a ResNet: every convolution of layer4 at stride 1, its 3×3
    /// convolutions with dilation 2 and padding 2 (all blocks, the first one included), layers
    /// 1–3 unchanged; [`dilated_stride`](Self::dilated_stride) input pixels per cell.
    pub fn forward_layer4_dilated_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem_t(x, train);
        for (l, layer) in self.layers.iter().enumerate() {
            let (stride, dilation) = if l == 3 { (Some(1), 2) } else { (None, 1) };
            for block in layer {
                y = block.forward_general_t(&y, train, stride, dilation);
            }
        }
        y
    }

    /// Input pixels per cell of
    /// [`forward_layer4_dilated_t`](Self::forward_layer4_dilated_t)'s maps: 16 with
    /// torchvision's stem, 4 with the CIFAR stem.
    pub fn dilated_stride(&self) -> i64 {
        self.layer3_stride() * 2
    }

    /// N×3×H×W images → N×C×h×w feature maps of layer4, the unmodified trunk before its
    /// pooling ([`forward_t`](Self::forward_t) is their spatial mean).
    pub fn forward_layer4_maps_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem_t(x, train);
        for layer in &self.layers {
            for block in layer {
                y = block.forward_t(&y, train);
            }
        }
        y
    }
}
