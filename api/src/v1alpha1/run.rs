//! The `ContrastiveRun` resource and its spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::CheckpointSpec;
use super::dataset::DatasetSpec;
use super::evaluation::EvaluationSpec;
use super::limits::*;
use super::monitor::MonitorSpec;
use super::recipe::RecipeSpec;
use super::rules;
use super::status::ContrastiveRunStatus;

/// Port of rank 0's metrics and progress endpoint unless `metrics.port` says otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9400;
/// Port of the c10d rendezvous on rank 0 unless `masterPort` says otherwise.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Desired state of a run: the workers, the data, the recipe, and what to do after training.
// Two printer columns are integers: the lint reads the repeated `type_` as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[kube(
    group = "kontrast.dev",
    version = "v1alpha1",
    kind = "ContrastiveRun",
    namespaced,
    status = "ContrastiveRunStatus",
    shortname = "crun",
    category = "kontrast",
    derive = "PartialEq",
    doc = "Self-supervised contrastive pre-training (MoCo v2 or \"Revisiting Contrastive Methods\") on a gang of worker pods, followed by evaluations of the trained encoder.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.progress.epoch",
        description = "Current training epoch"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restarts",
        description = "Counted failures so far"
    ),
    printcolumn(
        name = "Loss",
        type_ = "number",
        json_path = ".status.progress.loss",
        description = "Latest training loss"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rules::batch_divides_over_ranks(),
    validation = rules::batch_per_rank_at_least_two(),
    validation = rules::fp16_needs_gpus(),
    validation = rules::ports_differ()
)]
pub struct ContrastiveRunSpec {
    /// Worker image (the `kontrast` binary). Immutable.
    #[schemars(length(min = 1, max = MAX_IMAGE_LENGTH))]
    #[x_kube(validation = rules::immutable("image"))]
    pub image: String,
    /// Pull policy of the worker image: `Always`, `IfNotPresent` or `Never`. Unset: Kubernetes'
    /// default for the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<ImagePullPolicy>")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Worker pods, one per node.
    #[serde(default = "default_nodes")]
    #[schemars(range(min = 1, max = MAX_NODES))]
    pub nodes: u32,
    /// GPUs per worker pod, one training process each. 0 trains on CPU (one process per pod,
    /// Gloo all-reduce).
    #[serde(default)]
    #[schemars(range(max = MAX_GPUS_PER_NODE))]
    pub gpus_per_node: u32,
    /// CPU and memory of each worker pod. GPUs come from `gpusPerNode`, not from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The pre-training images. Immutable.
    #[x_kube(validation = rules::immutable("dataset"))]
    pub dataset: DatasetSpec,
    /// The training recipe: a preset and overrides. Immutable.
    #[serde(default)]
    #[x_kube(validation = rules::immutable("recipe"))]
    pub recipe: RecipeSpec,
    /// Checkpointing.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// How failures are retried.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Evaluations run as Jobs after training succeeds, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EVALUATIONS))]
    #[x_kube(
        validation = rules::evaluation_names_unique(),
        merge_strategy = ListMerge::Map(vec!["name".into()])
    )]
    pub evaluations: Vec<EvaluationSpec>,
    /// Representation-quality monitors evaluated while the run trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSpec>,
    /// Metrics endpoint and Pushgateway.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Stop the run: its pods are deleted and it resumes from the last checkpoint when unset.
    #[serde(default)]
    pub suspend: bool,
    /// Placement of the worker and evaluation pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Port of the c10d rendezvous (TCPStore) on rank 0.
    #[serde(default = "default_master_port")]
    #[schemars(range(min = MIN_PORT, max = u16::MAX))]
    pub master_port: u16,
}

fn default_nodes() -> u32 {
    1
}

fn default_master_port() -> u16 {
    DEFAULT_MASTER_PORT
}

fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_PORT
}

fn default_max_restarts() -> u32 {
    3
}

