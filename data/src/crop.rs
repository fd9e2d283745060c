//! Crop-parameter sampling: torchvision's `RandomResizedCrop.get_params` and the multi-scale
//! constrained cropping of "Revisiting Contrastive Methods" (small crops must overlap the key
//! crop by at least 10 % of their sampled area).

use crate::rng::SampleRng;
use crate::{DataError, Result};

/// Aspect-ratio range of every random crop (torchvision's default).
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
/// Attempts before a crop falls back (torchvision: 10).
const TRIES: usize = 10;
/// Fraction of a small crop's sampled area that must overlap the key crop.
pub const MIN_KEY_OVERLAP: f64 = 0.1;

/// A crop rectangle in source pixels, in torchvision's `(i, j, h, w)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// Top row (`i`).
    pub top: usize,
    /// Left column (`j`).
    pub left: usize,
    /// Height (`h`).
    pub height: usize,
    /// Width (`w`).
    pub width: usize,
}

impl CropBox {
    /// The whole image.
    pub fn full(width: usize, height: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height,
            width,
        }
    }

    /// Area of the intersection with `other`, in pixels.
    pub fn intersection(&self, other: &CropBox) -> usize {
        let x = (self.left + self.width)
            .min(other.left + other.width)
            .saturating_sub(self.left.max(other.left));
        let y = (self.top + self.height)
            .min(other.top + other.height)
            .saturating_sub(self.top.max(other.top));
        x * y
    }
}

/// Python's `round()` (ties to even), as an integer.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// One try of the sampler: `(box, target_area)` if the sampled box fits, else `None`. The draw
/// order matches torchvision (area, ratio, then row, then column).
fn try_sample(
    rng: &mut SampleRng,
    width: usize,
    height: usize,
    scale: (f64, f64),
) -> Option<(CropBox, f64)> {
    let area = (width * height) as f64;
    let target_area = area * rng.uniform_range(scale.0, scale.1);
    let log_ratio = (RATIO.0.ln(), RATIO.1.ln());
    let aspect = rng.uniform_range(log_ratio.0, log_ratio.1).exp();
    let w = py_round((target_area * aspect).sqrt());
    let h = py_round((target_area / aspect).sqrt());
    if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
        let (w, h) = (w as usize, h as usize);
        let top = rng.int_inclusive(0, height - h);
        let left = rng.int_inclusive(0, width - w);
        Some((
            CropBox {
                top,
                left,
                height: h,
                width: w,
            },
            target_area,
        ))
    } else {
        None
    }
}

/// torchvision's fallback: a centre crop clamped to the ratio range (or the whole image).
fn centre_fallback(width: usize, height: usize) -> CropBox {
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < RATIO.0 {
        (width, py_round(width as f64 / RATIO.0).max(1) as usize)
    } else if in_ratio > RATIO.1 {
        (py_round(height as f64 * RATIO.1).max(1) as usize, height)
    } else {
        (width, height)
    };
    let (w, h) = (w.min(width), h.min(height));
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// `RandomResizedCrop.get_params` for an image of `width × height` (both > 0).
pub fn random_resized_crop(
    rng: &mut SampleRng,
    width: usize,
    height: usize,
    scale: (f64, f64),
) -> CropBox {
    for _ in 0..TRIES {
        if let Some((b, _)) = try_sample(rng, width, height, scale) {
            return b;
        }
    }
    centre_fallback(width, height)
}

/// A small crop constrained to overlap `key` by at least [`MIN_KEY_OVERLAP`] of its (unrounded)
/// sampled area; after 10 failed tries, an unconstrained crop. Returns the box and, when a
/// sampled box met the constraint, its sampled target area.
pub fn constrained_crop(
    rng: &mut SampleRng,
    width: usize,
    height: usize,
    scale: (f64, f64),
    key: &CropBox,
) -> (CropBox, Option<f64>) {
    for _ in 0..TRIES {
        if let Some((b, target_area)) = try_sample(rng, width, height, scale)
            && b.intersection(key) as f64 >= MIN_KEY_OVERLAP * target_area
        {
            return (b, Some(target_area));
        }
    }
    (random_resized_crop(rng, width, height, scale), None)
}

/// A family of crops of one output size.
#[derive(Debug, Clone, PartialEq)]
pub struct CropFamily {
    /// Number of crops.
    pub count: usize,
    /// Output side in pixels (square).
    pub size: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
}

/// The crops made of every pre-training image: `large.count` large crops (index 0 the query,
/// index 1 the key), then `small.count` small crops.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiCropSpec {
    /// Large crops (query and key first).
    pub large: CropFamily,
    /// Small crops (may be zero).
    pub small: CropFamily,
    /// Constrain small crops to overlap the key crop (the last large crop).
    pub constrained: bool,
    /// Crop indices that use AutoAugment instead of the standard pipeline with probability 0.5;
    /// never the key crop.
    pub auto_augment_crops: Vec<usize>,
}

