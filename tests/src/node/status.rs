//! Pod and container status as the node reports it (through the `pods/status` subresource).
use serde_json::{Value, json};

/// Now, as the RFC 3339 second-precision timestamp Kubernetes uses.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Largest termination message kept, as kubelet does.
pub const MAX_MESSAGE: usize = 4096;

/// The state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running yet (or waiting to restart).
    Waiting {
        /// Machine-readable reason (`ContainerCreating`, `CrashLoopBackOff`, …).
        reason: String,
        /// Human-readable detail.
        message: String,
    },
    /// Running since `started`.
    Running {
        /// Start time.
        started: String,
        /// Process id (not reported to the API; used to signal it).
        pid: u32,
    },
    /// Exited.
    Terminated(Termination),
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit code (128 + signal for signal deaths).
    pub exit_code: i32,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`.
    pub reason: String,
    /// Termination message.
    pub message: String,
    /// Start time.
    pub started: String,
    /// End time.
    pub finished: String,
}

/// One container's status entry.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// Current state.
    pub state: State,
    /// Previous termination, once restarted.
    pub last: Option<Termination>,
    /// Restarts so far.
    pub restarts: i32,
}

fn termination_json(t: &Termination) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started, "finishedAt": t.finished,
    });
    if !t.message.is_empty() {
        v["message"] = json!(t.message);
    }
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    v
}

impl ContainerStatus {
    /// The API representation.
    pub fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started, .. } => json!({"running": {"startedAt": started}}),
            State::Terminated(t) => json!({"terminated": termination_json(t)}),
        };
        let running = matches!(self.state, State::Running { .. });
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": format!("kontrast://{}", self.name),
            "state": state,
            "lastState": self.last.as_ref().map(|t| json!({"terminated": termination_json(t)})).unwrap_or(json!({})),
            "ready": running,
            "started": running,
            "restartCount": self.restarts,
        })
    }
}

/// The pod's phase given its containers and restart policy (`None`: still running/restarting).
pub fn terminal_phase(
    containers: &[ContainerStatus],
    restart_policy: &str,
) -> Option<&'static str> {
    let mut all_ok = true;
    for c in containers {
        match &c.state {
            State::Terminated(t) => {
                let will_restart = restart_policy == "Always"
                    || (restart_policy == "OnFailure" && t.exit_code != 0);
                if will_restart {
                    return None;
                }
                all_ok &= t.exit_code == 0;
            }
            _ => return None,
        }
    }
    Some(if all_ok { "Succeeded" } else { "Failed" })
}

/// A condition entry.
pub fn condition(kind: &str, status: bool, reason: Option<&str>) -> Value {
    let mut v = json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now()});
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            image: "i".into(),
            state: State::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: "x".into(),
                message: String::new(),
                started: now(),
                finished: now(),
            }),
            last: None,
            restarts: 0,
        }
    }

    #[test]
    fn phases_follow_exit_codes_and_restart_policy() {
        assert_eq!(terminal_phase(&[term(0)], "Never"), Some("Succeeded"));
        assert_eq!(terminal_phase(&[term(0), term(3)], "Never"), Some("Failed"));
        assert_eq!(terminal_phase(&[term(3)], "OnFailure"), None);
        assert_eq!(terminal_phase(&[term(0)], "OnFailure"), Some("Succeeded"));
        assert_eq!(terminal_phase(&[term(0)], "Always"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
    }
}
