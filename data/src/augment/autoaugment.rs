//! AutoAugment, ImageNet policy, as copied from torchvision by the method's code: 25
//! sub-policies of two operations, signed magnitudes, nearest-neighbour geometry with fill 0,
//! and Pillow's `ImageOps` / `ImageEnhance` for the pixel operations.

use super::color::{adjust_contrast, adjust_saturation, blend_into};
use super::geometry::{rotate, shear_x};
use crate::image::RgbImage;
use crate::rng::SampleRng;

/// One AutoAugment operation with its parameter resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Keep the top `bits` bits of every channel.
    Posterize(u8),
    /// Invert pixels `>= threshold`.
    Solarize(f64),
    /// Stretch each channel to the full range.
    AutoContrast,
    /// Per-channel histogram equalisation.
    Equalize,
    /// `255 - x`.
    Invert,
    /// Rotate by degrees (counter-clockwise), about the centre.
    Rotate(f64),
    /// Shear along x by the given angle in degrees, about the centre.
    ShearX(f64),
    /// Saturation factor.
    Color(f64),
    /// Contrast factor.
    Contrast(f64),
    /// Sharpness factor.
    Sharpness(f64),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    ShearX,
    Color,
    Contrast,
    Sharpness,
}

/// `(kind, probability, magnitude bin)`.
type Step = (Kind, f64, usize);

/// The ImageNet policy (torchvision's `_get_policies(IMAGENET)`).
const POLICY: [[Step; 2]; 25] = {
    use Kind::*;
    [
        [(Posterize, 0.4, 8), (Rotate, 0.6, 9)],
        [(Solarize, 0.6, 5), (AutoContrast, 0.6, 0)],
        [(Equalize, 0.8, 0), (Equalize, 0.6, 0)],
        [(Posterize, 0.6, 7), (Posterize, 0.6, 6)],
        [(Equalize, 0.4, 0), (Solarize, 0.2, 4)],
        [(Equalize, 0.4, 0), (Rotate, 0.8, 8)],
        [(Solarize, 0.6, 3), (Equalize, 0.6, 0)],
        [(Posterize, 0.8, 5), (Equalize, 1.0, 0)],
        [(Rotate, 0.2, 3), (Solarize, 0.6, 8)],
        [(Equalize, 0.6, 0), (Posterize, 0.4, 6)],
        [(Rotate, 0.8, 8), (Color, 0.4, 0)],
        [(Rotate, 0.4, 9), (Equalize, 0.6, 0)],
        [(Equalize, 0.0, 0), (Equalize, 0.8, 0)],
        [(Invert, 0.6, 0), (Equalize, 1.0, 0)],
        [(Color, 0.6, 4), (Contrast, 1.0, 8)],
        [(Rotate, 0.8, 8), (Color, 1.0, 2)],
        [(Color, 0.8, 8), (Solarize, 0.8, 7)],
        [(Sharpness, 0.4, 7), (Invert, 0.6, 0)],
        [(ShearX, 0.6, 5), (Equalize, 1.0, 0)],
        [(Color, 0.4, 0), (Equalize, 0.6, 0)],
        [(Equalize, 0.4, 0), (Solarize, 0.2, 4)],
        [(Solarize, 0.6, 5), (AutoContrast, 0.6, 0)],
        [(Invert, 0.6, 0), (Equalize, 1.0, 0)],
        [(Color, 0.6, 4), (Contrast, 1.0, 8)],
        [(Equalize, 0.8, 0), (Equalize, 0.6, 0)],
    ]
};

// `torch.linspace(..., 10)` in float32, as the reference's magnitude tables hold them (the
// vectorised kernel's rounding differs from the scalar formula, so the values are spelled out).
const SOLARIZE: [f64; 10] = [
    256.0,
    227.55555725097656,
    199.11111450195312,
    170.6666717529297,
    142.22222900390625,
    113.77777862548828,
    85.33333587646484,
    56.88888931274414,
    28.44444465637207,
    0.0,
];
const ROTATE: [f64; 10] = [
    0.0,
    3.3333332538604736,
    6.666666507720947,
    10.0,
    13.333333015441895,
    16.666667938232422,
    20.0,
    23.33333396911621,
    26.66666603088379,
    30.0,
];
const SHEAR: [f64; 10] = [
    0.0,
    0.03333333507180214,
    0.06666667014360428,
    0.10000000894069672,
    0.13333334028720856,
    0.1666666716337204,
    0.20000000298023224,
    0.23333334922790527,
    0.2666666805744171,
    0.30000001192092896,
];
const ENHANCE: [f64; 10] = [
    0.0,
    0.09999999403953552,
    0.19999998807907104,
    0.29999998211860657,
    0.3999999761581421,
    0.5,
    0.6000000238418579,
    0.699999988079071,
    0.7999999523162842,
    0.8999999761581421,
];

const POSTERIZE_BITS: [u8; 10] = [8, 8, 7, 7, 6, 6, 5, 5, 4, 4];