fn default_stall_timeout() -> String {
    "15m".into()
}

/// Image pull policy.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Requests and limits of a container, as resource name → quantity.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Minimum resources, e.g. `{cpu: "32", memory: 200Gi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub limits: BTreeMap<String, Quantity>,
}

// Quantity's own schema carries a page of description into every map value; this is the same
// int-or-string with the quantity syntax, and short.
fn quantity_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN
        }
    })
}

/// Retry policy. Any failing rank ends the whole attempt; the next attempt resumes from the last
/// checkpoint. Evictions and preemptions are recorded but not counted; a permanent error (bad
/// configuration, missing dataset) fails the run at once.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Counted failures tolerated before the run fails.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(max = MAX_RESTARTS))]
    pub max_restarts: u32,
    /// A step counter that does not move for this long counts as a failure. A Go duration between
    /// 10s and 168h, e.g. `90s`, `15m`, `1h30m`.
    #[serde(default = "default_stall_timeout")]
    #[schemars(length(min = 2, max = 64), pattern(DURATION_PATTERN))]
    #[x_kube(validation = rules::stall_timeout_bounds())]
    pub stall_timeout: String,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            stall_timeout: default_stall_timeout(),
        }
    }
}

/// Metrics endpoint.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Pushgateway URL (`http://`, e.g. its in-cluster Service) the evaluation jobs push their
    /// results to. Unset: no push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_URL_LENGTH), pattern(HTTP_URL_PATTERN))]
    pub pushgateway: Option<String>,
    /// Port of rank 0's `/metrics` (Prometheus text) and progress endpoint.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = MIN_PORT, max = u16::MAX))]
    pub port: u16,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            pushgateway: None,
            port: default_metrics_port(),
        }
    }
}

/// Placement of the worker and evaluation pods.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Scheduler of the pods, e.g. a gang scheduler. Unset: the default scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DNS_SUBDOMAIN_LENGTH))]
    pub scheduler_name: Option<String>,
    /// Kueue LocalQueue to admit the run through (the `kueue.x-k8s.io/queue-name` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DNS_LABEL_LENGTH), pattern(LABEL_VALUE_PATTERN))]
    pub queue_name: Option<String>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DNS_SUBDOMAIN_LENGTH), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub priority_class_name: Option<String>,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Gang scheduler whose PodGroup the operator creates for every attempt, so that all the
    /// attempt's pods are placed together or not at all: `volcano` (a
    /// `scheduling.volcano.sh/v1beta1` PodGroup; pods default to `schedulerName: volcano`) or
    /// `coscheduling` (a `scheduling.x-k8s.io/v1alpha1` PodGroup of the scheduler-plugins
    /// coscheduling plugin; set `schedulerName` to the scheduler that runs it). Unset: no
    /// PodGroup (Kueue's pod groups through `queueName` need none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::optional_enum::<GangScheduler>")]
    pub gang_scheduler: Option<GangScheduler>,
}

/// Gang schedulers with a PodGroup API.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum GangScheduler {
    /// Volcano (`scheduling.volcano.sh/v1beta1` PodGroup).
    Volcano,
    /// The scheduler-plugins coscheduling plugin (`scheduling.x-k8s.io/v1alpha1` PodGroup).
    Coscheduling,
}

impl ContrastiveRunSpec {
    /// Processes per node: one per GPU, or one on CPU.
    pub fn procs_per_node(&self) -> u32 {
        self.gpus_per_node.max(1)
    }

    /// Training processes in the whole gang.
    pub fn world_size(&self) -> u32 {
        self.nodes.saturating_mul(self.procs_per_node())
    }
}

impl FailurePolicy {
    /// `stallTimeout` in seconds; `None` when unparsable (`resolve()` rejects such specs).
    pub fn stall_timeout_seconds(&self) -> Option<f64> {
        super::syntax::duration_seconds(&self.stall_timeout)
    }
}
