//! Colour operations with Pillow's arithmetic: `Image.blend`, `convert("L")`, the RGB↔HSV
//! converters and `ImageEnhance`, bit for bit (including Pillow's `float` vs `double` mix).

use crate::image::RgbImage;
use crate::rng::SampleRng;

/// Pillow's `ImagingBlend(degenerate, image, alpha)`: `out = in1 + alpha·(in2 − in1)` in single
/// precision, truncated, clipped when extrapolating. Writes into `img` (which is `in2`).
pub fn blend_into(degenerate: &[u8], img: &mut [u8], alpha: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { blend_into_avx2(degenerate, img, alpha) };
        return;
    }
    blend_into_generic(degenerate, img, alpha);
}

/// [`blend_into_generic`] compiled for AVX2: eight single-precision lanes (no fused
/// multiply-add is formed without fast-math, so the rounding is the same).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn blend_into_avx2(degenerate: &[u8], img: &mut [u8], alpha: f32) {
    blend_into_generic(degenerate, img, alpha);
}

#[inline(always)]
fn blend_into_generic(degenerate: &[u8], img: &mut [u8], alpha: f32) {
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

/// Pillow's `rgb2hsv_row` for one pixel: the `float` divisions are done as such (IEEE
/// division is exact to reproduce), the rest in `double` as C promotes it.
#[inline(always)]
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return (0, 0, maxc);
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let q = |n: u8| (maxc - n) as f32 / cr;
    // `2.0 + rc - bc` is evaluated in double in C, then stored to float.
    let h: f32 = if r == maxc {
        q(b) - q(g)
    } else if g == maxc {
        (2.0 + q(r) as f64 - q(b) as f64) as f32
    } else {
        (4.0 + q(g) as f64 - q(r) as f64) as f32
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

/// Per hue byte: the sector `i % 6` and the fraction `f` of Pillow's `hsv2rgb`
/// (`h · 6 / 255` in double, `f` stored as `float`); per saturation byte `fs = s / 255` as
/// `float`. Small enough to stay in L1 (the per-pixel work is then a few multiplies).
struct HsvTables {
    sector: [(u8, f32); 256],
    fs: [f32; 256],
}

fn hsv_tables() -> &'static HsvTables {
    static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| HsvTables {
        sector: std::array::from_fn(|h| {
            let hf = h as f32 as f64 * 6.0 / 255.0;
            let i = hf as i32; // floor of a non-negative value
            ((i % 6) as u8, (hf - i as f32 as f64) as f32)
        }),
        fs: std::array::from_fn(|s| (s as f32 as f64 / 255.0) as f32),
    })
}