impl MultiCropSpec {
    /// MoCo v2: two crops of `size` (224 in the paper), scale 0.2–1, the standard pipeline.
    pub fn moco_v2(size: usize) -> Self {
        Self {
            large: CropFamily {
                count: 2,
                size,
                scale: (0.2, 1.0),
            },
            small: CropFamily {
                count: 0,
                size: 96,
                scale: (0.05, 0.14),
            },
            constrained: false,
            auto_augment_crops: Vec::new(),
        }
    }

    /// "Revisiting Contrastive Methods": 2 × 160 + 4 × 96 constrained crops, AutoAugment on
    /// crops 0, 2, 3, 4, 5.
    pub fn revisiting() -> Self {
        Self {
            large: CropFamily {
                count: 2,
                size: 160,
                scale: (0.2, 1.0),
            },
            small: CropFamily {
                count: 4,
                size: 96,
                scale: (0.05, 0.14),
            },
            constrained: true,
            auto_augment_crops: vec![0, 2, 3, 4, 5],
        }
    }

    /// Total number of crops (views) per image.
    pub fn num_views(&self) -> usize {
        self.large.count + self.small.count
    }

    /// Output side of crop `c`.
    pub fn size_of(&self, c: usize) -> usize {
        if c < self.large.count {
            self.large.size
        } else {
            self.small.size
        }
    }

    /// Index of the key crop (the last large crop), which always gets the standard pipeline.
    pub fn key_index(&self) -> usize {
        self.large.count.saturating_sub(1)
    }

    /// Checks sizes, scales and the AutoAugment crop list.
    pub fn validate(&self) -> Result<()> {
        if self.large.count < 2 {
            return Err(DataError::Config(format!(
                "need at least 2 large crops (query and key), got {}",
                self.large.count
            )));
        }
        for (name, f) in [("large", &self.large), ("small", &self.small)] {
            if f.count > 0 && f.size == 0 {
                return Err(DataError::Config(format!("{name} crop size must be > 0")));
            }
            let (lo, hi) = f.scale;
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err(DataError::Config(format!(
                    "{name} crop scale must satisfy 0 < min <= max <= 1, got ({lo}, {hi})"
                )));
            }
        }
        for &c in &self.auto_augment_crops {
            if c == self.key_index() {
                return Err(DataError::Config(format!(
                    "crop {c} is the key crop and always uses the standard pipeline"
                )));
            }
            if c >= self.num_views() {
                return Err(DataError::Config(format!(
                    "AutoAugment crop {c} does not exist ({} crops)",
                    self.num_views()
                )));
            }
        }
        Ok(())
    }

    /// Samples every crop box for an image of `width × height`, in view order.
    pub fn sample_boxes(&self, rng: &mut SampleRng, width: usize, height: usize) -> Vec<CropBox> {
        let mut boxes = Vec::with_capacity(self.num_views());
        for _ in 0..self.large.count {
            boxes.push(random_resized_crop(rng, width, height, self.large.scale));
        }
        let key = boxes
            .get(self.key_index())
            .copied()
            .unwrap_or(CropBox::full(width, height));
        for _ in 0..self.small.count {
            let b = if self.constrained {
                constrained_crop(rng, width, height, self.small.scale, &key).0
            } else {
                random_resized_crop(rng, width, height, self.small.scale)
            };
            boxes.push(b);
        }
        boxes
    }
}
