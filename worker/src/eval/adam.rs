//! Adam with L2 weight decay, as `torch.optim.Adam` (not AdamW) runs it: the decay is added to
//! the gradient before the moments, and each parameter keeps its own moments and step count.
//! The Cityscapes fine-tuning optimiser (lr 1e-4, weight decay 1e-4).
use tch::Tensor;

/// Hyper-parameters (the learning rate is passed per step: it follows a schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Decay of the first moment (PyTorch's default 0.9).
    pub beta1: f64,
    /// Decay of the second moment (PyTorch's default 0.999).
    pub beta2: f64,
    /// Added to the denominator (PyTorch's default 1e-8).
    pub eps: f64,
    /// L2 penalty added to every gradient.
    pub weight_decay: f64,
}

impl AdamConfig {
    /// PyTorch's defaults with `weight_decay`.
    pub fn with_weight_decay(weight_decay: f64) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
}

/// One parameter's state: its moments and how many steps it has taken.
#[derive(Debug)]
struct Moments {
    step: i32,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// Adam over a fixed, ordered list of parameters.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    params: Vec<Tensor>,
    /// One per parameter; made at its first step (a parameter without a gradient has none).
    state: Vec<Option<Moments>>,
}

impl Adam {
    /// An optimiser over `params`.
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Self {
        let state = params.iter().map(|_| None).collect();
        Self {
            config,
            params,
            state,
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// For every parameter with a gradient `g`: `g += wd·p`; `m = β1·m + (1−β1)·g`;
    /// `v = β2·v + (1−β2)·g²`; `p -= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`.
    pub fn step(&mut self, lr: f64) {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        tch::no_grad(|| {
            for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = if weight_decay != 0.0 {
                    grad + p * weight_decay
                } else {
                    grad
                };
                let state = slot.get_or_insert_with(|| Moments {
                    step: 0,
                    exp_avg: grad.zeros_like(),
                    exp_avg_sq: grad.zeros_like(),
                });
                state.step += 1;
                // PyTorch's order of operations: lerp for the first moment, a scaled
                // product for the second.
                let _ = state.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = state.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = state.exp_avg_sq.g_add_(&(&grad * &grad * (1.0 - beta2)));
                let correction1 = 1.0 - beta1.powi(state.step);
                let correction2 = 1.0 - beta2.powi(state.step);
                let denom = state.exp_avg_sq.sqrt() / correction2.sqrt() + eps;
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&(&state.exp_avg / denom * (lr / correction1)));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn two_steps_follow_the_formula() {
        let (b1, b2, eps, wd) = (0.9, 0.999, 1e-8, 0.1);
        let p = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).set_requires_grad(true);
        let mut adam = Adam::new(
            vec![p.shallow_clone()],
            AdamConfig {
                weight_decay: wd,
                ..AdamConfig::with_weight_decay(0.0)
            },
        );
        // The loss Σ cᵢ·pᵢ² has gradient 2cᵢpᵢ.
        let c = [3.0f64, 0.25, -1.0];
        let (mut x, mut m, mut v) = ([1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
        for (t, lr) in [(1, 0.01), (2, 0.005)] {
            adam.zero_grad();
            (p.square() * Tensor::from_slice(&c))
                .sum(Kind::Double)
                .backward();
            adam.step(lr);
            for i in 0..3 {
                let g = 2.0 * c[i] * x[i] + wd * x[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
                x[i] -= lr * m_hat / denom;
            }
            let ours = Vec::<f64>::try_from(p.detach()).expect("values");
            for i in 0..3 {
                assert!(
                    (ours[i] - x[i]).abs() < 1e-12,
                    "step {t}: {ours:?} vs {x:?}"
                );
            }
            if t == 1 {
                // The first step moves every coordinate by lr against its gradient (m̂/√v̂ = ±1).
                let moved = [1.0 - ours[0], -2.0 - ours[1], 0.5 - ours[2]];
                for (d, g) in moved.iter().zip([6.1, -1.2, -0.95]) {
                    assert!((d - 0.01 * f64::signum(g)).abs() < 1e-8, "{moved:?}");
                }
            }
        }
    }

    #[test]
    fn a_parameter_without_a_gradient_is_left_alone() {
        let p = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(vec![p.shallow_clone()], AdamConfig::with_weight_decay(1e-4));
        adam.step(0.1);
        assert_eq!(p.detach(), Tensor::ones([2], (Kind::Float, Device::Cpu)));
    }
}
