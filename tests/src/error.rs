//! The harness's error type.
use std::path::PathBuf;

/// What went wrong while starting, using or stopping the local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A required program is missing.
    #[error("{program} not found ({hint})")]
    MissingProgram {
        /// The program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A helper command (openssl, …) failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A component did not become ready in time.
    #[error("{component} not ready after {seconds}s: {last_error} (log: {log})")]
    NotReady {
        /// The component.
        component: String,
        /// How long we waited.
        seconds: u64,
        /// The last probe failure.
        last_error: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A component exited while starting.
    #[error("{component} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// The component.
        component: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// No free loopback block was found.
    #[error("all loopback blocks 127.10-250.0.0/16 are claimed by other clusters (locks in {0})")]
    NoLoopbackBlock(PathBuf),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// An HTTP request (readiness probe, Prometheus query) failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The state file is unreadable.
    #[error("cluster state {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A condition was not met in time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
}

/// Result type of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path and an action to an I/O error.
pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
