//! The worker's Prometheus metrics. Every family is listed in `docs/metrics.md` ("Worker").
use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use super::TelemetryError;

/// Which loss a `kontrast_train_loss` series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// The InfoNCE (MoCo) term.
    InfoNce,
    /// The kNN auxiliary term of the Revisiting recipe.
    Knn,
    /// What the optimiser minimises.
    Total,
}

impl LossKind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::InfoNce => "infonce",
            LossKind::Knn => "knn",
            LossKind::Total => "total",
        }
    }
}

/// The metric families of one training process, in a registry of their own (constant labels
/// `run` and `rank` when given). Cloning is cheap and shares the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    loss: GaugeVec,
    data_wait_total: Counter,
    step_data_wait: Histogram,
    gpu_memory_allocated: IntGaugeVec,
    // Label-less vectors: the series appear with the first measurement, not as a misleading 0.
    knn_monitor_top1: GaugeVec,
    knn_monitor_top5: GaugeVec,
    /// `kontrast_knn_monitor_seconds`: wall time of one kNN monitor measurement.
    pub knn_monitor_seconds: Histogram,
    /// `kontrast_knn_monitor_failures_total`: kNN monitor measurements that failed (training
    /// went on without them).
    pub knn_monitor_failures: IntCounter,
    /// `kontrast_train_learning_rate`: the optimiser's current learning rate.
    pub learning_rate: Gauge,
    /// `kontrast_train_epoch`: the current epoch.
    pub epoch: IntGauge,
    /// `kontrast_train_step`: optimiser steps of the run so far (continues after a resume).
    pub step: IntGauge,
    /// `kontrast_train_total_steps`: optimiser steps of the whole run.
    pub total_steps: IntGauge,
    /// `kontrast_train_images_per_second`: recent throughput of the whole job (all ranks).
    pub images_per_second: Gauge,
    /// `kontrast_train_step_seconds`: wall time of one optimiser step, data wait included.
    pub step_seconds: Histogram,
    /// `kontrast_train_allreduce_seconds`: time spent in one gradient all-reduce.
    pub allreduce_seconds: Histogram,
    /// `kontrast_train_checkpoint_write_seconds`: time to write and commit one checkpoint.
    pub checkpoint_write_seconds: Histogram,
    /// `kontrast_train_checkpoint_last_epoch`: epoch of the newest checkpoint written.
    pub checkpoint_last_epoch: IntGauge,
    /// `kontrast_train_corrupt_images_skipped_total`: undecodable images skipped by the loader.
    pub corrupt_images_skipped: IntCounter,
    /// `kontrast_train_loss_scale_overflows_total`: optimiser steps skipped because fp16
    /// gradients overflowed at the current loss scale.
    pub loss_scale_overflows: IntCounter,
}

/// Registers `metric` and hands it back.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    metric: Result<M, prometheus::Error>,
) -> Result<M, TelemetryError> {
    let err = |source| TelemetryError::Register {
        name: name.to_string(),
        source,
    };
    let metric = metric.map_err(err)?;
    registry.register(Box::new(metric.clone())).map_err(err)?;
    Ok(metric)
}

