//! Segment retrieval on PASCAL VOC (the `retrieval` evaluation), after the reference code
//! (`segmentation/retrieval.py` and `utils/retrieval_utils.py` of
//! Unsupervised-Semantic-Segmentation), adapted to a plain MoCo backbone:
//!
//! - images and masks resized to `side × side` (image bicubic, mask nearest), the backbone in
//!   evaluation mode;
//! - the mask of an image is its ground-truth *foreground* (labels other than background 0 and
//!   [`IGNORE`]), where the reference uses its own model's saliency (threshold 0.5), which a MoCo
//!   checkpoint does not have;
//! - its prototype is the sum of layer4's feature maps (before pooling) bilinearly upsampled to
//!   the input resolution (`align_corners=False`, as the reference upsamples its embeddings)
//!   over the mask, L2-normalised. The upsampled maps are never materialised: the sum equals the
//!   maps weighted by the adjoint of the upsampling applied to the mask
//!   ([`mask_prototypes`]);
//! - its label is the majority ground-truth class in the mask (ties to the larger class, as the
//!   reference's `max` over `(count, class)`);
//! - the memory bank holds the prototypes of the `train` split's images with a non-empty mask;
//!   each `val` image takes the label of its top-1 cosine neighbour in the bank;
//! - scores: `accuracy`, the share of `val` images with a non-empty mask whose retrieved label
//!   is their majority class (not in the reference), and the mIoU of the prediction that paints
//!   the retrieved label into the mask and background elsewhere, against the resized ground
//!   truth, accumulated over the split ([`super::miou`]).
use std::sync::Arc;
use std::time::Instant;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat};
use kontrast_data::dataset::voc_segmentation::{
    VOC_SEGMENTATION_CLASSES, VocSegmentation, voc_segmentation_class_name,
};
use kontrast_data::resize::Filter;
use kontrast_data::segment::{IGNORE, SegAugment, SegLoader};
use kontrast_data::{DataError, LoaderConfig, View};
use serde_json::json;
use tch::{Device, Kind, Tensor};
use tracing::info;

use crate::input::Normalizer;
use crate::model::resnet::ResNet;

use super::miou::{ConfusionMatrix, MiouError, SegmentationScores};

/// The split the memory bank is built from.
pub const BANK_SPLIT: &str = "train";
/// The split that is scored.
pub const QUERY_SPLIT: &str = "val";

/// Why the evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// Segment retrieval reads PASCAL VOC only.
    #[error("segment retrieval reads a PASCAL VOC data set, not {0:?}")]
    Format(EvaluationDatasetFormat),
    /// The data could not be read.
    #[error("segment retrieval data: {0}")]
    Data(#[from] DataError),
    /// Images that could not be decoded were left out, which would change the result.
    #[error(
        "{split}: {missing} of the {total} images could not be decoded (first: {first}); this evaluation needs every image"
    )]
    Undecodable {
        /// The split.
        split: &'static str,
        /// How many.
        missing: usize,
        /// Images in the split.
        total: usize,
        /// The first of them.
        first: String,
    },
    /// No image of the bank split has a labelled foreground.
    #[error("no {BANK_SPLIT} image has a foreground object: the memory bank is empty")]
    EmptyBank,
    /// A mask could not be scored.
    #[error("{image}: {source}")]
    Labels {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: MiouError,
    },
    /// Inconsistent shapes or a failed tensor conversion (a bug).
    #[error("internal segment retrieval error: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Internal(e.to_string())
}

/// The input side for a model pre-trained on `crop`-pixel crops: the reference's 512 at 224,
/// scaled to the training crop.
pub fn input_side(crop: usize) -> usize {
    (crop * 16 / 7).max(1)
}

/// Whether each pixel is foreground: an object class, neither background nor ignored.
pub fn foreground(truth: &[u8]) -> Vec<bool> {
    truth.iter().map(|&t| t != 0 && t != IGNORE).collect()
}

/// The most frequent label of `truth` where `mask` holds, background and [`IGNORE`] left out;
/// ties go to the larger label. `None` when the mask holds no object pixel.
pub fn majority_class(truth: &[u8], mask: &[bool]) -> Option<u8> {
    let mut counts = [0usize; 256];
    for (&t, _) in truth.iter().zip(mask).filter(|(_, m)| **m) {
        counts[usize::from(t)] += 1;
    }
    counts[0] = 0;
    counts[usize::from(IGNORE)] = 0;
    let (label, &count) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(label, &count)| (count, label))?;
    (count > 0).then_some(label as u8)
}

