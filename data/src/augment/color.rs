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
        unsafe { avx2::blend_into(degenerate, img, alpha) };
        return;
    }
    blend_into_generic(degenerate, img, alpha);
}

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
/// the result depends on the pixel value only, so the portable loop looks it up in a
/// 256-entry table (the AVX2 loop computes the same formula, which is faster than the lookups).
fn blend_const(img: &mut [u8], level: u8, alpha: f32) {
    if alpha == 1.0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { avx2::blend_const(img, level, alpha) };
        return;
    }
    blend_const_generic(img, level, alpha);
}

fn blend_const_generic(img: &mut [u8], level: u8, alpha: f32) {
    let degenerate = [level; 256];
    let mut lut: [u8; 256] = std::array::from_fn(|i| i as u8);
    blend_into_generic(&degenerate, &mut lut, alpha);
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { avx2::grayscale(&mut img.data) };
        return;
    }
    grayscale_generic(&mut img.data);
}

fn grayscale_generic(data: &mut [u8]) {
    for p in data.chunks_exact_mut(3) {
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
    let (n, sum) = luma_sum(&img.data);
    let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    blend_const(&mut img.data, (mean + 0.5) as u8, factor);
}

/// The number of pixels and the sum of their luma (Pillow takes the mean from the histogram;
/// the integer sum is the same).
fn luma_sum(data: &[u8]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        return unsafe { avx2::luma_sum(data) };
    }
    luma_sum_generic(data)
}

fn luma_sum_generic(data: &[u8]) -> (u64, u64) {
    let sum = data
        .chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]) as u64)
        .sum();
    ((data.len() / 3) as u64, sum)
}

/// `ImageEnhance.Color(img).enhance(factor)` (saturation): blend with the grey image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f32) {
    if factor == 1.0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { avx2::adjust_saturation(&mut img.data, factor) };
        return;
    }
    adjust_saturation_generic(&mut img.data, factor);
}

fn adjust_saturation_generic(data: &mut [u8], factor: f32) {
    let mut degenerate = Vec::with_capacity(data.len());
    for p in data.chunks_exact(3) {
        let l = luma(p[0], p[1], p[2]);
        degenerate.extend_from_slice(&[l, l, l]);
    }
    blend_into_generic(&degenerate, data, factor);
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
/// `float`. Small enough to stay in L1 (the per-pixel work is then a few multiplies); `frac`
/// and `fs` are separate arrays so that the AVX2 path can gather from them.
struct HsvTables {
    sector: [u8; 256],
    frac: [f32; 256],
    fs: [f32; 256],
}

fn hsv_tables() -> &'static HsvTables {
    static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let hf = |h: usize| h as f32 as f64 * 6.0 / 255.0;
        // `hf as i32` is the floor of a non-negative value.
        HsvTables {
            sector: std::array::from_fn(|h| (hf(h) as i32 % 6) as u8),
            frac: std::array::from_fn(|h| (hf(h) - (hf(h) as i32) as f32 as f64) as f32),
            fs: std::array::from_fn(|s| (s as f32 as f64 / 255.0) as f32),
        }
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
    let (i, f) = (t.sector[h as usize], t.frac[h as usize]);
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
/// pixel, so the table is exact by construction. The saturation depends on `(cr, max)`. Both
/// end with [`GATHER_PAD`] spare bytes: the AVX2 path reads each byte as a 4-byte gather.
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

/// Spare bytes after a byte table read by 32-bit gathers.
const GATHER_PAD: usize = 3;

fn rgb_hsv_tables() -> &'static RgbHsvTables {
    static TABLES: std::sync::OnceLock<RgbHsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut hue = vec![0u8; 6 * 256 * 256 + GATHER_PAD];
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
        let mut sat = vec![0u8; 256 * 256 + GATHER_PAD];
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { avx2::adjust_hue(&mut img.data, shift) };
        return;
    }
    adjust_hue_generic(&mut img.data, shift);
}

