//! From the spec as written to the run config: apply the preset, then the overrides, then check
//! every rule the schema and the CEL rules state (the local 1.20 apiserver ignores CEL, and a
//! client may skip the schema), reporting all violations at once.

use std::collections::BTreeSet;
use std::fmt;

use super::dataset::{DataVolume, VolumeSource, lies_within};
use super::evaluation::EvaluationSpec;
use super::limits::*;
use super::monitor::KnnMonitorSpec;
use super::presets::PAPER_KNN_LOSS;
use super::recipe::RecipeSpec;
use super::run::{ContrastiveRunSpec, Resources, Scheduling};
use super::syntax::*;
use crate::config::{
    API_VERSION, CheckpointConfig, DatasetConfig, DatasetFormat, EvaluationConfig,
    EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationKind, EvaluationTask,
    KnnLossConfig, KnnMonitorConfig, MetricsConfig, Precision, Recipe, RunConfig, WorldConfig,
};

/// One broken rule: the field at fault and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, e.g. `spec.recipe.moco.queueSize` or `spec.evaluations[1].name`.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec that cannot run, with every violation found. Its `Display` is one line, fit for a
/// condition message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The violations, in the order checked; never empty.
    pub violations: Vec<Violation>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid ContrastiveRun spec: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl SpecError {
    /// The field paths at fault.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.violations.iter().map(|v| v.field.as_str())
    }
}

#[derive(Default)]
struct Checker {
    violations: Vec<Violation>,
}

impl Checker {
    fn fail(&mut self, field: &str, message: String) {
        self.violations.push(Violation {
            field: field.to_owned(),
            message,
        });
    }

    fn int(&mut self, field: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.fail(
                field,
                format!("must be between {min} and {max} (inclusive), not {value}"),
            );
        }
    }

    /// `min`/`max` exclusive when flagged. NaN fails.
    fn float(
        &mut self,
        field: &str,
        value: f64,
        (min, min_excl): (f64, bool),
        (max, max_excl): (f64, bool),
    ) {
        let above = if min_excl { value > min } else { value >= min };
        let below = if max_excl { value < max } else { value <= max };
        if !(above && below) {
            let lo = if min_excl { "(" } else { "[" };
            let hi = if max_excl { ")" } else { "]" };
            self.fail(
                field,
                format!("must be in {lo}{min}, {max}{hi}, not {value}"),
            );
        }
    }

    fn length(&mut self, field: &str, value: &str, max: u32) -> bool {
        // Characters, as the apiserver counts them.
        let length = value.chars().count();
        if length == 0 || length > max as usize {
            self.fail(
                field,
                format!("must be 1 to {max} characters long, not {length}"),
            );
            return false;
        }
        true
    }

    fn path(&mut self, field: &str, value: &str) {
        if self.length(field, value, MAX_PATH_LENGTH) && !is_clean_absolute_path(value) {
            self.fail(
                field,
                format!("must be an absolute path without '..' components, e.g. /data/coco; not {value:?}"),
            );
        }
    }

    fn dns_label(&mut self, field: &str, value: &str) {
        if self.length(field, value, MAX_DNS_LABEL_LENGTH) && !is_dns_label(value) {
            self.fail(
                field,
                format!("must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit; not {value:?}"),
            );
        }
    }

    fn dns_subdomain(&mut self, field: &str, value: &str) {
        if self.length(field, value, MAX_DNS_SUBDOMAIN_LENGTH) && !is_dns_subdomain(value) {
            self.fail(
                field,
                format!("must be a DNS subdomain: dot-separated DNS labels, e.g. coco-train; not {value:?}"),
            );
        }
    }

    fn volume(&mut self, field: &str, volume: &DataVolume) {
        if let Some(mount_path) = &volume.mount_path {
            self.path(&format!("{field}.mountPath"), mount_path);
        }
        if volume.source_count() != 1 {
            self.fail(
                field,
                format!(
                    "must set exactly one of persistentVolumeClaim, hostPath or nfs, not {}",
                    volume.source_count()
                ),
            );
        }
        if let Some(pvc) = &volume.persistent_volume_claim {
            self.dns_subdomain(
                &format!("{field}.persistentVolumeClaim.claimName"),
                &pvc.claim_name,
            );
        }
        if let Some(host) = &volume.host_path {
            let at = format!("{field}.hostPath.path");
            let errors = self.violations.len();
            self.path(&at, &host.path);
            if self.violations.len() == errors {
                self.host_path(&at, &host.path);
            }
        }
        if let Some(nfs) = &volume.nfs {
            self.length(
                &format!("{field}.nfs.server"),
                &nfs.server,
                MAX_DNS_SUBDOMAIN_LENGTH,
            );
            self.path(&format!("{field}.nfs.path"), &nfs.path);
        }
    }

    /// A node directory the pods may mount: not one that exposes the node (see
    /// [`FORBIDDEN_HOST_PATHS`]).
    fn host_path(&mut self, field: &str, path: &str) {
        if !is_plain_path(path) {
            self.fail(
                field,
                format!("must be written plainly, without '//' or '.' components; not {path:?}"),
            );
        } else if is_system_host_path(path) {
            self.fail(
                field,
                format!(
                    "{path:?} must not be, contain or lie inside a system directory of the node ({}); use a directory of its own, e.g. /var/lib/kontrast/data",
                    FORBIDDEN_HOST_PATHS.join(", ")
                ),
            );
        }
    }

    fn dataset_in_volume(&mut self, field: &str, path: &str, volume: Option<&DataVolume>) {
        if let Some(mount) = volume.and_then(|v| v.mount_path.as_deref())
            && !lies_within(path, mount)
        {
            self.fail(
                &format!("{field}.path"),
                format!("{path:?} must be the volume's mountPath {mount:?} or lie below it"),
            );
        }
    }
}

