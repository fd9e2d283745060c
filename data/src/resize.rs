//! Crop + resize with Pillow's antialiased bilinear filter (`Image.resize(..., BILINEAR)`).
//!
//! The default path re-implements Pillow's two-pass resampler (`Resample.c`: coefficients
//! normalised to 22-bit fixed point, a `u8` intermediate between the horizontal and vertical
//! pass, only the rows the vertical pass needs), so it is bit-identical to Pillow.
//! fast_image_resize's `Convolution(Bilinear)` is faster but differs by one level on 3–25 % of
//! the bytes (its coefficients have less precision); it is available as [`ResizeImpl::Fast`].

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::crop::CropBox;
use crate::image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Which resampler to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeImpl {
    /// Bit-identical to Pillow.
    #[default]
    Pillow,
    /// fast_image_resize (SIMD), within one level of Pillow.
    Fast,
}

/// The convolution filter of a resize (Pillow's `BILINEAR` or `BICUBIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Triangle filter, support 1 (torchvision's default `BILINEAR`).
    #[default]
    Bilinear,
    /// Keys cubic with `a = −0.5`, support 2 (`BICUBIC`; the image side of segmentation
    /// resizes in the reference code).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// Pillow's `bilinear_filter` / `bicubic_filter`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Pillow's `precompute_coeffs` for `filter`, normalised to fixed point
/// (`normalize_coeffs_8bpc`): per output position the first input index, the tap count and the
/// taps (`ksize` per position).
fn coefficients(
    filter: Filter,
    in_size: usize,
    in0: f32,
    in1: f32,
    out_size: usize,
) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `(int)` truncates toward zero, then the bounds are clamped.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for x in 0..n {
            let k = if ww != 0.0 { w[x] / ww } else { w[x] };
            kk[xx * ksize + x] = if k < 0.0 {
                (-0.5 + k * (1u32 << PRECISION_BITS) as f64) as i32
            } else {
                (0.5 + k * (1u32 << PRECISION_BITS) as f64) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (bounds, kk, ksize)
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over rows `y0..y1` of the `src_w`-wide region starting at column `x0` of
/// `src` (row stride `stride` pixels).
#[allow(clippy::too_many_arguments)]
fn horizontal(
    src: &[u8],
    stride: usize,
    x0: usize,
    rows: std::ops::Range<usize>,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut Vec<u8>,
) {
    let out_w = bounds.len();
    out.clear();
    out.resize(rows.len() * out_w * 3, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { horizontal_avx2(src, stride, x0, rows, bounds, kk, ksize, out) };
        return;
    }
    horizontal_generic(src, stride, x0, rows, bounds, kk, ksize, out);
}

/// [`horizontal_generic`] with AVX2 intrinsics: a pixel is widened to four 32-bit lanes
/// (RGB and a zero), two taps share one 256-bit multiply-add, and the result is clipped by
/// saturating packs (the same `clip8`). The integer sums are exact, so the order of the
/// additions does not matter and the bytes equal Pillow's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn horizontal_avx2(
    src: &[u8],
    stride: usize,
    x0: usize,
    rows: std::ops::Range<usize>,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let out_w = bounds.len();
    let half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    let in_w = bounds.last().map_or(0, |&(xmin, n)| xmin + n);
    let mut row = vec![0u32; in_w];
    for (oy, y) in rows.enumerate() {
        let s = (y * stride + x0) * 3;
        for (d, px) in row.iter_mut().zip(src[s..s + in_w * 3].chunks_exact(3)) {
            *d = u32::from_le_bytes([px[0], px[1], px[2], 0]);
        }
        let orow = &mut out[oy * out_w * 3..(oy + 1) * out_w * 3];
        for ((&(xmin, n), k), o) in bounds
            .iter()
            .zip(kk.chunks_exact(ksize))
            .zip(orow.chunks_exact_mut(3))
        {
            let taps = &row[xmin..xmin + n];
            let k = &k[..n];
            let mut pairs = _mm256_setzero_si256();
            for (px, kv) in taps.chunks_exact(2).zip(k.chunks_exact(2)) {
                let two = (px[0] as u64 | (px[1] as u64) << 32) as i64;
                let wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(two));
                let coef =
                    _mm256_setr_epi32(kv[0], kv[0], kv[0], kv[0], kv[1], kv[1], kv[1], kv[1]);
                pairs = _mm256_add_epi32(pairs, _mm256_mullo_epi32(wide, coef));
            }
            let mut acc = _mm_add_epi32(
                half,
                _mm_add_epi32(
                    _mm256_castsi256_si128(pairs),
                    _mm256_extracti128_si256::<1>(pairs),
                ),
            );
            if n % 2 == 1 {
                let wide = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(taps[n - 1] as i32));
                acc = _mm_add_epi32(acc, _mm_mullo_epi32(wide, _mm_set1_epi32(k[n - 1])));
            }
            let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
            let packed = _mm_packus_epi16(_mm_packs_epi32(v, v), _mm_setzero_si128());
            let bytes = (_mm_cvtsi128_si32(packed) as u32).to_le_bytes();
            o.copy_from_slice(&bytes[..3]);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn horizontal_generic(
    src: &[u8],
    stride: usize,
    x0: usize,
    rows: std::ops::Range<usize>,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut [u8],
) {
    let out_w = bounds.len();
    let half = 1i32 << (PRECISION_BITS - 1);
    // Each row is copied into 4-byte pixels (RGB and an ignored zero), as Pillow's own
    // `image32` rows: a tap is then one 4-lane multiply-add without bounds checks.
    let in_w = bounds.last().map_or(0, |&(xmin, n)| xmin + n);
    let mut row = vec![[0u8; 4]; in_w];
    for (oy, y) in rows.enumerate() {
        let s = (y * stride + x0) * 3;
        for (d, px) in row.iter_mut().zip(src[s..s + in_w * 3].chunks_exact(3)) {
            *d = [px[0], px[1], px[2], 0];
        }
        let orow = &mut out[oy * out_w * 3..(oy + 1) * out_w * 3];
        for ((&(xmin, n), k), o) in bounds
            .iter()
            .zip(kk.chunks_exact(ksize))
            .zip(orow.chunks_exact_mut(3))
        {
            let mut acc = [half; 4];
            for (px, &kv) in row[xmin..xmin + n].iter().zip(k) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a += v as i32 * kv;
                }
            }
            o[0] = clip8(acc[0]);
            o[1] = clip8(acc[1]);
            o[2] = clip8(acc[2]);
        }
    }
}

