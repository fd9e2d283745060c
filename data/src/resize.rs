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

/// The taps of the AVX2 passes: every coefficient split as `k = kh·2¹¹ + kl` with
/// `0 ≤ kl < 2¹¹`, so both halves fit the signed 16-bit operands of `madd`. Per output
/// position `pairs` entries (the longest filter padded with zero taps to a multiple of
/// `2 · multiple` taps), each holding two neighbouring taps as
/// `[kl₀ | kl₁ << 16, kh₀ | kh₁ << 16]`, ready for a 32-bit broadcast.
#[cfg(target_arch = "x86_64")]
struct SplitTaps {
    pairs: usize,
    taps: Vec<[u32; 2]>,
}

#[cfg(target_arch = "x86_64")]
impl SplitTaps {
    /// `None` when a high half does not fit 16 bits (never for Pillow's normalised filters,
    /// whose taps stay near 2²² in magnitude).
    fn new(bounds: &[(usize, usize)], kk: &[i32], ksize: usize, multiple: usize) -> Option<Self> {
        let longest = bounds.iter().map(|b| b.1).max().unwrap_or(0);
        let pairs = longest.div_ceil(2 * multiple).max(1) * multiple;
        let mut taps = vec![[0u32; 2]; bounds.len() * pairs];
        for (x, &(_, n)) in bounds.iter().enumerate() {
            for (t, &k) in kk[x * ksize..x * ksize + n].iter().enumerate() {
                let hi = i16::try_from(k >> 11).ok()?;
                let lo = (k & 0x7ff) as u32;
                let shift = 16 * (t % 2);
                let pair = &mut taps[x * pairs + t / 2];
                pair[0] |= lo << shift;
                pair[1] |= (hi as u16 as u32) << shift;
            }
        }
        Some(Self { pairs, taps })
    }
}

/// [`horizontal_generic`] with AVX2 intrinsics, on two rows at once (one per 128-bit lane, so
/// each coefficient is loaded once for both). Two neighbouring taps of a pixel are shuffled
/// into 16-bit pairs `(r₀, r₁), (g₀, g₁), (b₀, b₁)` straight from the RGB bytes, and each half
/// of the split coefficients is one `madd` (16 × 16 → 32-bit products, pairs summed). The sums
/// are recombined as `(Σ p·kh) · 2¹¹ + Σ p·kl = Σ p·k` in 32-bit lanes: wrapping integer
/// arithmetic, so the result is Pillow's exact sum (which fits 32 bits) whatever the order of
/// the additions, then clipped by saturating packs as `clip8` does.
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
    // Quads of taps: one 16-byte load covers four pixels.
    let Some(taps) = SplitTaps::new(bounds, kk, ksize, 2) else {
        horizontal_generic(src, stride, x0, rows, bounds, kk, ksize, out);
        return;
    };
    let out_w = bounds.len();
    let in_w = bounds.iter().map(|&(xmin, n)| xmin + n).max().unwrap_or(0);
    // A pixel's taps are read as 16-byte loads from its first tap, the padded taps past its
    // filter: up to `padded` bytes from the row's start. Rows are read in place where the
    // image extends that far (the bytes past the region meet zero taps), else copied into
    // zero-padded buffers (the last rows of the image).
    let padded = in_w * 3 + taps.pairs * 6 + 16;
    let mut copy_a = vec![0u8; padded];
    let mut copy_b = vec![0u8; padded];
    let n_rows = rows.len();
    for oy in (0..n_rows).step_by(2) {
        let y = rows.start + oy;
        let s = (y * stride + x0) * 3;
        let row_a = padded_row(src, s, in_w * 3, &mut copy_a);
        // An odd last row is paired with itself; the second result is dropped.
        let second = oy + 1 < n_rows;
        let row_b = if second {
            padded_row(src, s + stride * 3, in_w * 3, &mut copy_b)
        } else {
            row_a
        };
        let (out_a, out_b) = out[oy * out_w * 3..].split_at_mut(out_w * 3);
        let out_b = if second {
            Some(&mut out_b[..out_w * 3])
        } else {
            None
        };
        // The tap count as a constant for the usual downscales, so the tap loop unrolls.
        let rows = TwoRows {
            a: row_a,
            b: row_b,
            out_a,
            out_b,
        };
        match taps.pairs {
            2 => two_rows_avx2::<2>(rows, bounds, &taps),
            4 => two_rows_avx2::<4>(rows, bounds, &taps),
            6 => two_rows_avx2::<6>(rows, bounds, &taps),
            8 => two_rows_avx2::<8>(rows, bounds, &taps),
            _ => two_rows_avx2::<0>(rows, bounds, &taps),
        }
    }
}

