//! Per-crop augmentation pipelines of MoCo v2 and "Revisiting Contrastive Methods".
//!
//! * [`standard`] (T_std): colour jitter p=0.8 (0.4, 0.4, 0.4, 0.1, random order), grayscale
//!   p=0.2, Gaussian blur p=0.5 with σ ~ U[0.1, 2.0], horizontal flip p=0.5.
//! * [`auto_augment_pipeline`] (T_aa): horizontal flip p=0.5, then AutoAugment (ImageNet).
//!
//! Conversion to float and normalisation follow on the device.

pub mod autoaugment;
pub mod blur;
pub mod color;
pub mod geometry;

use crate::image::RgbImage;
use crate::rng::SampleRng;

/// Which pipeline a crop received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// Colour jitter, grayscale, blur, flip.
    Standard,
    /// Flip and AutoAugment.
    AutoAugment,
}

/// T_std on one crop.
pub fn standard(img: &mut RgbImage, rng: &mut SampleRng) {
    if rng.chance(0.8) {
        let p = color::JitterParams::sample(rng, 0.4, 0.4, 0.4, 0.1);
        color::color_jitter(img, &p);
    }
    if rng.chance(0.2) {
        color::grayscale(img);
    }
    if rng.chance(0.5) {
        // MoCo's GaussianBlur draws σ from U[0.1, 2.0]; Pillow takes it as a C float.
        let sigma = rng.uniform_range(0.1, 2.0) as f32;
        blur::gaussian_blur(img, sigma);
    }
    if rng.chance(0.5) {
        geometry::hflip(img);
    }
}

/// T_aa on one crop.
pub fn auto_augment_pipeline(img: &mut RgbImage, rng: &mut SampleRng) {
    if rng.chance(0.5) {
        geometry::hflip(img);
    }
    autoaugment::auto_augment(img, rng);
}

/// Applies T_aa with probability 0.5 when `auto_augment_allowed`, else T_std.
pub fn augment_crop(
    img: &mut RgbImage,
    rng: &mut SampleRng,
    auto_augment_allowed: bool,
) -> PipelineKind {
    if auto_augment_allowed && rng.chance(0.5) {
        auto_augment_pipeline(img, rng);
        PipelineKind::AutoAugment
    } else {
        standard(img, rng);
        PipelineKind::Standard
    }
}