/// Vertical pass: `src` is `w` pixels wide; output rows per `bounds` (relative to `src`).
fn vertical(
    src: &[u8],
    w: usize,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { vertical_avx2(src, w, bounds, kk, ksize, out) };
        return;
    }
    vertical_generic(src, w, bounds, kk, ksize, out);
}

/// [`vertical_generic`] compiled for AVX2: the multiply-accumulate over a row then runs on
/// eight 32-bit lanes (the x86-64 baseline has no 32-bit vector multiply).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_avx2(
    src: &[u8],
    w: usize,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut [u8],
) {
    vertical_generic(src, w, bounds, kk, ksize, out);
}

#[inline(always)]
fn vertical_generic(
    src: &[u8],
    w: usize,
    bounds: &[(usize, usize)],
    kk: &[i32],
    ksize: usize,
    out: &mut [u8],
) {
    let row_len = w * 3;
    let mut acc = vec![0i32; row_len];
    for (yy, &(ymin, n)) in bounds.iter().enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (j, &kv) in kk[yy * ksize..yy * ksize + n].iter().enumerate() {
            let row = &src[(ymin + j) * row_len..(ymin + j + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * kv;
            }
        }
        for (o, &a) in out[yy * row_len..(yy + 1) * row_len].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Reusable resampling state (one per thread).
pub struct Resampler {
    kind: ResizeImpl,
    resizer: Resizer,
    options: ResizeOptions,
    tmp: Vec<u8>,
}

impl Default for Resampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Resampler {
    /// The Pillow-exact resampler.
    pub fn new() -> Self {
        Self::with_impl(ResizeImpl::Pillow)
    }

    /// A resampler of the given implementation.
    pub fn with_impl(kind: ResizeImpl) -> Self {
        Self {
            kind,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            tmp: Vec::new(),
        }
    }

    /// Crops `b` out of `src` and resizes it to `out_w × out_h`, as torchvision's
    /// `F.resized_crop` does on a PIL image (crop first, so the filter never reads outside the
    /// box). `b` must lie inside `src`.
    pub fn crop_resize(
        &mut self,
        src: &RgbImage,
        b: &CropBox,
        out_w: usize,
        out_h: usize,
    ) -> RgbImage {
        self.crop_resize_filtered(src, b, out_w, out_h, Filter::Bilinear)
    }

    /// [`Resampler::crop_resize`] with a chosen filter (`Image.resize(size, filter, box)`).
    pub fn crop_resize_filtered(
        &mut self,
        src: &RgbImage,
        b: &CropBox,
        out_w: usize,
        out_h: usize,
        filter: Filter,
    ) -> RgbImage {
        let mut out = RgbImage::new(out_w, out_h);
        if b.width == out_w && b.height == out_h {
            // Pillow returns a copy when the size does not change.
            for y in 0..out_h {
                let s = ((b.top + y) * src.width + b.left) * 3;
                out.data[y * out_w * 3..(y + 1) * out_w * 3]
                    .copy_from_slice(&src.data[s..s + out_w * 3]);
            }
            return out;
        }
        match self.kind {
            ResizeImpl::Pillow => self.pillow(src, b, &mut out, filter),
            ResizeImpl::Fast => {
                let src_ref = ImageRef::new(
                    src.width as u32,
                    src.height as u32,
                    &src.data,
                    PixelType::U8x3,
                )
                .expect("RgbImage buffer length matches its size");
                let cropped = CroppedImage::new(
                    &src_ref,
                    b.left as u32,
                    b.top as u32,
                    b.width as u32,
                    b.height as u32,
                )
                .expect("crop boxes are sampled inside the image");
                let mut dst = Image::from_slice_u8(
                    out_w as u32,
                    out_h as u32,
                    &mut out.data,
                    PixelType::U8x3,
                )
                .expect("output buffer length matches its size");
                let options = match filter {
                    Filter::Bilinear => self.options,
                    Filter::Bicubic => self
                        .options
                        .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom)),
                };
                self.resizer
                    .resize(&cropped, &mut dst, &options)
                    .expect("same pixel type on both sides");
            }
        }
        out
    }

    /// `ImagingResampleInner` on the crop `b` of `src`. Pillow ≥ 13 runs the vertical pass
    /// first when the height shrinks, by more than twice as many pixels as the width does
    /// (found by testing against Pillow 13; the order changes rounding, so it is followed here).
    fn pillow(&mut self, src: &RgbImage, b: &CropBox, out: &mut RgbImage, filter: Filter) {
        let (out_w, out_h) = (out.width, out.height);
        let need_h = out_w != b.width;
        let need_v = out_h != b.height;
        let (hb, hk, hks) = coefficients(filter, b.width, 0.0, b.width as f32, out_w);
        let (mut vb, vk, vks) = coefficients(filter, b.height, 0.0, b.height as f32, out_h);
        let first = vb.first().map_or(0, |v| v.0);
        let last = vb.last().map_or(0, |v| v.0 + v.1);
        let vertical_first = need_h
            && out_h < b.height
            && (b.height as i64 - out_h as i64) > 2 * (b.width as i64 - out_w as i64);
        let mut tmp = std::mem::take(&mut self.tmp);
        if vertical_first {
            // The crop's rows the vertical pass reads, then vertical, then horizontal.
            tmp.clear();
            for y in b.top + first..b.top + last {
                let s = (y * src.width + b.left) * 3;
                tmp.extend_from_slice(&src.data[s..s + b.width * 3]);
            }
            for v in &mut vb {
                v.0 -= first;
            }
            let mut mid = vec![0u8; b.width * out_h * 3];
            vertical(&tmp, b.width, &vb, &vk, vks, &mut mid);
            horizontal(&mid, b.width, 0, 0..out_h, &hb, &hk, hks, &mut tmp);
            out.data.copy_from_slice(&tmp);
        } else if need_h {
            let rows = if need_v {
                b.top + first..b.top + last
            } else {
                b.top..b.top + b.height
            };
            horizontal(&src.data, src.width, b.left, rows, &hb, &hk, hks, &mut tmp);
            if need_v {
                for v in &mut vb {
                    v.0 -= first;
                }
                vertical(&tmp, out_w, &vb, &vk, vks, &mut out.data);
            } else {
                out.data.copy_from_slice(&tmp);
            }
        } else {
            tmp.clear();
            for y in b.top..b.top + b.height {
                let s = (y * src.width + b.left) * 3;
                tmp.extend_from_slice(&src.data[s..s + b.width * 3]);
            }
            vertical(&tmp, b.width, &vb, &vk, vks, &mut out.data);
        }
        self.tmp = tmp;
    }

    /// Resizes the whole image.
    pub fn resize(&mut self, src: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
        self.crop_resize(src, &CropBox::full(src.width, src.height), out_w, out_h)
    }
}

