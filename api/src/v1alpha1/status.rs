//! What the operator reports about a run.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator sets.
pub mod condition {
    /// The spec is valid and the run can proceed (`False` with reason `InvalidSpec` otherwise).
    pub const READY: &str = "Ready";
    /// A training attempt is running.
    pub const TRAINING: &str = "Training";
    /// Evaluation Jobs are running.
    pub const EVALUATING: &str = "Evaluating";
    /// Training and every evaluation succeeded.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The run failed for good.
    pub const FAILED: &str = "Failed";
}

/// Condition reasons the operator uses.
pub mod reason {
    /// `spec` failed validation; the message lists every violation.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A rank exited with a retryable error; a new attempt follows.
    pub const RANK_FAILED: &str = "RankFailed";
    /// A rank exited with the permanent-error code.
    pub const PERMANENT_ERROR: &str = "PermanentError";
    /// The step counter did not move for `failurePolicy.stallTimeout`.
    pub const STALLED: &str = "Stalled";
    /// A pod was evicted or preempted (not counted against `maxRestarts`).
    pub const DISRUPTED: &str = "Disrupted";
    /// `failurePolicy.maxRestarts` counted failures were exceeded.
    pub const RESTARTS_EXHAUSTED: &str = "RestartsExhausted";
    /// An evaluation Job failed.
    pub const EVALUATION_FAILED: &str = "EvaluationFailed";
    /// `spec.suspend` is set.
    pub const SUSPENDED: &str = "Suspended";
}

/// Observed state of a `ContrastiveRun`.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContrastiveRunStatus {
    /// Lifecycle phase: Pending, Training, Restarting, Evaluating, Succeeded, Failed or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<RunPhase>")]
    pub phase: Option<RunPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Training, Evaluating, Succeeded and Failed, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Current attempt, 1-based; each restart of the gang is a new attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Failures counted against `failurePolicy.maxRestarts`.
    #[serde(default)]
    pub restarts: u32,
    /// Evictions and preemptions: restarted, not counted.
    #[serde(default)]
    pub disruptions: u32,
    /// Training progress, as last reported by rank 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Newest checkpoint written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// Evaluation results: evaluation name → metric name → value (e.g. `voc07-svm: {mAP: 85.1}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, BTreeMap<String, f64>>,
    /// State of each evaluation Job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub evaluations: Vec<EvaluationStatus>,
    /// The most recent failure of a rank or stall, counted or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Lifecycle phase of a run.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Accepted, pods not yet running.
    Pending,
    /// An attempt is training.
    Training,
    /// An attempt failed; its pods are being removed before the next.
    Restarting,
    /// Training finished; evaluation Jobs are running.
    Evaluating,
    /// Training and evaluations succeeded.
    Succeeded,
    /// Failed for good.
    Failed,
    /// `spec.suspend` is set; no pods run.
    Suspended,
}

impl RunPhase {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunPhase::Succeeded | RunPhase::Failed)
    }

    /// The spelling in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "Pending",
            RunPhase::Training => "Training",
            RunPhase::Restarting => "Restarting",
            RunPhase::Evaluating => "Evaluating",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Suspended => "Suspended",
        }
    }
}

/// Training progress reported by rank 0.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Current epoch, 0-based.
    #[serde(default)]
    pub epoch: u32,
    /// Optimiser steps taken over the whole run.
    #[serde(default)]
    pub step: u64,
    /// Optimiser steps of the whole run.
    #[serde(default)]
    pub total_steps: u64,
    /// Training throughput of the whole gang.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_second: Option<f64>,
    /// Latest training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Latest result of the kNN monitor (`spec.monitor.knn`), once it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_monitor: Option<KnnMonitorResult>,
    /// The kNN monitor's latest failure, while no newer measurement succeeded; training goes on
    /// without the monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_monitor_failure: Option<KnnMonitorFailure>,
    /// When rank 0 reported this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// One measurement of the kNN monitor.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnnMonitorResult {
    /// Epochs trained when it was measured.
    pub epoch: u32,
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent.
    pub top5: f64,
}

/// A kNN monitor measurement that failed.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnnMonitorFailure {
    /// Epochs trained when it was attempted.
    pub epoch: u32,
    /// Why it failed.
    pub error: String,
}

/// A checkpoint written by rank 0.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    /// Epochs completed when it was written.
    pub epoch: u32,
    /// Path inside the checkpoint volume's mount.
    pub path: String,
    /// When it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// State of one evaluation Job.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationStatus {
    /// Name of the evaluation in `spec.evaluations`.
    pub name: String,
    /// Pending, Running, Succeeded or Failed.
    pub phase: EvaluationPhase,
    /// Name of its Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Why it is in this phase (the failure's reason, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Phase of an evaluation Job.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaluationPhase {
    /// Not started (training still running).
    Pending,
    /// Its Job is running.
    Running,
    /// Results recorded.
    Succeeded,
    /// Its Job failed.
    Failed,
}

/// A failure of one rank (or a stall of the gang).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The attempt that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The failing pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Node rank of the failing pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Exit code of the failing container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Machine-readable reason (RankFailed, PermanentError, Stalled, Disrupted, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Tail of the container's termination message, or what the operator saw.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Whether it counted against `failurePolicy.maxRestarts`.
    #[serde(default)]
    pub counted: bool,
    /// When it was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}
