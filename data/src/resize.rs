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

/// Pillow's `precompute_coeffs` for the bilinear filter, normalised to fixed point
/// (`normalize_coeffs_8bpc`): per output position the first input index, the tap count and the
/// taps (`ksize` per position).
fn coefficients(
    in_size: usize,
    in0: f32,
    in1: f32,
    out_size: usize,
) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
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
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let t = t.abs();
            *wx = if t < 1.0 { 1.0 - t } else { 0.0 };
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
    for (oy, y) in rows.enumerate() {
        let row = &src[(y * stride + x0) * 3..];
        let orow = &mut out[oy * out_w * 3..(oy + 1) * out_w * 3];
        for (xx, &(xmin, n)) in bounds.iter().enumerate() {
            let k = &kk[xx * ksize..xx * ksize + n];
            let px = &row[xmin * 3..(xmin + n) * 3];
            let half = 1i32 << (PRECISION_BITS - 1);
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (p, &kv) in px.chunks_exact(3).zip(k) {
                s0 += p[0] as i32 * kv;
                s1 += p[1] as i32 * kv;
                s2 += p[2] as i32 * kv;
            }
            orow[xx * 3] = clip8(s0);
            orow[xx * 3 + 1] = clip8(s1);
            orow[xx * 3 + 2] = clip8(s2);
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
            ResizeImpl::Pillow => self.pillow(src, b, &mut out),
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
                self.resizer
                    .resize(&cropped, &mut dst, &self.options)
                    .expect("same pixel type on both sides");
            }
        }
        out
    }

    /// `ImagingResampleInner` on the crop `b` of `src`. Pillow ≥ 13 runs the vertical pass
    /// first when the height shrinks, by more than twice as many pixels as the width does
    /// (found by testing against Pillow 13; the order changes rounding, so it is followed here).
    fn pillow(&mut self, src: &RgbImage, b: &CropBox, out: &mut RgbImage) {
        let (out_w, out_h) = (out.width, out.height);
        let need_h = out_w != b.width;
        let need_v = out_h != b.height;
        let (hb, hk, hks) = coefficients(b.width, 0.0, b.width as f32, out_w);
        let (mut vb, vk, vks) = coefficients(b.height, 0.0, b.height as f32, out_h);
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
