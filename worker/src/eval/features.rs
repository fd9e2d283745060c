//! Frozen backbone features of a data set.
use std::sync::Arc;

use kontrast_data::{Dataset, EvalTransform, Loader, LoaderConfig, MultiCropSpec, Sampler};
use tch::{Device, Kind, Tensor};

use crate::input::Normalizer;
use crate::model::moco::Encoder;
use crate::model::resnet::ResNet;

use super::EvalError;

/// L2-normalised pooled features (N×D, on `device`) and labels (N, int64) of `indices`, with the
/// backbone in evaluation mode (BN running statistics).
pub fn extract(
    backbone: &ResNet,
    dataset: Arc<Dataset>,
    indices: Vec<usize>,
    transform: EvalTransform,
    config: LoaderConfig,
    device: Device,
) -> Result<(Tensor, Tensor), EvalError> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let input = Normalizer::new(device);
    for batch in Loader::eval(dataset, indices, transform, config)? {
        let batch = batch?;
        if batch.indices.is_empty() {
            continue;
        }
        for (i, l) in batch.indices.iter().zip(&batch.labels) {
            labels.push(i64::from(l.ok_or(EvalError::Unlabelled { index: *i })?));
        }
        let x = input.apply(&batch.views[0], batch.indices.len());
        features.push(tch::no_grad(|| {
            l2_normalize(&backbone.forward_t(&x, false))
        }));
    }
    if features.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok((
        Tensor::cat(&features, 0),
        Tensor::from_slice(&labels).to_device(device),
    ))
}

/// Which output of an encoder to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// Pooled backbone features (what downstream tasks use).
    Backbone,
    /// The projection head's output (what the contrastive loss compares).
    Projection,
}

/// Normalised features of two independently augmented views of every image in `dataset` (the
/// training augmentation `spec`, views 0 and 1), in evaluation mode, rows aligned: what
/// positive-pair retrieval compares.
pub fn paired_views(
    encoder: &Encoder,
    representation: Representation,
    dataset: Arc<Dataset>,
    spec: MultiCropSpec,
    config: LoaderConfig,
    device: Device,
) -> Result<(Tensor, Tensor), EvalError> {
    let sampler = Sampler::new(dataset.len(), config.seed, 0, 1)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let input = Normalizer::new(device);
    for batch in Loader::new(dataset, &sampler, spec, config)? {
        let batch = batch?;
        let n = batch.indices.len();
        let embed = |i: usize| {
            let (h, z) = encoder.forward_t(&input.apply(&batch.views[i], n), false);
            l2_normalize(match representation {
                Representation::Backbone => &h,
                Representation::Projection => &z,
            })
        };
        tch::no_grad(|| {
            a.push(embed(0));
            b.push(embed(1));
        });
    }
    if a.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok((Tensor::cat(&a, 0), Tensor::cat(&b, 0)))
}

fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    (x / norm).to_kind(Kind::Float)
}
