//! Paired image + mask transforms: every geometric step is applied to both with the same
//! parameters, the image with Pillow's bilinear or bicubic filter and the mask with nearest
//! neighbour (so no label is ever invented), outside pixels filled with the image fill and
//! [`IGNORE`] respectively.

use crate::augment::geometry::{self, TransformFilter};
use crate::crop::CropBox;
use crate::decode::Reason;
use crate::image::RgbImage;
use crate::resize::{Filter, Resampler};
use crate::rng::SampleRng;
use crate::segment::mask::{IGNORE, Mask};
use crate::{DataError, Result};

/// Horizontal flip of both.
pub fn hflip_pair(image: &mut RgbImage, mask: &mut Mask) {
    geometry::hflip(image);
    for row in mask.data.chunks_exact_mut(mask.width.max(1)) {
        row.reverse();
    }
}

/// `Image.resize((w, h), NEAREST)` of a mask: Pillow's `ImagingScaleAffine` (source pixel
/// `floor((x + 0.5) · in/out)`, the position accumulated in `double` as Pillow does).
pub fn resize_nearest(mask: &Mask, out_w: usize, out_h: usize) -> Mask {
    if mask.width == out_w && mask.height == out_h {
        return mask.clone();
    }
    if mask.width == 0 || mask.height == 0 {
        // Nothing to sample from: every output pixel is outside the input.
        return Mask::ignore(out_w, out_h);
    }
    let (sx, sy) = (
        mask.width as f64 / out_w as f64,
        mask.height as f64 / out_h as f64,
    );
    let mut xs = Vec::with_capacity(out_w);
    let mut xo = sx * 0.5;
    for _ in 0..out_w {
        // The position never leaves [0, width) for a pure scale, but clamp rather than trust
        // floating point at the last column.
        xs.push((xo as usize).min(mask.width - 1));
        xo += sx;
    }
    let mut data = Vec::with_capacity(out_w * out_h);
    let mut yo = sy * 0.5;
    for _ in 0..out_h {
        let row = (yo as usize).min(mask.height - 1) * mask.width;
        data.extend(xs.iter().map(|&x| mask.data[row + x]));
        yo += sy;
    }
    Mask {
        width: out_w,
        height: out_h,
        data,
    }
}

