//! DAVIS-2017 semi-supervised video object segmentation by label propagation (the protocol of
//! ajabri/videowalk's `test.py`, which "Revisiting Contrastive Methods" uses for its `moco50`
//! numbers): frozen layer3 features at stride 8 (layer3 run at stride 1), L2-normalised per
//! location; the first frame's annotation, resized to the feature grid, is propagated frame by
//! frame ([`propagation`]); each prediction is upsampled to the frame, its argmax is the
//! predicted mask, scored with J and F ([`super::davis_metrics`]).
mod propagation;

use std::path::Path;
use std::time::Instant;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat};
use kontrast_data::dataset::davis::{DavisSequence, DavisSplit, VOID};
use kontrast_data::image::RgbImage;
use kontrast_data::segment::Mask;
use serde_json::json;
use tch::{Device, Kind, Tensor};
use tracing::{info, warn};

use crate::input::Normalizer;
use crate::model::resnet::ResNet;

use super::davis_metrics::{self, ObjectScore, SequenceScorer, Summary};

pub use propagation::{
    PropagationParams, Propagator, grid_labels, hard_labels, l2_normalize_channels,
};

/// Previous frames in the context (videowalk's `--videoLen` default).
pub const CONTEXT_FRAMES: usize = 20;
/// Spatial radius in feature cells (videowalk's `--radius` default).
pub const RADIUS: f64 = 12.0;
/// The split that is scored.
pub const SPLIT: &str = "val";

