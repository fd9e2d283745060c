//! Prometheus metrics and the JSON progress endpoint of a training process.
//!
//! - [`Metrics`]: the worker's metric families in their own registry (names in `docs/metrics.md`).
//! - [`Server`]: a small blocking HTTP/1.1 server on a background thread serving `GET /metrics`,
//!   `GET /progress` (a [`Report`](kontrast_api::progress::Report) from a shared [`Progress`]) and
//!   `GET /healthz`. Blocking std I/O on one thread is enough for a scraper and the operator polling
//!   every few seconds, and keeps an async runtime out of the training process.
//! - [`pushgateway`]: an evaluation's result pushed to a Prometheus Pushgateway.
//! - [`TerminationLog`]: the container termination message, where rank 0 leaves its final report
//!   and `kontrast launch` explains a failed rank.
use std::path::PathBuf;

mod metrics;
pub mod pushgateway;
mod server;
mod termination;

pub use metrics::{LossKind, Metrics};
pub use server::{Progress, Server};
pub use termination::{
    DEFAULT_TERMINATION_LOG, MAX_MESSAGE_BYTES, TERMINATION_LOG_ENV, TerminationLog,
};

/// What failed in telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A metric could not be created or registered (a bad name or label, or a duplicate).
    #[error("registering metric {name}: {source}")]
    Register {
        /// The metric's name.
        name: String,
        /// Prometheus' reason.
        #[source]
        source: prometheus::Error,
    },
    /// The registry could not be encoded in the text format.
    #[error("encoding metrics: {0}")]
    Encode(#[source] prometheus::Error),
    /// The server could not listen on its address.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("starting the metrics server thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The termination message could not be written.
    #[error("writing the termination message {path}: {source}")]
    Termination {
        /// The termination-log path.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A report could not be serialised.
    #[error("serialising the progress report: {0}")]
    Json(#[source] serde_json::Error),
}
