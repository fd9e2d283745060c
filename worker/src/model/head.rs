//! The projection head that replaces torchvision's `fc`: MoCo v2's MLP
//! (`fc.0` Linear D→D, ReLU, `fc.2` Linear D→dim, no BN) or MoCo v1's single `fc` Linear D→dim.
use tch::Tensor;

use super::params::Scope;

/// A fully connected layer with PyTorch's default initialisation.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `U(−1/√in, 1/√in)` for weight and bias: what `nn.Linear` draws (Kaiming-uniform, a=√5).
    fn new(mut scope: Scope<'_>, cin: i64, cout: i64) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        let opts = scope.float();
        let weight = scope.parameter(
            "weight",
            Tensor::empty([cout, cin], opts).uniform_(-bound, bound),
        );
        let bias = scope.parameter("bias", Tensor::empty([cout], opts).uniform_(-bound, bound));
        Self { weight, bias }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// The head under the name `fc`.
#[derive(Debug)]
pub struct ProjectionHead {
    layers: Vec<Linear>,
}

impl ProjectionHead {
    /// Registers `fc.*` in `scope` for `features`-wide input and `dim` outputs.
    pub fn new(mut scope: Scope<'_>, features: i64, dim: i64, mlp: bool) -> Self {
        let mut fc = scope.sub("fc");
        let layers = if mlp {
            vec![
                Linear::new(fc.sub(0), features, features),
                Linear::new(fc.sub(2), features, dim),
            ]
        } else {
            vec![Linear::new(fc, features, dim)]
        };
        Self { layers }
    }

    /// N×features → N×dim (not normalised).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut y = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            y = layer.forward(&y);
            if i != last {
                y = y.relu();
            }
        }
        y
    }
}