/// The `len` bytes of `src` from `start` followed by `copy.len() − len` more: in place if
/// `src` has them, else in `copy` (whose tail stays zero).
#[cfg(target_arch = "x86_64")]
fn padded_row<'a>(src: &'a [u8], start: usize, len: usize, copy: &'a mut [u8]) -> &'a [u8] {
    match src.get(start..start + copy.len()) {
        Some(row) => row,
        None => {
            copy[..len].copy_from_slice(&src[start..start + len]);
            copy
        }
    }
}

/// Two padded input rows (see [`horizontal_avx2`]) and their output rows; `out_b` is `None`
/// when `b` is a repeat of `a` whose result is not wanted.
#[cfg(target_arch = "x86_64")]
struct TwoRows<'a> {
    a: &'a [u8],
    b: &'a [u8],
    out_a: &'a mut [u8],
    out_b: Option<&'a mut [u8]>,
}

/// One output row from each of `rows.a` and `rows.b`. `PAIRS` is `taps.pairs`, or 0 for "read
/// it at run time".
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn two_rows_avx2<const PAIRS: usize>(rows: TwoRows, bounds: &[(usize, usize)], taps: &SplitTaps) {
    use std::arch::x86_64::*;
    let pairs = if PAIRS == 0 { taps.pairs } else { PAIRS };
    let TwoRows {
        a,
        b,
        out_a,
        mut out_b,
    } = rows;
    let out_w = bounds.len();
    // Packed results of four pixels, RGBX each, to 12 RGB bytes (per 128-bit lane).
    #[rustfmt::skip]
    let compact = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
    ));
    // (A closure here is not inlined: it would return its vector through memory.)
    macro_rules! pixel {
        ($x:expr) => {{
            let x = $x;
            let at = bounds[x].0 * 3;
            let len = pairs * 6 + 4;
            let k = &taps.taps[x * pairs..(x + 1) * pairs];
            convolve_two_rows_avx2(&a[at..at + len], &b[at..at + len], k)
        }};
    }
    let mut x = 0;
    // Four pixels at a time, stored as 16 bytes per row (the last 4 are overwritten next).
    while x + 6 <= out_w {
        let v01 = _mm256_packs_epi32(pixel!(x), pixel!(x + 1));
        let v23 = _mm256_packs_epi32(pixel!(x + 2), pixel!(x + 3));
        let bytes = _mm256_shuffle_epi8(_mm256_packus_epi16(v01, v23), compact);
        let o = x * 3;
        let lane_a: &mut [u8; 16] = (&mut out_a[o..o + 16]).try_into().expect("16 bytes");
        // SAFETY: `lane_a` is 16 writable bytes; the store has no alignment requirement.
        unsafe { _mm_storeu_si128(lane_a.as_mut_ptr().cast(), _mm256_castsi256_si128(bytes)) };
        if let Some(out_b) = out_b.as_deref_mut() {
            let lane_b: &mut [u8; 16] = (&mut out_b[o..o + 16]).try_into().expect("16 bytes");
            let hi = _mm256_extracti128_si256::<1>(bytes);
            // SAFETY: as above.
            unsafe { _mm_storeu_si128(lane_b.as_mut_ptr().cast(), hi) };
        }
        x += 4;
    }
    for x in x..out_w {
        let words = _mm256_packs_epi32(pixel!(x), _mm256_setzero_si256());
        let bytes = _mm256_packus_epi16(words, words);
        let o = x * 3;
        let px = (_mm256_cvtsi256_si32(bytes) as u32).to_le_bytes();
        out_a[o..o + 3].copy_from_slice(&px[..3]);
        if let Some(out_b) = out_b.as_deref_mut() {
            let px = (_mm256_extract_epi32::<4>(bytes) as u32).to_le_bytes();
            out_b[o..o + 3].copy_from_slice(&px[..3]);
        }
    }
}

