//! The container termination message: a file the kubelet copies into the pod's status when the
//! container exits, where the operator reads rank 0's final report or the reason of a failure.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use kontrast_api::progress::Report;

use super::TelemetryError;

/// Environment variable naming the termination-log path (tests, runs outside Kubernetes).
pub const TERMINATION_LOG_ENV: &str = "KONTRAST_TERMINATION_LOG";
/// Where Kubernetes expects the message (`terminationMessagePath`'s default).
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";
/// The kubelet keeps at most this much of a message; longer ones are cut here, keeping the head.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Where the termination message goes.
///
/// The kubelet creates the file before the container starts, so at the default path a message is
/// written only if the file already exists: a run outside Kubernetes (possibly as root) must not
/// leave a stray file in `/dev`. A path given explicitly is created as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationLog {
    path: PathBuf,
    create: bool,
}

impl TerminationLog {
    /// The path from `KONTRAST_TERMINATION_LOG` (created as needed), else the Kubernetes default
    /// (written only if present).
    pub fn from_env() -> Self {
        match std::env::var_os(TERMINATION_LOG_ENV).filter(|p| !p.is_empty()) {
            Some(path) => Self::at(path),
            None => Self::kubernetes_default(),
        }
    }

    /// The Kubernetes default path, written only if the kubelet created it.
    pub fn kubernetes_default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_TERMINATION_LOG),
            create: false,
        }
    }

    /// An explicit path, created as needed.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            create: true,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an explicit path was given (as opposed to the Kubernetes default).
    pub fn is_explicit(&self) -> bool {
        self.create
    }

    /// Replaces the message with `message` (cut to [`MAX_MESSAGE_BYTES`] on a character
    /// boundary). `Ok(false)`: skipped, the default path does not exist here.
    pub fn write(&self, message: &str) -> Result<bool, TelemetryError> {
        let mut cut = message.len().min(MAX_MESSAGE_BYTES);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(self.create)
            .open(&self.path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if !self.create && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(TelemetryError::Termination {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        file.write_all(&message.as_bytes()[..cut])
            .map_err(|source| TelemetryError::Termination {
                path: self.path.clone(),
                source,
            })?;
        Ok(true)
    }

    /// Writes `report` as JSON (camelCase): rank 0's final progress, for the operator.
    pub fn write_report(&self, report: &Report) -> Result<bool, TelemetryError> {
        let text = serde_json::to_string(report).map_err(TelemetryError::Json)?;
        self.write(&text)
    }

    /// Whether a non-empty message is there.
    pub fn has_message(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0)
    }

    /// Empties an existing message (a local rerun must not report a stale one); creates nothing.
    pub fn clear(&self) -> Result<(), TelemetryError> {
        match OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TelemetryError::Termination {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_written_as_camel_case_json() {
        let dir = tempfile::tempdir().unwrap();
        let log = TerminationLog::at(dir.path().join("msg"));
        let report = Report {
            epoch: 3,
            total_steps: 9,
            ..Report::default()
        };
        assert!(log.write_report(&report).unwrap());
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.contains("\"totalSteps\":9"), "{text}");
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), report);
    }

    #[test]
    fn a_missing_default_path_is_skipped_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let log = TerminationLog {
            path: dir.path().join("absent"),
            create: false,
        };
        assert!(!log.write("x").unwrap());
        assert!(!log.path().exists());
        log.clear().unwrap();
        assert!(!log.path().exists());
    }

    #[test]
    fn a_long_message_is_cut_to_the_kubelet_limit_on_a_character_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let log = TerminationLog::at(dir.path().join("msg"));
        log.write(&"é".repeat(MAX_MESSAGE_BYTES)).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.len(), MAX_MESSAGE_BYTES);
        log.clear().unwrap();
        assert!(!log.has_message());
    }
}
