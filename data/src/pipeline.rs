//! One sample end to end: read, choose crops from the declared size, decode (at a reduced DCT
//! scale when every crop still has at least its output resolution), crop + resize, augment.

use crate::augment::augment_crop;
use crate::crop::{CropBox, MultiCropSpec};
use crate::dataset::{Dataset, Source};
use crate::decode::{self, Format, JpegBackend, Reason};
use crate::image::RgbImage;
use crate::resize::{Resampler, center_crop_box, shorter_side_size};
use crate::rng::SampleRng;

/// Evaluation-time transform (deterministic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalTransform {
    /// `Resize(resize)` (shorter side) then `CenterCrop(crop)`; ImageNet uses 256 / 224.
    ResizeCenterCrop {
        /// Target of the shorter side.
        resize: usize,
        /// Side of the centre crop (≤ `resize`).
        crop: usize,
    },
    /// `Resize((size, size))`: the whole image to a square (tiny images such as Fashion-MNIST).
    Resize {
        /// Output side.
        size: usize,
    },
}

impl EvalTransform {
    /// The standard ImageNet evaluation transform (256 → 224).
    pub fn imagenet() -> Self {
        EvalTransform::ResizeCenterCrop {
            resize: 256,
            crop: 224,
        }
    }

    /// Side of the output view.
    pub fn output_size(&self) -> usize {
        match *self {
            EvalTransform::ResizeCenterCrop { crop, .. } => crop,
            EvalTransform::Resize { size } => size,
        }
    }
}

/// Decoding options shared by all samples.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// JPEG implementation.
    pub jpeg: JpegBackend,
    /// Allow DCT-domain downscaling when no output loses resolution.
    pub dct_scaling: bool,
}

/// A decoded sample and the factor it was reduced by (1 = full resolution).
struct Decoded {
    image: RgbImage,
    /// Original (declared) size.
    width: usize,
    height: usize,
}

impl Decoded {
    /// `b` (in original coordinates) mapped onto the decoded image.
    fn map_box(&self, b: &CropBox) -> CropBox {
        if self.image.width == self.width && self.image.height == self.height {
            return *b;
        }
        let sx = self.image.width as f64 / self.width as f64;
        let sy = self.image.height as f64 / self.height as f64;
        let x0 = ((b.left as f64 * sx).floor() as usize).min(self.image.width - 1);
        let y0 = ((b.top as f64 * sy).floor() as usize).min(self.image.height - 1);
        let x1 = (((b.left + b.width) as f64 * sx).ceil() as usize).clamp(x0 + 1, self.image.width);
        let y1 =
            (((b.top + b.height) as f64 * sy).ceil() as usize).clamp(y0 + 1, self.image.height);
        CropBox {
            top: y0,
            left: x0,
            height: y1 - y0,
            width: x1 - x0,
        }
    }
}

/// Reads sample `index`, lets `plan` pick what is needed from its declared size, and decodes.
/// `plan(width, height)` returns the minimum side (in decoded pixels) every output needs per
/// unit of original side, expressed as the largest admissible DCT denominator.
fn read<T>(
    dataset: &Dataset,
    index: usize,
    opts: DecodeOptions,
    plan: impl FnOnce(usize, usize) -> (T, usize),
) -> Result<(Decoded, T), Reason> {
    match dataset.source(index)? {
        Source::Gray {
            width,
            height,
            pixels,
        } => {
            let (t, _) = plan(width, height);
            Ok((
                Decoded {
                    image: RgbImage::from_gray(width, height, pixels),
                    width,
                    height,
                },
                t,
            ))
        }
        Source::Encoded(bytes) => {
            let probe = decode::probe(&bytes, opts.jpeg)?;
            let (t, denom) = plan(probe.width, probe.height);
            let denom = if opts.dct_scaling && probe.format == Format::Jpeg {
                denom
            } else {
                1
            };
            let image = decode::decode(&bytes, opts.jpeg, denom)?;
            Ok((
                Decoded {
                    image,
                    width: probe.width,
                    height: probe.height,
                },
                t,
            ))
        }
    }
}

/// Largest DCT denominator `d` such that every `(w, h, out)` keeps `w/d, h/d ≥ out`.
fn admissible_denom(needs: impl Iterator<Item = (usize, usize, usize)> + Clone) -> usize {
    for d in [8usize, 4, 2] {
        if needs
            .clone()
            .all(|(w, h, out)| w / d >= out && h / d >= out)
        {
            return d;
        }
    }
    1
}

/// The pre-training views of one sample (`spec.num_views()` images, in crop order).
pub fn pretrain_views(
    dataset: &Dataset,
    index: usize,
    spec: &MultiCropSpec,
    rng: &mut SampleRng,
    opts: DecodeOptions,
    resampler: &mut Resampler,
) -> Result<Vec<RgbImage>, Reason> {
    let (decoded, boxes) = read(dataset, index, opts, |w, h| {
        let boxes = spec.sample_boxes(rng, w, h);
        let denom = admissible_denom(
            boxes
                .iter()
                .enumerate()
                .map(|(c, b)| (b.width, b.height, spec.size_of(c))),
        );
        (boxes, denom)
    })?;
    let mut views = Vec::with_capacity(boxes.len());
    for (c, b) in boxes.iter().enumerate() {
        let size = spec.size_of(c);
        let mut view = resampler.crop_resize(&decoded.image, &decoded.map_box(b), size, size);
        augment_crop(&mut view, rng, spec.auto_augment_crops.contains(&c));
        views.push(view);
    }
    Ok(views)
}

/// The evaluation view of one sample.
pub fn eval_view(
    dataset: &Dataset,
    index: usize,
    transform: EvalTransform,
    opts: DecodeOptions,
    resampler: &mut Resampler,
) -> Result<RgbImage, Reason> {
    let (decoded, target) = read(dataset, index, opts, |w, h| match transform {
        EvalTransform::ResizeCenterCrop { resize, .. } => {
            let (nw, nh) = shorter_side_size(w, h, resize);
            (
                (nw, nh),
                admissible_denom(std::iter::once((w, h, nw.min(nh)))),
            )
        }
        EvalTransform::Resize { size } => (
            (size, size),
            admissible_denom(std::iter::once((w, h, size))),
        ),
    })?;
    let resized = resampler.resize(&decoded.image, target.0, target.1);
    Ok(match transform {
        EvalTransform::ResizeCenterCrop { crop, .. } => {
            let b = center_crop_box(resized.width, resized.height, crop);
            let mut out = RgbImage::new(crop, crop);
            // Pillow pads with black where the crop leaves the image (only if crop > resize).
            for y in 0..b.height {
                let s = ((b.top + y) * resized.width + b.left) * 3;
                let d = y * crop * 3;
                out.data[d..d + b.width * 3].copy_from_slice(&resized.data[s..s + b.width * 3]);
            }
            out
        }
        EvalTransform::Resize { .. } => resized,
    })
}
