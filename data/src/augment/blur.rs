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
    const PASSES: i32 = 3;
    let r = box_radius(sigma, PASSES);
    if r == 0.0 {
        return;
    }
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
