//! Reading rank 0's progress endpoint (`GET http://<pod IP>:<metrics port>/progress`), the
//! worker contract's source of `status.progress` and of stall detection.
use std::time::Duration;

use serde::Deserialize;

/// What rank 0 reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Current epoch.
    #[serde(default)]
    pub epoch: u32,
    /// Optimiser steps so far (monotonic within an attempt; resumes count on from the checkpoint).
    #[serde(default)]
    pub step: u64,
    /// Steps of the whole run.
    #[serde(default)]
    pub total_steps: u64,
    /// Latest loss.
    #[serde(default)]
    pub loss: Option<f64>,
    /// Recent throughput.
    #[serde(default)]
    pub images_per_second: Option<f64>,
    /// Newest checkpoint written, if any.
    #[serde(default)]
    pub checkpoint: Option<CheckpointReport>,
}

/// A checkpoint rank 0 has written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CheckpointReport {
    /// Epoch it holds.
    pub epoch: u32,
    /// Its path inside the pod.
    pub path: String,
}

/// Fetches the report; `None` when rank 0 does not answer (yet).
pub async fn fetch(http: &reqwest::Client, ip: &str, port: u16) -> Option<Report> {
    let url = format!("http://{ip}:{port}/progress");
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_report_parses_and_unknown_fields_are_ignored() {
        let r: Report = serde_json::from_str(
            r#"{"epoch": 2, "step": 40, "totalSteps": 100, "loss": 6.5, "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(
            (r.epoch, r.step, r.total_steps, r.loss),
            (2, 40, 100, Some(6.5))
        );
    }
}