/// Resizes both to `out_w × out_h`: the image with `filter` (bit-identical to Pillow's
/// `resize`), the mask with nearest neighbour.
pub fn resize_pair(
    resampler: &mut Resampler,
    image: &RgbImage,
    mask: &Mask,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> (RgbImage, Mask) {
    let full = CropBox::full(image.width, image.height);
    (
        resampler.crop_resize_filtered(image, &full, out_w, out_h, filter),
        resize_nearest(mask, out_w, out_h),
    )
}

/// torchvision's `F.affine(angle, translate=[0, 0], scale, shear=[0, 0])` about the centre,
/// same size: the image with `filter` and `fill`, the mask with nearest and [`IGNORE`].
pub fn affine_pair(
    image: &RgbImage,
    mask: &Mask,
    angle_deg: f64,
    scale: f64,
    filter: Filter,
    fill: [u8; 3],
) -> (RgbImage, Mask) {
    let m = geometry::inverse_affine_matrix(image.width, image.height, angle_deg, scale, 0.0);
    let tf = match filter {
        Filter::Bilinear => TransformFilter::Bilinear,
        Filter::Bicubic => TransformFilter::Bicubic,
    };
    let out_image = geometry::affine_filtered(image, &m, tf, fill);
    let data = geometry::affine_nearest_raw(&mask.data, mask.width, mask.height, 1, &m, &[IGNORE]);
    (
        out_image,
        Mask {
            width: mask.width,
            height: mask.height,
            data,
        },
    )
}

/// The `out_w × out_h` window whose top-left corner is at (`left`, `top`) of the input
/// (negative or past the edge where the input is padded): the image padded with `fill`, the
/// mask with [`IGNORE`]. This is `F.crop(F.pad(img, …), …)`.
pub fn pad_crop_pair(
    image: &RgbImage,
    mask: &Mask,
    left: isize,
    top: isize,
    out_w: usize,
    out_h: usize,
    fill: [u8; 3],
) -> (RgbImage, Mask) {
    let mut out_image = RgbImage::from_raw(out_w, out_h, fill.repeat(out_w * out_h))
        .unwrap_or_else(|| RgbImage::new(out_w, out_h));
    let mut out_mask = Mask::ignore(out_w, out_h);
    let (w, h) = (image.width as isize, image.height as isize);
    // The columns of the window that lie on the input.
    let x0 = left.clamp(0, w);
    let x1 = (left + out_w as isize).clamp(0, w);
    if x1 > x0 {
        let (n, dx) = ((x1 - x0) as usize, (x0 - left) as usize);
        for oy in 0..out_h {
            let y = top + oy as isize;
            if y < 0 || y >= h {
                continue;
            }
            let (y, x0u) = (y as usize, x0 as usize);
            let s = (y * image.width + x0u) * 3;
            let d = (oy * out_w + dx) * 3;
            out_image.data[d..d + n * 3].copy_from_slice(&image.data[s..s + n * 3]);
            let s = y * mask.width + x0u;
            let d = oy * out_w + dx;
            out_mask.data[d..d + n].copy_from_slice(&mask.data[s..s + n]);
        }
    }
    (out_image, out_mask)
}

/// torchvision `F.center_crop`'s offset along one axis: centred (`round`, ties to even) when
/// the input is larger, else padded by `⌊deficit / 2⌋` before and the rest after.
pub fn center_offset(size: usize, crop: usize) -> isize {
    if crop > size {
        -(((crop - size) / 2) as isize)
    } else {
        ((size - crop) as f64 / 2.0).round_ties_even() as isize
    }
}

/// torchvision `RandomCrop(pad_if_needed=True)`'s offset along one axis: an input shorter than
/// the crop is padded by the whole deficit on *both* sides, then the offset is uniform.
pub fn random_offset(rng: &mut SampleRng, size: usize, crop: usize) -> isize {
    let pad = crop.saturating_sub(size);
    let padded = size + 2 * pad;
    rng.int_inclusive(0, padded - crop) as isize - pad as isize
}

/// Rotation with zoom inside the same canvas (the reference code's `ScaleNRotate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotateZoom {
    /// The angle is `U(−max_degrees, max_degrees)`.
    pub max_degrees: f64,
    /// The zoom is `U(zoom.0, zoom.1)` (1 = none).
    pub zoom: (f64, f64),
}

/// A final crop to a fixed size, padding where the image is smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegCrop {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// `RandomCrop(pad_if_needed=True)` when true, `CenterCrop` when false.
    pub random: bool,
}

/// The paired transform of segmentation fine-tuning and evaluation, applied in this order:
/// flip, scale, rotate/zoom, resize, crop. Steps left at `None`/`false` are skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegAugment {
    /// Horizontal flip with probability 0.5.
    pub flip: bool,
    /// Resize both by a factor `U(lo, hi)` (the size changes; `round(s·w) × round(s·h)`).
    pub scale: Option<(f64, f64)>,
    /// Rotate and zoom inside the canvas (the size stays).
    pub rotate: Option<RotateZoom>,
    /// Resize both to `(width, height)`.
    pub resize: Option<(usize, usize)>,
    /// Crop both to a fixed size.
    pub crop: Option<SegCrop>,
    /// The image's filter (the mask always uses nearest).
    pub filter: Filter,
    /// The image's fill for rotation and padding (the mask's is [`IGNORE`]).
    pub fill: [u8; 3],
}

/// ImageNet's mean in `u8` levels (`round(255 · MEAN)`), a neutral padding colour.
pub const MEAN_FILL: [u8; 3] = [124, 116, 104];

impl SegAugment {
    /// Nothing: evaluation at the original resolution.
    pub fn evaluation() -> Self {
        Self {
            flip: false,
            scale: None,
            rotate: None,
            resize: None,
            crop: None,
            filter: Filter::Bilinear,
            fill: [0; 3],
        }
    }

    /// VOC fine-tuning of the reference code: flip, rotation `U(−5°, 5°)` with zoom
    /// `U(0.75, 1.25)` in the canvas, resize to 512 × 512 (image bicubic, mask nearest).
    pub fn voc_train() -> Self {
        Self {
            flip: true,
            rotate: Some(RotateZoom {
                max_degrees: 5.0,
                zoom: (0.75, 1.25),
            }),
            resize: Some((512, 512)),
            filter: Filter::Bicubic,
            ..Self::evaluation()
        }
    }