impl ContrastiveRunSpec {
    /// Apply the preset and the overrides, check every rule, and return the run config the
    /// worker reads, or every violation found.
    pub fn resolve(&self) -> Result<RunConfig, SpecError> {
        let mut c = Checker::default();
        let recipe = self.recipe.apply();

        self.check_placement(&mut c);
        check_recipe(&mut c, &self.recipe, &recipe);
        self.check_world(&mut c, &recipe);
        self.check_storage(&mut c);
        let evaluations = self.check_evaluations(&mut c);
        let monitor = self
            .monitor
            .as_ref()
            .and_then(|m| m.knn.as_ref())
            .map(|knn| check_knn_monitor(&mut c, "spec.monitor.knn", knn));
        self.check_operations(&mut c);

        if !c.violations.is_empty() {
            return Err(SpecError {
                violations: c.violations,
            });
        }
        let procs_per_node = self.procs_per_node();
        let world_size = self.world_size();
        Ok(RunConfig {
            api_version: API_VERSION.to_owned(),
            preset: self.recipe.preset,
            dataset: DatasetConfig {
                format: self.dataset.format,
                path: self.dataset.path.clone(),
                annotations: self.dataset.annotations.clone(),
            },
            world: WorldConfig {
                nodes: self.nodes,
                gpus_per_node: self.gpus_per_node,
                procs_per_node,
                world_size,
                batch_size_per_rank: recipe.batch_size / world_size,
            },
            recipe,
            checkpoint: CheckpointConfig {
                every_epochs: self.checkpoint.every_epochs,
                keep: self.checkpoint.keep,
            },
            metrics: MetricsConfig {
                port: self.metrics.port,
                pushgateway: self.metrics.pushgateway.clone(),
            },
            evaluations,
            monitor,
        })
    }

    fn check_placement(&self, c: &mut Checker) {
        if c.length("spec.image", &self.image, MAX_IMAGE_LENGTH)
            && self.image.chars().any(char::is_whitespace)
        {
            c.fail(
                "spec.image",
                format!(
                    "must be an image reference without whitespace, not {:?}",
                    self.image
                ),
            );
        }
        c.int("spec.nodes", self.nodes.into(), 1, MAX_NODES.into());
        c.int(
            "spec.gpusPerNode",
            self.gpus_per_node.into(),
            0,
            MAX_GPUS_PER_NODE.into(),
        );
        if let Some(resources) = &self.resources {
            check_resources(c, "spec.resources", resources);
        }
        if let Some(scheduling) = &self.scheduling {
            check_scheduling(c, scheduling);
        }
    }

