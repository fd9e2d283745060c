//! Named tensors in PyTorch `state_dict` order.
//!
//! tch's `VarStore` keeps variables in a `HashMap`, but collectives must visit parameters in the
//! same order on every rank and checkpoints should list them the way PyTorch does. So modules
//! register their tensors here, in construction order, under the PyTorch names.
use tch::{Device, Kind, Tensor};

/// Whether a tensor is learned or only tracked (BN running statistics, queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Updated by the optimiser (`requires_grad` when the set is trainable).
    Parameter,
    /// State that is saved and loaded but never receives gradients.
    Buffer,
}

/// One named tensor.
#[derive(Debug)]
pub struct Entry {
    /// Full dotted name, e.g. `encoder_q.layer1.0.conv1.weight`.
    pub name: String,
    /// The tensor, shared (shallow) with the module that uses it.
    pub tensor: Tensor,
    /// Parameter or buffer.
    pub role: Role,
}

/// An ordered collection of named tensors.
#[derive(Debug, Default)]
pub struct Params {
    entries: Vec<Entry>,
}

impl Params {
    /// All entries in registration order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Parameters only, in registration order.
    pub fn parameters(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.role == Role::Parameter)
    }

    /// Buffers only, in registration order.
    pub fn buffers(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.role == Role::Buffer)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// A scope that registers tensors under `prefix` (empty for the root).
    pub fn scope(&mut self, prefix: &str, device: Device, trainable: bool) -> Scope<'_> {
        Scope {
            params: self,
            prefix: prefix.to_string(),
            device,
            trainable,
        }
    }

    /// Appends all of `other`'s entries (their names unchanged).
    pub fn extend(&mut self, other: Params) {
        self.entries.extend(other.entries);
    }
}

/// Where a module registers its tensors: a name prefix, a device, and whether its parameters
/// require gradients (the key encoder's do not).
pub struct Scope<'a> {
    params: &'a mut Params,
    prefix: String,
    device: Device,
    trainable: bool,
}

impl Scope<'_> {
    /// A nested scope `prefix.name`.
    pub fn sub(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Scope {
            params: self.params,
            prefix,
            device: self.device,
            trainable: self.trainable,
        }
    }

    /// The same scope, borrowed again (to hand to a constructor and keep using this one).
    pub fn reborrow(&mut self) -> Scope<'_> {
        Scope {
            params: self.params,
            prefix: self.prefix.clone(),
            device: self.device,
            trainable: self.trainable,
        }
    }

    /// The device tensors are created on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Registers a parameter initialised with `init` (already on the right device).
    pub fn parameter(&mut self, name: &str, init: Tensor) -> Tensor {
        let tensor = init.set_requires_grad(self.trainable);
        self.params.entries.push(Entry {
            name: self.full_name(name),
            tensor: tensor.shallow_clone(),
            role: Role::Parameter,
        });
        tensor
    }

    /// Registers a buffer.
    pub fn buffer(&mut self, name: &str, init: Tensor) -> Tensor {
        self.params.entries.push(Entry {
            name: self.full_name(name),
            tensor: init.shallow_clone(),
            role: Role::Buffer,
        });
        init
    }

    /// Float options on this scope's device.
    pub fn float(&self) -> (Kind, Device) {
        (Kind::Float, self.device)
    }
}