/// Histogram options with exponential buckets (`start`, doubling, `count` of them).
fn histogram(
    name: &str,
    help: &str,
    start: f64,
    count: usize,
) -> Result<Histogram, prometheus::Error> {
    let buckets = prometheus::exponential_buckets(start, 2.0, count)?;
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

impl Metrics {
    /// Creates and registers every family. `run` and `rank`, when given, become constant labels
    /// on every series, so scrapes of several ranks or runs stay apart.
    pub fn new(run: Option<&str>, rank: Option<u32>) -> Result<Self, TelemetryError> {
        let mut labels = HashMap::new();
        if let Some(run) = run {
            labels.insert("run".to_string(), run.to_string());
        }
        if let Some(rank) = rank {
            labels.insert("rank".to_string(), rank.to_string());
        }
        let registry = Registry::new_custom(None, (!labels.is_empty()).then_some(labels)).map_err(
            |source| TelemetryError::Register {
                name: "constant labels".into(),
                source,
            },
        )?;
        let r = &registry;
        Ok(Self {
            loss: register(
                r,
                "kontrast_train_loss",
                GaugeVec::new(
                    Opts::new("kontrast_train_loss", "Latest training loss by term"),
                    &["kind"],
                ),
            )?,
            learning_rate: register(
                r,
                "kontrast_train_learning_rate",
                Gauge::new("kontrast_train_learning_rate", "Current learning rate"),
            )?,
            epoch: register(
                r,
                "kontrast_train_epoch",
                IntGauge::new("kontrast_train_epoch", "Current epoch"),
            )?,
            step: register(
                r,
                "kontrast_train_step",
                IntGauge::new(
                    "kontrast_train_step",
                    "Optimiser steps of the run so far (continues after a resume)",
                ),
            )?,
            total_steps: register(
                r,
                "kontrast_train_total_steps",
                IntGauge::new(
                    "kontrast_train_total_steps",
                    "Optimiser steps of the whole run",
                ),
            )?,
            images_per_second: register(
                r,
                "kontrast_train_images_per_second",
                Gauge::new(
                    "kontrast_train_images_per_second",
                    "Recent training throughput of the whole job",
                ),
            )?,
            data_wait_total: register(
                r,
                "kontrast_train_data_wait_seconds_total",
                Counter::new(
                    "kontrast_train_data_wait_seconds_total",
                    "Time spent waiting for input batches",
                ),
            )?,
            step_data_wait: register(
                r,
                "kontrast_train_step_data_wait_seconds",
                // 0.5 ms .. 16 s
                histogram(
                    "kontrast_train_step_data_wait_seconds",
                    "Time one step waited for its input batch",
                    0.0005,
                    16,
                ),
            )?,
            step_seconds: register(
                r,
                "kontrast_train_step_seconds",
                // 5 ms .. 41 s
                histogram(
                    "kontrast_train_step_seconds",
                    "Wall time of one optimiser step",
                    0.005,
                    14,
                ),
            )?,
            allreduce_seconds: register(
                r,
                "kontrast_train_allreduce_seconds",
                // 0.5 ms .. 16 s
                histogram(
                    "kontrast_train_allreduce_seconds",
                    "Time of one gradient all-reduce",
                    0.0005,
                    16,
                ),
            )?,
            checkpoint_write_seconds: register(
                r,
                "kontrast_train_checkpoint_write_seconds",
                // 50 ms .. 14 min
                histogram(
                    "kontrast_train_checkpoint_write_seconds",
                    "Time to write and commit one checkpoint",
                    0.05,
                    15,
                ),
            )?,
            checkpoint_last_epoch: register(
                r,
                "kontrast_train_checkpoint_last_epoch",
                IntGauge::new(
                    "kontrast_train_checkpoint_last_epoch",
                    "Epoch of the newest checkpoint written",
                ),
            )?,
            corrupt_images_skipped: register(
                r,
                "kontrast_train_corrupt_images_skipped_total",
                IntCounter::new(
                    "kontrast_train_corrupt_images_skipped_total",
                    "Undecodable images skipped by the data loader",
                ),
            )?,
            loss_scale_overflows: register(
                r,
                "kontrast_train_loss_scale_overflows_total",
                IntCounter::new(
                    "kontrast_train_loss_scale_overflows_total",
                    "Optimiser steps skipped because fp16 gradients overflowed at the loss scale",
                ),
            )?,
            gpu_memory_allocated: register(
                r,
                "kontrast_train_gpu_memory_allocated_bytes",
                IntGaugeVec::new(
                    Opts::new(
                        "kontrast_train_gpu_memory_allocated_bytes",
                        "CUDA memory held by tensors, per device",
                    ),
                    &["device"],
                ),
            )?,
            knn_monitor_top1: register(
                r,
                "kontrast_knn_monitor_top1",
                GaugeVec::new(
                    Opts::new(
                        "kontrast_knn_monitor_top1",
                        "Latest kNN monitor top-1 accuracy in percent",
                    ),
                    &[],
                ),
            )?,
            knn_monitor_top5: register(
                r,
                "kontrast_knn_monitor_top5",
                GaugeVec::new(
                    Opts::new(
                        "kontrast_knn_monitor_top5",
                        "Latest kNN monitor top-5 accuracy in percent",
                    ),
                    &[],
                ),
            )?,
            knn_monitor_seconds: register(
                r,
                "kontrast_knn_monitor_seconds",
                // 50 ms .. 14 min
                histogram(
                    "kontrast_knn_monitor_seconds",
                    "Wall time of one kNN monitor measurement",
                    0.05,
                    15,
                ),
            )?,
            knn_monitor_failures: register(
                r,
                "kontrast_knn_monitor_failures_total",
                IntCounter::new(
                    "kontrast_knn_monitor_failures_total",
                    "kNN monitor measurements that failed; training went on without them",
                ),
            )?,
            registry,
        })
    }

    /// The registry holding every family (to serve, or to add process-specific ones).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the latest value of one loss term. A term appears only once set, so a run without
    /// the kNN loss exports no `kind="knn"` series rather than a misleading zero.
    pub fn set_loss(&self, kind: LossKind, value: f64) {
        self.loss.with_label_values(&[kind.as_str()]).set(value);
    }

    /// Records one step's wait for its input batch, in the running total and the histogram.
    pub fn observe_data_wait(&self, seconds: f64) {
        self.data_wait_total.inc_by(seconds.max(0.0));
        self.step_data_wait.observe(seconds);
    }

    /// Sets the CUDA memory allocated on `device`. Only called on CUDA, so CPU runs export no
    /// series at all.
    pub fn set_gpu_memory_allocated(&self, device: usize, bytes: i64) {
        self.gpu_memory_allocated
            .with_label_values(&[device.to_string().as_str()])
            .set(bytes);
    }

    /// Sets the kNN monitor's latest accuracies (percent). Runs without the monitor export no
    /// series.
    pub fn set_knn_monitor(&self, top1: f64, top5: f64) {
        self.knn_monitor_top1
            .with_label_values::<&str>(&[])
            .set(top1);
        self.knn_monitor_top5
            .with_label_values::<&str>(&[])
            .set(top5);
    }

    /// Every series in the Prometheus text format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> Result<String, TelemetryError> {
        encode(&self.registry)
    }
}