/// One output pixel of two rows: `a` and `b` start at the pixel's first tap and hold
/// `6 · k.len() + 4` bytes; `k` are its split taps, a multiple of two pairs. Returns
/// `[r, g, b, 0]` of row `a` in the low lane and of row `b` in the high lane, after the shift
/// of `clip8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn convolve_two_rows_avx2(a: &[u8], b: &[u8], k: &[[u32; 2]]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // From the 16 bytes at a quad's first pixel: taps 0, 1 (or 2, 3) as 16-bit channel pairs
    // (r₀, r₁, g₀, g₁, b₀, b₁, 0, 0); −1 zeroes a byte.
    #[rustfmt::skip]
    let first = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
    ));
    #[rustfmt::skip]
    let second = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
    ));
    let load = |row: &[u8], at: usize| {
        let bytes: &[u8; 16] = row[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: `bytes` is 16 readable bytes; the load has no alignment requirement.
        unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
    };
    let mut lo = _mm256_setzero_si256();
    let mut hi = _mm256_setzero_si256();
    for (q, k) in k.chunks_exact(2).enumerate() {
        let px =
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(load(a, 12 * q)), load(b, 12 * q));
        let p01 = _mm256_shuffle_epi8(px, first);
        let p23 = _mm256_shuffle_epi8(px, second);
        let madd = |p, k: u32| _mm256_madd_epi16(p, _mm256_set1_epi32(k as i32));
        lo = _mm256_add_epi32(lo, _mm256_add_epi32(madd(p01, k[0][0]), madd(p23, k[1][0])));
        hi = _mm256_add_epi32(hi, _mm256_add_epi32(madd(p01, k[0][1]), madd(p23, k[1][1])));
    }
    let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    let sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<11>(hi), lo), half);
    _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(sum)
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

/// [`vertical_generic`] with AVX2 intrinsics: 32 bytes of an output row at a time, the taps
/// two rows at a time. The bytes of the two rows are interleaved into 16-bit pairs and
/// multiplied with the split coefficients of [`SplitTaps`] by `madd`, as in
/// [`horizontal_avx2`]; the recombined 32-bit sums are Pillow's exact sums.
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
    let row_len = w * 3;
    let taps = match SplitTaps::new(bounds, kk, ksize, 1) {
        Some(taps) if row_len >= 32 => taps,
        _ => return vertical_generic(src, w, bounds, kk, ksize, out),
    };
    let row = |y: usize| &src[y * row_len..(y + 1) * row_len];
    for (yy, (&(ymin, n), o)) in bounds.iter().zip(out.chunks_exact_mut(row_len)).enumerate() {
        let k = &taps.taps[yy * taps.pairs..][..n.div_ceil(2)];
        // The last 32 bytes may overlap the previous block (and write the same bytes again).
        let starts = (0..row_len - 31).step_by(32);
        let last = (!row_len.is_multiple_of(32)).then_some(row_len - 32);
        for at in starts.chain(last) {
            let mut acc = VerticalSums::new();
            for (j, k) in k.iter().enumerate() {
                let a = row(ymin + 2 * j);
                // An odd last tap is paired with a zero tap on the same row.
                let b = if 2 * j + 1 < n {
                    row(ymin + 2 * j + 1)
                } else {
                    a
                };
                acc.add(a, b, at, k);
            }
            acc.store(o, at);
        }
    }
}

