//! Pillow's `ImageFilter.GaussianBlur(radius)`: not an exact Gaussian but three passes of an
//! "extended" box blur per axis (Gwosdek et al. 2011), in 8.24 fixed point, horizontal passes
//! first. Reproduced operation by operation so the output is identical.

use crate::image::RgbImage;

/// Pillow's `_gaussian_blur_radius`: the fractional box radius with the same variance as a
/// Gaussian of `sigma` after `passes` passes (mixed `float`/`double` as in C).
fn box_radius(sigma: f32, passes: i32) -> f32 {
    let sigma2: f32 = sigma * sigma / passes as f32;
    let big_l: f32 = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l: f32 = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a: f32 = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// Transposes `src` (`width × height` RGB pixels) into `out`, in tiles so that both sides
/// stay in cache.
fn transpose3(src: &[u8], width: usize, height: usize, out: &mut [u8]) {
    const TILE: usize = 16;
    for y0 in (0..height).step_by(TILE) {
        for x0 in (0..width).step_by(TILE) {
            for y in y0..(y0 + TILE).min(height) {
                for x in x0..(x0 + TILE).min(width) {
                    let s = (y * width + x) * 3;
                    let d = (x * height + y) * 3;
                    out[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
    }
}

/// `ImagingHorizontalBoxBlur` applied along columns (Pillow transposes for its vertical passes;
/// the arithmetic per column is the same), a whole row at a time so it vectorises. The
/// horizontal passes run on the transposed image. Reads `src`, writes `dst`.
fn vertical_box_blur(src: &[u8], dst: &mut [u8], width: usize, height: usize, radius_f: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { vertical_box_blur_avx2(src, dst, width, height, radius_f) };
        return;
    }
    vertical_box_blur_generic(src, dst, width, height, radius_f);
}

/// [`vertical_box_blur_generic`] compiled for AVX2: its 32-bit multiplies then vectorise (the
/// x86-64 baseline has no 32-bit vector multiply).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_box_blur_avx2(src: &[u8], dst: &mut [u8], width: usize, height: usize, radius_f: f32) {
    vertical_box_blur_generic(src, dst, width, height, radius_f);
}

#[inline(always)]
fn vertical_box_blur_generic(
    src: &[u8],
    data: &mut [u8],
    width: usize,
    height: usize,
    radius_f: f32,
) {
    let radius = radius_f as i32 as usize;
    let ww = ((1u32 << 24) as f32 / (radius_f * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24).wrapping_sub((radius as u32 * 2 + 1).wrapping_mul(ww))) / 2;
    let edge_a = (radius + 1).min(height);
    let edge_b = height.saturating_sub(radius + 1);
    let lasty = height - 1;
    let stride = width * 3;
    let row = |y: usize| &src[y * stride..(y + 1) * stride];
    let mut acc: Vec<u32> = row(0)
        .iter()
        .map(|&v| (v as u32).wrapping_mul(radius as u32 + 1))
        .collect();
    for y in 0..edge_a.saturating_sub(1) {
        for (a, &v) in acc.iter_mut().zip(row(y)) {
            *a = a.wrapping_add(v as u32);
        }
    }
    for (a, &v) in acc.iter_mut().zip(row(lasty)) {
        *a = a.wrapping_add((v as u32).wrapping_mul((radius + 1 - edge_a) as u32));
    }
    for y in 0..height {
        // (subtract, add, left, right) rows, as the three regions of the line blur.
        let (sub, add, left, right) = if edge_a <= edge_b {
            if y < edge_a {
                (0, y + radius, 0, y + radius + 1)
            } else if y < edge_b {
                (y - radius - 1, y + radius, y - radius - 1, y + radius + 1)
            } else {
                (y - radius - 1, lasty, y - radius - 1, lasty)
            }
        } else if y < edge_b {
            (0, y + radius, 0, y + radius + 1)
        } else if y < edge_a {
            (0, lasty, 0, lasty)
        } else {
            (y - radius - 1, lasty, y - radius - 1, lasty)
        };
        let (rs, ra, rl, rr) = (row(sub), row(add), row(left), row(right));
        let out = &mut data[y * stride..(y + 1) * stride];
        let lanes = acc
            .iter_mut()
            .zip(out.iter_mut())
            .zip(rs.iter().zip(ra))
            .zip(rl.iter().zip(rr));
        for (((a, o), (&s, &ad)), (&l, &r)) in lanes {
            *a = a.wrapping_add(ad as u32).wrapping_sub(s as u32);
            let bulk = a
                .wrapping_mul(ww)
                .wrapping_add((l as u32 + r as u32).wrapping_mul(fw));
            *o = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
}

/// `img.filter(ImageFilter.GaussianBlur(radius=sigma))`.
pub fn gaussian_blur(img: &mut RgbImage, sigma: f32) {
    if sigma == 0.0 || img.width == 0 || img.height == 0 {
        return;
    }
    let r = box_radius(sigma, PASSES);
    if r == 0.0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && avx2::applies(img.width, r) {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `target_feature` function.
        unsafe { avx2::gaussian_blur(img, r) };
        return;
    }
    gaussian_blur_generic(img, r);
}

/// Box passes per axis.
const PASSES: i32 = 3;

/// The blur with box radius `r` (> 0): Pillow's line blur, on columns of the transposed image
/// for the horizontal passes.
fn gaussian_blur_generic(img: &mut RgbImage, r: f32) {
    let (w, h) = (img.width, img.height);
    // Horizontal passes first, as Pillow: along the columns of the transposed image. Two
    // buffers alternate as source and destination of the passes.
    let mut a = vec![0u8; img.data.len()];
    let mut b = vec![0u8; img.data.len()];
    transpose3(&img.data, w, h, &mut a);
    for _ in 0..PASSES {
        vertical_box_blur(&a, &mut b, h, w, r);
        std::mem::swap(&mut a, &mut b);
    }
    transpose3(&a, h, w, &mut b);
    for _ in 0..PASSES {
        vertical_box_blur(&b, &mut a, w, h, r);
        std::mem::swap(&mut a, &mut b);
    }
    img.data = b;
}

/// The blur with AVX2 and no transposes, for the small radii of the augmentations. Pillow's
/// line blur keeps a running window sum, but what it computes at position `i` is
/// `(ww · Σ_{|k| ≤ R} p[i+k] + fw · (p[i−R−1] + p[i+R+1]) + 2²³) >> 24`, indices clamped to
/// the line (its edge cases add the first and last pixel that many times). For `R ≤ 3` that
/// sum is a few 16-bit vector adds of 16-byte loads, shifted by whole pixels along the row for
/// the horizontal passes and taken from the neighbouring rows for the vertical ones, so no
/// pass needs a transpose or a running state. The weights are split as `ww = wh·2¹⁵ + wl`
/// (and `fw` alike) so that each half is one `madd` of (window sum, outer pair) with
/// (wl, fl), (wh, fh); the recombined 32-bit sum is Pillow's (it stays below 2³², where its
/// `UINT32` would wrap).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PASSES;
    use crate::image::RgbImage;

    /// Largest integer box radius of this path (σ ≤ 2, the augmentations' range, gives 1).
    const MAX_RADIUS: usize = 3;

    /// Whether this path takes images `width` pixels wide at box radius `r`: a row must hold
    /// one 16-byte block.
    pub(super) fn applies(width: usize, r: f32) -> bool {
        (r as usize) <= MAX_RADIUS && width * 3 >= 16
    }

    /// Pillow's weights for box radius `r`, split for `madd`: `(wl | fl << 16, wh | fh << 16)`.
    fn weights(r: f32) -> (i32, i32) {
        let radius = r as i32 as u32;
        let ww = ((1u32 << 24) as f32 / (r * 2.0 + 1.0)) as u32;
        let fw = ((1u32 << 24).wrapping_sub((radius * 2 + 1).wrapping_mul(ww))) / 2;
        let lo = (ww & 0x7fff) | (fw & 0x7fff) << 16;
        let hi = (ww >> 15) | (fw >> 15) << 16;
        (lo as i32, hi as i32)
    }

    /// See the module documentation; `r` as in [`super::gaussian_blur`].
    #[target_feature(enable = "avx2")]
    pub(super) fn gaussian_blur(img: &mut RgbImage, r: f32) {
        let (w, h) = (img.width, img.height);
        let radius = r as usize;
        let weights = weights(r);
        let mut tmp = vec![0u8; img.data.len()];
        // Horizontal passes first, as Pillow; the buffers alternate and the last pass writes
        // into the image.
        for pass in 0..2 * PASSES {
            let (src, dst) = if pass % 2 == 0 {
                (&img.data, &mut tmp)
            } else {
                (&tmp, &mut img.data)
            };
            let horizontal = pass < PASSES;
            match (radius, horizontal) {
                (0, true) => rows::<0>(src, dst, w, weights),
                (1, true) => rows::<1>(src, dst, w, weights),
                (2, true) => rows::<2>(src, dst, w, weights),
                (_, true) => rows::<3>(src, dst, w, weights),
                (0, false) => columns::<0>(src, dst, w, h, weights),
                (1, false) => columns::<1>(src, dst, w, h, weights),
                (2, false) => columns::<2>(src, dst, w, h, weights),
                (_, false) => columns::<3>(src, dst, w, h, weights),
            }
        }
    }

    /// Starts of the 16-byte blocks covering a `len`-byte row (`len ≥ 16`): the last one
    /// overlaps its neighbour instead of running past the end (it writes the same bytes again).
    fn block_starts(len: usize) -> impl Iterator<Item = usize> {
        (0..len - 15)
            .step_by(16)
            .chain((!len.is_multiple_of(16)).then_some(len - 16))
    }

    /// 16 bytes at `at` as 16-bit lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load16(data: &[u8], at: usize) -> __m256i {
        let bytes: &[u8; 16] = data[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: 16 readable bytes; unaligned load.
        _mm256_cvtepu8_epi16(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
    }

    /// One output byte per 16-bit lane from the window sums and the outer pairs, stored at
    /// `at`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store_blurred(out: &mut [u8], at: usize, sum: __m256i, outer: __m256i, w: (i32, i32)) {
        let (lo, hi) = (_mm256_set1_epi32(w.0), _mm256_set1_epi32(w.1));
        let value = |pairs: __m256i| {
            let bulk = _mm256_add_epi32(
                _mm256_slli_epi32::<15>(_mm256_madd_epi16(pairs, hi)),
                _mm256_madd_epi16(pairs, lo),
            );
            _mm256_srli_epi32::<24>(_mm256_add_epi32(bulk, _mm256_set1_epi32(1 << 23)))
        };
        // unpack → pack keeps the order within each 128-bit lane.
        let words = _mm256_packs_epi32(
            value(_mm256_unpacklo_epi16(sum, outer)),
            value(_mm256_unpackhi_epi16(sum, outer)),
        );
        let bytes = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(words, words));
        let out: &mut [u8; 16] = (&mut out[at..at + 16]).try_into().expect("16 bytes");
        // SAFETY: 16 writable bytes; unaligned store.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm256_castsi256_si128(bytes)) };
    }

    /// One horizontal box pass of radius `R` over rows of `w` RGB pixels. Each row is copied
    /// with its edge pixels repeated `R + 1` times on both sides (the clamped indices), so the
    /// taps are plain loads at offsets of ±3 bytes.
    #[target_feature(enable = "avx2")]
    fn rows<const R: usize>(src: &[u8], dst: &mut [u8], w: usize, weights: (i32, i32)) {
        let len = w * 3;
        let edge = (R + 1) * 3;
        let mut padded = vec![0u8; len + 2 * edge];
        for (row, out) in src.chunks_exact(len).zip(dst.chunks_exact_mut(len)) {
            padded[edge..edge + len].copy_from_slice(row);
            for k in 0..=R {
                padded[k * 3..k * 3 + 3].copy_from_slice(&row[..3]);
                let end = edge + len + k * 3;
                padded[end..end + 3].copy_from_slice(&row[len - 3..]);
            }
            for at in block_starts(len) {
                let c = at + edge;
                let mut sum = load16(&padded, c);
                for k in 1..=R {
                    let pair =
                        _mm256_add_epi16(load16(&padded, c - 3 * k), load16(&padded, c + 3 * k));
                    sum = _mm256_add_epi16(sum, pair);
                }
                let outer = _mm256_add_epi16(load16(&padded, c - edge), load16(&padded, c + edge));
                store_blurred(out, at, sum, outer, weights);
            }
        }
    }

    /// One vertical box pass of radius `R` over `h` rows of `w` RGB pixels: the taps are rows
    /// at clamped indices.
    #[target_feature(enable = "avx2")]
    fn columns<const R: usize>(
        src: &[u8],
        dst: &mut [u8],
        w: usize,
        h: usize,
        weights: (i32, i32),
    ) {
        let len = w * 3;
        for (y, out) in dst.chunks_exact_mut(len).enumerate() {
            // Rows y − R − 1 ..= y + R + 1, clamped.
            let mut taps: [&[u8]; 2 * MAX_RADIUS + 3] = [&[]; 2 * MAX_RADIUS + 3];
            for (i, tap) in taps.iter_mut().enumerate().take(2 * R + 3) {
                let t = (y + i).saturating_sub(R + 1).min(h - 1);
                *tap = &src[t * len..(t + 1) * len];
            }
            for at in block_starts(len) {
                let mut sum = load16(taps[R + 1], at);
                for k in 1..=R {
                    let pair =
                        _mm256_add_epi16(load16(taps[R + 1 - k], at), load16(taps[R + 1 + k], at));
                    sum = _mm256_add_epi16(sum, pair);
                }
                let outer = _mm256_add_epi16(load16(taps[0], at), load16(taps[2 * R + 2], at));
                store_blurred(out, at, sum, outer, weights);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 blur must give the bytes of the portable one (which the reference tests compare
    /// with Pillow only on machines without AVX2): every box radius it takes, images from one
    /// 16-byte block wide and one row high upwards.
    #[test]
    fn avx2_and_portable_blurs_give_identical_bytes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut rng = crate::rng::SampleRng::from_parts(&[7]);
            for (w, h) in [
                (6, 1),
                (6, 2),
                (7, 3),
                (11, 5),
                (16, 9),
                (33, 8),
                (64, 47),
                (97, 30),
            ] {
                let mut img = RgbImage::new(w, h);
                img.data.iter_mut().for_each(|v| *v = rng.below(256) as u8);
                for sigma in [0.1f32, 0.4, 0.7, 1.0, 1.37, 2.0, 2.9, 3.6, 4.4, 5.3] {
                    let r = box_radius(sigma, PASSES);
                    if r == 0.0 || !avx2::applies(w, r) {
                        continue;
                    }
                    let mut a = img.clone();
                    let mut p = img.clone();
                    // SAFETY: AVX2 is present (checked above).
                    unsafe { avx2::gaussian_blur(&mut a, r) };
                    gaussian_blur_generic(&mut p, r);
                    assert_eq!(a.data, p.data, "{w} × {h}, σ = {sigma} (box radius {r})");
                }
            }
        }
    }
}
