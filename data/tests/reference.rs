//! The pipeline against torchvision + Pillow, run through the project virtualenv on real images
//! (sklearn's sample photos and Fashion-MNIST). Pixel operations must match exactly; resampling
//! within the tolerance stated at each test.

mod common;

use std::cell::RefCell;
use std::path::Path;

use common::{
    diff, fashion_mnist_images, fixtures, read_image, read_npy_f64, reference, write_image,
};
use kontrast_data::augment::autoaugment::{self, Op};
use kontrast_data::augment::{blur, color, geometry};
use kontrast_data::crop::{self, CropBox};
use kontrast_data::resize::{Resampler, center_crop_box, shorter_side_size};
use kontrast_data::{RgbImage, SampleRng};

/// Test inputs: two photo patches, an odd-sized patch and two Fashion-MNIST images.
fn inputs(dir: &Path, with_fashion_mnist: bool) -> Vec<(String, RgbImage)> {
    fixtures(dir);
    let china = read_image(&dir.join("china.npy"));
    let mut odd = RgbImage::new(103, 77);
    for y in 0..77 {
        let s = ((150 + y) * china.width + 300) * 3;
        odd.data[y * 103 * 3..(y + 1) * 103 * 3].copy_from_slice(&china.data[s..s + 103 * 3]);
    }
    let mut all = vec![
        (
            "china_small".to_string(),
            read_image(&dir.join("china_small.npy")),
        ),
        (
            "flower_small".to_string(),
            read_image(&dir.join("flower_small.npy")),
        ),
        ("odd".to_string(), odd),
    ];
    if with_fashion_mnist {
        for (i, img) in fashion_mnist_images(2).into_iter().enumerate() {
            all.push((format!("fmnist{i}"), img));
        }
    }
    for (name, img) in &all {
        write_image(&dir.join(format!("{name}.npy")), img);
    }
    all
}