/// `class` where `mask` holds, background (0) elsewhere.
pub fn paint(mask: &[bool], class: u8) -> Vec<u8> {
    mask.iter().map(|&m| if m { class } else { 0 }).collect()
}

/// L2-normalised prototypes (B×C) of `features` (B×C×h×w) over `masks` (B×1×H×W, 0/1 floats):
/// Σ over the mask of the features bilinearly upsampled to H×W (`align_corners=False`),
/// computed as the features weighted by the upsampling's adjoint applied to the mask. A mask
/// without pixels gives a zero row (as `F.normalize` of a zero vector).
pub fn mask_prototypes(features: &Tensor, masks: &Tensor) -> Result<Tensor, RetrievalError> {
    let (f, m) = (features.size(), masks.size());
    let (&[b, c, h, w], &[mb, 1, mh, mw]) = (f.as_slice(), m.as_slice()) else {
        return Err(internal(format!("features {f:?}, masks {m:?}")));
    };
    if b != mb {
        return Err(internal(format!("features {f:?}, masks {m:?}")));
    }
    let weights = Tensor::upsample_bilinear2d_backward(
        &masks.to_kind(features.kind()),
        [mh, mw],
        [b, 1, h, w],
        false,
        None,
        None,
    );
    let sums = (features * weights).sum_dim_intlist([2i64, 3].as_slice(), false, features.kind());
    let norm = sums
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    Ok((sums / norm).view([b, c]))
}

/// Normalised prototypes (on `device`), masks and ground truths of the images of one split.
struct Pass<'a> {
    split: &'static str,
    data: &'a VocSegmentation,
    backbone: &'a ResNet,
    side: usize,
    loader: LoaderConfig,
    device: Device,
}

/// One image of a pass.
struct Segment {
    index: usize,
    truth: Vec<u8>,
    mask: Vec<bool>,
}

impl Pass<'_> {
    /// Calls `each` with the prototypes (B×C) and segments of every batch, in split order.
    fn run(
        &self,
        mut each: impl FnMut(&Tensor, Vec<Segment>) -> Result<(), RetrievalError>,
    ) -> Result<(), RetrievalError> {
        let total = self.data.len();
        let started = Instant::now();
        let augment = SegAugment {
            resize: Some((self.side, self.side)),
            filter: Filter::Bicubic,
            ..SegAugment::evaluation()
        };
        let input = Normalizer::new(self.device);
        let side = self.side as i64;
        let (mut done, mut next_log) = (Vec::with_capacity(total), 0);
        let loader = SegLoader::new(
            Arc::new(self.data.seg_dataset()?),
            (0..total).collect(),
            augment,
            self.loader.clone(),
        )?;
        for batch in loader {
            let batch = batch?;
            let Some((_, _, images, truths)) = batch.stacked() else {
                if batch.samples.is_empty() {
                    continue;
                }
                return Err(internal("a resized batch holds images of several sizes"));
            };
            let n = batch.samples.len();
            let x = input.apply(
                &View {
                    size: self.side,
                    data: images,
                },
                n,
            );
            let masks: Vec<bool> = foreground(&truths);
            let mask_tensor = Tensor::from_slice(&masks)
                .to_kind(Kind::Float)
                .view([n as i64, 1, side, side])
                .to_device(self.device);
            let prototypes = tch::no_grad(|| {
                let maps = self.backbone.forward_layer4_maps_t(&x, false);
                mask_prototypes(&maps.to_kind(Kind::Float), &mask_tensor)
            })?;
            let pixels = self.side * self.side;
            let segments = batch
                .samples
                .iter()
                .zip(truths.chunks_exact(pixels).zip(masks.chunks_exact(pixels)))
                .map(|(s, (t, m))| Segment {
                    index: s.index,
                    truth: t.to_vec(),
                    mask: m.to_vec(),
                })
                .collect();
            done.extend(batch.samples.iter().map(|s| s.index));
            each(&prototypes, segments)?;
            if done.len() >= next_log {
                info!(
                    split = self.split,
                    done = done.len(),
                    total,
                    seconds = started.elapsed().as_secs_f64(),
                    "segment prototypes"
                );
                next_log = done.len() + total.div_ceil(10);
            }
        }
        // The loader leaves undecodable pairs out of their batch; the indices say which remain.
        if done.len() < total {
            let mut present = vec![false; total];
            for &i in &done {
                present[i] = true;
            }
            let first = present.iter().position(|p| !p).unwrap_or(0);
            return Err(RetrievalError::Undecodable {
                split: self.split,
                missing: total - done.len(),
                total,
                first: self.data.pairs()[first].0.display().to_string(),
            });
        }
        Ok(())
    }
}

