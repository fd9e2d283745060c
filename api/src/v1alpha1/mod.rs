//! `kontrast.dev/v1alpha1`: the `ContrastiveRun` resource.

mod checkpoint;
mod dataset;
mod evaluation;
pub mod limits;
mod monitor;
mod presets;
mod recipe;
mod resolve;
mod rules;
mod run;
mod status;
mod syntax;
#[cfg(test)]
mod tests;

pub use checkpoint::{CheckpointSpec, DEFAULT_CHECKPOINT_MOUNT_PATH};
pub use dataset::{DataVolume, DatasetSpec, HostPathVolume, NfsVolume, PvcVolume, VolumeSource};
pub use evaluation::{EvaluationDataset, EvaluationSpec};
pub use monitor::{
    DEFAULT_MONITOR_K, DEFAULT_MONITOR_TEMPERATURE, DEFAULT_MONITOR_TRAIN_IMAGES,
    DEFAULT_MONITOR_VAL_IMAGES, KnnMonitorSpec, MonitorSpec,
};
pub use presets::{
    PAPER_KNN_LOSS, PRESET_BATCH_SIZE, PRESET_EPOCHS, PRESET_LARGE_CROPS, PRESET_QUEUE_SIZE,
    REVISITING_SMALL_CROPS, TORCHVISION_WIDTH,
};
pub use recipe::{
    AutoAugmentSpec, CropsSpec, KnnLossSpec, LargeCropsSpec, MocoSpec, OptimizerSpec, RecipeSpec,
    SmallCropsSpec,
};
pub use resolve::{SpecError, Violation};
pub use run::{
    ContrastiveRun, ContrastiveRunSpec, DEFAULT_MASTER_PORT, DEFAULT_METRICS_PORT, FailurePolicy,
    GangScheduler, ImagePullPolicy, MetricsSpec, Resources, Scheduling,
};
pub use status::{
    CheckpointRef, ContrastiveRunStatus, EvaluationPhase, EvaluationStatus, Failure,
    KnnMonitorFailure, KnnMonitorResult, Progress, RunPhase, condition, reason,
};

/// The JSON spelling of a unit enum variant (`EvaluationKind::LinearSvm` → `linearSvm`).
pub(crate) fn json_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Schema of an optional enum field without the enum type's description, so that the field's
/// doc comment describes it: kube's `OptionalEnum` transform would let the type's text win.
pub(crate) fn optional_enum<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    let mut schema = T::json_schema(generator);
    if let Some(object) = schema.as_object_mut() {
        object.remove("description");
        object.insert("nullable".into(), true.into());
    }
    schema
}
