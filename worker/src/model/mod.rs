//! The networks: torchvision-compatible ResNets, the projection head, the MoCo pair and its loss,
//! the autocast regions mixed precision runs them in, and the channels-last layout.
pub mod autocast;
pub mod batch_norm;
pub mod head;
pub mod loss;
pub mod memory_format;
pub mod moco;
pub mod params;
pub mod resnet;

pub use autocast::{AutocastError, AutocastGuard, autocast_kind};
pub use moco::{Forward, Moco, MocoSpec, Views};

use tch::Tensor;

/// Failure of a collective, as reported by the process group.
pub type CollectiveError = Box<dyn std::error::Error + Send + Sync>;

/// What MoCo's shuffle BN needs from the process group (implemented by `dist::ProcessGroup`).
pub trait Gang {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Every rank's `t` concatenated along dim 0, in rank order.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, CollectiveError>;
    /// Overwrites `t` with rank `root`'s.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), CollectiveError>;
}

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A collective of the key branch failed.
    #[error("shuffle BN: a collective failed: {0}")]
    Collective(#[from] CollectiveError),
    /// The queue length must be a multiple of the gang's batch (MoCo's ring buffer).
    #[error("the queue length {queue} is not a multiple of the global batch {batch}")]
    QueueNotDivisible {
        /// Queue length K.
        queue: i64,
        /// Keys per step across the gang.
        batch: i64,
    },
    /// The queue pointer (from a checkpoint) is not a slot a batch of this size can start at.
    #[error(
        "the queue pointer {ptr} is not a multiple of the global batch {batch} inside the queue \
         of {queue}"
    )]
    QueuePointer {
        /// The pointer.
        ptr: i64,
        /// Queue length K.
        queue: i64,
        /// Keys per step across the gang.
        batch: i64,
    },
}
