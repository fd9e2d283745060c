//! Why training stopped, and what the exit code tells the operator.
use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::dist::DistError;
use crate::telemetry::TelemetryError;

use super::monitor::MonitorError;
use super::step::StepError;

/// Exit code of a failure that retrying cannot fix (bad config, missing data set); the
/// operator fails the run at once (DESIGN §3).
pub const PERMANENT_EXIT_CODE: u8 = 78;
/// Exit code of a failure worth a retry from the last checkpoint.
pub const RETRYABLE_EXIT_CODE: u8 = 1;

/// A training failure.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run config could not be read.
    #[error("cannot read the run config {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The run config is invalid.
    #[error("invalid run config: {0}")]
    Config(String),
    /// The environment contradicts the run config (e.g. `WORLD_SIZE`).
    #[error("the environment does not match the run config: {0}")]
    Environment(String),
    /// The data set cannot be used.
    #[error("data set: {0}")]
    Dataset(#[source] kontrast_data::DataError),
    /// Reading a batch failed.
    #[error("data loading: {0}")]
    Data(#[source] kontrast_data::DataError),
    /// The requested device is missing.
    #[error("{0}")]
    Device(String),
    /// Joining the process group or a collective failed.
    #[error(transparent)]
    Dist(#[from] DistError),
    /// A training step failed.
    #[error(transparent)]
    Step(#[from] StepError),
    /// Writing or reading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint volume is full: the checkpoints written before are intact.
    #[error(
        "the checkpoint volume is full ({source}); the checkpoints before it are intact: give \
         the volume more space or keep fewer checkpoints (spec.checkpoint.keep)"
    )]
    CheckpointVolumeFull {
        /// The failed write.
        source: CheckpointError,
    },
    /// A checkpoint does not fit this run.
    #[error("checkpoint {path}: {reason}")]
    IncompatibleCheckpoint {
        /// Its manifest.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The kNN monitor's data cannot be used (`spec.monitor.knn.dataset`).
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    /// Whether a retry cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TrainError::ConfigRead { .. }
                | TrainError::Config(_)
                | TrainError::Environment(_)
                | TrainError::Dataset(_)
                | TrainError::Monitor(_)
                | TrainError::IncompatibleCheckpoint { .. }
                | TrainError::CheckpointVolumeFull { .. }
        )
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        if self.is_permanent() {
            PERMANENT_EXIT_CODE
        } else {
            RETRYABLE_EXIT_CODE
        }
    }
}
