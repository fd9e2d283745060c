//! The kNN monitor: the `knn` evaluation's protocol (weighted kNN on L2-normalised pooled
//! features) on a capped labelled split, run by rank 0 between epochs so that representation
//! quality is visible while a run trains.
//!
//! It must not change training: features come from `forward_t(_, false)` without gradients
//! (batch norm reads its running statistics and leaves them alone), the evaluation loader draws
//! from no random generator, and the torch generator is not used.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kontrast_api::config::KnnMonitorConfig;
use kontrast_data::{Dataset, EvalTransform, LoaderConfig, LoaderStats};
use tch::Device;

use crate::eval::EvalError;
use crate::eval::features::extract;
use crate::eval::knn::weighted_knn_accuracy;
use crate::eval::labelled::{self, LabelledSplits, SplitsError};
use crate::model::resnet::ResNet;

/// Images per feature-extraction batch.
const BATCH: usize = 256;
/// Longest failure message put in the progress report, which must stay well inside the
/// 4 KiB termination message.
const MAX_REPORTED_ERROR_BYTES: usize = 512;

/// Why the monitor cannot run. Every message names the spec field at fault.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The labelled data cannot be opened.
    #[error("spec.monitor.knn.dataset: {0}")]
    Splits(#[source] SplitsError),
    /// A split holds no image.
    #[error("spec.monitor.knn.dataset: the {split} split of {path} holds no image")]
    Empty {
        /// `train` or `test`.
        split: &'static str,
        /// The data set's path.
        path: String,
    },
    /// Features or the vote could not be computed.
    #[error("spec.monitor.knn.dataset {path}: {source}")]
    Evaluate {
        /// The data set's path.
        path: String,
        /// Why.
        #[source]
        source: EvalError,
    },
}

impl MonitorError {
    /// The message, cut to [`MAX_REPORTED_ERROR_BYTES`] on a character boundary, for the
    /// progress report.
    pub fn reported(&self) -> String {
        let mut text = self.to_string();
        if text.len() > MAX_REPORTED_ERROR_BYTES {
            let mut cut = MAX_REPORTED_ERROR_BYTES - '…'.len_utf8();
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent.
    pub top5: f64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Undecodable images left out.
    pub corrupt_skipped: u64,
}

/// The labelled split, opened once, and the protocol's parameters.
pub struct KnnMonitor {
    config: KnnMonitorConfig,
    train: Arc<Dataset>,
    train_indices: Vec<usize>,
    test: Arc<Dataset>,
    test_indices: Vec<usize>,
    classes: i64,
    transform: EvalTransform,
    threads: usize,
}

impl KnnMonitor {
    /// Opens the split of `config` and picks its capped, evenly spaced images; `crop` is the
    /// training resolution, `threads` the data-loading threads.
    pub fn open(
        config: &KnnMonitorConfig,
        crop: usize,
        threads: usize,
    ) -> Result<Self, MonitorError> {
        let path = &config.dataset.path;
        let splits = LabelledSplits::open(config.dataset.format, Path::new(path))
            .map_err(MonitorError::Splits)?;
        let classes = splits.classes() as i64;
        let LabelledSplits { train, test } = splits;
        let train_indices = labelled::evenly_spaced(train.len(), config.max_train_images as usize);
        let test_indices = labelled::evenly_spaced(test.len(), config.max_val_images as usize);
        for (split, indices) in [("train", &train_indices), ("test", &test_indices)] {
            if indices.is_empty() {
                return Err(MonitorError::Empty {
                    split,
                    path: path.clone(),
                });
            }
        }
        Ok(Self {
            config: config.clone(),
            train: Arc::new(train),
            train_indices,
            test: Arc::new(test),
            test_indices,
            classes,
            transform: labelled::transform(crop, config.dataset.format),
            threads,
        })
    }

    /// Whether the monitor runs after `done` of `epochs` epochs.
    pub fn due(&self, done: u32, epochs: u32) -> bool {
        self.config.due(done, epochs)
    }

    /// Memory-bank and query images.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train_indices.len(), self.test_indices.len())
    }

    /// Weighted kNN accuracy of `backbone`'s features (evaluation mode, no gradients).
    pub fn evaluate(&self, backbone: &ResNet, device: Device) -> Result<Measurement, MonitorError> {
        let started = Instant::now();
        let stats = Arc::new(LoaderStats::default());
        let loader = LoaderConfig {
            batch_per_rank: BATCH,
            threads: self.threads,
            stats: Some(stats.clone()),
            ..LoaderConfig::default()
        };
        let failed = |source| MonitorError::Evaluate {
            path: self.config.dataset.path.clone(),
            source,
        };
        let features = |dataset: &Arc<Dataset>, indices: &[usize]| {
            extract(
                backbone,
                dataset.clone(),
                indices.to_vec(),
                self.transform,
                loader.clone(),
                device,
            )
        };
        let (train, train_labels) = features(&self.train, &self.train_indices).map_err(failed)?;
        let (test, test_labels) = features(&self.test, &self.test_indices).map_err(failed)?;
        let accuracy = weighted_knn_accuracy(
            &train,
            &train_labels,
            &test,
            &test_labels,
            i64::from(self.config.k),
            self.config.temperature,
            self.classes,
        );
        Ok(Measurement {
            top1: accuracy.top1 * 100.0,
            top5: accuracy.top5 * 100.0,
            seconds: started.elapsed().as_secs_f64(),
            corrupt_skipped: stats.corrupt_skipped.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_failure_is_cut_on_a_character_boundary_and_marked() {
        let short = MonitorError::Empty {
            split: "test",
            path: "/data/labelled".into(),
        };
        assert_eq!(short.reported(), short.to_string());

        let long = MonitorError::Empty {
            split: "test",
            path: format!("/{}", "ü".repeat(400)),
        };
        let text = long.reported();
        assert!(text.len() <= MAX_REPORTED_ERROR_BYTES, "{}", text.len());
        assert!(text.starts_with("spec.monitor.knn.dataset"), "{text}");
        assert!(text.ends_with('…'), "{text}");
    }
}
