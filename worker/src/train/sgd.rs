//! SGD with momentum and weight decay, exactly PyTorch's `torch.optim.SGD` (dampening 0, no
//! Nesterov). Written out rather than taken from tch because its momentum buffers must be
//! checkpointed and tch's optimiser does not expose them.
use tch::{Device, Kind, Tensor};

/// 0-dim tensors holding the step's factors, one per (value, dtype, device), made once a step.
#[derive(Default)]
struct Scalars {
    made: Vec<(u64, Kind, Device, Tensor)>,
}

impl Scalars {
    fn get(&mut self, value: f64, like: &Tensor) -> &Tensor {
        let key = (value.to_bits(), like.kind(), like.device());
        let i = match self
            .made
            .iter()
            .position(|(v, k, d, _)| (*v, *k, *d) == key)
        {
            Some(i) => i,
            None => {
                let t = Tensor::scalar_tensor(value, (key.1, key.2));
                self.made.push((key.0, key.1, key.2, t));
                self.made.len() - 1
            }
        };
        &self.made[i].3
    }
}

/// Optimiser hyper-parameters (the learning rate is passed per step: it follows a schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor.
    pub momentum: f64,
    /// L2 penalty added to every gradient (BN parameters and biases included, as in the recipe).
    pub weight_decay: f64,
}

/// SGD over a fixed, ordered list of parameters.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    params: Vec<Tensor>,
    /// One per parameter; undefined until the parameter's first step.
    momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser over `params` (their order names the momentum buffers in checkpoints).
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Self {
        let momentum_buffers = params.iter().map(|_| None).collect();
        Self {
            config,
            params,
            momentum_buffers,
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// `d = g + wd·p; buf = d` (first step) or `buf = μ·buf + d`; `p -= lr·buf`.
    ///
    /// Written as PyTorch's single-tensor SGD runs it: one temporary (`d`) and in-place passes,
    /// where a product, a sum and a scaled copy each used to allocate a parameter-sized tensor
    /// (fresh allocations fault pages in on every step on the CPU). The products are the
    /// reference's (`alpha·x` there, `x·alpha` here: the same rounding).
    pub fn step(&mut self, lr: f64) {
        let SgdConfig {
            momentum,
            weight_decay,
        } = self.config;
        let mut scalars = Scalars::default();
        tch::no_grad(|| {
            for (p, slot) in self.params.iter().zip(self.momentum_buffers.iter_mut()) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let d = if weight_decay != 0.0 {
                    grad.addcmul(p, scalars.get(weight_decay, p))
                } else {
                    grad
                };
                let direction = if momentum != 0.0 {
                    match slot {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = d.detach().copy();
                            *slot = Some(buf.shallow_clone());
                            buf
                        }
                    }
                } else {
                    d
                };
                let mut p = p.shallow_clone();
                let _ = p.addcmul_(&direction, scalars.get(-lr, &p));
            }
        });
    }

    /// The momentum buffers as (index, tensor) for checkpoints; parameters without one yet are
    /// absent.
    pub fn state(&self) -> Vec<(usize, Tensor)> {
        self.momentum_buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|t| (i, t.shallow_clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::state`]. Returns the index of a buffer whose
    /// shape does not match its parameter, if any (nothing is restored then).
    pub fn load_state(&mut self, state: Vec<(usize, Tensor)>) -> Result<(), usize> {
        for (i, t) in &state {
            match self.params.get(*i) {
                Some(p) if p.size() == t.size() => {}
                _ => return Err(*i),
            }
        }
        for (i, t) in state {
            let device = self.params[i].device();
            self.momentum_buffers[i] = Some(t.to_device(device));
        }
        Ok(())
    }
}
