//! What a checkpoint holds for training — both encoders, the queues and the optimiser's momentum
//! buffers under their `state_dict`-style names — and how it is put back.
use tch::Tensor;

use kontrast_api::config::RunConfig;

use crate::checkpoint::{CheckpointError, Loaded, hash_json};
use crate::model::Moco;

use super::error::TrainError;
use super::sgd::Sgd;

/// Prefix of the optimiser's momentum buffers, followed by the parameter's name.
const MOMENTUM_PREFIX: &str = "optimizer.momentum_buffer.";

/// The hash a checkpoint records of the run config: of the recipe and the data set only, so a
/// run resumed with other resources, ports or evaluations still matches.
pub fn config_hash(config: &RunConfig) -> Result<String, CheckpointError> {
    hash_json(&(&config.recipe, &config.dataset))
}

/// Every tensor to save, named.
pub fn tensors(moco: &Moco, sgd: &Sgd) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = moco
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.tensor.detach()))
        .collect();
    let names = moco.trainable_named();
    for (i, buffer) in sgd.state() {
        if let Some((name, _)) = names.get(i) {
            out.push((format!("{MOMENTUM_PREFIX}{name}"), buffer));
        }
    }
    out
}

/// Copies a loaded checkpoint into the model and the optimiser, checking that every tensor is
/// present with the right shape first (nothing is modified when one is not).
pub fn restore(moco: &Moco, sgd: &mut Sgd, loaded: &Loaded) -> Result<(), TrainError> {
    let incompatible = |reason: String| TrainError::IncompatibleCheckpoint {
        path: loaded.path.clone(),
        reason,
    };
    for e in moco.params().entries() {
        match loaded.tensors.get(&e.name) {
            None => return Err(incompatible(format!("it has no tensor {:?}", e.name))),
            Some(t) if t.size() != e.tensor.size() => {
                return Err(incompatible(format!(
                    "{:?} has shape {:?}; this run's model needs {:?}",
                    e.name,
                    t.size(),
                    e.tensor.size()
                )));
            }
            Some(_) => {}
        }
    }
    let names = moco.trainable_named();
    let mut buffers = Vec::new();
    for (i, (name, _)) in names.iter().enumerate() {
        if let Some(t) = loaded.tensors.get(&format!("{MOMENTUM_PREFIX}{name}")) {
            buffers.push((i, t.shallow_clone()));
        }
    }
    sgd.load_state(buffers).map_err(|i| {
        incompatible(format!(
            "the momentum buffer of {:?} has the wrong shape",
            names[i].0
        ))
    })?;
    tch::no_grad(|| {
        for e in moco.params().entries() {
            if let Some(t) = loaded.tensors.get(&e.name) {
                e.tensor.shallow_clone().copy_(t);
            }
        }
    });
    Ok(())
}
