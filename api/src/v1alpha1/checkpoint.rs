//! Where and how often training state is saved.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::dataset::DataVolume;
use super::limits::*;
use super::rules;

/// Mount path of the checkpoint volume when it names none.
pub const DEFAULT_CHECKPOINT_MOUNT_PATH: &str = "/checkpoints";

/// Checkpointing. Rank 0 writes `epoch-NNNN` files atomically under a directory of the run on
/// this volume, and every rank of a restarted attempt resumes from the newest valid one.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::checkpoint_volume_writable())]
pub struct CheckpointSpec {
    /// Writable volume for checkpoints, mounted at `/checkpoints` unless it names a `mountPath`.
    /// Without one, checkpoints live in the pod's scratch space and a restarted attempt starts
    /// from epoch 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DataVolume>,
    /// Write a checkpoint every this many epochs (and after the last epoch).
    #[serde(default = "default_every_epochs")]
    #[schemars(range(min = 1, max = MAX_EPOCHS))]
    pub every_epochs: u32,
    /// Keep the newest this many checkpoints; older ones are deleted.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = MAX_CHECKPOINTS_KEPT))]
    pub keep: u32,
}

fn default_every_epochs() -> u32 {
    1
}

fn default_keep() -> u32 {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            volume: None,
            every_epochs: default_every_epochs(),
            keep: default_keep(),
        }
    }
}

impl CheckpointSpec {
    /// Where to mount the checkpoint volume.
    pub fn mount_path(&self) -> &str {
        match &self.volume {
            Some(volume) => volume.mount_path_or(DEFAULT_CHECKPOINT_MOUNT_PATH),
            None => DEFAULT_CHECKPOINT_MOUNT_PATH,
        }
    }
}
