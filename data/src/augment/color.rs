//! Colour operations with Pillow's arithmetic: `Image.blend`, `convert("L")`, the RGB↔HSV
//! converters and `ImageEnhance`, bit for bit (including Pillow's `float` vs `double` mix).

use crate::image::RgbImage;
use crate::rng::SampleRng;

/// Pillow's `ImagingBlend(degenerate, image, alpha)`: `out = in1 + alpha·(in2 − in1)` in single
/// precision, truncated, clipped when extrapolating. Writes into `img` (which is `in2`).
pub fn blend_into(degenerate: &[u8], img: &mut [u8], alpha: f32) {
    if alpha == 1.0 {
        return;
    }
    if alpha == 0.0 {
        img.copy_from_slice(degenerate);
        return;
    }
    if (0.0..=1.0).contains(&alpha) {
        for (o, &d) in img.iter_mut().zip(degenerate) {
            *o = (d as i32 as f32 + alpha * ((*o as i32 - d as i32) as f32)) as u8;
        }
    } else {
        for (o, &d) in img.iter_mut().zip(degenerate) {
            let t = d as i32 as f32 + alpha * ((*o as i32 - d as i32) as f32);
            *o = if t <= 0.0 {
                0
            } else if t >= 255.0 {
                255
            } else {
                t as u8
            };
        }
    }
}

/// Blend against a constant grey level (the degenerate image of brightness and contrast):
/// the result depends on the pixel value only, so it is a 256-entry table.
fn blend_const(img: &mut [u8], level: u8, alpha: f32) {
    if alpha == 1.0 {
        return;
    }
    let degenerate = [level; 256];
    let mut lut: [u8; 256] = std::array::from_fn(|i| i as u8);
    blend_into(&degenerate, &mut lut, alpha);
    for o in img.iter_mut() {
        *o = lut[*o as usize];
    }
}

/// Pillow's ITU-R 601-2 luma (`convert("L")`): `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Grey levels of every pixel.
pub fn to_luma(img: &RgbImage) -> Vec<u8> {
    img.data
        .chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]))
        .collect()
}

/// `RandomGrayscale`'s output: luma replicated into three channels.
pub fn grayscale(img: &mut RgbImage) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        p.copy_from_slice(&[l, l, l]);
    }
}

/// `ImageEnhance.Brightness(img).enhance(factor)`.
pub fn adjust_brightness(img: &mut RgbImage, factor: f32) {
    blend_const(&mut img.data, 0, factor);
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with the rounded mean luma.
pub fn adjust_contrast(img: &mut RgbImage, factor: f32) {
    let mut hist = [0u64; 256];
    for p in img.data.chunks_exact(3) {
        hist[luma(p[0], p[1], p[2]) as usize] += 1;
    }
    let n: u64 = hist.iter().sum();
    let sum: u64 = hist.iter().enumerate().map(|(i, &c)| i as u64 * c).sum();
    let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    blend_const(&mut img.data, (mean + 0.5) as u8, factor);
}

/// `ImageEnhance.Color(img).enhance(factor)` (saturation): blend with the grey image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f32) {
    if factor == 1.0 {
        return;
    }
    let mut degenerate = Vec::with_capacity(img.data.len());
    for p in img.data.chunks_exact(3) {
        let l = luma(p[0], p[1], p[2]);
        degenerate.extend_from_slice(&[l, l, l]);
    }
    blend_into(&degenerate, &mut img.data, factor);
}

/// `a as f32 / b as f32` for bytes `a`, `b` (Pillow's single-precision divisions in
/// `rgb2hsv`), tabulated once.
fn div_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..256 * 256)
            .map(|i| (i >> 8) as f32 / (i & 255) as f32)
            .collect()
    })
}

/// Pillow's `rgb2hsv_row`.
#[inline]
fn rgb_to_hsv(r: u8, g: u8, b: u8, div: &[f32]) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return (0, 0, maxc);
    }
    let cr = (maxc - minc) as usize;
    let q = |n: u8| div[((n as usize) << 8) | cr];
    let s = div[(cr << 8) | maxc as usize];
    let (rc, gc, bc) = (q(maxc - r), q(maxc - g), q(maxc - b));
    // `2.0 + rc - bc` is evaluated in double in C, then stored to float.
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    // `fmod(h / 6 + 1, 1)`; the argument lies in [5/6, 11/6), where this is exact.
    let x = h as f64 / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    let clip = |v: i32| v.clamp(0, 255) as u8;
    (
        clip((h as f64 * 255.0) as i32),
        clip((s as f64 * 255.0) as i32),
        maxc,
    )
}

