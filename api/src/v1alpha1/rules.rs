//! The CEL rules (`x-kubernetes-validations`) attached to the schema. Cross-field rules see the
//! spec as written, so where a field may be left to the preset they fall back to the preset's
//! value (the same in both presets, or chosen by `preset`), built from the constants in
//! [`presets`](super::presets) so they cannot drift. [`resolve`](super::ContrastiveRunSpec::resolve)
//! checks the same rules on the resolved values.

use kube::core::{Message, Reason, Rule};

use super::presets::{
    PRESET_BATCH_SIZE, PRESET_EPOCHS, PRESET_LARGE_CROPS, PRESET_QUEUE_SIZE, REVISITING_SMALL_CROPS,
};
use super::run::DEFAULT_METRICS_PORT;
use crate::config::EvaluationKind;

fn invalid(rule: String, field_path: &str, message: &str) -> Rule {
    Rule::new(rule)
        .field_path(field_path)
        .message(message)
        .reason(Reason::FieldValueInvalid)
}

/// Effective global batch, with `self` the spec.
fn spec_batch() -> String {
    format!(
        "(has(self.recipe) && has(self.recipe.batchSize) ? self.recipe.batchSize : {PRESET_BATCH_SIZE})"
    )
}

/// Ranks in the world, with `self` the spec.
fn spec_world() -> &'static str {
    "((has(self.nodes) ? self.nodes : 1) * (has(self.gpusPerNode) && self.gpusPerNode > 0 ? self.gpusPerNode : 1))"
}

/// Effective global batch, with `self` the recipe.
fn recipe_batch() -> String {
    format!("(has(self.batchSize) ? self.batchSize : {PRESET_BATCH_SIZE})")
}

/// Effective queue size, with `self` the recipe.
fn recipe_queue() -> String {
    format!(
        "(has(self.moco) && has(self.moco.queueSize) ? self.moco.queueSize : {PRESET_QUEUE_SIZE})"
    )
}

/// Effective crops per image, with `self` the recipe.
fn recipe_crop_count() -> String {
    format!(
        "((has(self.crops) && has(self.crops.large) && has(self.crops.large.count) ? self.crops.large.count : {PRESET_LARGE_CROPS}) + \
         (has(self.crops) && has(self.crops.small) && has(self.crops.small.count) ? self.crops.small.count : \
         (has(self.preset) && self.preset == 'mocov2' ? 0 : {REVISITING_SMALL_CROPS})))"
    )
}

/// `recipe.batchSize` splits evenly over the ranks.
pub(crate) fn batch_divides_over_ranks() -> Rule {
    invalid(
        format!("{} % {} == 0", spec_batch(), spec_world()),
        ".recipe.batchSize",
        "recipe.batchSize (default 256) must be a multiple of the number of ranks, nodes × max(gpusPerNode, 1)",
    )
}

/// Every rank gets at least two samples (batch norm cannot train on one).
pub(crate) fn batch_per_rank_at_least_two() -> Rule {
    invalid(
        format!("{} / {} >= 2", spec_batch(), spec_world()),
        ".recipe.batchSize",
        "recipe.batchSize (default 256) must give every rank at least 2 images: at least 2 × nodes × max(gpusPerNode, 1)",
    )
}

/// fp16 autocast needs GPUs.
pub(crate) fn fp16_needs_gpus() -> Rule {
    invalid(
        "!(has(self.recipe) && has(self.recipe.precision) && self.recipe.precision == 'fp16') || (has(self.gpusPerNode) && self.gpusPerNode > 0)".into(),
        ".recipe.precision",
        "recipe.precision fp16 needs GPUs (gpusPerNode > 0); on CPU use fp32 or bf16",
    )
}

/// The rendezvous and the metrics endpoint listen on different ports.
pub(crate) fn ports_differ() -> Rule {
    invalid(
        format!(
            "!has(self.masterPort) || self.masterPort != (has(self.metrics) && has(self.metrics.port) ? self.metrics.port : {DEFAULT_METRICS_PORT})"
        ),
        ".masterPort",
        "masterPort must differ from metrics.port (default 9400)",
    )
}

