//! Semantic segmentation scores from a confusion matrix accumulated over a whole split, as the
//! reference code's `SemsegMeter` accumulates per-class TP, FP and FN: pixels whose ground truth
//! is [`IGNORE`] count nowhere; IoU of class c = TP / (TP + FP + FN).
//!
//! Convention for a class absent from both the ground truth and the predictions of the whole
//! split (TP + FP + FN = 0): the reference code divides by `max(TP + FP + FN, 1e-8)`, so its IoU
//! is 0 and it still counts in the mean over all classes. [`SegmentationScores::miou`] follows
//! that; [`SegmentationScores::miou_present`] averages only the classes that occur in the
//! ground truth or the predictions (equal to `miou` whenever every class occurs, as on the VOC
//! and Cityscapes validation sets).

use kontrast_data::segment::IGNORE;

/// Why predictions could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum MiouError {
    /// Prediction and ground truth do not have the same number of pixels.
    #[error("{prediction} predicted pixels for {truth} ground-truth pixels")]
    Size {
        /// Predicted pixels.
        prediction: usize,
        /// Ground-truth pixels.
        truth: usize,
    },
    /// A ground-truth pixel holds a value that is neither a class nor the ignore label.
    #[error("ground-truth pixel {pixel} has label {label}; labels are 0–{last} or {IGNORE}")]
    Truth {
        /// Its position in the image, row-major.
        pixel: usize,
        /// The value.
        label: u8,
        /// The last class.
        last: usize,
    },
    /// A prediction is not a class (a bug of the predictor).
    #[error("predicted pixel {pixel} has label {label}, beyond the last class {last}")]
    Prediction {
        /// Its position in the image, row-major.
        pixel: usize,
        /// The value.
        label: u8,
        /// The last class.
        last: usize,
    },
}

/// Pixel counts by (ground truth, prediction) over every image added so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `classes × classes`, row = ground truth, column = prediction.
    counts: Vec<u64>,
}

/// Scores of a confusion matrix, as fractions in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationScores {
    /// IoU per class (0 for a class absent from ground truth and predictions).
    pub iou: Vec<f64>,
    /// Whether each class occurs in the ground truth or the predictions.
    pub present: Vec<bool>,
    /// Mean IoU over all classes (the reference code's number).
    pub miou: f64,
    /// Mean IoU over the classes present (0 when none is).
    pub miou_present: f64,
    /// Correct pixels over all scored (non-ignored) pixels (0 when there are none).
    pub pixel_accuracy: f64,
    /// Scored pixels.
    pub pixels: u64,
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes (at most 255: 255 is the ignore label).
    pub fn new(classes: usize) -> Self {
        let classes = classes.min(usize::from(IGNORE));
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one image (or any set of pixels): `prediction` and `truth` hold one label per pixel
    /// in the same order. Nothing is added when an error is returned.
    pub fn update(&mut self, prediction: &[u8], truth: &[u8]) -> Result<(), MiouError> {
        if prediction.len() != truth.len() {
            return Err(MiouError::Size {
                prediction: prediction.len(),
                truth: truth.len(),
            });
        }
        let last = self.classes.saturating_sub(1);
        for (pixel, (&p, &t)) in prediction.iter().zip(truth).enumerate() {
            if t != IGNORE && usize::from(t) >= self.classes {
                return Err(MiouError::Truth {
                    pixel,
                    label: t,
                    last,
                });
            }
            if usize::from(p) >= self.classes {
                return Err(MiouError::Prediction {
                    pixel,
                    label: p,
                    last,
                });
            }
        }
        for (&p, &t) in prediction.iter().zip(truth) {
            if t != IGNORE {
                self.counts[usize::from(t) * self.classes + usize::from(p)] += 1;
            }
        }
        Ok(())
    }

    /// Pixels of ground truth `truth` predicted as `prediction`.
    pub fn count(&self, truth: usize, prediction: usize) -> u64 {
        if truth < self.classes && prediction < self.classes {
            self.counts[truth * self.classes + prediction]
        } else {
            0
        }
    }

    /// `(TP, FP, FN)` of class `c`.
    pub fn class_counts(&self, c: usize) -> (u64, u64, u64) {
        let k = self.classes;
        let tp = self.count(c, c);
        let predicted: u64 = (0..k).map(|t| self.count(t, c)).sum();
        let actual: u64 = (0..k).map(|p| self.count(c, p)).sum();
        (tp, predicted - tp, actual - tp)
    }

    /// Per-class IoU, both means and pixel accuracy.
    pub fn scores(&self) -> SegmentationScores {
        let k = self.classes;
        let (mut iou, mut present) = (Vec::with_capacity(k), Vec::with_capacity(k));
        for c in 0..k {
            let (tp, fp, fn_) = self.class_counts(c);
            let union = tp + fp + fn_;
            // The reference's max(union, 1e-8): an absent class scores 0.
            iou.push(tp as f64 / (union as f64).max(1e-8));
            present.push(union > 0);
        }
        let miou = if k == 0 {
            0.0
        } else {
            iou.iter().sum::<f64>() / k as f64
        };
        let n_present = present.iter().filter(|&&p| p).count();
        let miou_present = if n_present == 0 {
            0.0
        } else {
            iou.iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(v, _)| v)
                .sum::<f64>()
                / n_present as f64
        };
        let pixels: u64 = self.counts.iter().sum();
        let correct: u64 = (0..k).map(|c| self.count(c, c)).sum();
        SegmentationScores {
            iou,
            present,
            miou,
            miou_present,
            pixel_accuracy: if pixels == 0 {
                0.0
            } else {
                correct as f64 / pixels as f64
            },
            pixels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ignore_nothing_but_the_ignore_label_and_scores_by_hand() {
        let mut m = ConfusionMatrix::new(4);
        // truth:      0 0 1 1 2 255 255
        // prediction: 0 1 1 1 1 3   0
        m.update(&[0, 1, 1, 1, 1, 3, 0], &[0, 0, 1, 1, 2, IGNORE, IGNORE])
            .expect("valid");
        assert_eq!(m.class_counts(0), (1, 0, 1));
        assert_eq!(m.class_counts(1), (2, 2, 0));
        assert_eq!(m.class_counts(2), (0, 0, 1));
        // Class 3 was predicted only on ignored pixels: absent.
        assert_eq!(m.class_counts(3), (0, 0, 0));
        let s = m.scores();
        assert_eq!(s.iou, vec![0.5, 0.5, 0.0, 0.0]);
        assert_eq!(s.present, vec![true, true, true, false]);
        assert_eq!(s.miou, 0.25);
        assert!((s.miou_present - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(s.pixels, 5);
        assert_eq!(s.pixel_accuracy, 0.6);
    }

    #[test]
    fn bad_labels_and_sizes_are_errors_that_add_nothing() {
        let mut m = ConfusionMatrix::new(3);
        let err = m.update(&[0, 1], &[0, 3]).expect_err("truth 3");
        assert_eq!(
            err.to_string(),
            "ground-truth pixel 1 has label 3; labels are 0–2 or 255"
        );
        let err = m
            .update(&[0, 1, 4], &[0, 1, 255])
            .expect_err("prediction 4");
        assert!(err.to_string().contains("predicted pixel 2 has label 4"));
        let err = m.update(&[0], &[0, 1]).expect_err("size");
        assert!(err.to_string().contains("1 predicted pixels for 2"));
        assert_eq!(m.scores().pixels, 0);
        assert_eq!(m.scores().pixel_accuracy, 0.0);
        assert_eq!(m.scores().miou_present, 0.0);
    }
}
