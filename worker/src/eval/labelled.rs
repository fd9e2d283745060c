//! The labelled train/test splits of a classification data set, as the kNN evaluation and the
//! kNN monitor read them, and the transform that brings their images to the model's input.
use std::path::Path;

use kontrast_api::config::EvaluationDatasetFormat;
use kontrast_data::{DataError, Dataset, DatasetFormat, EvalTransform, Split};

/// Why the splits could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SplitsError {
    /// A split is missing or unreadable.
    #[error("{path}: {source}")]
    Data {
        /// The split's directory (or the IDX files' directory).
        path: String,
        /// Why.
        #[source]
        source: DataError,
    },
    /// The format has no labelled classification splits.
    #[error(
        "labelled train/test splits come from fashionMnist or imagefolder data sets, not {0:?}"
    )]
    Format(EvaluationDatasetFormat),
}

/// A memory bank (`train`) and queries (`test`), both labelled.
pub struct LabelledSplits {
    /// Fashion-MNIST's `train` IDX files, or an imagefolder's `train/`.
    pub train: Dataset,
    /// Fashion-MNIST's `t10k` IDX files, or an imagefolder's `val/`.
    pub test: Dataset,
}

impl LabelledSplits {
    /// Opens the splits of the data set at `root`.
    pub fn open(format: EvaluationDatasetFormat, root: &Path) -> Result<Self, SplitsError> {
        let data = |path: &Path| {
            let path = path.display().to_string();
            move |source| SplitsError::Data { path, source }
        };
        match format {
            EvaluationDatasetFormat::FashionMnist => Ok(Self {
                train: Dataset::open_split(DatasetFormat::FashionMnist, root, Split::Train)
                    .map_err(data(root))?,
                test: Dataset::open_split(DatasetFormat::FashionMnist, root, Split::Test)
                    .map_err(data(root))?,
            }),
            EvaluationDatasetFormat::Imagefolder => {
                let (train, test) = (root.join("train"), root.join("val"));
                Ok(Self {
                    train: Dataset::open(DatasetFormat::Imagefolder, &train)
                        .map_err(data(&train))?,
                    test: Dataset::open(DatasetFormat::Imagefolder, &test).map_err(data(&test))?,
                })
            }
            other => Err(SplitsError::Format(other)),
        }
    }

    /// Classes of the vote: the train split's class names, or its largest label + 1 when that
    /// is more (IDX files name no classes).
    pub fn classes(&self) -> usize {
        let train = &self.train;
        train.classes().len().max(
            (0..train.len())
                .filter_map(|i| train.label(i))
                .max()
                .map_or(0, |m| m as usize + 1),
        )
    }
}

/// The model's input side for the images of `format` when training crops are `crop` pixels.
pub fn transform(crop: usize, format: EvaluationDatasetFormat) -> EvalTransform {
    match format {
        // Tiny images are evaluated whole at the training resolution.
        EvaluationDatasetFormat::FashionMnist => EvalTransform::Resize { size: crop },
        // ImageNet's 256 → 224, scaled to the training crop.
        _ => EvalTransform::ResizeCenterCrop {
            resize: crop * 8 / 7,
            crop,
        },
    }
}

/// At most `cap` indices of `0..len`, evenly spaced (deterministic, and spread over every class
/// of a data set stored class by class), in increasing order.
pub fn evenly_spaced(len: usize, cap: usize) -> Vec<usize> {
    if cap >= len {
        return (0..len).collect();
    }
    // i·len/cap is strictly increasing in i when cap < len, so the indices are distinct.
    (0..cap).map(|i| i * len / cap).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_indices_are_distinct_in_range_and_capped() {
        assert_eq!(evenly_spaced(5, 10), vec![0, 1, 2, 3, 4]);
        assert_eq!(evenly_spaced(10, 4), vec![0, 2, 5, 7]);
        let many = evenly_spaced(60_000, 10_000);
        assert_eq!(many.len(), 10_000);
        assert!(many.windows(2).all(|w| w[0] < w[1]));
        assert!(*many.last().unwrap() < 60_000);
        assert!(evenly_spaced(3, 0).is_empty());
    }

    #[test]
    fn a_format_without_classification_splits_is_refused() {
        let err = LabelledSplits::open(EvaluationDatasetFormat::Voc, Path::new("/nonexistent"))
            .err()
            .expect("voc has no kNN splits");
        assert!(
            err.to_string().contains("fashionMnist or imagefolder"),
            "{err}"
        );
    }
}