/// The running sums of [`vertical_avx2`] for 32 bytes: low and high coefficient halves for
/// each group of eight bytes.
#[cfg(target_arch = "x86_64")]
struct VerticalSums {
    lo: [std::arch::x86_64::__m256i; 4],
    hi: [std::arch::x86_64::__m256i; 4],
}

#[cfg(target_arch = "x86_64")]
impl VerticalSums {
    #[target_feature(enable = "avx2")]
    #[inline]
    fn new() -> Self {
        use std::arch::x86_64::*;
        Self {
            lo: [_mm256_setzero_si256(); 4],
            hi: [_mm256_setzero_si256(); 4],
        }
    }

    /// Adds the 32 bytes at `at` of rows `a` and `b` times the split taps `k`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(&mut self, a: &[u8], b: &[u8], at: usize, k: &[u32; 2]) {
        use std::arch::x86_64::*;
        let load = |row: &[u8]| {
            let bytes: &[u8; 32] = row[at..at + 32].try_into().expect("32 bytes");
            // SAFETY: 32 readable bytes; unaligned load.
            unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
        };
        let (a, b) = (load(a), load(b));
        let (kl, kh) = (
            _mm256_set1_epi32(k[0] as i32),
            _mm256_set1_epi32(k[1] as i32),
        );
        for (g, (a, b)) in [
            (_mm256_castsi256_si128(a), _mm256_castsi256_si128(b)),
            (
                _mm256_extracti128_si256::<1>(a),
                _mm256_extracti128_si256::<1>(b),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            // (a₀, b₀), (a₁, b₁), … as 16-bit pairs, in byte order.
            let pairs = [
                _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b)),
                _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b)),
            ];
            for (i, p) in pairs.into_iter().enumerate() {
                let s = 2 * g + i;
                self.lo[s] = _mm256_add_epi32(self.lo[s], _mm256_madd_epi16(p, kl));
                self.hi[s] = _mm256_add_epi32(self.hi[s], _mm256_madd_epi16(p, kh));
            }
        }
    }

    /// `clip8` of the sums, stored as the 32 bytes at `at` of `out`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store(&self, out: &mut [u8], at: usize) {
        use std::arch::x86_64::*;
        let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let v: [__m256i; 4] = std::array::from_fn(|s| {
            let sum = _mm256_add_epi32(_mm256_slli_epi32::<11>(self.hi[s]), self.lo[s]);
            _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(sum, half))
        });
        let words = (
            _mm256_packs_epi32(v[0], v[1]),
            _mm256_packs_epi32(v[2], v[3]),
        );
        // The packs work per 128-bit lane: put the 4-byte groups back in order.
        let bytes = _mm256_permutevar8x32_epi32(
            _mm256_packus_epi16(words.0, words.1),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        );
        let out: &mut [u8; 32] = (&mut out[at..at + 32]).try_into().expect("32 bytes");
        // SAFETY: 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes) };
    }
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

    /// The same for the vertical pass: rows narrower than one 32-byte block, rows that end in
    /// an overlapping block, odd and even tap counts.
    #[test]
    fn avx2_and_portable_vertical_passes_give_identical_bytes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut rng = crate::rng::SampleRng::from_parts(&[5]);
            for (w, h) in [(5, 40), (11, 40), (32, 61), (37, 173)] {
                let src: Vec<u8> = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
                for filter in [Filter::Bilinear, Filter::Bicubic] {
                    for out_h in [1, 7, 20, 39, 100, 400] {
                        let (b, k, ks) = coefficients(filter, h, 0.0, h as f32, out_h);
                        let mut a = vec![0u8; w * out_h * 3];
                        let mut p = a.clone();
                        // SAFETY: AVX2 is present (checked above).
                        unsafe { vertical_avx2(&src, w, &b, &k, ks, &mut a) };
                        vertical_generic(&src, w, &b, &k, ks, &mut p);
                        assert_eq!(a, p, "{w} × {h}, {filter:?} → {out_h}");
                    }
                }
            }
        }
    }
}
