//! The Kontrast operator: reconciles `ContrastiveRun`s into worker pods, restarts gangs from their
//! last checkpoint and runs evaluation Jobs.
#![deny(missing_docs)]

pub mod cache;
pub mod conditions;
pub mod controller;
pub mod gang;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod progress;
pub mod stall;

/// Errors the operator reports; every variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API call {operation} failed: {message}")]
    Kube {
        /// The operation, e.g. `apply pod run-w-1-0`.
        operation: String,
        /// The server's or client's message.
        message: String,
    },
}

impl Error {
    /// Short label for the errors-by-reason metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
        }
    }
}

/// Result type of the operator library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
