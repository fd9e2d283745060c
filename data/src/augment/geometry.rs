//! Geometric operations with Pillow's nearest-neighbour affine transform
//! (`Image.transform(..., AFFINE, NEAREST)`, 16.16 fixed point where Pillow uses it) and
//! torchvision's matrices for `rotate` and `affine`.

use crate::image::RgbImage;

/// `RandomHorizontalFlip` / `ImageOps.mirror`.
pub fn hflip(img: &mut RgbImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

fn rotate_180(img: &mut RgbImage) {
    let n = img.width * img.height;
    for i in 0..n / 2 {
        let (a, b) = (i * 3, (n - 1 - i) * 3);
        for c in 0..3 {
            img.data.swap(a + c, b + c);
        }
    }
}

/// Transposes for 90° rotations of square images (`Image.transpose`).
fn rotate_90(img: &mut RgbImage, counter_clockwise: bool) {
    let (w, h) = (img.width, img.height);
    let mut out = vec![0u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            // ROTATE_90 (counter-clockwise): out(x', y') = in(w-1-y', x').
            let (sx, sy) = if counter_clockwise {
                (w - 1 - y, x)
            } else {
                (y, h - 1 - x)
            };
            let (dx, dy) = (x, y);
            let s = (sy * w + sx) * 3;
            let d = (dy * w + dx) * 3;
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    img.data = out;
}

#[inline]
fn coord(v: f64) -> i64 {
    if v < 0.0 { -1 } else { v as i64 }
}

fn check_fixed(a: &[f64; 6], x: f64, y: f64) -> bool {
    (x * a[0] + y * a[1] + a[2]).abs() < 32768.0 && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
}

/// `Image.transform(size, AFFINE, a, NEAREST)` with zero fill, output the same size as `src`.
/// `a` maps output pixel centres to input coordinates (Pillow's convention).
pub fn affine_nearest(src: &RgbImage, a: &[f64; 6]) -> RgbImage {
    let data = affine_nearest_raw(&src.data, src.width, src.height, 3, a, &[0, 0, 0]);
    RgbImage {
        width: src.width,
        height: src.height,
        data,
    }
}

/// [`affine_nearest`] on interleaved pixels of `channels` bytes (1 for label masks), filling
/// pixels that map outside the input with `fill` (Pillow's `fillcolor`).
pub fn affine_nearest_raw(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    a: &[f64; 6],
    fill: &[u8],
) -> Vec<u8> {
    let c = channels;
    let mut out = Vec::with_capacity(w * h * c);
    for _ in 0..w * h {
        out.extend_from_slice(&fill[..c]);
    }
    let put = |out: &mut [u8], x: usize, y: usize, xin: i64, yin: i64| {
        if xin >= 0 && (xin as usize) < w && yin >= 0 && (yin as usize) < h {
            let s = (yin as usize * w + xin as usize) * c;
            let d = (y * w + x) * c;
            out[d..d + c].copy_from_slice(&src[s..s + c]);
        }
    };
    if a[1] == 0.0 && a[3] == 0.0 {
        // ImagingScaleAffine.
        let mut yo = a[5] + a[4] * 0.5;
        for y in 0..h {
            let yi = coord(yo);
            let mut xo = a[2] + a[0] * 0.5;
            for x in 0..w {
                put(&mut out, x, y, coord(xo), yi);
                xo += a[0];
            }
            yo += a[4];
        }
        return out;
    }
    let (wf, hf) = (w as f64, h as f64);
    if check_fixed(a, 0.0, 0.0)
        && check_fixed(a, wf, hf)
        && check_fixed(a, 0.0, hf)
        && check_fixed(a, wf, 0.0)
    {
        // affine_fixed: 16.16 fixed point.
        let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
        let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
        let mut a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
        let mut a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
        for y in 0..h {
            let (mut xx, mut yy) = (a2, a5);
            for x in 0..w {
                put(&mut out, x, y, (xx >> 16) as i64, (yy >> 16) as i64);
                xx = xx.wrapping_add(a0);
                yy = yy.wrapping_add(a3);
            }
            a2 = a2.wrapping_add(a1);
            a5 = a5.wrapping_add(a4);
        }
        return out;
    }
    let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
    let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
    for y in 0..h {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..w {
            put(&mut out, x, y, coord(xx), coord(yy));
            xx += a[0];
            yy += a[3];
        }
        xo += a[1];
        yo += a[4];
    }
    out
}

/// Interpolating filters of Pillow's generic transform (`ImagingGenericTransform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformFilter {
    /// `bilinear_filter32RGB`: two taps per axis, truncated to `u8`.
    Bilinear,
    /// `bicubic_filter32RGB`: four taps per axis (`a = −0.5`), clipped and truncated.
    Bicubic,
}

/// C's `FLOOR` macro of Geometry.c.
#[inline]
fn floor_i(v: f64) -> i64 {
    if v < 0.0 { v.floor() as i64 } else { v as i64 }
}

/// `Image.transform(size, AFFINE, a, BILINEAR | BICUBIC, fillcolor=fill)` on an RGB image, output
/// the same size: every output pixel centre is mapped through `a`, pixels whose source lies
/// outside the input get `fill`, and the taps are clamped to the border as Pillow does.
pub fn affine_filtered(
    src: &RgbImage,
    a: &[f64; 6],
    filter: TransformFilter,
    fill: [u8; 3],
) -> RgbImage {
    let (w, h) = (src.width, src.height);
    let mut out = RgbImage::new(w, h);
    let (wi, hi) = (w as i64, h as i64);
    let xclip = |x: i64| x.clamp(0, wi - 1) as usize;
    let px = |x: usize, y: usize, b: usize| src.data[(y * w + x) * 3 + b] as f64;
    for y in 0..h {
        for x in 0..w {
            let d = (y * w + x) * 3;
            let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = a[0] * xf + a[1] * yf + a[2];
            let yin = a[3] * xf + a[4] * yf + a[5];
            if xin < 0.0 || xin >= w as f64 || yin < 0.0 || yin >= h as f64 {
                out.data[d..d + 3].copy_from_slice(&fill);
                continue;
            }
            let (xin, yin) = (xin - 0.5, yin - 0.5);
            let (xi, yi) = (floor_i(xin), floor_i(yin));
            let (dx, dy) = (xin - xi as f64, yin - yi as f64);
            match filter {
                TransformFilter::Bilinear => {
                    let (x0, x1) = (xclip(xi), xclip(xi + 1));
                    let row0 = yi.clamp(0, hi - 1) as usize;
                    let row1 = (yi + 1 >= 0 && yi + 1 < hi).then_some((yi + 1) as usize);
                    for b in 0..3 {
                        let lerp = |a: f64, c: f64, t: f64| a + (c - a) * t;
                        let v1 = lerp(px(x0, row0, b), px(x1, row0, b), dx);
                        let v2 = row1.map_or(v1, |r| lerp(px(x0, r, b), px(x1, r, b), dx));
                        out.data[d + b] = lerp(v1, v2, dy) as u8;
                    }
                }
                TransformFilter::Bicubic => {
                    let (xi, yi) = (xi - 1, yi - 1);
                    let xs = [xclip(xi), xclip(xi + 1), xclip(xi + 2), xclip(xi + 3)];
                    let cubic = |v1: f64, v2: f64, v3: f64, v4: f64, t: f64| {
                        let p1 = v2;
                        let p2 = -v1 + v3;
                        let p3 = 2.0 * (v1 - v2) + v3 - v4;
                        let p4 = -v1 + v2 - v3 + v4;
                        p1 + t * (p2 + t * (p3 + t * p4))
                    };
                    for b in 0..3 {
                        let row = |r: usize| {
                            cubic(
                                px(xs[0], r, b),
                                px(xs[1], r, b),
                                px(xs[2], r, b),
                                px(xs[3], r, b),
                                dx,
                            )
                        };
                        let inside =
                            |k: i64| (yi + k >= 0 && yi + k < hi).then_some((yi + k) as usize);
                        let v1 = row(yi.clamp(0, hi - 1) as usize);
                        let v2 = inside(1).map_or(v1, row);
                        let v3 = inside(2).map_or(v2, row);
                        let v4 = inside(3).map_or(v3, row);
                        let v = cubic(v1, v2, v3, v4, dy);
                        out.data[d + b] = if v <= 0.0 {
                            0
                        } else if v >= 255.0 {
                            255
                        } else {
                            v as u8
                        };
                    }
                }
            }
        }
    }
    out
}

/// torchvision's `_get_inverse_affine_matrix` for a PIL image of `w × h` (centre
/// `(w/2, h/2)`, no translation): maps output pixels to input pixels for a rotation by
/// `angle_deg` (counter-clockwise), scale `scale` and shear `shear_x_deg` along x.
pub fn inverse_affine_matrix(
    w: usize,
    h: usize,
    angle_deg: f64,
    scale: f64,
    shear_x_deg: f64,
) -> [f64; 6] {
    let (cx, cy) = (w as f64 * 0.5, h as f64 * 0.5);
    let rot = angle_deg.to_radians();
    let sx = shear_x_deg.to_radians();
    let sy = 0.0f64.to_radians();
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    for v in &mut m {
        *v /= scale;
    }
    m[2] += m[0] * (-cx - 0.0) + m[1] * (-cy - 0.0);
    m[5] += m[3] * (-cx - 0.0) + m[4] * (-cy - 0.0);
    m[2] += cx;
    m[5] += cy;
    m
}

/// Python's `round(x, 15)`: correctly rounded to 15 decimals.
fn round15(x: f64) -> f64 {
    format!("{x:.15}").parse().unwrap_or(x)
}

/// Python's float `%` (result has the sign of the divisor).
fn py_mod(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// torchvision `F.rotate(img, angle, NEAREST, fill=0)` = Pillow `Image.rotate(angle)` about the
/// image centre, same size.
pub fn rotate(img: &mut RgbImage, angle_deg: f64) {
    let angle = py_mod(angle_deg, 360.0);
    if angle == 0.0 {
        return;
    }
    if angle == 180.0 {
        rotate_180(img);
        return;
    }
    if (angle == 90.0 || angle == 270.0) && img.width == img.height {
        rotate_90(img, angle == 90.0);
        return;
    }
    let (w, h) = (img.width as f64, img.height as f64);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let t = -angle.to_radians();
    let mut m = [
        round15(t.cos()),
        round15(t.sin()),
        0.0,
        round15(-t.sin()),
        round15(t.cos()),
        0.0,
    ];
    let (x, y) = (-cx, -cy);
    // Pillow's `transform(x, y, matrix)`; the translation terms are still 0 here.
    m[2] += m[0] * x + m[1] * y;
    m[5] += m[3] * x + m[4] * y;
    m[2] += cx;
    m[5] += cy;
    *img = affine_nearest(img, &m);
}

/// torchvision `F.affine(img, angle=0, translate=[0, 0], scale=1, shear=[shear_deg, 0],
/// NEAREST, fill=0)` about the image centre (the ShearX op of the AutoAugment used by the
/// method, which passes `degrees(magnitude)`).
pub fn shear_x(img: &mut RgbImage, shear_deg: f64) {
    let m = inverse_affine_matrix(img.width, img.height, 0.0, 1.0, shear_deg);
    *img = affine_nearest(img, &m);
}
