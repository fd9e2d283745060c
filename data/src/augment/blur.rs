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

fn transpose3(src: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for (y, row) in src.chunks_exact(width * 3).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let d = (x * height + y) * 3;
            out[d..d + 3].copy_from_slice(px);
        }
    }
    out
}

/// `ImagingHorizontalBoxBlur` applied along columns (Pillow transposes for its vertical passes;
/// the arithmetic per column is the same), a whole row at a time so it vectorises. The
/// horizontal passes run on the transposed image.
fn vertical_box_blur(data: &mut [u8], width: usize, height: usize, radius_f: f32) {
    let radius = radius_f as i32 as usize;
    let ww = ((1u32 << 24) as f32 / (radius_f * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24).wrapping_sub((radius as u32 * 2 + 1).wrapping_mul(ww))) / 2;
    let edge_a = (radius + 1).min(height);
    let edge_b = height.saturating_sub(radius + 1);
    let lasty = height - 1;
    let stride = width * 3;
    let src = data.to_vec();
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
    // Horizontal passes first, as Pillow: along the columns of the transposed image.
    let mut t = transpose3(&img.data, w, h);
    for _ in 0..PASSES {
        vertical_box_blur(&mut t, h, w, r);
    }
    img.data = transpose3(&t, h, w);
    for _ in 0..PASSES {
        vertical_box_blur(&mut img.data, w, h, r);
    }
}