    fn check_world(&self, c: &mut Checker, recipe: &Recipe) {
        let world = self.world_size();
        if world == 0 {
            return; // spec.nodes already reported
        }
        if !recipe.batch_size.is_multiple_of(world) {
            c.fail(
                "spec.recipe.batchSize",
                format!(
                    "{} does not split evenly over {world} ranks (nodes {} × {} per node); use a multiple of {world}, e.g. {}",
                    recipe.batch_size,
                    self.nodes,
                    self.procs_per_node(),
                    nearest_multiple(recipe.batch_size, world)
                ),
            );
        } else if recipe.batch_size / world < MIN_BATCH_SIZE_PER_RANK {
            c.fail(
                "spec.recipe.batchSize",
                format!(
                    "{} gives each of the {world} ranks {} image(s); batch norm needs at least {MIN_BATCH_SIZE_PER_RANK}: use at least {}",
                    recipe.batch_size,
                    recipe.batch_size / world,
                    u64::from(world) * u64::from(MIN_BATCH_SIZE_PER_RANK)
                ),
            );
        }
        if recipe.precision == Precision::Fp16 && self.gpus_per_node == 0 {
            c.fail(
                "spec.recipe.precision",
                "fp16 needs GPUs (spec.gpusPerNode > 0); on CPU use fp32 or bf16".into(),
            );
        }
    }

    fn check_storage(&self, c: &mut Checker) {
        c.path("spec.dataset.path", &self.dataset.path);
        if let Some(volume) = &self.dataset.volume {
            c.volume("spec.dataset.volume", volume);
        }
        c.dataset_in_volume(
            "spec.dataset",
            &self.dataset.path,
            self.dataset.volume.as_ref(),
        );
        if let Some(annotations) = &self.dataset.annotations {
            c.path("spec.dataset.annotations", annotations);
            if let Some(volume) = &self.dataset.volume {
                let mount = volume.mount_path_or(&self.dataset.path);
                if !lies_within(annotations, mount) {
                    c.fail(
                        "spec.dataset.annotations",
                        format!("{annotations:?} must lie below the dataset volume's mount path {mount:?} (set volume.mountPath to a directory holding both)"),
                    );
                }
            }
            if self.dataset.format != DatasetFormat::Flat {
                c.fail(
                    "spec.dataset.annotations",
                    format!(
                        "an annotation file lists the images of a `flat` data set; format {} has its own layout",
                        serde_json::to_string(&self.dataset.format).unwrap_or_default()
                    ),
                );
            }
        }

        let cp = &self.checkpoint;
        c.int(
            "spec.checkpoint.everyEpochs",
            cp.every_epochs.into(),
            1,
            MAX_EPOCHS.into(),
        );
        c.int(
            "spec.checkpoint.keep",
            cp.keep.into(),
            1,
            MAX_CHECKPOINTS_KEPT.into(),
        );
        if let Some(volume) = &cp.volume {
            c.volume("spec.checkpoint.volume", volume);
            if volume.read_only() == Some(true) {
                let member = match volume.source() {
                    Some(VolumeSource::Nfs(_)) => "nfs",
                    _ => "persistentVolumeClaim",
                };
                c.fail(
                    &format!("spec.checkpoint.volume.{member}.readOnly"),
                    "must not be true: checkpoints are written to this volume".into(),
                );
            }
        }
    }