/// Evaluation names are unique.
pub(crate) fn evaluation_names_unique() -> Rule {
    Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("evaluation names must be unique")
        .reason(Reason::FieldValueDuplicate)
}

/// The queue holds a whole number of global batches.
pub(crate) fn queue_divides_by_batch() -> Rule {
    invalid(
        format!("{} % {} == 0", recipe_queue(), recipe_batch()),
        ".moco.queueSize",
        "moco.queueSize (default 65536) must be a multiple of batchSize (default 256)",
    )
}

/// AutoAugment crops exist and exclude the key crop.
pub(crate) fn auto_augment_crops_exist() -> Rule {
    invalid(
        format!(
            "!has(self.autoAugment) || !has(self.autoAugment.crops) || self.autoAugment.crops.all(i, i != 1 && i < {})",
            recipe_crop_count()
        ),
        ".autoAugment.crops",
        "autoAugment.crops must be crop indices below crops.large.count + crops.small.count, and never 1 (the key crop)",
    )
}

/// kNN neighbours come from the queue.
pub(crate) fn knn_top_k_within_queue() -> Rule {
    invalid(
        format!(
            "!has(self.knnLoss) || !has(self.knnLoss.topK) || self.knnLoss.topK <= {}",
            recipe_queue()
        ),
        ".knnLoss.topK",
        "knnLoss.topK must not exceed moco.queueSize (default 65536)",
    )
}

/// The kNN loss switches on before training ends.
pub(crate) fn knn_warmup_before_end() -> Rule {
    invalid(
        format!(
            "!has(self.knnLoss) || !has(self.knnLoss.warmupEpochs) || self.knnLoss.warmupEpochs < (has(self.epochs) ? self.epochs : {PRESET_EPOCHS})"
        ),
        ".knnLoss.warmupEpochs",
        "knnLoss.warmupEpochs must be less than epochs (default 200)",
    )
}

/// A crop's scale range is ordered.
pub(crate) fn crop_scale_ordered() -> Rule {
    invalid(
        "!has(self.scale) || self.scale[0] <= self.scale[1]".into(),
        ".scale",
        "scale must be [min, max] with min <= max",
    )
}

/// A data volume names exactly one source.
pub(crate) fn exactly_one_volume_source() -> Rule {
    Rule::new(
        "(has(self.persistentVolumeClaim) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) + (has(self.nfs) ? 1 : 0) == 1",
    )
    .message("a volume must set exactly one of persistentVolumeClaim, hostPath or nfs")
    .reason(Reason::FieldValueRequired)
}

/// A dataset lies inside the volume that holds it.
pub(crate) fn dataset_inside_mount() -> Rule {
    invalid(
        "!has(self.volume) || !has(self.volume.mountPath) || self.path == self.volume.mountPath || self.path + '/' == self.volume.mountPath || self.path.startsWith(self.volume.mountPath.endsWith('/') ? self.volume.mountPath : self.volume.mountPath + '/')".into(),
        ".path",
        "path must be volume.mountPath or lie below it",
    )
}

/// Only a `flat` data set takes its image list from an annotation file.
pub(crate) fn annotations_only_for_flat() -> Rule {
    invalid(
        "!has(self.annotations) || self.format == 'flat'".into(),
        ".annotations",
        "annotations lists the images of a flat data set; drop it or use format: flat",
    )
}

/// The checkpoint volume is writable.
pub(crate) fn checkpoint_volume_writable() -> Rule {
    invalid(
        "!has(self.volume) || !((has(self.volume.persistentVolumeClaim) && has(self.volume.persistentVolumeClaim.readOnly) && self.volume.persistentVolumeClaim.readOnly) || (has(self.volume.nfs) && has(self.volume.nfs.readOnly) && self.volume.nfs.readOnly))".into(),
        ".volume",
        "the checkpoint volume must be writable: drop readOnly: true",
    )
}