/// torchvision's `Resize(short)` output size: the shorter side becomes `short`, the longer
/// `int(short * long / short_side)`.
pub fn shorter_side_size(width: usize, height: usize, short: usize) -> (usize, usize) {
    if width <= height {
        (
            short,
            ((short as f64 * height as f64 / width as f64) as usize).max(1),
        )
    } else {
        (
            ((short as f64 * width as f64 / height as f64) as usize).max(1),
            short,
        )
    }
}

/// torchvision's `CenterCrop(size)` box on an image at least `size` on each side.
pub fn center_crop_box(width: usize, height: usize, size: usize) -> CropBox {
    let top = ((height.saturating_sub(size)) as f64 / 2.0).round_ties_even() as usize;
    let left = ((width.saturating_sub(size)) as f64 / 2.0).round_ties_even() as usize;
    CropBox {
        top,
        left,
        height: size.min(height),
        width: size.min(width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 horizontal pass must give the bytes of the portable one (which the reference
    /// tests compare with Pillow only on machines without AVX2).
    #[test]
    fn avx2_and_portable_horizontal_passes_give_identical_bytes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let (w, h) = (173, 9);
            let mut rng = crate::rng::SampleRng::from_parts(&[4]);
            let src: Vec<u8> = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                for out_w in [1, 7, 64, 100, 173, 400] {
                    let (b, k, ks) = coefficients(filter, w - 5, 0.0, (w - 5) as f32, out_w);
                    let mut a = vec![0u8; h * out_w * 3];
                    let mut p = a.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { horizontal_avx2(&src, w, 5, 0..h, &b, &k, ks, &mut a) };
                    horizontal_generic(&src, w, 5, 0..h, &b, &k, ks, &mut p);
                    assert_eq!(a, p, "{filter:?} → {out_w}");
                }
            }
        }
    }
}
