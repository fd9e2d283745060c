//! Rank 0's progress report: the contract between the worker, which serves it at
//! `GET /progress` on its metrics port and leaves the final one as its termination message, and
//! the operator, which copies it into the run's status.
use serde::{Deserialize, Serialize};

/// What rank 0 reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
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
    /// The kNN monitor's latest result, if it is on and has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_monitor: Option<KnnMonitorReport>,
    /// The kNN monitor's latest failure, if it failed after its latest result (training goes on
    /// without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_monitor_failure: Option<KnnMonitorFailure>,
}

/// A kNN monitor measurement that failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KnnMonitorFailure {
    /// Epochs trained when it was attempted.
    pub epoch: u32,
    /// Why it failed.
    pub error: String,
}

/// One result of the kNN monitor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KnnMonitorReport {
    /// Epochs trained when it was measured.
    pub epoch: u32,
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent.
    pub top5: f64,
}

/// A checkpoint rank 0 has written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CheckpointReport {
    /// Epoch it holds.
    pub epoch: u32,
    /// Its path inside the pod.
    pub path: String,
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

    #[test]
    fn a_report_round_trips_in_camel_case() {
        let r = Report {
            epoch: 1,
            step: 2,
            total_steps: 3,
            loss: None,
            images_per_second: Some(9.5),
            checkpoint: None,
            knn_monitor: Some(KnnMonitorReport {
                epoch: 1,
                top1: 70.5,
                top5: 98.0,
            }),
            knn_monitor_failure: Some(KnnMonitorFailure {
                epoch: 2,
                error: "no image".into(),
            }),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"imagesPerSecond\":9.5"), "{text}");
        assert!(text.contains("\"knnMonitor\":{\"epoch\":1"), "{text}");
        assert!(
            text.contains("\"knnMonitorFailure\":{\"epoch\":2,\"error\":\"no image\"}"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
    }
}