    fn check_evaluations(&self, c: &mut Checker) -> Vec<EvaluationConfig> {
        if self.evaluations.len() > MAX_EVALUATIONS as usize {
            c.fail(
                "spec.evaluations",
                format!(
                    "must have at most {MAX_EVALUATIONS} entries, not {}",
                    self.evaluations.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        let mut configs = Vec::with_capacity(self.evaluations.len());
        for (i, eval) in self.evaluations.iter().enumerate() {
            let field = format!("spec.evaluations[{i}]");
            if !seen.insert(eval.name.as_str()) {
                c.fail(
                    &format!("{field}.name"),
                    format!(
                        "{:?} is used by an earlier evaluation; names must be unique",
                        eval.name
                    ),
                );
            }
            configs.push(check_evaluation(c, &field, eval));
        }
        configs
    }

    fn check_operations(&self, c: &mut Checker) {
        let fp = &self.failure_policy;
        c.int(
            "spec.failurePolicy.maxRestarts",
            fp.max_restarts.into(),
            0,
            MAX_RESTARTS.into(),
        );
        match duration_seconds(&fp.stall_timeout) {
            None => c.fail(
                "spec.failurePolicy.stallTimeout",
                format!(
                    "must be a duration such as 90s, 15m or 1h30m, not {:?}",
                    fp.stall_timeout
                ),
            ),
            Some(seconds)
                if !(MIN_STALL_TIMEOUT_SECONDS as f64..=MAX_STALL_TIMEOUT_SECONDS as f64)
                    .contains(&seconds) =>
            {
                c.fail(
                    "spec.failurePolicy.stallTimeout",
                    format!("must be between 10s and 168h, not {}", fp.stall_timeout),
                )
            }
            Some(_) => {}
        }

        if let Some(url) = &self.metrics.pushgateway
            && c.length("spec.metrics.pushgateway", url, MAX_URL_LENGTH)
            && !is_http_url(url)
        {
            c.fail(
                "spec.metrics.pushgateway",
                format!("must be an http:// URL (the Pushgateway's in-cluster Service), e.g. http://pushgateway.monitoring:9091; not {url:?}"),
            );
        }
        c.int(
            "spec.metrics.port",
            self.metrics.port.into(),
            MIN_PORT.into(),
            u16::MAX.into(),
        );
        c.int(
            "spec.masterPort",
            self.master_port.into(),
            MIN_PORT.into(),
            u16::MAX.into(),
        );
        if self.master_port == self.metrics.port {
            c.fail(
                "spec.masterPort",
                format!(
                    "must differ from spec.metrics.port ({}): the rendezvous and the metrics endpoint cannot share a port",
                    self.metrics.port
                ),
            );
        }
    }
}

fn nearest_multiple(value: u32, of: u32) -> u64 {
    let of = u64::from(of);
    (u64::from(value).div_ceil(of)).max(1) * of
}

fn check_resources(c: &mut Checker, field: &str, resources: &Resources) {
    for (kind, map) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (name, quantity) in map {
            let at = format!("{field}.{kind}.{name}");
            if !is_label_key(name) {
                c.fail(
                    &at,
                    format!(
                        "{name:?} is not a resource name such as cpu, memory or ephemeral-storage"
                    ),
                );
            } else if name.ends_with("/gpu") {
                c.fail(
                    &at,
                    "GPUs are requested through spec.gpusPerNode, not spec.resources".into(),
                );
            } else if !name.contains('/')
                && !["cpu", "memory", "ephemeral-storage"].contains(&name.as_str())
                && !name.starts_with("hugepages-")
            {
                // Kubernetes refuses pods asking for other unqualified names.
                c.fail(
                    &at,
                    format!("{name:?} is not a container resource: use cpu, memory, ephemeral-storage, hugepages-<size> or a qualified extended resource such as example.com/widget"),
                );
            }
            if quantity.0.strip_prefix('-').is_some_and(is_quantity) {
                c.fail(
                    &at,
                    format!(
                        "{:?} is negative: use an amount of at least 0, e.g. 500m",
                        quantity.0
                    ),
                );
            } else if !is_quantity(&quantity.0) {
                c.fail(
                    &at,
                    format!(
                        "{:?} is not a quantity such as 500m, 32 or 200Gi",
                        quantity.0
                    ),
                );
            }
        }
    }
    // Kubernetes refuses a pod whose request exceeds its limit: the run would never start.
    for (name, request) in &resources.requests {
        let limit = resources.limits.get(name);
        if let (Some(r), Some(l)) = (
            quantity_value(&request.0),
            limit.and_then(|l| quantity_value(&l.0)),
        ) && r > l + l.abs() * 1e-12
        {
            c.fail(
                &format!("{field}.requests.{name}"),
                format!(
                    "{:?} exceeds {field}.limits.{name} ({:?}): a request must not be more than its limit",
                    request.0,
                    limit.map(|l| l.0.as_str()).unwrap_or_default()
                ),
            );
        }
    }
}

fn check_scheduling(c: &mut Checker, s: &Scheduling) {
    if let Some(name) = &s.scheduler_name {
        c.length(
            "spec.scheduling.schedulerName",
            name,
            MAX_DNS_SUBDOMAIN_LENGTH,
        );
    }
    if let Some(queue) = &s.queue_name
        && c.length("spec.scheduling.queueName", queue, MAX_DNS_LABEL_LENGTH)
        && !is_label_value(queue)
    {
        c.fail(
            "spec.scheduling.queueName",
            format!("must be a label value (letters, digits, '-', '_', '.'), not {queue:?}"),
        );
    }
    if let Some(class) = &s.priority_class_name {
        c.dns_subdomain("spec.scheduling.priorityClassName", class);
    }
    for (key, value) in &s.node_selector {
        let at = format!("spec.scheduling.nodeSelector.{key}");
        if !is_label_key(key) {
            c.fail(&at, format!("{key:?} is not a label key"));
        }
        if !value.is_empty() && (value.len() > 63 || !is_label_value(value)) {
            c.fail(&at, format!("{value:?} is not a label value"));
        }
    }
    for (i, t) in s.tolerations.iter().enumerate() {
        let at = format!("spec.scheduling.tolerations[{i}]");
        match t.operator.as_deref() {
            None | Some("Equal") => {}
            Some("Exists") if t.value.as_deref().is_none_or(str::is_empty) => {}
            Some("Exists") => c.fail(
                &format!("{at}.value"),
                "must be empty when operator is Exists".into(),
            ),
            Some(other) => c.fail(
                &format!("{at}.operator"),
                format!("must be Equal or Exists, not {other:?}"),
            ),
        }
        if let Some(effect) = t.effect.as_deref()
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            c.fail(
                &format!("{at}.effect"),
                format!("must be NoSchedule, PreferNoSchedule or NoExecute, not {effect:?}"),
            );
        }
    }
}

impl RecipeSpec {
    /// The preset's recipe with this spec's overrides applied (unchecked).
    pub fn apply(&self) -> Recipe {
        let mut r = self.preset.recipe();
        r.arch = self.arch.unwrap_or(r.arch);
        r.cifar_stem = self.cifar_stem.unwrap_or(r.cifar_stem);
        r.width = self.width.unwrap_or(r.width);
        r.epochs = self.epochs.unwrap_or(r.epochs);
        r.batch_size = self.batch_size.unwrap_or(r.batch_size);
        r.precision = self.precision.unwrap_or(r.precision);
        if let Some(o) = &self.optimizer {
            r.optimizer.lr = o.lr.unwrap_or(r.optimizer.lr);
            r.optimizer.momentum = o.momentum.unwrap_or(r.optimizer.momentum);
            r.optimizer.weight_decay = o.weight_decay.unwrap_or(r.optimizer.weight_decay);
            r.optimizer.schedule = o.schedule.unwrap_or(r.optimizer.schedule);
        }
        if let Some(m) = &self.moco {
            r.moco.dim = m.dim.unwrap_or(r.moco.dim);
            r.moco.queue_size = m.queue_size.unwrap_or(r.moco.queue_size);
            r.moco.momentum = m.momentum.unwrap_or(r.moco.momentum);
            r.moco.temperature = m.temperature.unwrap_or(r.moco.temperature);
            r.moco.mlp = m.mlp.unwrap_or(r.moco.mlp);
        }
        if let Some(crops) = &self.crops {
            if let Some(l) = &crops.large {
                r.crops.large.count = l.count.unwrap_or(r.crops.large.count);
                r.crops.large.size = l.size.unwrap_or(r.crops.large.size);
                r.crops.large.scale = l.scale.unwrap_or(r.crops.large.scale);
            }
            if let Some(s) = &crops.small {
                r.crops.small.count = s.count.unwrap_or(r.crops.small.count);
                r.crops.small.size = s.size.unwrap_or(r.crops.small.size);
                r.crops.small.scale = s.scale.unwrap_or(r.crops.small.scale);
            }
            r.crops.constrained = crops.constrained.unwrap_or(r.crops.constrained);
        }
        if let Some(crops) = self.auto_augment.as_ref().and_then(|a| a.crops.as_ref()) {
            r.auto_augment_crops = crops.clone();
        }
        let enabled = self
            .knn_loss
            .as_ref()
            .map_or(r.knn_loss.is_some(), |k| k.enabled.unwrap_or(true));
        r.knn_loss = knn_parameters(self).filter(|_| enabled);
        r
    }
}

fn check_recipe(c: &mut Checker, spec: &RecipeSpec, r: &Recipe) {
    const F: &str = "spec.recipe";
    c.int(
        &format!("{F}.epochs"),
        r.epochs.into(),
        1,
        MAX_EPOCHS.into(),
    );
    c.int(
        &format!("{F}.batchSize"),
        r.batch_size.into(),
        1,
        MAX_BATCH_SIZE.into(),
    );
    c.int(
        &format!("{F}.width"),
        r.width.into(),
        MIN_WIDTH.into(),
        MAX_WIDTH.into(),
    );
    if !r.width.is_multiple_of(WIDTH_MULTIPLE) {
        c.fail(
            &format!("{F}.width"),
            format!("{} must be a multiple of {WIDTH_MULTIPLE}", r.width),
        );
    }

    let o = &r.optimizer;
    c.float(
        &format!("{F}.optimizer.lr"),
        o.lr,
        (0.0, true),
        (MAX_LR, false),
    );
    c.float(
        &format!("{F}.optimizer.momentum"),
        o.momentum,
        (0.0, false),
        (1.0, true),
    );
    c.float(
        &format!("{F}.optimizer.weightDecay"),
        o.weight_decay,
        (0.0, false),
        (1.0, false),
    );

    let m = &r.moco;
    c.int(
        &format!("{F}.moco.dim"),
        m.dim.into(),
        MIN_DIM.into(),
        MAX_DIM.into(),
    );
    c.int(
        &format!("{F}.moco.queueSize"),
        m.queue_size.into(),
        1,
        MAX_QUEUE_SIZE.into(),
    );
    c.float(
        &format!("{F}.moco.momentum"),
        m.momentum,
        (0.0, false),
        (1.0, false),
    );
    c.float(
        &format!("{F}.moco.temperature"),
        m.temperature,
        (0.0, true),
        (MAX_TEMPERATURE, false),
    );
    if r.batch_size > 0 && !m.queue_size.is_multiple_of(r.batch_size) {
        c.fail(
            &format!("{F}.moco.queueSize"),
            format!(
                "{} must be a multiple of spec.recipe.batchSize ({}), e.g. {}",
                m.queue_size,
                r.batch_size,
                nearest_multiple(m.queue_size, r.batch_size)
            ),
        );
    }

    let crops = [
        ("large", &r.crops.large, MIN_LARGE_CROPS, MAX_LARGE_CROPS),
        ("small", &r.crops.small, 0, MAX_SMALL_CROPS),
    ];
    for (name, crop, min_count, max_count) in crops {
        let at = format!("{F}.crops.{name}");
        c.int(
            &format!("{at}.count"),
            crop.count.into(),
            min_count.into(),
            max_count.into(),
        );
        c.int(
            &format!("{at}.size"),
            crop.size.into(),
            MIN_CROP_SIZE.into(),
            MAX_CROP_SIZE.into(),
        );
        for (i, s) in crop.scale.iter().enumerate() {
            c.float(&format!("{at}.scale[{i}]"), *s, (0.0, true), (1.0, false));
        }
        if crop.scale[0] > crop.scale[1] {
            c.fail(
                &format!("{at}.scale"),
                format!(
                    "must be [min, max] with min <= max, not [{}, {}]",
                    crop.scale[0], crop.scale[1]
                ),
            );
        }
    }

    let total = r.crops.total();
    let aa = &r.auto_augment_crops;
    let aa_field = format!("{F}.autoAugment.crops");
    if aa.len() > MAX_AUTO_AUGMENT_CROPS as usize {
        c.fail(
            &aa_field,
            format!("must have at most {MAX_AUTO_AUGMENT_CROPS} entries"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, &index) in aa.iter().enumerate() {
        let at = format!("{aa_field}[{i}]");
        if index == 1 {
            c.fail(
                &at,
                "must not be 1: crop 1 is the key crop, which always takes the standard augmentations".into(),
            );
        } else if index >= total {
            let origin = if spec
                .auto_augment
                .as_ref()
                .and_then(|a| a.crops.as_ref())
                .is_none()
            {
                format!(
                    " (from the {} preset; set autoAugment.crops to match)",
                    crate::v1alpha1::json_name(&spec.preset)
                )
            } else {
                String::new()
            };
            c.fail(
                &at,
                format!(
                    "crop {index} does not exist: use indices 0 to {} (large.count {} + small.count {} crops){origin}",
                    total.saturating_sub(1),
                    r.crops.large.count,
                    r.crops.small.count
                ),
            );
        }
        if !seen.insert(index) {
            c.fail(&at, format!("crop {index} is listed twice"));
        }
    }

    // Checked even when disabled, as the schema and the CEL rules do.
    if let Some(k) = knn_parameters(spec) {
        c.int(
            &format!("{F}.knnLoss.topK"),
            k.top_k.into(),
            1,
            MAX_KNN_TOP_K.into(),
        );
        if k.top_k > m.queue_size {
            c.fail(
                &format!("{F}.knnLoss.topK"),
                format!(
                    "{} must not exceed spec.recipe.moco.queueSize ({}): neighbours come from the queue",
                    k.top_k, m.queue_size
                ),
            );
        }
        c.float(
            &format!("{F}.knnLoss.weight"),
            k.weight,
            (0.0, false),
            (MAX_KNN_WEIGHT, false),
        );
        if r.epochs > 0 && k.warmup_epochs >= r.epochs {
            c.fail(
                &format!("{F}.knnLoss.warmupEpochs"),
                format!(
                    "{} must be less than spec.recipe.epochs ({}), or the loss never switches on",
                    k.warmup_epochs, r.epochs
                ),
            );
        }
    }
}

/// The kNN-loss parameters, on or off: the preset's with the spec's overrides.
fn knn_parameters(spec: &RecipeSpec) -> Option<KnnLossConfig> {
    let preset = spec.preset.recipe().knn_loss;
    match &spec.knn_loss {
        None => preset,
        Some(k) => {
            let base = preset.unwrap_or(PAPER_KNN_LOSS);
            Some(KnnLossConfig {
                top_k: k.top_k.unwrap_or(base.top_k),
                weight: k.weight.unwrap_or(base.weight),
                warmup_epochs: k.warmup_epochs.unwrap_or(base.warmup_epochs),
            })
        }
    }
}

fn check_knn_monitor(c: &mut Checker, field: &str, m: &KnnMonitorSpec) -> KnnMonitorConfig {
    c.int(
        &format!("{field}.everyEpochs"),
        m.every_epochs.into(),
        1,
        MAX_EPOCHS.into(),
    );
    c.path(&format!("{field}.dataset.path"), &m.dataset.path);
    if let Some(volume) = &m.dataset.volume {
        c.volume(&format!("{field}.dataset.volume"), volume);
    }
    c.dataset_in_volume(
        &format!("{field}.dataset"),
        &m.dataset.path,
        m.dataset.volume.as_ref(),
    );
    let formats = EvaluationKind::Knn.formats();
    if !formats.contains(&m.dataset.format) {
        let names: Vec<String> = formats.iter().map(crate::v1alpha1::json_name).collect();
        c.fail(
            &format!("{field}.dataset.format"),
            format!(
                "the kNN monitor cannot read {}; use {}",
                crate::v1alpha1::json_name(&m.dataset.format),
                names.join(" or ")
            ),
        );
    }
    c.int(&format!("{field}.k"), m.k.into(), 1, MAX_EVAL_K.into());
    c.float(
        &format!("{field}.temperature"),
        m.temperature,
        (0.0, true),
        (MAX_TEMPERATURE, false),
    );
    for (name, value) in [
        ("maxTrainImages", m.max_train_images),
        ("maxValImages", m.max_val_images),
    ] {
        c.int(
            &format!("{field}.{name}"),
            value.into(),
            1,
            MAX_MONITOR_IMAGES.into(),
        );
    }
    KnnMonitorConfig {
        every_epochs: m.every_epochs,
        dataset: EvaluationDatasetConfig {
            format: m.dataset.format,
            path: m.dataset.path.clone(),
        },
        k: m.k,
        temperature: m.temperature,
        max_train_images: m.max_train_images,
        max_val_images: m.max_val_images,
    }
}

fn check_evaluation(c: &mut Checker, field: &str, e: &EvaluationSpec) -> EvaluationConfig {
    use EvaluationKind as K;
    c.dns_label(&format!("{field}.name"), &e.name);
    c.path(&format!("{field}.dataset.path"), &e.dataset.path);
    if let Some(volume) = &e.dataset.volume {
        c.volume(&format!("{field}.dataset.volume"), volume);
    }
    c.dataset_in_volume(
        &format!("{field}.dataset"),
        &e.dataset.path,
        e.dataset.volume.as_ref(),
    );
    if !e.kind.formats().contains(&e.dataset.format) {
        let names: Vec<String> = e
            .kind
            .formats()
            .iter()
            .map(crate::v1alpha1::json_name)
            .collect();
        c.fail(
            &format!("{field}.dataset.format"),
            format!(
                "{} cannot read {}; use {}",
                crate::v1alpha1::json_name(&e.kind),
                crate::v1alpha1::json_name(&e.dataset.format),
                names.join(" or ")
            ),
        );
    }
    c.int(
        &format!("{field}.gpus"),
        e.gpus.into(),
        0,
        MAX_GPUS_PER_NODE.into(),
    );

    let params: [(&str, bool, &[K]); 6] = [
        ("k", e.k.is_some(), &[K::Knn, K::Davis]),
        ("temperature", e.temperature.is_some(), &[K::Knn, K::Davis]),
        ("cost", e.cost.is_some(), &[K::LinearSvm]),
        ("epochs", e.epochs.is_some(), &[K::Segmentation]),
        ("batchSize", e.batch_size.is_some(), &[K::Segmentation]),
        ("mode", e.mode.is_some(), &[K::Segmentation]),
    ];
    for (name, set, kinds) in params {
        if set && !kinds.contains(&e.kind) {
            let names: Vec<String> = kinds.iter().map(crate::v1alpha1::json_name).collect();
            c.fail(
                &format!("{field}.{name}"),
                format!(
                    "applies only to kind {}, not {}",
                    names.join(" or "),
                    crate::v1alpha1::json_name(&e.kind)
                ),
            );
        }
    }
    if let Some(k) = e.k {
        c.int(&format!("{field}.k"), k.into(), 1, MAX_EVAL_K.into());
    }
    if let Some(t) = e.temperature {
        c.float(
            &format!("{field}.temperature"),
            t,
            (0.0, true),
            (MAX_TEMPERATURE, false),
        );
    }
    if let Some(cost) = e.cost {
        c.float(
            &format!("{field}.cost"),
            cost,
            (0.0, true),
            (MAX_SVM_COST, false),
        );
    }
    if let Some(epochs) = e.epochs {
        c.int(
            &format!("{field}.epochs"),
            epochs.into(),
            1,
            MAX_EVAL_EPOCHS.into(),
        );
    }
    if let Some(batch) = e.batch_size {
        c.int(
            &format!("{field}.batchSize"),
            batch.into(),
            1,
            MAX_EVAL_BATCH_SIZE.into(),
        );
    }

    let cityscapes = e.dataset.format == EvaluationDatasetFormat::Cityscapes;
    let task = match e.kind {
        K::Knn => EvaluationTask::Knn {
            k: e.k.unwrap_or(20),
            temperature: e.temperature.unwrap_or(0.07),
        },
        K::LinearSvm => EvaluationTask::LinearSvm {
            cost: e.cost.unwrap_or(0.5),
        },
        K::Segmentation => EvaluationTask::Segmentation {
            epochs: e.epochs.unwrap_or(if cityscapes { 150 } else { 45 }),
            batch_size: e.batch_size.unwrap_or(if cityscapes { 8 } else { 16 }),
            mode: e.mode.unwrap_or_default(),
        },
        K::Davis => EvaluationTask::Davis {
            k: e.k.unwrap_or(10),
            temperature: e.temperature.unwrap_or(0.07),
        },
        K::Retrieval => EvaluationTask::Retrieval,
    };
    EvaluationConfig {
        name: e.name.clone(),
        dataset: EvaluationDatasetConfig {
            format: e.dataset.format,
            path: e.dataset.path.clone(),
        },
        gpus: e.gpus,
        task,
    }
}