/// The stall timeout is within bounds (the pattern already checked its syntax).
pub(crate) fn stall_timeout_bounds() -> Rule {
    Rule::new(format!(
        "duration(self) >= duration('{}s') && duration(self) <= duration('{}h')",
        super::limits::MIN_STALL_TIMEOUT_SECONDS,
        super::limits::MAX_STALL_TIMEOUT_SECONDS / 3600
    ))
    .message("stallTimeout must be between 10s and 168h")
    .reason(Reason::FieldValueInvalid)
}

/// An evaluation's dataset format suits its kind.
pub(crate) fn evaluation_format_suits_kind() -> Rule {
    let kinds = [
        EvaluationKind::Knn,
        EvaluationKind::LinearSvm,
        EvaluationKind::Segmentation,
        EvaluationKind::Davis,
        EvaluationKind::Retrieval,
    ];
    let clause = |kind: EvaluationKind| {
        let formats: Vec<String> = kind
            .formats()
            .iter()
            .map(|f| format!("'{}'", super::json_name(f)))
            .collect();
        format!(
            "(self.kind == '{}' && self.dataset.format in [{}])",
            super::json_name(&kind),
            formats.join(", ")
        )
    };
    let rule: Vec<String> = kinds.into_iter().map(clause).collect();
    let allowed: Vec<String> = kinds
        .into_iter()
        .map(|k| {
            let formats: Vec<String> = k.formats().iter().map(super::json_name).collect();
            format!("{} reads {}", super::json_name(&k), formats.join("|"))
        })
        .collect();
    invalid(
        rule.join(" || "),
        ".dataset.format",
        &format!("dataset.format does not suit kind: {}", allowed.join("; ")),
    )
}

/// The kNN monitor reads a labelled data set its protocol can open.
pub(crate) fn monitor_format_is_labelled() -> Rule {
    let formats: Vec<String> = EvaluationKind::Knn
        .formats()
        .iter()
        .map(super::json_name)
        .collect();
    let quoted: Vec<String> = formats.iter().map(|f| format!("'{f}'")).collect();
    invalid(
        format!("self.dataset.format in [{}]", quoted.join(", ")),
        ".dataset.format",
        &format!("dataset.format must be {}", formats.join(" or ")),
    )
}

/// A parameter is given only to the kinds that read it.
pub(crate) fn parameter_only_for(field: &str, kinds: &[EvaluationKind]) -> Rule {
    let names: Vec<String> = kinds.iter().map(super::json_name).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    Rule::new(format!(
        "!has(self.{field}) || self.kind in [{}]",
        quoted.join(", ")
    ))
    .field_path(format!(".{field}"))
    .message(Message::Message(format!(
        "{field} applies only to kind {}",
        names.join(" or ")
    )))
    .reason(Reason::FieldValueForbidden)
}

/// The field cannot change after creation.
pub(crate) fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf")
        .message(Message::Message(format!(
            "{field} is immutable: create a new ContrastiveRun to change it"
        )))
        .reason(Reason::FieldValueForbidden)
}

/// A host path is written plainly, so the system-directory rule can compare it as text.
pub(crate) fn host_path_plain() -> Rule {
    invalid(
        "!has(self.hostPath) || !(self.hostPath.path.contains('//') || self.hostPath.path.contains('/./') || self.hostPath.path.endsWith('/.'))".into(),
        ".hostPath.path",
        "hostPath.path must be written plainly: no '//' and no '.' components",
    )
}

/// A host path does not expose the node's system directories.
pub(crate) fn host_path_not_system() -> Rule {
    let dirs: Vec<String> = super::limits::FORBIDDEN_HOST_PATHS
        .iter()
        .map(|d| format!("'{d}'"))
        .collect();
    invalid(
        format!(
            "!has(self.hostPath) || ![{}].exists(d, self.hostPath.path == d || self.hostPath.path.startsWith(d + '/') || d.startsWith(self.hostPath.path.endsWith('/') ? self.hostPath.path : self.hostPath.path + '/'))",
            dirs.join(", ")
        ),
        ".hostPath.path",
        &format!(
            "hostPath.path must not be, contain or lie inside a system directory of the node ({}); use a directory of its own, e.g. /var/lib/kontrast/data",
            super::limits::FORBIDDEN_HOST_PATHS.join(", ")
        ),
    )
}