/// Per `(h, s)`: the sector `i` and the factors of `p`, `q`, `t` in Pillow's `hsv2rgb`
/// (`1 − fs`, `1 − fs·f` with a `float` product, `1 − fs·(1 − f)`), tabulated once.
fn hsv_table() -> &'static [(u8, [f64; 3])] {
    static TABLE: std::sync::OnceLock<Vec<(u8, [f64; 3])>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..256 * 256)
            .map(|idx| {
                let (h, s) = ((idx >> 8) as u8, (idx & 255) as u8);
                let hf = h as f32 as f64 * 6.0 / 255.0;
                let i = hf as i32; // floor of a non-negative value
                let f = (hf - i as f32 as f64) as f32;
                let fs = (s as f32 as f64 / 255.0) as f32;
                let factors = [
                    1.0 - fs as f64,
                    1.0 - (fs * f) as f64,
                    1.0 - fs as f64 * (1.0 - f as f64),
                ];
                ((i % 6) as u8, factors)
            })
            .collect()
    })
}

/// Pillow's `hsv2rgb`.
#[inline]
fn hsv_to_rgb(h: u8, s: u8, v: u8, table: &[(u8, [f64; 3])]) -> (u8, u8, u8) {
    if s == 0 {
        return (v, v, v);
    }
    let (i, [fp, fq, ft]) = table[((h as usize) << 8) | s as usize];
    let vf = v as f32 as f64;
    // C's `round` (half away from zero) of a non-negative value, without libm.
    let round = |x: f64| {
        let t = x as i64;
        let r = if x - t as f64 >= 0.5 { t + 1 } else { t };
        r.clamp(0, 255) as u8
    };
    let (p, q, t) = (round(vf * fp), round(vf * fq), round(vf * ft));
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// torchvision's PIL `adjust_hue`: through Pillow's HSV, hue shifted by `int(factor · 255)`
/// modulo 256. The round trip through HSV happens even for a zero shift, as in torchvision.
pub fn adjust_hue(img: &mut RgbImage, hue_factor: f64) {
    let shift = ((hue_factor * 255.0) as i32) as u8;
    let (div, table) = (div_table(), hsv_table());
    for p in img.data.chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2], div);
        let (r, g, b) = hsv_to_rgb(h.wrapping_add(shift), s, v, table);
        p.copy_from_slice(&[r, g, b]);
    }
}

/// Parameters of one `ColorJitter` application.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    /// Order of the four adjustments: 0 brightness, 1 contrast, 2 saturation, 3 hue.
    pub order: [u8; 4],
    /// Brightness factor.
    pub brightness: f64,
    /// Contrast factor.
    pub contrast: f64,
    /// Saturation factor.
    pub saturation: f64,
    /// Hue shift in `[-0.5, 0.5]`.
    pub hue: f64,
}

impl JitterParams {
    /// `ColorJitter(b, c, s, h).get_params`: a random order, factors `U[1−x, 1+x]`, hue
    /// `U[−h, h]`.
    pub fn sample(rng: &mut SampleRng, b: f64, c: f64, s: f64, h: f64) -> Self {
        let mut order = [0u8, 1, 2, 3];
        rng.shuffle(&mut order);
        Self {
            order,
            brightness: rng.uniform_range(1.0 - b, 1.0 + b),
            contrast: rng.uniform_range(1.0 - c, 1.0 + c),
            saturation: rng.uniform_range(1.0 - s, 1.0 + s),
            hue: rng.uniform_range(-h, h),
        }
    }
}

/// Applies `ColorJitter` with fixed parameters (factors reach Pillow as `float`).
pub fn color_jitter(img: &mut RgbImage, p: &JitterParams) {
    for &op in &p.order {
        match op {
            0 => adjust_brightness(img, p.brightness as f32),
            1 => adjust_contrast(img, p.contrast as f32),
            2 => adjust_saturation(img, p.saturation as f32),
            _ => adjust_hue(img, p.hue),
        }
    }
}