/// [`adjust_hue`] on RGB bytes, one pixel at a time.
fn adjust_hue_generic(data: &mut [u8], shift: u8) {
    let (hsv, rgb) = (hsv_tables(), rgb_hsv_tables());
    for p in data.chunks_exact_mut(3) {
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

/// AVX2 versions of the per-pixel loops, chosen at run time by the functions above. Each does
/// the scalar arithmetic lane by lane (the same integer operations, the same `float` and
/// `double` operations in the same order; Rust forms no fused multiply-add), so the bytes are
/// those of the portable loops, which the unit tests below check.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{HsvTables, hsv_tables, rgb_hsv_tables};

    /// Whole blocks of eight RGB pixels (24 bytes) in `len` bytes, leaving at least 4 bytes
    /// after the last: a block is read as two 16-byte loads, at its bytes 0 and 12.
    pub(super) fn blocks(len: usize) -> usize {
        len.saturating_sub(4) / 24
    }

    /// Block `i` of `data` (see [`blocks`]): pixels 0–3 in the low 12 bytes of the low lane,
    /// pixels 4–7 in those of the high lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load_block(data: &[u8], i: usize) -> __m256i {
        let bytes: &[u8; 28] = data[i * 24..i * 24 + 28].try_into().expect("28 bytes");
        // SAFETY: both 16-byte loads lie inside the 28 bytes; no alignment requirement.
        unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(bytes[12..].as_ptr().cast()),
                _mm_loadu_si128(bytes.as_ptr().cast()),
            )
        }
    }

    /// The red, green and blue bytes of a loaded block as 32-bit lanes, in pixel order.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn channels(block: __m256i) -> [__m256i; 3] {
        let channel = |c: i8| {
            let x = -1;
            #[rustfmt::skip]
            let mask = _mm256_setr_epi8(
                c, x, x, x, c + 3, x, x, x, c + 6, x, x, x, c + 9, x, x, x,
                c, x, x, x, c + 3, x, x, x, c + 6, x, x, x, c + 9, x, x, x,
            );
            _mm256_shuffle_epi8(block, mask)
        };
        [channel(0), channel(1), channel(2)]
    }

    /// Writes pixels `r | g << 8 | b << 16` (one per 32-bit lane) as block `i` of `data`:
    /// exactly its 24 bytes, since the next block has not been read yet.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store_block(data: &mut [u8], i: usize, rgb: __m256i) {
        #[rustfmt::skip]
        let pack = _mm256_setr_epi8(
            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
        );
        // 12 bytes per lane, then the two lanes' 12 bytes made contiguous.
        let packed = _mm256_shuffle_epi8(rgb, pack);
        let packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
        let out: &mut [u8; 24] = (&mut data[i * 24..i * 24 + 24])
            .try_into()
            .expect("24 bytes");
        // SAFETY: 16 and 8 writable bytes inside `out`; unaligned stores.
        unsafe {
            _mm_storeu_si128(out.as_mut_ptr().cast(), _mm256_castsi256_si128(packed));
            _mm_storel_epi64(
                out[16..].as_mut_ptr().cast(),
                _mm256_extracti128_si256::<1>(packed),
            );
        }
    }

    /// Pillow's luma of eight pixels ([`super::luma`]: the sum fits 31 bits).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn luma(r: __m256i, g: __m256i, b: __m256i) -> __m256i {
        let term = |c, w| _mm256_mullo_epi32(c, _mm256_set1_epi32(w));
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(term(r, 19595), term(g, 38470)),
            _mm256_add_epi32(term(b, 7471), _mm256_set1_epi32(0x8000)),
        );
        _mm256_srli_epi32::<16>(sum)
    }

    /// `Image.blend`'s value for eight lanes: `d + alpha · (o − d)` in `float`, then the
    /// clip-and-truncate of the extrapolating branch, which for `0 ≤ alpha ≤ 1` (the result
    /// already in [0, 255]) is the plain truncation of the other branch. NaN, where the scalar
    /// cast gives 0, also gives 0: `max` returns its second operand then.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn blend8(d: __m256i, o: __m256i, alpha: __m256) -> __m256i {
        let diff = _mm256_cvtepi32_ps(_mm256_sub_epi32(o, d));
        let t = _mm256_add_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(alpha, diff));
        let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
        _mm256_cvttps_epi32(t)
    }

    /// [`blend8`] on 32 bytes (`d` the degenerate bytes, `o` the image's).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn blend32(d: __m256i, o: __m256i, alpha: __m256) -> __m256i {
        let eight = |v: __m256i, k: i32| {
            let half = match k / 2 {
                0 => _mm256_castsi256_si128(v),
                _ => _mm256_extracti128_si256::<1>(v),
            };
            let quarter = if k % 2 == 0 {
                half
            } else {
                _mm_srli_si128::<8>(half)
            };
            _mm256_cvtepu8_epi32(quarter)
        };
        let part = |k| blend8(eight(d, k), eight(o, k), alpha);
        let words = (
            _mm256_packs_epi32(part(0), part(1)),
            _mm256_packs_epi32(part(2), part(3)),
        );
        // The packs work per 128-bit lane: put the 4-byte groups back in order.
        _mm256_permutevar8x32_epi32(
            _mm256_packus_epi16(words.0, words.1),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        )
    }

    /// 32 bytes at `at` of `data`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load32(data: &[u8], at: usize) -> __m256i {
        let bytes: &[u8; 32] = data[at..at + 32].try_into().expect("32 bytes");
        // SAFETY: 32 readable bytes; unaligned load.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }

    /// Writes 32 bytes at `at` of `data`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store32(data: &mut [u8], at: usize, v: __m256i) {
        let bytes: &mut [u8; 32] = (&mut data[at..at + 32]).try_into().expect("32 bytes");
        // SAFETY: 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), v) };
    }

    /// [`super::blend_into_generic`] on 32 bytes at a time; the rest by the scalar loop.
    #[target_feature(enable = "avx2")]
    pub(super) fn blend_into(degenerate: &[u8], img: &mut [u8], alpha: f32) {
        if alpha == 1.0 || alpha == 0.0 {
            super::blend_into_generic(degenerate, img, alpha);
            return;
        }
        let n = img.len().min(degenerate.len()) / 32 * 32;
        let a = _mm256_set1_ps(alpha);
        for at in (0..n).step_by(32) {
            let v = blend32(load32(degenerate, at), load32(img, at), a);
            store32(img, at, v);
        }
        super::blend_into_generic(&degenerate[n..], &mut img[n..], alpha);
    }

    /// [`super::blend_const_generic`] computed rather than looked up (the table holds the
    /// same formula's values), 32 bytes at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn blend_const(img: &mut [u8], level: u8, alpha: f32) {
        let n = img.len() / 32 * 32;
        let (a, d) = (_mm256_set1_ps(alpha), _mm256_set1_epi8(level as i8));
        for at in (0..n).step_by(32) {
            store32(img, at, blend32(d, load32(img, at), a));
        }
        super::blend_const_generic(&mut img[n..], level, alpha);
    }

    /// [`super::luma_sum_generic`], eight pixels at a time; 32-bit lane sums are moved to the
    /// total before they could overflow.
    #[target_feature(enable = "avx2")]
    pub(super) fn luma_sum(data: &[u8]) -> (u64, u64) {
        let blocks = blocks(data.len());
        let mut total = 0u64;
        // A lane gains at most 255 per block.
        const FLUSH: usize = 1 << 16;
        for start in (0..blocks).step_by(FLUSH) {
            let mut lanes = _mm256_setzero_si256();
            for i in start..(start + FLUSH).min(blocks) {
                let [r, g, b] = channels(load_block(data, i));
                lanes = _mm256_add_epi32(lanes, luma(r, g, b));
            }
            let mut sums = [0u32; 8];
            // SAFETY: 32 writable bytes; unaligned store.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), lanes) };
            total += sums.iter().map(|&s| s as u64).sum::<u64>();
        }
        let (n, tail) = super::luma_sum_generic(&data[blocks * 24..]);
        (blocks as u64 * 8 + n, total + tail)
    }

    /// [`super::adjust_saturation`] in one pass: the grey level of each pixel is computed and
    /// blended in registers instead of through a degenerate image.
    #[target_feature(enable = "avx2")]
    pub(super) fn adjust_saturation(data: &mut [u8], factor: f32) {
        let a = _mm256_set1_ps(factor);
        let blocks = blocks(data.len());
        for i in 0..blocks {
            let [r, g, b] = channels(load_block(data, i));
            let l = luma(r, g, b);
            let rgb = _mm256_or_si256(
                _mm256_or_si256(blend8(l, r, a), _mm256_slli_epi32::<8>(blend8(l, g, a))),
                _mm256_slli_epi32::<16>(blend8(l, b, a)),
            );
            store_block(data, i, rgb);
        }
        super::adjust_saturation_generic(&mut data[blocks * 24..], factor);
    }

    /// [`super::grayscale`]'s luma replicated into the three channels.
    #[target_feature(enable = "avx2")]
    pub(super) fn grayscale(data: &mut [u8]) {
        let blocks = blocks(data.len());
        for i in 0..blocks {
            let [r, g, b] = channels(load_block(data, i));
            let l = luma(r, g, b);
            store_block(
                data,
                i,
                _mm256_mullo_epi32(l, _mm256_set1_epi32(0x01_01_01)),
            );
        }
        super::grayscale_generic(&mut data[blocks * 24..]);
    }

    /// [`super::adjust_hue_generic`], eight pixels at a time: the case of [`super::hue_case`]
    /// by compares and a table lookup instead of branches, the table entries by gathers, then
    /// [`hsv_to_rgb`].
    #[target_feature(enable = "avx2")]
    pub(super) fn adjust_hue(data: &mut [u8], shift: u8) {
        let (hsv, rgb) = (hsv_tables(), rgb_hsv_tables());
        let shift_v = _mm256_set1_epi32(shift as i32);
        let byte = _mm256_set1_epi32(0xff);
        // Per case index (red is max | green is max << 1 | the third test << 2, see below):
        // `k << 16` of `hue_case`, and a shuffle control that takes the channel giving `d`
        // (red 0, green 1, blue 2) of the lane's pixel `j` (byte `3j + channel` of the lane,
        // `3j` added below; the other bytes 0x80 give zero).
        let case_k = _mm256_setr_epi32(5 << 16, 1 << 16, 3 << 16, 1 << 16, 4 << 16, 0, 2 << 16, 0);
        let third = |c: u32| (0x8080_8000 | c) as i32;
        let case_third = _mm256_setr_epi32(
            third(0),
            third(2),
            third(2),
            third(2),
            third(1),
            third(1),
            third(0),
            third(1),
        );
        let pixel_of_lane = _mm256_setr_epi32(0, 3, 6, 9, 0, 3, 6, 9);
        let blocks = blocks(data.len());
        for i in 0..blocks {
            let bytes = load_block(data, i);
            let [r, g, b] = channels(bytes);
            let maxc = _mm256_max_epi32(_mm256_max_epi32(r, g), b);
            let minc = _mm256_min_epi32(_mm256_min_epi32(r, g), b);
            let cr = _mm256_sub_epi32(maxc, minc);
            let (r_max, g_max) = (_mm256_cmpeq_epi32(r, maxc), _mm256_cmpeq_epi32(g, maxc));
            let (b_min, r_min) = (_mm256_cmpeq_epi32(b, minc), _mm256_cmpeq_epi32(r, minc));
            // `hue_case`'s second test: "blue is the minimum" when red or green is the
            // maximum, else "red is the minimum".
            let rg_max = _mm256_or_si256(r_max, g_max);
            let test = _mm256_or_si256(
                _mm256_and_si256(rg_max, b_min),
                _mm256_andnot_si256(rg_max, r_min),
            );
            let case = _mm256_or_si256(
                _mm256_or_si256(
                    _mm256_and_si256(r_max, _mm256_set1_epi32(1)),
                    _mm256_and_si256(g_max, _mm256_set1_epi32(2)),
                ),
                _mm256_and_si256(test, _mm256_set1_epi32(4)),
            );
            let k = _mm256_permutevar8x32_epi32(case_k, case);
            let pick =
                _mm256_add_epi32(_mm256_permutevar8x32_epi32(case_third, case), pixel_of_lane);
            let d = _mm256_sub_epi32(maxc, _mm256_shuffle_epi8(bytes, pick));
            let hue_at = _mm256_or_si256(_mm256_or_si256(k, _mm256_slli_epi32::<8>(cr)), d);
            let sat_at = _mm256_or_si256(_mm256_slli_epi32::<8>(cr), maxc);
            // SAFETY: the offsets are below 6·2¹⁶ and 2¹⁶ (bytes and k ≤ 5), and both tables
            // have `GATHER_PAD` bytes after their last entry, so each 4-byte read lies inside
            // its table; gathers have no alignment requirement.
            let (h, s) = unsafe {
                (
                    _mm256_i32gather_epi32::<1>(rgb.hue.as_ptr().cast(), hue_at),
                    _mm256_i32gather_epi32::<1>(rgb.sat.as_ptr().cast(), sat_at),
                )
            };
            let h = _mm256_and_si256(_mm256_add_epi32(h, shift_v), byte);
            let s = _mm256_and_si256(s, byte);
            store_block(data, i, hsv_to_rgb(h, s, maxc, hsv));
        }
        super::adjust_hue_generic(&mut data[blocks * 24..], shift);
    }

    /// [`super::hsv_to_rgb`] for eight pixels (hue, saturation and value bytes as 32-bit
    /// lanes), giving `r | g << 8 | b << 16` per lane. `p`, `q` and `t` are computed in four
    /// `f64` lanes with the scalar code's operations, and packed per 128-bit lane as bytes
    /// `t₀…t₃ p₀…p₃ q₀…q₃ v₀…v₃`; one shuffle then takes each channel of each pixel from them,
    /// its control looked up by sector.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn hsv_to_rgb(h: __m256i, s: __m256i, v: __m256i, tables: &HsvTables) -> __m256i {
        // SAFETY: `h` and `s` are bytes, so every index is inside the 256-entry tables, which
        // are aligned for `f32`.
        let (f, fs) = unsafe {
            (
                _mm256_i32gather_ps::<4>(tables.frac.as_ptr(), h),
                _mm256_i32gather_ps::<4>(tables.fs.as_ptr(), s),
            )
        };
        // `fs * f` is a `float` product in Pillow.
        let fs_f = _mm256_mul_ps(fs, f);
        let lo = tpqv_bytes(
            _mm256_castps256_ps128(f),
            _mm256_castps256_ps128(fs),
            _mm256_castps256_ps128(fs_f),
            _mm256_castsi256_si128(v),
        );
        let hi = tpqv_bytes(
            _mm256_extractf128_ps::<1>(f),
            _mm256_extractf128_ps::<1>(fs),
            _mm256_extractf128_ps::<1>(fs_f),
            _mm256_extracti128_si256::<1>(v),
        );
        let tpqv = _mm256_set_m128i(hi, lo);
        // Per sector, bytes of (r, g, b) in `tpqv` for the lane's pixel 0 (t at 0, p at 4,
        // q at 8, v at 12); Pillow's (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
        // (v, p, q). The fourth byte 0x80 gives zero.
        let select = |r: u32, g: u32, b: u32| (r | g << 8 | b << 16 | 0x80 << 24) as i32;
        let by_sector = _mm256_setr_epi32(
            select(12, 0, 4),
            select(8, 12, 4),
            select(4, 12, 0),
            select(4, 8, 12),
            select(0, 4, 12),
            select(12, 4, 8),
            0,
            0,
        );
        let pixel_of_lane = _mm256_setr_epi32(
            0, 0x01_01_01, 0x02_02_02, 0x03_03_03, 0, 0x01_01_01, 0x02_02_02, 0x03_03_03,
        );
        let control = _mm256_add_epi32(
            _mm256_permutevar8x32_epi32(by_sector, sector(h)),
            pixel_of_lane,
        );
        _mm256_shuffle_epi8(tpqv, control)
    }

    /// The sector `i % 6` of [`HsvTables`] for hue bytes `h`: `⌊6h / 255⌋` by a multiply and
    /// shift (`0x8081 / 2²³` is `1 / 255` closely enough for numerators up to 6 · 255), with
    /// 6 wrapping to 0.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sector(h: __m256i) -> __m256i {
        let i = _mm256_srli_epi32::<23>(_mm256_mullo_epi32(h, _mm256_set1_epi32(6 * 0x8081)));
        _mm256_andnot_si256(_mm256_cmpeq_epi32(i, _mm256_set1_epi32(6)), i)
    }

    /// `p`, `q` and `t` of four pixels, as `hsv_to_rgb` computes them, packed with `v` into
    /// bytes `t₀…t₃ p₀…p₃ q₀…q₃ v₀…v₃`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn tpqv_bytes(f: __m128, fs: __m128, fs_f: __m128, v: __m128i) -> __m128i {
        let one = _mm256_set1_pd(1.0);
        let (f, fs, fs_f) = (
            _mm256_cvtps_pd(f),
            _mm256_cvtps_pd(fs),
            _mm256_cvtps_pd(fs_f),
        );
        let vf = _mm256_cvtepi32_pd(v);
        let p = round_half_up(_mm256_mul_pd(vf, _mm256_sub_pd(one, fs)));
        let q = round_half_up(_mm256_mul_pd(vf, _mm256_sub_pd(one, fs_f)));
        let t = _mm256_mul_pd(
            vf,
            _mm256_sub_pd(one, _mm256_mul_pd(fs, _mm256_sub_pd(one, f))),
        );
        let t = round_half_up(t);
        _mm_packus_epi16(_mm_packs_epi32(t, p), _mm_packs_epi32(q, v))
    }

    /// The `round` of `hsv_to_rgb` (half away from zero) on four lanes in [0, 255], as the
    /// truncation of `x + 0.5`. That is exact unless the addition rounds up to an integer
    /// from below. For `p` and `q` it cannot: `1 − fs` and `1 − fs·f` are multiples of 2⁻³⁸
    /// (`fs` and `fs·f` are `float`s, `fs ≥ 1/255` and `f ≥ 3/255` when not 0), so the product
    /// with `v < 2⁸` and the sum with one half are exact in `double`. `t` goes through
    /// rounded `double` products first; the unit test
    /// `avx2_and_portable_hsv_to_rgb_agree_on_every_input` checks all 2²⁴ inputs.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn round_half_up(x: __m256d) -> __m128i {
        _mm256_cvttpd_epi32(_mm256_add_pd(x, _mm256_set1_pd(0.5)))
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

    /// Random bytes (`len` of them).
    #[cfg(target_arch = "x86_64")]
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = crate::rng::SampleRng::from_parts(&[seed]);
        (0..len).map(|_| rng.below(256) as u8).collect()
    }

    /// The AVX2 `hsv2rgb` must equal the scalar one on every (hue, saturation, value).
    #[test]
    fn avx2_and_portable_hsv_to_rgb_agree_on_every_input() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            use std::arch::x86_64::*;
            let t = hsv_tables();
            for h in 0..256 {
                for s in 0..256 {
                    for v0 in (0..256).step_by(8) {
                        // SAFETY: AVX2 is present (checked above).
                        let rgb = unsafe {
                            let lane = |x| _mm256_set1_epi32(x);
                            let v = _mm256_add_epi32(
                                lane(v0),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                            );
                            let mut out = [0u32; 8];
                            _mm256_storeu_si256(
                                out.as_mut_ptr().cast(),
                                avx2::hsv_to_rgb(lane(h), lane(s), v, t),
                            );
                            out
                        };
                        for (j, &px) in rgb.iter().enumerate() {
                            let v = (v0 as usize + j) as u8;
                            let (r, g, b) = hsv_to_rgb(h as u8, s as u8, v, t);
                            let want = r as u32 | (g as u32) << 8 | (b as u32) << 16;
                            assert_eq!(px, want, "h {h}, s {s}, v {v}");
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 blend, saturation, grayscale and luma-sum loops must give the portable loops'
    /// results, for
    /// interpolating and extrapolating factors and lengths that end in the scalar tails.
    #[test]
    fn avx2_and_portable_blend_saturation_grayscale_give_identical_bytes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            for len in [0, 3, 24, 27, 30, 93, 96, 3 * 1001] {
                let img = random_bytes(len as u64, len);
                let degenerate = random_bytes(len as u64 + 1, len);
                for alpha in [0.0f32, 1.0, 0.3, 0.999, 1.3, 1.9, -0.5, 7.0, 1e30, f32::NAN] {
                    let mut a = img.clone();
                    let mut p = img.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2::blend_into(&degenerate, &mut a, alpha) };
                    blend_into_generic(&degenerate, &mut p, alpha);
                    assert_eq!(a, p, "blend, {len} bytes, alpha {alpha}");
                    let mut a = img.clone();
                    let mut p = img.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2::adjust_saturation(&mut a, alpha) };
                    adjust_saturation_generic(&mut p, alpha);
                    assert_eq!(a, p, "saturation, {len} bytes, factor {alpha}");
                }
                for (level, alpha) in [(0u8, 1.3f32), (117, 0.6), (255, 1.9), (40, -0.2)] {
                    let mut a = img.clone();
                    let mut p = img.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2::blend_const(&mut a, level, alpha) };
                    blend_const_generic(&mut p, level, alpha);
                    assert_eq!(a, p, "constant blend, {len} bytes, {level}, {alpha}");
                }
                // SAFETY: AVX2 is present (checked above).
                let sum = unsafe { avx2::luma_sum(&img) };
                assert_eq!(sum, luma_sum_generic(&img), "luma sum, {len} bytes");
                let mut a = img.clone();
                let mut p = img.clone();
                // SAFETY: AVX2 is present (checked above).
                unsafe { avx2::grayscale(&mut a) };
                grayscale_generic(&mut p);
                assert_eq!(a, p, "grayscale, {len} bytes");
            }
        }
    }

    /// The AVX2 hue path must give the bytes of the portable one (which the reference tests
    /// compare with Pillow only on machines without AVX2): every colour, under shifts that
    /// bring every hue byte to every sector, and lengths that end in the scalar tail.
    #[test]
    fn avx2_and_portable_hue_give_identical_bytes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let every: Vec<u8> = (0..1u32 << 24)
                .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
                .collect();
            for shift in [0u8, 1, 17, 43, 128, 200, 255] {
                let mut a = every.clone();
                let mut p = every.clone();
                // SAFETY: AVX2 is present (checked above).
                unsafe { avx2::adjust_hue(&mut a, shift) };
                adjust_hue_generic(&mut p, shift);
                assert!(a == p, "shift {shift}");
            }
            let mut rng = crate::rng::SampleRng::from_parts(&[9]);
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
                let data: Vec<u8> = (0..len * 3).map(|_| rng.below(256) as u8).collect();
                for shift in 0..=255u8 {
                    let mut a = data.clone();
                    let mut p = data.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2::adjust_hue(&mut a, shift) };
                    adjust_hue_generic(&mut p, shift);
                    assert_eq!(a, p, "{len} pixels, shift {shift}");
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