/// Runs `ops` (one spelling per line) in Python on every input and compares each output with
/// `ours`, allowing `max_level` difference on at most `max_fraction` of the bytes.
fn compare<F>(ops: &[String], ours: F, max_level: u8, max_fraction: f64, with_fashion_mnist: bool)
where
    F: Fn(&RgbImage, usize) -> RgbImage,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let inputs = inputs(dir.path(), with_fashion_mnist);
    let spec = dir.path().join("ops.txt");
    std::fs::write(&spec, ops.join("\n")).expect("write spec");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let mut args = vec![
        "ops".to_string(),
        spec.display().to_string(),
        out.display().to_string(),
    ];
    args.extend(
        inputs
            .iter()
            .map(|(n, _)| dir.path().join(format!("{n}.npy")).display().to_string()),
    );
    reference(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut failures = Vec::new();
    for (name, img) in &inputs {
        for (i, op) in ops.iter().enumerate() {
            let theirs = read_image(&out.join(format!("{name}_{i}.npy")));
            let mine = ours(img, i);
            let (max, frac) = diff(&mine, &theirs);
            if max > max_level || frac > max_fraction {
                failures.push(format!(
                    "{name}: `{op}`: max diff {max}, {:.3}% of bytes differ",
                    frac * 100.0
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn spell(op: &Op) -> String {
    match *op {
        Op::Posterize(b) => format!("posterize {b}"),
        Op::Solarize(t) => format!("solarize {t}"),
        Op::AutoContrast => "autocontrast".into(),
        Op::Equalize => "equalize".into(),
        Op::Invert => "invert".into(),
        Op::Rotate(d) => format!("rotate {d}"),
        Op::ShearX(d) => format!("shear_x {d}"),
        Op::Color(f) => format!("color {f}"),
        Op::Contrast(f) => format!("contrast {f}"),
        Op::Sharpness(f) => format!("sharpness {f}"),
    }
}

#[test]
fn every_autoaugment_operation_matches_torchvision_exactly() {
    // Every operation the ImageNet policy can produce, with both signs: drawn until each
    // distinct operation has been seen (a few thousand draws cover all of them).
    let mut ops: Vec<Op> = Vec::new();
    let mut rng = SampleRng::from_parts(&[7]);
    for _ in 0..20_000 {
        for op in autoaugment::sample_ops(&mut rng) {
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
    }
    assert!(
        ops.len() >= 30,
        "only {} distinct operations drawn",
        ops.len()
    );
    let spelled: Vec<String> = ops.iter().map(spell).collect();
    compare(
        &spelled,
        |img, i| {
            let mut out = img.clone();
            autoaugment::apply(&mut out, &ops[i]);
            out
        },
        0,
        0.0,
        true,
    );
}

#[test]
fn moco_colour_blur_grayscale_and_flip_match_torchvision_exactly() {
    let mut ops: Vec<String> = Vec::new();
    for f in [0.6, 0.83, 1.0, 1.27, 1.4] {
        ops.push(format!("brightness {f}"));
        ops.push(format!("contrast {f}"));
        ops.push(format!("color {f}"));
    }
    for h in [-0.1, -0.037, 0.0, 0.004, 0.061, 0.1] {
        ops.push(format!("hue {h}"));
    }
    ops.push("grayscale".into());
    ops.push("hflip".into());
    for s in [0.1f32, 0.35, 0.8, 1.234, 2.0] {
        ops.push(format!("blur {s}"));
    }
    let mut rng = SampleRng::from_parts(&[11]);
    let jitters: Vec<color::JitterParams> = (0..6)
        .map(|_| color::JitterParams::sample(&mut rng, 0.4, 0.4, 0.4, 0.1))
        .collect();
    let first_jitter = ops.len();
    for j in &jitters {
        let o = j.order;
        ops.push(format!(
            "jitter {} {} {} {} {} {} {} {}",
            o[0], o[1], o[2], o[3], j.brightness, j.contrast, j.saturation, j.hue
        ));
    }
    let ops_for_ours = ops.clone();
    compare(
        &ops,
        |img, i| {
            let mut out = img.clone();
            if i >= first_jitter {
                color::color_jitter(&mut out, &jitters[i - first_jitter]);
                return out;
            }
            let words: Vec<&str> = ops_for_ours[i].split(' ').collect();
            let arg = || words[1].parse::<f64>().expect("number");
            match words[0] {
                "brightness" => color::adjust_brightness(&mut out, arg() as f32),
                "contrast" => color::adjust_contrast(&mut out, arg() as f32),
                "color" => color::adjust_saturation(&mut out, arg() as f32),
                "hue" => color::adjust_hue(&mut out, arg()),
                "grayscale" => color::grayscale(&mut out),
                "hflip" => geometry::hflip(&mut out),
                "blur" => blur::gaussian_blur(&mut out, arg() as f32),
                other => panic!("unexpected op {other}"),
            }
            out
        },
        0,
        0.0,
        true,
    );
}

/// The default resampler re-implements Pillow's, so crops, resizes and the eval transform are
/// bit-identical (tolerance 0), including Pillow 13's vertical-first pass order.
#[test]
fn bilinear_crop_resize_and_eval_resize_match_pillow_exactly() {
    // Photos (at least 77 × 96): downscaling and upscaling crops, the eval transform.
    let photo_boxes = [
        CropBox {
            top: 0,
            left: 0,
            height: 77,
            width: 96,
        },
        CropBox {
            top: 3,
            left: 5,
            height: 70,
            width: 71,
        },
        CropBox {
            top: 10,
            left: 20,
            height: 60,
            width: 50,
        },
        // Tall: the height shrinks by more than twice the width's pixels (vertical pass first).
        CropBox {
            top: 0,
            left: 40,
            height: 77,
            width: 30,
        },
    ];
    // Random boxes and sizes cover both pass orders and both directions.
    let mut rng = SampleRng::from_parts(&[5]);
    let mut photo_boxes = photo_boxes.to_vec();
    for _ in 0..16 {
        let (h, w) = (rng.int_inclusive(8, 77), rng.int_inclusive(8, 96));
        let (top, left) = (rng.int_inclusive(0, 77 - h), rng.int_inclusive(0, 96 - w));
        photo_boxes.push(CropBox {
            top,
            left,
            height: h,
            width: w,
        });
    }
    // Any input including Fashion-MNIST (28 × 28): upscaling.
    let tiny_boxes = [
        CropBox {
            top: 0,
            left: 0,
            height: 28,
            width: 28,
        },
        CropBox {
            top: 3,
            left: 5,
            height: 20,
            width: 17,
        },
    ];
    for (boxes, with_fashion_mnist) in [(&photo_boxes[..], false), (&tiny_boxes[..], true)] {
        let mut ops = Vec::new();
        let mut plan: Vec<(Option<CropBox>, usize)> = Vec::new();
        for b in boxes {
            for size in [24, 56, 96, 160] {
                ops.push(format!(
                    "resized_crop {} {} {} {} {size}",
                    b.top, b.left, b.height, b.width
                ));
                plan.push((Some(*b), size));
            }
        }
        ops.push("eval 64 56".into());
        plan.push((None, 0));
        ops.push("resize 32".into());
        plan.push((None, 32));
        let resampler = RefCell::new(Resampler::new());
        compare(
            &ops,
            |img, i| {
                let mut r = resampler.borrow_mut();
                match plan[i] {
                    (Some(b), size) => r.crop_resize(img, &b, size, size),
                    (None, 0) => {
                        let (w, h) = shorter_side_size(img.width, img.height, 64);
                        let resized = r.resize(img, w, h);
                        let c = center_crop_box(w, h, 56);
                        r.crop_resize(&resized, &c, 56, 56)
                    }
                    (None, size) => r.resize(img, size, size),
                }
            },
            0,
            0.0,
            with_fashion_mnist,
        );
    }
}

/// Two-sample Kolmogorov–Smirnov statistic.
fn ks(mut a: Vec<f64>, mut b: Vec<f64>) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[test]
fn crop_sampler_distribution_matches_torchvision() {
    let dir = tempfile::tempdir().expect("temp dir");
    const N: usize = 20_000;
    // Large and small crop scales on a COCO-sized image, and a very wide image that exercises
    // the fallback.
    for (w, h, lo, hi) in [
        (640, 480, 0.2, 1.0),
        (640, 480, 0.05, 0.14),
        (400, 60, 0.2, 1.0),
    ] {
        let out = dir.path().join(format!("{w}x{h}_{lo}.npy"));
        let args = [
            "crops",
            &w.to_string(),
            &h.to_string(),
            &N.to_string(),
            &lo.to_string(),
            &hi.to_string(),
        ];
        let mut args: Vec<&str> = args.to_vec();
        let out_s = out.display().to_string();
        args.push(&out_s);
        reference(&args);
        let (shape, theirs) = read_npy_f64(&out);
        assert_eq!(shape, vec![N, 2]);
        let mut rng = SampleRng::from_parts(&[3]);
        let ours: Vec<CropBox> = (0..N)
            .map(|_| crop::random_resized_crop(&mut rng, w, h, (lo, hi)))
            .collect();
        let area = |b: &CropBox| (b.width * b.height) as f64 / (w * h) as f64;
        let ratio = |b: &CropBox| b.width as f64 / b.height as f64;
        let d_area = ks(
            ours.iter().map(area).collect(),
            theirs.chunks(2).map(|r| r[0]).collect(),
        );
        let d_ratio = ks(
            ours.iter().map(ratio).collect(),
            theirs.chunks(2).map(|r| r[1]).collect(),
        );
        // Critical value of the two-sample KS test at α = 0.001 for n = m = 20 000 is 0.0195.
        assert!(
            d_area < 0.0195,
            "{w}×{h} scale ({lo}, {hi}): area KS statistic {d_area}"
        );
        assert!(
            d_ratio < 0.0195,
            "{w}×{h} scale ({lo}, {hi}): aspect KS statistic {d_ratio}"
        );
    }
}

#[test]
fn libjpeg_turbo_decoding_matches_pillow_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixtures(dir.path());
    for name in [
        "china.jpg",
        "flower.jpg",
        "odd/gray.jpg",
        "odd/cmyk.jpg",
        "china.png",
        "odd/palette.png",
        "odd/rgba.png",
    ] {
        let file = dir.path().join(name);
        let out = dir.path().join("decoded.npy");
        reference(&[
            "decode",
            &file.display().to_string(),
            &out.display().to_string(),
        ]);
        let theirs = read_image(&out);
        let bytes = std::fs::read(&file).expect("fixture");
        let ours =
            kontrast_data::decode::decode(&bytes, kontrast_data::decode::JpegBackend::default(), 1)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (max, frac) = diff(&ours, &theirs);
        assert_eq!(
            max,
            0,
            "{name}: max diff {max} on {:.3}% of bytes",
            frac * 100.0
        );
    }
}
