//! `kontrast import`: a PyTorch MoCo / "Revisiting" checkpoint (`torch.save` of `{epoch, arch,
//! state_dict, optimizer}`, `state_dict` keys under DDP's `module.` prefix) turned into a Kontrast
//! checkpoint of a run config, so `kontrast eval` — or a continued training run — reads it like
//! one of its own.
//!
//! Our tensor names are PyTorch's (`encoder_q.layer1.0.conv1.weight`, `queue`, …), so the mapping
//! is the identity after the prefix. The query backbone is required, tensor by tensor, with the
//! run's shapes: it is what every evaluation uses. The projection head, the key encoder and the
//! queues are taken when the file has them in the run's shapes; otherwise they keep the fresh
//! values a new run starts from (the key encoder a copy of the query encoder, as MoCo starts),
//! and the summary says so. The optimiser's momentum is not imported: PyTorch indexes it by
//! parameter position, not name, and a continued run rebuilds it within a few steps.
pub mod cli;

use std::collections::BTreeSet;

use tch::Tensor;

use crate::checkpoint::torch_save::TorchSave;
use crate::model::Moco;

/// Where the MoCo state dict can sit in the file, most specific first: the reference code's
/// `state_dict` under DDP's `module.`, then without DDP, then a bare state dict.
const PREFIXES: [&str; 4] = ["state_dict.module.", "state_dict.", "module.", ""];

/// The tensor whose presence identifies a MoCo state dict.
const PROBE: &str = "encoder_q.conv1.weight";

/// Why a file cannot be imported into a run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file holds no MoCo query encoder.
    #[error(
        "no MoCo state dict found: expected a tensor named {PROBE:?} under one of the prefixes \
         \"state_dict.module.\", \"state_dict.\", \"module.\" or none"
    )]
    NoStateDict,
    /// The file was written for another architecture than the run config's.
    #[error("the checkpoint is a {file} model; the run config says {run}")]
    Arch {
        /// The file's `arch`.
        file: String,
        /// The run's.
        run: String,
    },
    /// A tensor of the query backbone is missing.
    #[error("the checkpoint has no tensor {0:?}, which the run's query backbone needs")]
    Missing(String),
    /// A tensor of the query backbone has another shape than the run's model.
    #[error(
        "{name:?} has shape {file:?} in the checkpoint; the run's model needs {run:?} \
         (check recipe.arch, recipe.width and recipe.cifarStem)"
    )]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        file: Vec<i64>,
        /// The shape the run's model has.
        run: Vec<i64>,
    },
    /// The file's query backbone has tensors the run's model lacks (another architecture).
    #[error(
        "the checkpoint's query backbone has {count} tensors the run's model does not, e.g. \
         {example:?} (another architecture?)"
    )]
    Unexpected {
        /// How many.
        count: usize,
        /// The first one.
        example: String,
    },
}

/// What an import took from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The prefix the state dict was found under.
    pub prefix: String,
    /// Epochs the file says were completed (its `epoch`), if it says.
    pub epoch: Option<i64>,
    /// Tensors copied from the file.
    pub imported: usize,
    /// Tensors left at their fresh values, by name (not in the file, or in another shape).
    pub fresh: Vec<String>,
    /// Whether the key encoder was copied from the imported query encoder.
    pub key_from_query: bool,
    /// The file's queue pointer when it was not a slot the run's global batch can start at
    /// (another batch size): the pointer was reset to 0, the queue's contents kept.
    pub queue_ptr_reset: Option<i64>,
}

/// Whether `name` (a model tensor name) belongs to the query backbone: the part that must come
/// from the file.
fn is_query_backbone(name: &str) -> bool {
    name.strip_prefix("encoder_q.")
        .is_some_and(|rest| !rest.starts_with("fc."))
}

/// Copies what `file` has of a MoCo model into `moco` (built from the run config). Nothing is
/// modified when an error is returned.
/// `global_batch` is the run's keys per step: the queue pointer must be a multiple of it.
pub fn import(
    file: &TorchSave,
    moco: &Moco,
    run_arch: &str,
    global_batch: i64,
) -> Result<Summary, ImportError> {
    if let Some(arch) = file.strings.get("arch")
        && arch != run_arch
    {
        return Err(ImportError::Arch {
            file: arch.clone(),
            run: run_arch.to_string(),
        });
    }
    let prefix = PREFIXES
        .into_iter()
        .find(|p| file.tensors.contains_key(&format!("{p}{PROBE}")))
        .ok_or(ImportError::NoStateDict)?;
    let source = |name: &str| file.tensors.get(&format!("{prefix}{name}"));

    // Everything is checked before anything is copied.
    let entries = moco.params().entries();
    let known: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let unexpected: Vec<&str> = file
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| is_query_backbone(k) && !known.contains(k))
        .collect();
    if let Some(first) = unexpected.first() {
        return Err(ImportError::Unexpected {
            count: unexpected.len(),
            example: format!("{prefix}{first}"),
        });
    }
    let mut copies: Vec<(&Tensor, &Tensor)> = Vec::new();
    let mut fresh = Vec::new();
    for e in entries {
        let run_shape = e.tensor.size();
        match source(&e.name) {
            Some(t) if t.size() == run_shape => copies.push((&e.tensor, t)),
            Some(t) if is_query_backbone(&e.name) => {
                return Err(ImportError::Shape {
                    name: format!("{prefix}{}", e.name),
                    file: t.size(),
                    run: run_shape,
                });
            }
            None if is_query_backbone(&e.name) => {
                return Err(ImportError::Missing(format!("{prefix}{}", e.name)));
            }
            _ => fresh.push(e.name.clone()),
        }
    }
    let key_missing = fresh.iter().any(|n| n.starts_with("encoder_k."));
    tch::no_grad(|| {
        for (dst, src) in &copies {
            dst.shallow_clone().copy_(src);
        }
        // A key encoder that is not (wholly) in the file starts as MoCo's does: the query encoder.
        if key_missing {
            moco.copy_query_to_key();
        }
    });
    let ptr = moco.queue_ptr();
    let queue = moco.spec().queue_size;
    let queue_ptr_reset =
        (!(0..queue).contains(&ptr) || ptr % global_batch.max(1) != 0).then(|| {
            moco.reset_queue_ptr();
            ptr
        });
    let summary = Summary {
        prefix: prefix.to_string(),
        epoch: file.ints.get("epoch").copied(),
        imported: copies.len(),
        fresh,
        key_from_query: key_missing,
        queue_ptr_reset,
    };
    tracing::info!(
        prefix = %summary.prefix,
        imported = summary.imported,
        fresh = summary.fresh.len(),
        key_from_query = summary.key_from_query,
        queue_ptr_reset = ?summary.queue_ptr_reset,
        "imported a PyTorch MoCo checkpoint"
    );
    Ok(summary)
}