/// `registry` in the Prometheus text format.
pub(super) fn encode(registry: &Registry) -> Result<String, TelemetryError> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .map_err(TelemetryError::Encode)?;
    // The text encoder only writes UTF-8 (names are validated, label values are Rust strings).
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_with_the_constant_labels() {
        let m = Metrics::new(Some("r1"), Some(0)).unwrap();
        m.set_loss(LossKind::Total, 6.5);
        m.step_seconds.observe(0.2);
        m.observe_data_wait(0.01);
        let text = m.encode().unwrap();
        let loss = text
            .lines()
            .find(|l| l.starts_with("kontrast_train_loss{"))
            .unwrap();
        for part in ["kind=\"total\"", "rank=\"0\"", "run=\"r1\"", "} 6.5"] {
            assert!(loss.contains(part), "{loss}");
        }
        for name in [
            "kontrast_train_loss{",
            "kontrast_train_learning_rate",
            "kontrast_train_epoch",
            "kontrast_train_step{",
            "kontrast_train_total_steps",
            "kontrast_train_images_per_second",
            "kontrast_train_data_wait_seconds_total",
            "kontrast_train_step_data_wait_seconds_bucket",
            "kontrast_train_step_seconds_bucket",
            "kontrast_train_allreduce_seconds_bucket",
            "kontrast_train_checkpoint_write_seconds_bucket",
            "kontrast_train_checkpoint_last_epoch",
            "kontrast_train_corrupt_images_skipped_total",
            "kontrast_knn_monitor_failures_total",
            "kontrast_train_loss_scale_overflows_total",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn unset_loss_terms_and_gpu_memory_export_no_series() {
        let m = Metrics::new(None, None).unwrap();
        m.set_loss(LossKind::InfoNce, 1.0);
        let text = m.encode().unwrap();
        assert!(text.contains("kind=\"infonce\""));
        assert!(!text.contains("kind=\"knn\""));
        assert!(!text.contains("kontrast_train_gpu_memory_allocated_bytes{"));
        m.set_gpu_memory_allocated(0, 1024);
        let text = m.encode().unwrap();
        assert!(text.contains("kontrast_train_gpu_memory_allocated_bytes{device=\"0\"} 1024"));
    }

    #[test]
    fn knn_monitor_gauges_appear_with_the_first_measurement_and_the_constant_labels() {
        let m = Metrics::new(Some("r1"), Some(0)).unwrap();
        let text = m.encode().unwrap();
        assert!(!text.contains("kontrast_knn_monitor_top1{"), "{text}");
        m.set_knn_monitor(61.5, 97.25);
        let text = m.encode().unwrap();
        for (name, value) in [
            ("kontrast_knn_monitor_top1{", "} 61.5"),
            ("kontrast_knn_monitor_top5{", "} 97.25"),
        ] {
            let series = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing from\n{text}"));
            for part in ["rank=\"0\"", "run=\"r1\"", value] {
                assert!(series.contains(part), "{series}");
            }
        }
    }
}