/// Pillow's `hsv2rgb`. Branch-free: for `s = 0` the factors are all 1, so `p = q = t = v`
/// reproduces Pillow's grey special case, and the sector picks from `[v, t, p, q]` by table.
#[inline(always)]
fn hsv_to_rgb(h: u8, s: u8, v: u8, t: &HsvTables) -> (u8, u8, u8) {
    // Pillow's `switch (i % 6)`: (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q).
    const PICK: [[usize; 3]; 6] = [
        [0, 1, 2],
        [3, 0, 2],
        [2, 0, 1],
        [2, 3, 0],
        [1, 2, 0],
        [0, 2, 3],
    ];
    let (i, f) = t.sector[h as usize];
    let fs = t.fs[s as usize];
    let vf = v as f32 as f64;
    // C's `round` (half away from zero) of a non-negative value, without libm.
    let round = |x: f64| {
        let t = x as i64;
        let r = if x - t as f64 >= 0.5 { t + 1 } else { t };
        r.clamp(0, 255) as u8
    };
    let p = round(vf * (1.0 - fs as f64));
    let q = round(vf * (1.0 - (fs * f) as f64));
    let tt = round(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    let vals = [v, tt, p, q];
    let pick = PICK[i as usize];
    (vals[pick[0]], vals[pick[1]], vals[pick[2]])
}

/// `rgb_to_hsv`'s hue and saturation bytes, tabulated. The hue depends only on which channel
/// is the maximum and which the minimum (six cases, in the order of Pillow's tests), the range
/// `cr = max − min` and the distance `d` of the third channel from the maximum: the divisions
/// see only differences. Each entry is computed by [`rgb_to_hsv`] itself on a representative
/// pixel, so the table is exact by construction. The saturation depends on `(cr, max)`.
struct RgbHsvTables {
    hue: Vec<u8>,
    sat: Vec<u8>,
}

/// The case (0–5) of a pixel and the channel that gives `d`.
#[inline(always)]
fn hue_case(r: u8, g: u8, b: u8, maxc: u8, minc: u8) -> (usize, u8) {
    if r == maxc {
        if b == minc { (0, g) } else { (1, b) }
    } else if g == maxc {
        if b == minc { (2, r) } else { (3, b) }
    } else if r == minc {
        (4, g)
    } else {
        (5, r)
    }
}

fn rgb_hsv_tables() -> &'static RgbHsvTables {
    static TABLES: std::sync::OnceLock<RgbHsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut hue = vec![0u8; 6 * 256 * 256];
        for cr in 1..=255u8 {
            for d in 0..=cr {
                let mid = cr - d;
                // A pixel of each case with maximum `cr`, minimum 0 and third channel `mid`.
                let reps = [
                    (cr, mid, 0),
                    (cr, 0, mid),
                    (mid, cr, 0),
                    (0, cr, mid),
                    (0, mid, cr),
                    (mid, 0, cr),
                ];
                for (k, &(r, g, b)) in reps.iter().enumerate() {
                    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
                    // Only representatives that fall in their own case define an entry (a
                    // tie can move one to an earlier case; that entry is then never read).
                    if hue_case(r, g, b, maxc, minc).0 == k {
                        hue[(k << 16) | ((cr as usize) << 8) | d as usize] = rgb_to_hsv(r, g, b).0;
                    }
                }
            }
        }
        let mut sat = vec![0u8; 256 * 256];
        for cr in 1..=255u8 {
            for maxc in cr..=255u8 {
                sat[((cr as usize) << 8) | maxc as usize] =
                    rgb_to_hsv(maxc, maxc - cr, maxc - cr).1;
            }
        }
        RgbHsvTables { hue, sat }
    })
}

/// torchvision's PIL `adjust_hue`: through Pillow's HSV, hue shifted by `int(factor · 255)`
/// modulo 256. The round trip through HSV happens even for a zero shift, as in torchvision.
pub fn adjust_hue(img: &mut RgbImage, hue_factor: f64) {
    let shift = ((hue_factor * 255.0) as i32) as u8;
    let (hsv, rgb) = (hsv_tables(), rgb_hsv_tables());
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
        let cr = (maxc - minc) as usize;
        // Grey pixels (cr = 0) read the zero row of both tables: hue 0, saturation 0, which
        // converts back to (v, v, v) as Pillow's special case does.
        let (k, third) = hue_case(r, g, b, maxc, minc);
        let h = rgb.hue[(k << 16) | (cr << 8) | (maxc - third) as usize];
        let s = rgb.sat[(cr << 8) | maxc as usize];
        let (r, g, b) = hsv_to_rgb(h.wrapping_add(shift), s, maxc, hsv);
        p.copy_from_slice(&[r, g, b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables must agree with the direct conversion on every colour.
    #[test]
    fn tabulated_rgb_to_hsv_equals_the_direct_conversion_on_every_colour() {
        let t = rgb_hsv_tables();
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                for b in 0..=255u8 {
                    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
                    let cr = (maxc - minc) as usize;
                    let (k, third) = hue_case(r, g, b, maxc, minc);
                    let h = t.hue[(k << 16) | (cr << 8) | (maxc - third) as usize];
                    let s = t.sat[(cr << 8) | maxc as usize];
                    assert_eq!((h, s, maxc), rgb_to_hsv(r, g, b), "({r}, {g}, {b})");
                }
            }
        }
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