/// Why a DAVIS evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum DavisError {
    /// The data set could not be read.
    #[error("DAVIS data: {0}")]
    Data(#[from] kontrast_data::DataError),
    /// The evaluation points at another kind of data set.
    #[error("the davis evaluation reads the davis data set format, not {0:?}")]
    Format(EvaluationDatasetFormat),
    /// A sequence cannot be evaluated as it is.
    #[error("DAVIS sequence {sequence}: {reason}")]
    Sequence {
        /// The sequence.
        sequence: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No sequence has an object to propagate, so there is nothing to average.
    #[error("no sequence of the split has an object in its first annotation")]
    NoObjects,
    /// A tensor conversion failed (a bug).
    #[error("label propagation: {0}")]
    Torch(#[from] tch::TchError),
}

/// The protocol's parameters with the run config's `k` and temperature.
pub fn protocol_params(k: u32, temperature: f64) -> PropagationParams {
    PropagationParams {
        top_k: i64::from(k),
        temperature,
        context: CONTEXT_FRAMES,
        radius: RADIUS,
    }
}

/// The scores of a split.
#[derive(Debug, Clone)]
pub struct DavisResult {
    /// J-Mean, F-Mean and J&F-Mean (fractions).
    pub summary: Summary,
    /// Per object, named `<sequence>_<id>` as the evaluation code names them, its scores.
    pub objects: Vec<(String, ObjectScore)>,
}

/// Frame pixels as a normalised `1 × 3 × H × W` batch on `device`.
fn frame_input(image: &RgbImage, input: &Normalizer, device: Device) -> Tensor {
    let (h, w) = (image.height as i64, image.width as i64);
    let bytes = Tensor::from_slice(&image.data)
        .view([1, h, w, 3])
        .permute([0, 3, 1, 2])
        .to_device(device);
    input.normalize(&bytes)
}

/// L2-normalised layer3 features (`C × h × w`) of one frame.
fn features(backbone: &ResNet, image: &RgbImage, input: &Normalizer, device: Device) -> Tensor {
    let x = frame_input(image, input, device);
    l2_normalize_channels(&backbone.forward_layer3_unstrided_t(&x, false)).squeeze_dim(0)
}

/// Object ids with void as background (the semi-supervised convention).
fn object_ids(mask: &Mask) -> Vec<u8> {
    mask.data
        .iter()
        .map(|&v| if v == VOID { 0 } else { v })
        .collect()
}

/// Predicts and scores one sequence; its objects' scores (none when its first annotation has
/// no object, as in the evaluation code).
fn evaluate_sequence(
    sequence: &DavisSequence,
    backbone: &ResNet,
    params: PropagationParams,
    device: Device,
) -> Result<Vec<ObjectScore>, DavisError> {
    let started = Instant::now();
    let name = sequence.name();
    let problem = |reason: String| DavisError::Sequence {
        sequence: name.to_string(),
        reason,
    };
    let n = sequence.len();
    if n < 3 {
        return Err(problem(format!(
            "{n} frames; the first (given) and the last are not scored, so at least 3 are needed"
        )));
    }
    let first_annotation = sequence.annotation(0)?;
    let (width, height) = (first_annotation.width, first_annotation.height);
    let first_ids = object_ids(&first_annotation);
    let objects = davis_metrics::object_count(&first_ids);
    if objects == 0 {
        warn!(
            sequence = name,
            "the first annotation has no object; the sequence is not scored"
        );
        return Ok(Vec::new());
    }
    let same_size = |what: &str, i: usize, w: usize, h: usize| {
        if (w, h) == (width, height) {
            Ok(())
        } else {
            Err(problem(format!(
                "{what} of frame {i} is {w}×{h}, the first annotation {width}×{height}"
            )))
        }
    };
    let input = Normalizer::new(device);
    let mut scorer = SequenceScorer::new(objects, width, height);
    let classes = i64::from(objects) + 1;
    tch::no_grad(|| -> Result<(), DavisError> {
        let frame = sequence.frame(0)?;
        same_size("the image", 0, frame.width, frame.height)?;
        let f0 = features(backbone, &frame, &input, device);
        let grid = f0.size();
        let keys = (params.context as i64 + 1) * grid[1] * grid[2];
        if params.top_k > keys {
            return Err(problem(format!(
                "k = {} exceeds the {keys} locations of the context ({}×{} feature cells per frame)",
                params.top_k, grid[2], grid[1]
            )));
        }
        let ids = Tensor::from_slice(&first_ids)
            .view([height as i64, width as i64])
            .to_kind(Kind::Int64)
            .to_device(device);
        let labels = grid_labels(&ids, classes, grid[1], grid[2]);
        let mut propagator = Propagator::new(params, &f0, &labels);
        // The last frame is not scored, and nothing comes after it.
        for t in davis_metrics::scored_frames(n) {
            let frame = sequence.frame(t)?;
            same_size("the image", t, frame.width, frame.height)?;
            let soft = propagator.step(&features(backbone, &frame, &input, device));
            let predicted = hard_labels(&soft, height as i64, width as i64)
                .to_kind(Kind::Uint8)
                .to_device(Device::Cpu);
            let predicted = Vec::<u8>::try_from(predicted.view([-1]))?;
            let annotation = sequence.annotation(t)?;
            same_size("the annotation", t, annotation.width, annotation.height)?;
            scorer.add_frame(&object_ids(&annotation), &predicted);
        }
        Ok(())
    })?;
    let scores = scorer.object_scores();
    let summary = davis_metrics::summarize(&scores);
    info!(
        sequence = name,
        frames = n,
        objects,
        j = summary.j * 100.0,
        f = summary.f * 100.0,
        seconds = started.elapsed().as_secs_f64(),
        "DAVIS sequence"
    );
    Ok(scores)
}

/// Propagates and scores every sequence of `split` with `backbone`'s layer3 features (in
/// evaluation mode) on `device`.
pub fn evaluate(
    split: &DavisSplit,
    backbone: &ResNet,
    params: PropagationParams,
    device: Device,
) -> Result<DavisResult, DavisError> {
    let mut objects = Vec::new();
    for sequence in split.sequences() {
        let scores = evaluate_sequence(sequence, backbone, params, device)?;
        objects.extend(
            scores
                .into_iter()
                .enumerate()
                .map(|(o, s)| (format!("{}_{}", sequence.name(), o + 1), s)),
        );
    }
    if objects.is_empty() {
        return Err(DavisError::NoObjects);
    }
    let scores: Vec<ObjectScore> = objects.iter().map(|(_, s)| *s).collect();
    Ok(DavisResult {
        summary: davis_metrics::summarize(&scores),
        objects,
    })
}

/// The `davis` evaluation of a run config: the `val` split of its data set, the result as the
/// metrics object of `kontrast eval` (scores in percent).
pub fn run(
    evaluation: &EvaluationConfig,
    backbone: &ResNet,
    device: Device,
    k: u32,
    temperature: f64,
) -> Result<serde_json::Value, DavisError> {
    if evaluation.dataset.format != EvaluationDatasetFormat::Davis {
        return Err(DavisError::Format(evaluation.dataset.format));
    }
    let split = DavisSplit::open(Path::new(&evaluation.dataset.path), SPLIT)?;
    let params = protocol_params(k, temperature);
    let result = evaluate(&split, backbone, params, device)?;
    let s = result.summary;
    info!(
        jf = s.jf * 100.0,
        j = s.j * 100.0,
        f = s.f * 100.0,
        objects = result.objects.len(),
        k,
        temperature,
        "DAVIS evaluation"
    );
    let objects: serde_json::Map<String, serde_json::Value> = result
        .objects
        .iter()
        .map(|(name, o)| (name.clone(), json!({"J": o.j * 100.0, "F": o.f * 100.0})))
        .collect();
    Ok(json!({
        "J&F": s.jf * 100.0,
        "J": s.j * 100.0,
        "F": s.f * 100.0,
        "objects": objects,
        "protocol": {
            "split": SPLIT,
            "k": k,
            "temperature": temperature,
            "contextFrames": CONTEXT_FRAMES,
            "radius": RADIUS,
            "featureStride": backbone.layer3_stride(),
        },
    }))
}