    /// Cityscapes fine-tuning: flip, scale `U(0.5, 2.0)`, random 768 × 768 crop padded with
    /// the mean colour.
    pub fn cityscapes_train() -> Self {
        Self {
            flip: true,
            scale: Some((0.5, 2.0)),
            crop: Some(SegCrop {
                width: 768,
                height: 768,
                random: true,
            }),
            fill: MEAN_FILL,
            ..Self::evaluation()
        }
    }

    /// Whether any step draws random numbers.
    pub fn is_random(&self) -> bool {
        self.flip
            || self.scale.is_some()
            || self.rotate.is_some()
            || self.crop.is_some_and(|c| c.random)
    }

    /// Rejects ranges that cannot be sampled and zero sizes.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(DataError::Config(what));
        if let Some((lo, hi)) = self.scale
            && !(lo > 0.0 && lo <= hi && hi.is_finite())
        {
            return bad(format!(
                "segmentation scale range ({lo}, {hi}) must satisfy 0 < lo ≤ hi"
            ));
        }
        if let Some(r) = self.rotate {
            if !(0.0..45.0).contains(&r.max_degrees) {
                return bad(format!(
                    "segmentation rotation ±{}° must be below 45°",
                    r.max_degrees
                ));
            }
            let (lo, hi) = r.zoom;
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return bad(format!(
                    "segmentation zoom range ({lo}, {hi}) must satisfy 0 < lo ≤ hi"
                ));
            }
        }
        if let Some((w, h)) = self.resize
            && (w == 0 || h == 0)
        {
            return bad(format!("segmentation resize to {w}×{h}"));
        }
        if let Some(c) = self.crop
            && (c.width == 0 || c.height == 0)
        {
            return bad(format!("segmentation crop to {}×{}", c.width, c.height));
        }
        Ok(())
    }

    /// The output size for an input of `w × h`, when it does not depend on randomness.
    pub fn fixed_output(&self) -> Option<(usize, usize)> {
        if let Some(c) = self.crop {
            return Some((c.width, c.height));
        }
        if self.scale.is_none() {
            return self.resize;
        }
        None
    }

    /// Applies the steps to one pair. The random draws happen in step order, only for the
    /// steps that are on, so a configuration's stream is stable.
    pub fn apply(
        &self,
        mut image: RgbImage,
        mut mask: Mask,
        rng: &mut SampleRng,
        resampler: &mut Resampler,
    ) -> std::result::Result<(RgbImage, Mask), Reason> {
        if (image.width, image.height) != (mask.width, mask.height) {
            return Err(format!(
                "the image is {}×{} but its mask is {}×{}",
                image.width, image.height, mask.width, mask.height
            ));
        }
        if self.flip && rng.chance(0.5) {
            hflip_pair(&mut image, &mut mask);
        }
        if let Some((lo, hi)) = self.scale {
            let s = rng.uniform_range(lo, hi);
            let w = ((image.width as f64 * s).round() as usize).max(1);
            let h = ((image.height as f64 * s).round() as usize).max(1);
            (image, mask) = resize_pair(resampler, &image, &mask, w, h, self.filter);
        }
        if let Some(r) = self.rotate {
            let angle = rng.uniform_range(-r.max_degrees, r.max_degrees);
            let zoom = rng.uniform_range(r.zoom.0, r.zoom.1);
            (image, mask) = affine_pair(&image, &mask, angle, zoom, self.filter, self.fill);
        }
        if let Some((w, h)) = self.resize {
            (image, mask) = resize_pair(resampler, &image, &mask, w, h, self.filter);
        }
        if let Some(c) = self.crop {
            let (left, top) = if c.random {
                // torchvision pads (and draws) the width first, then the height; the draws
                // are i (rows) then j (columns).
                let top = random_offset(rng, image.height, c.height);
                let left = random_offset(rng, image.width, c.width);
                (left, top)
            } else {
                (
                    center_offset(image.width, c.width),
                    center_offset(image.height, c.height),
                )
            };
            (image, mask) = pad_crop_pair(&image, &mask, left, top, c.width, c.height, self.fill);
        }
        Ok((image, mask))
    }
}