/// Scores of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalResult {
    /// Retrieved label = majority class, over the query images with a foreground (fraction).
    pub accuracy: f64,
    /// Scores of the painted predictions (fractions).
    pub scores: SegmentationScores,
    /// Prototypes in the memory bank.
    pub bank: usize,
    /// Bank-split images left out for an empty foreground.
    pub bank_skipped: usize,
    /// Query images with a foreground (the denominator of the accuracy).
    pub queries: usize,
    /// Query images in all (every one is scored for mIoU).
    pub images: usize,
}

/// Runs the protocol: the memory bank from `bank`, retrieval and scoring on `queries`.
pub fn evaluate(
    bank: &VocSegmentation,
    queries: &VocSegmentation,
    backbone: &ResNet,
    side: usize,
    loader: LoaderConfig,
    device: Device,
) -> Result<RetrievalResult, RetrievalError> {
    let started = Instant::now();
    let pass = |split, data| Pass {
        split,
        data,
        backbone,
        side,
        loader: loader.clone(),
        device,
    };
    let (mut rows, mut labels, mut skipped) = (Vec::new(), Vec::new(), 0);
    pass(BANK_SPLIT, bank).run(|prototypes, segments| {
        for (row, s) in segments.iter().enumerate() {
            match majority_class(&s.truth, &s.mask) {
                Some(label) => {
                    rows.push(prototypes.get(row as i64));
                    labels.push(label);
                }
                None => skipped += 1,
            }
        }
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(RetrievalError::EmptyBank);
    }
    let memory = Tensor::stack(&rows, 0);
    info!(
        prototypes = labels.len(),
        skipped,
        seconds = started.elapsed().as_secs_f64(),
        "memory bank built"
    );

    let mut confusion = ConfusionMatrix::new(VOC_SEGMENTATION_CLASSES);
    let (mut correct, mut scored, mut images) = (0usize, 0usize, 0usize);
    pass(QUERY_SPLIT, queries).run(|prototypes, segments| {
        let neighbours = prototypes.matmul(&memory.tr()).argmax(1, false);
        let neighbours =
            Vec::<i64>::try_from(neighbours.to_device(Device::Cpu)).map_err(internal)?;
        for (s, &neighbour) in segments.iter().zip(&neighbours) {
            let retrieved = usize::try_from(neighbour)
                .ok()
                .and_then(|n| labels.get(n).copied())
                .ok_or_else(|| internal(format!("neighbour {neighbour} is not in the bank")))?;
            let majority = majority_class(&s.truth, &s.mask);
            if let Some(label) = majority {
                scored += 1;
                correct += usize::from(label == retrieved);
            }
            // An image without foreground paints nothing: all background, as the reference
            // paints nothing where no pixel is salient.
            confusion
                .update(&paint(&s.mask, retrieved), &s.truth)
                .map_err(|source| RetrievalError::Labels {
                    image: queries.pairs()[s.index].1.display().to_string(),
                    source,
                })?;
            images += 1;
        }
        Ok(())
    })?;
    let result = RetrievalResult {
        accuracy: if scored == 0 {
            0.0
        } else {
            correct as f64 / scored as f64
        },
        scores: confusion.scores(),
        bank: labels.len(),
        bank_skipped: skipped,
        queries: scored,
        images,
    };
    info!(
        accuracy = result.accuracy * 100.0,
        miou = result.scores.miou * 100.0,
        miou_present = result.scores.miou_present * 100.0,
        queries = scored,
        images,
        seconds = started.elapsed().as_secs_f64(),
        "segment retrieval scored"
    );
    Ok(result)
}

/// The `retrieval` evaluation of a run config: `train` as the bank and `val` as the queries of
/// its VOC data set, at [`input_side`] of the run's large crop; the metrics object of
/// `kontrast eval` (percent).
pub fn run(
    evaluation: &EvaluationConfig,
    crop: usize,
    backbone: &ResNet,
    threads: usize,
    device: Device,
) -> Result<serde_json::Value, RetrievalError> {
    if evaluation.dataset.format != EvaluationDatasetFormat::Voc {
        return Err(RetrievalError::Format(evaluation.dataset.format));
    }
    let root = std::path::Path::new(&evaluation.dataset.path);
    let bank = VocSegmentation::open(root, BANK_SPLIT)?;
    let queries = VocSegmentation::open(root, QUERY_SPLIT)?;
    let side = input_side(crop);
    let loader = LoaderConfig {
        batch_per_rank: 16,
        threads,
        ..LoaderConfig::default()
    };
    let result = evaluate(&bank, &queries, backbone, side, loader, device)?;
    let iou: serde_json::Map<String, serde_json::Value> = result
        .scores
        .iou
        .iter()
        .enumerate()
        .map(|(c, v)| {
            let name = voc_segmentation_class_name(c).unwrap_or("?");
            (name.to_string(), json!(v * 100.0))
        })
        .collect();
    info!(side, bank = result.bank, "segment retrieval evaluation");
    Ok(json!({
        "accuracy": result.accuracy * 100.0,
        "mIoU": result.scores.miou * 100.0,
        "mIoUPresent": result.scores.miou_present * 100.0,
        "pixelAccuracy": result.scores.pixel_accuracy * 100.0,
        "iou": iou,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_majority_ignores_background_and_ignore_and_breaks_ties_upwards() {
        let truth = [0, 0, 0, 3, 3, 5, 5, 255, 255, 255, 7];
        let all = [true; 11];
        assert_eq!(majority_class(&truth, &all), Some(5));
        let mut some = all;
        some[6] = false;
        assert_eq!(majority_class(&truth, &some), Some(3));
        assert_eq!(majority_class(&[0, 255, 0], &[true; 3]), None);
        assert_eq!(majority_class(&truth, &[false; 11]), None);
        let mask = foreground(&truth);
        assert_eq!(mask.iter().filter(|&&m| m).count(), 5);
        assert_eq!(paint(&mask, 9), vec![0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 9]);
    }

    #[test]
    fn prototypes_equal_the_upsampled_features_summed_over_the_mask() {
        tch::manual_seed(3);
        for (h, w, out_h, out_w) in [(4, 5, 32, 37), (3, 3, 16, 16), (7, 2, 21, 9)] {
            let features = Tensor::randn([3, 6, h, w], (Kind::Double, Device::Cpu));
            let masks = Tensor::rand([3, 1, out_h, out_w], (Kind::Double, Device::Cpu))
                .gt(0.6)
                .to_kind(Kind::Double);
            // The third image has no mask pixel at all.
            let masks = Tensor::cat(
                &[masks.narrow(0, 0, 2), masks.narrow(0, 2, 1).zeros_like()],
                0,
            );
            let ours = mask_prototypes(&features, &masks).expect("shapes");
            let upsampled = features.upsample_bilinear2d([out_h, out_w], false, None, None);
            let sums =
                (upsampled * &masks).sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Double);
            let norm = sums
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
            let expected = sums / norm;
            let diff = (&ours - &expected).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "{h}×{w} → {out_h}×{out_w}: {diff}");
            assert_eq!(ours.get(2).abs().sum(Kind::Double).double_value(&[]), 0.0);
            let norms = ours
                .narrow(0, 0, 2)
                .norm_scalaropt_dim(2, [1i64].as_slice(), false);
            assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-12);
        }
        let err = mask_prototypes(
            &Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([3, 1, 8, 8], (Kind::Float, Device::Cpu)),
        )
        .expect_err("batch sizes differ");
        assert!(err.to_string().contains("internal"));
    }

    #[test]
    fn the_input_side_is_512_at_the_papers_224_crop() {
        assert_eq!(input_side(224), 512);
        assert_eq!(input_side(160), 365);
        assert_eq!(input_side(16), 36);
    }
}