fn resolve(kind: Kind, bin: usize, negate: bool) -> Op {
    let signed = |m: f64| if negate { -m } else { m };
    match kind {
        Kind::Posterize => Op::Posterize(POSTERIZE_BITS[bin]),
        Kind::Solarize => Op::Solarize(SOLARIZE[bin]),
        Kind::AutoContrast => Op::AutoContrast,
        Kind::Equalize => Op::Equalize,
        Kind::Invert => Op::Invert,
        Kind::Rotate => Op::Rotate(signed(ROTATE[bin])),
        // The reference passes `math.degrees(magnitude)` as the shear angle.
        Kind::ShearX => Op::ShearX(signed(SHEAR[bin]).to_degrees()),
        Kind::Color => Op::Color(1.0 + signed(ENHANCE[bin])),
        Kind::Contrast => Op::Contrast(1.0 + signed(ENHANCE[bin])),
        Kind::Sharpness => Op::Sharpness(1.0 + signed(ENHANCE[bin])),
    }
}

/// Draws one sub-policy and returns the operations that fire (0, 1 or 2), in order. Draw order
/// as the reference: policy id, two probabilities, two signs.
pub fn sample_ops(rng: &mut SampleRng) -> Vec<Op> {
    let id = rng.below(POLICY.len());
    let probs = [rng.uniform(), rng.uniform()];
    let negate = [rng.below(2) == 0, rng.below(2) == 0];
    POLICY[id]
        .iter()
        .enumerate()
        .filter(|(i, (_, p, _))| probs[*i] <= *p)
        .map(|(i, &(kind, _, bin))| resolve(kind, bin, negate[i]))
        .collect()
}

fn apply_lut(img: &mut RgbImage, luts: &[[u8; 256]; 3]) {
    for p in img.data.chunks_exact_mut(3) {
        for c in 0..3 {
            p[c] = luts[c][p[c] as usize];
        }
    }
}

fn same_lut(f: impl Fn(usize) -> u8) -> [[u8; 256]; 3] {
    let lut: [u8; 256] = std::array::from_fn(f);
    [lut; 3]
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for p in img.data.chunks_exact(3) {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

/// `ImageOps.posterize`.
pub fn posterize(img: &mut RgbImage, bits: u8) {
    let mask = !((1u32 << (8 - bits.min(8) as u32)) - 1) as u8;
    apply_lut(img, &same_lut(|i| i as u8 & mask));
}

/// `ImageOps.solarize`.
pub fn solarize(img: &mut RgbImage, threshold: f64) {
    apply_lut(
        img,
        &same_lut(|i| {
            if (i as f64) < threshold {
                i as u8
            } else {
                255 - i as u8
            }
        }),
    );
}

/// `ImageOps.invert`.
pub fn invert(img: &mut RgbImage) {
    for v in &mut img.data {
        *v = 255 - *v;
    }
}

/// `ImageOps.equalize` (Pillow ≥ 10: `step = (total − last) // 255`).
pub fn equalize(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let nonzero: Vec<u64> = h.iter().copied().filter(|&v| v != 0).collect();
        let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
        if nonzero.len() <= 1 {
            return identity;
        }
        let total: u64 = nonzero.iter().sum();
        let step = (total - nonzero[nonzero.len() - 1]) / 255;
        if step == 0 {
            return identity;
        }
        let mut n = step / 2;
        std::array::from_fn(|i| {
            let v = (n / step).min(255) as u8;
            n += h[i];
            v
        })
    });
    apply_lut(img, &luts);
}

/// `ImageOps.autocontrast` (no cutoff).
pub fn autocontrast(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let lo = h.iter().position(|&v| v != 0).unwrap_or(255);
        let hi = h.iter().rposition(|&v| v != 0).unwrap_or(0);
        if hi <= lo {
            return std::array::from_fn(|i| i as u8);
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
    });
    apply_lut(img, &luts);
}

/// `img.filter(ImageFilter.SMOOTH)`: 3×3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 in `float`, the
/// border copied.
fn smooth(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    let mut out = img.data.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let k1 = 1.0f32 / 13.0f32;
    let k5 = 5.0f32 / 13.0f32;
    let px = |x: usize, y: usize, c: usize| img.data[(y * w + x) * 3 + c] as f32;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut ss = 0.5f32;
                ss += px(x - 1, y + 1, c) * k1 + px(x, y + 1, c) * k1 + px(x + 1, y + 1, c) * k1;
                ss += px(x - 1, y, c) * k1 + px(x, y, c) * k5 + px(x + 1, y, c) * k1;
                ss += px(x - 1, y - 1, c) * k1 + px(x, y - 1, c) * k1 + px(x + 1, y - 1, c) * k1;
                out[(y * w + x) * 3 + c] = ss.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`.
pub fn adjust_sharpness(img: &mut RgbImage, factor: f32) {
    if factor == 1.0 {
        return;
    }
    let degenerate = smooth(img);
    blend_into(&degenerate, &mut img.data, factor);
}

/// Applies one operation.
pub fn apply(img: &mut RgbImage, op: &Op) {
    match *op {
        Op::Posterize(bits) => posterize(img, bits),
        Op::Solarize(t) => solarize(img, t),
        Op::AutoContrast => autocontrast(img),
        Op::Equalize => equalize(img),
        Op::Invert => invert(img),
        Op::Rotate(deg) => rotate(img, deg),
        Op::ShearX(deg) => shear_x(img, deg),
        Op::Color(f) => adjust_saturation(img, f as f32),
        Op::Contrast(f) => adjust_contrast(img, f as f32),
        Op::Sharpness(f) => adjust_sharpness(img, f as f32),
    }
}

/// One AutoAugment draw applied to `img`.
pub fn auto_augment(img: &mut RgbImage, rng: &mut SampleRng) {
    for op in sample_ops(rng) {
        apply(img, &op);
    }
}
