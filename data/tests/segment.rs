//! Paired segmentation transforms: alignment of image and mask, nearest-neighbour labels,
//! mask PNG reading, torchvision + Pillow equality of the deterministic steps, the loader.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{
    diff, fixtures, read_image, read_npy_u8, segment_reference, write_image, write_npy_u8,
};
use kontrast_data::resize::{Filter, Resampler};
use kontrast_data::segment::transform::{
    affine_pair, center_offset, hflip_pair, pad_crop_pair, resize_pair,
};
use kontrast_data::segment::{
    IGNORE, Mask, RotateZoom, SegAugment, SegCrop, SegDataset, SegLoader, decode_mask,
};
use kontrast_data::{DataError, LoaderConfig, RgbImage, SampleRng};

/// A distinct colour per class (VOC's colour map), and the colour of ignore regions.
fn colour(class: u8) -> [u8; 3] {
    if class == IGNORE {
        return [224, 224, 192];
    }
    let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, class);
    for j in 0..8 {
        r |= (c & 1) << (7 - j);
        g |= ((c >> 1) & 1) << (7 - j);
        b |= ((c >> 2) & 1) << (7 - j);
        c >>= 3;
    }
    [r, g, b]
}

/// An image whose colour encodes its class: blocks of 32 × 24 pixels of classes 0–20, with an
/// ignore band.
fn synthetic(width: usize, height: usize) -> (RgbImage, Mask) {
    let mut image = RgbImage::new(width, height);
    let mut mask = Mask::ignore(width, height);
    for y in 0..height {
        for x in 0..width {
            let class = if (50..58).contains(&y) {
                IGNORE
            } else {
                ((x / 32 * 7 + y / 24 * 3) % 21) as u8
            };
            mask.data[y * width + x] = class;
            image.data[(y * width + x) * 3..][..3].copy_from_slice(&colour(class));
        }
    }
    (image, mask)
}

/// Checks every pixel whose mask neighbourhood (radius `r`) holds one label: the image must
/// show that label's colour (or the fill, where the label is `IGNORE`). Returns the fraction
/// of pixels checked.
fn check_aligned(image: &RgbImage, mask: &Mask, r: usize, fill: [u8; 3], what: &str) -> f64 {
    let (w, h) = (mask.width, mask.height);
    assert_eq!((image.width, image.height), (w, h), "{what}: sizes differ");
    // Summed-area tables of label changes to the right and downwards, so "one label in the
    // window" is two look-ups per pixel instead of a scan of the window.
    let table = |changed: &dyn Fn(usize, usize) -> bool| {
        let mut t = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            for x in 0..w {
                t[(y + 1) * (w + 1) + x + 1] =
                    changed(x, y) as u32 + t[y * (w + 1) + x + 1] + t[(y + 1) * (w + 1) + x]
                        - t[y * (w + 1) + x];
            }
        }
        t
    };
    let at = |x: usize, y: usize| mask.data[y * w + x];
    let right = table(&|x, y| x + 1 < w && at(x, y) != at(x + 1, y));
    let down = table(&|x, y| y + 1 < h && at(x, y) != at(x, y + 1));
    // Changes in columns x0..x1, rows y0..y1.
    let sum = |t: &[u32], x0: usize, y0: usize, x1: usize, y1: usize| {
        t[y1 * (w + 1) + x1] + t[y0 * (w + 1) + x0] - t[y0 * (w + 1) + x1] - t[y1 * (w + 1) + x0]
    };
    let mut checked = 0usize;
    for y in r..h.saturating_sub(r) {
        for x in r..w.saturating_sub(r) {
            let uniform = sum(&right, x - r, y - r, x + r, y + r + 1) == 0
                && sum(&down, x - r, y - r, x + r + 1, y + r) == 0;
            if !uniform {
                continue;
            }
            let label = at(x, y);
            checked += 1;
            let px: [u8; 3] = image.data[(y * w + x) * 3..][..3]
                .try_into()
                .expect("3 bytes");
            let ok = px == colour(label) || (label == IGNORE && px == fill);
            assert!(
                ok,
                "{what}: pixel ({x}, {y}) has colour {px:?} but label {label}"
            );
        }
    }
    checked as f64 / (w * h) as f64
}

#[test]
fn masks_stay_aligned_with_images_through_every_random_transform() {
    let (image, mask) = synthetic(160, 120);
    let mut resampler = Resampler::new();
    let mut configs = vec![
        // The radius covers the filters' support (two input pixels for bicubic, rotation and
        // resize each) times the enlargement: 512 / 120 for VOC, up to 2× otherwise.
        ("voc", SegAugment::voc_train(), 18),
        ("cityscapes", SegAugment::cityscapes_train(), 10),
        (
            "scale + rotate + centre crop, bilinear",
            SegAugment {
                flip: true,
                scale: Some((0.6, 1.7)),
                rotate: Some(RotateZoom {
                    max_degrees: 10.0,
                    zoom: (0.8, 1.2),
                }),
                crop: Some(SegCrop {
                    width: 150,
                    height: 170,
                    random: false,
                }),
                fill: [9, 99, 199],
                ..SegAugment::evaluation()
            },
            6,
        ),
    ];
    configs.push((
        "same, bicubic",
        SegAugment {
            filter: Filter::Bicubic,
            ..configs[2].1
        },
        6,
    ));
    for (name, aug, radius) in configs {
        let mut covered = 0.0;
        for seed in 0..6 {
            let mut rng = SampleRng::from_parts(&[seed]);
            let (img, m) = aug
                .apply(image.clone(), mask.clone(), &mut rng, &mut resampler)
                .expect("same sizes");
            covered +=
                check_aligned(&img, &m, radius, aug.fill, &format!("{name}, seed {seed}")) / 6.0;
        }
        assert!(
            covered > 0.1,
            "{name}: only {:.0}% of pixels checked",
            covered * 100.0
        );
    }
}

#[test]
fn nearest_never_invents_labels() {
    let labels = [0u8, 3, 7, 15, 20, IGNORE];
    let (w, h) = (97, 61);
    let mut rng = SampleRng::from_parts(&[1]);
    let data: Vec<u8> = (0..w * h)
        .map(|_| labels[rng.below(labels.len())])
        .collect();
    let mask = Mask::from_raw(w, h, data).expect("size");
    let image = RgbImage::new(w, h);
    let mut resampler = Resampler::new();
    for aug in [SegAugment::voc_train(), SegAugment::cityscapes_train()] {
        for seed in 0..20 {
            let mut rng = SampleRng::from_parts(&[seed]);
            let (_, m) = aug
                .apply(image.clone(), mask.clone(), &mut rng, &mut resampler)
                .expect("same sizes");
            assert!(
                m.data.iter().all(|l| labels.contains(l)),
                "seed {seed}: a label outside {labels:?} appeared"
            );
        }
    }
    // An exact 2× enlargement copies every label four times.
    let (_, big) = resize_pair(&mut resampler, &image, &mask, 2 * w, 2 * h, Filter::Bicubic);
    for l in labels {
        let count = |m: &Mask| m.data.iter().filter(|&&v| v == l).count();
        assert_eq!(count(&big), 4 * count(&mask), "label {l}");
    }
}

#[test]
fn image_and_mask_size_mismatch_is_reported_not_transformed() {
    let err = SegAugment::voc_train()
        .apply(
            RgbImage::new(10, 8),
            Mask::ignore(10, 9),
            &mut SampleRng::from_parts(&[0]),
            &mut Resampler::new(),
        )
        .expect_err("mismatch");
    assert!(err.contains("10×8") && err.contains("10×9"), "{err}");
    let bad = SegAugment {
        scale: Some((0.0, 1.0)),
        ..SegAugment::evaluation()
    };
    assert!(matches!(bad.validate(), Err(DataError::Config(_))));
}

#[test]
fn palette_png_masks_read_as_class_indices_like_pillow() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment_reference(&["masks", dir.path().to_str().expect("utf-8")]);
    for name in ["voc", "four_bit", "gray"] {
        let bytes = std::fs::read(dir.path().join(format!("{name}.png"))).expect("fixture");
        let ours = decode_mask(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (shape, theirs) = read_npy_u8(&dir.path().join(format!("{name}.npy")));
        assert_eq!(shape, vec![ours.height, ours.width], "{name}");
        assert_eq!(ours.data, theirs, "{name}: class indices differ");
    }
    let rgb = std::fs::read(dir.path().join("rgb.png")).expect("fixture");
    let err = decode_mask(&rgb).expect_err("an RGB mask is rejected");
    assert!(err.contains("palette"), "{err}");
    assert!(decode_mask(b"").is_err());
    assert!(decode_mask(b"GIF89a").is_err());
}

/// One spelled operation on the Rust side (the spelling of `augment_segment.py`).
fn ours(op: &str, image: &RgbImage, mask: &Mask, r: &mut Resampler) -> (RgbImage, Mask) {
    let w: Vec<&str> = op.split(' ').collect();
    let n = |i: usize| w[i].parse::<f64>().expect("number");
    let filter = |s: &str| match s {
        "bicubic" => Filter::Bicubic,
        _ => Filter::Bilinear,
    };
    let fill = |i: usize| [n(i) as u8, n(i + 1) as u8, n(i + 2) as u8];
    match w[0] {
        "resize" => resize_pair(r, image, mask, n(1) as usize, n(2) as usize, filter(w[3])),
        "hflip" => {
            let (mut i, mut m) = (image.clone(), mask.clone());
            hflip_pair(&mut i, &mut m);
            (i, m)
        }
        "padcrop" => pad_crop_pair(
            image,
            mask,
            n(1) as isize,
            n(2) as isize,
            n(3) as usize,
            n(4) as usize,
            fill(5),
        ),
        "center" => {
            let (cw, ch) = (n(1) as usize, n(2) as usize);
            let (left, top) = (
                center_offset(image.width, cw),
                center_offset(image.height, ch),
            );
            pad_crop_pair(image, mask, left, top, cw, ch, [0, 0, 0])
        }
        "affine" => affine_pair(image, mask, n(1), n(2), filter(w[3]), fill(4)),
        other => panic!("unknown op {other}"),
    }
}

#[test]
fn resize_flip_crop_pad_and_affine_match_torchvision_exactly_for_image_and_mask() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixtures(dir.path());
    let image = read_image(&dir.path().join("china_small.npy"));
    let (w, h) = (image.width, image.height);
    // Blocks of labels with single-pixel noise, so nearest's choice of source pixel shows.
    let mut rng = SampleRng::from_parts(&[2]);
    let data = (0..w * h)
        .map(|i| {
            if rng.chance(0.2) {
                rng.below(21) as u8
            } else {
                ((i % w / 9 + i / w / 7 * 5) % 21) as u8
            }
        })
        .collect();
    let mask = Mask::from_raw(w, h, data).expect("size");
    let ops = [
        "resize 64 48 bilinear",
        "resize 200 150 bicubic",
        "resize 51 77 bicubic",
        "resize 300 40 bilinear",
        "resize 13 11 bicubic",
        "resize 128 96 bicubic",
        "resize 512 512 bicubic",
        "hflip",
        "padcrop 10 5 64 64 0 0 0",
        "padcrop -7 -3 140 110 124 116 104",
        "padcrop 100 80 50 40 1 2 3",
        "padcrop -200 0 50 50 5 6 7",
        "center 64 64",
        "center 140 100",
        "center 127 95",
        "center 150 50",
        "affine 5 1 bilinear 0 0 0",
        "affine -3.7 1.2 bicubic 124 116 104",
        "affine 0 0.8 bilinear 0 0 0",
        "affine 2.5 0.75 bicubic 0 0 0",
        "affine -5 1.25 bilinear 124 116 104",
        "affine 0 1 bicubic 0 0 0",
    ];
    let spec = dir.path().join("seg_ops.txt");
    std::fs::write(&spec, ops.join("\n")).expect("spec");
    write_image(&dir.path().join("seg_image.npy"), &image);
    write_npy_u8(&dir.path().join("seg_mask.npy"), &[h, w], &mask.data);
    let out = dir.path().join("seg_out");
    std::fs::create_dir(&out).expect("mkdir");
    let path = |p: &Path| p.display().to_string();
    segment_reference(&[
        "ops",
        &path(&spec),
        &path(&out),
        &path(&dir.path().join("seg_image.npy")),
        &path(&dir.path().join("seg_mask.npy")),
    ]);
    let mut resampler = Resampler::new();
    let mut failures = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (img, m) = ours(op, &image, &mask, &mut resampler);
        let theirs = read_image(&out.join(format!("{i}_image.npy")));
        let (max, frac) = diff(&img, &theirs);
        if max != 0 {
            failures.push(format!(
                "`{op}` image: max diff {max} on {:.3}% of bytes",
                frac * 100.0
            ));
        }
        for mode in ["L", "P"] {
            let file = out.join(format!("{i}_mask_{mode}.npy"));
            if !file.exists() {
                continue;
            }
            let (shape, theirs) = read_npy_u8(&file);
            if shape != vec![m.height, m.width] || theirs != m.data {
                let differ = theirs.iter().zip(&m.data).filter(|(a, b)| a != b).count();
                failures.push(format!(
                    "`{op}` mask ({mode}): shape {shape:?} vs {}×{}, {differ} labels differ",
                    m.height, m.width
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

/// Writes a palette PNG mask (classes as indices) with the png crate.
fn write_palette_png(path: &Path, mask: &Mask) {
    let file = std::fs::File::create(path).expect("create");
    let mut enc = png::Encoder::new(file, mask.width as u32, mask.height as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette((0..=255u8).flat_map(colour).collect::<Vec<u8>>());
    let mut w = enc.write_header().expect("header");
    w.write_image_data(&mask.data).expect("data");
}

fn write_rgb_png(path: &Path, image: &RgbImage) {
    let file = std::fs::File::create(path).expect("create");
    let mut enc = png::Encoder::new(file, image.width as u32, image.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("header");
    w.write_image_data(&image.data).expect("data");
}

/// A VOC-style tree: 7 pairs of varied sizes, one corrupt image, one mask of the wrong size.
fn voc_tree(root: &Path) -> Vec<String> {
    for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let mut ids = Vec::new();
    for k in 0..9usize {
        let id = format!("2007_{k:06}");
        let (image, mask) = synthetic(60 + 13 * k, 50 + 7 * k);
        match k {
            4 => std::fs::write(root.join(format!("JPEGImages/{id}.jpg")), b"not a jpeg")
                .expect("write"),
            _ => write_rgb_png(&root.join(format!("JPEGImages/{id}.png")), &image),
        }
        let mask = if k == 6 {
            Mask::ignore(mask.width + 1, mask.height)
        } else {
            mask
        };
        write_palette_png(&root.join(format!("SegmentationClass/{id}.png")), &mask);
        ids.push(id);
    }
    std::fs::write(
        root.join("ImageSets/Segmentation/val.txt"),
        ids.join("\n") + "\n",
    )
    .expect("list");
    ids
}

#[test]
fn segmentation_loader_yields_aligned_pairs_deterministically_and_skips_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    voc_tree(dir.path());
    let ds = Arc::new(SegDataset::voc(dir.path(), "val").expect("opens"));
    assert_eq!(ds.len(), 9);
    let run = |aug: SegAugment, threads: usize, epoch: u64| {
        let config = LoaderConfig {
            batch_per_rank: 4,
            threads,
            epoch,
            seed: 5,
            ..LoaderConfig::default()
        };
        let loader =
            SegLoader::new(Arc::clone(&ds), (0..9).collect(), aug, config).expect("loader");
        let stats = loader.stats();
        let batches: Vec<_> = loader.map(|b| b.expect("batch")).collect();
        (
            batches,
            stats
                .corrupt_skipped
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    // Evaluation at the original resolution: sizes kept, pixels untouched.
    let (eval, skipped) = run(SegAugment::evaluation(), 2, 0);
    assert_eq!(skipped, 2);
    assert_eq!(eval.len(), 3);
    assert_eq!(eval.iter().map(|b| b.skipped).sum::<usize>(), 2);
    let samples: Vec<_> = eval.iter().flat_map(|b| b.samples.iter()).collect();
    assert_eq!(
        samples.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 5, 7, 8]
    );
    for s in &samples {
        let (image, mask) = synthetic(60 + 13 * s.index, 50 + 7 * s.index);
        assert_eq!((s.width, s.height), (image.width, image.height));
        assert_eq!(s.mask, mask.data);
        let mut chw = vec![0u8; image.data.len()];
        image.write_chw(&mut chw);
        assert_eq!(s.image, chw);
    }
    // Training transforms (VOC's at a smaller size, to keep the debug build quick): fixed size,
    // aligned, the same for any thread count, new per epoch.
    let train = SegAugment {
        resize: Some((160, 160)),
        ..SegAugment::voc_train()
    };
    let (a, _) = run(train, 0, 1);
    let (b, _) = run(train, 3, 1);
    let (c, _) = run(train, 3, 2);
    let strip = |v: &[kontrast_data::segment::SegBatch]| {
        v.iter().map(|b| b.samples.clone()).collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b), "serial and parallel differ");
    assert_ne!(strip(&a), strip(&c), "epochs share their randomness");
    for batch in &a {
        let (w, h, images, masks) = batch.stacked().expect("one size");
        assert_eq!((w, h), (160, 160));
        assert_eq!(images.len(), batch.samples.len() * 3 * w * h);
        assert_eq!(masks.len(), batch.samples.len() * w * h);
        for s in &batch.samples {
            let mut hwc = vec![0u8; s.image.len()];
            let plane = w * h;
            for i in 0..plane {
                for ch in 0..3 {
                    hwc[i * 3 + ch] = s.image[ch * plane + i];
                }
            }
            let image = RgbImage::from_raw(w, h, hwc).expect("size");
            let mask = Mask::from_raw(w, h, s.mask.clone()).expect("size");
            // Enlarged up to 160 / 50 ≈ 3×: four input pixels of filter support.
            check_aligned(
                &image,
                &mask,
                14,
                [0, 0, 0],
                &format!("loader sample {}", s.index),
            );
        }
    }
}

#[test]
fn voc_lists_naming_missing_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = voc_tree(dir.path());
    std::fs::remove_file(dir.path().join(format!("SegmentationClass/{}.png", ids[2]))).expect("rm");
    let err = SegDataset::voc(dir.path(), "val").expect_err("mask missing");
    assert!(err.to_string().contains(&ids[2]), "{err}");
    let err = SegDataset::voc(dir.path(), "train").expect_err("no list");
    assert!(err.to_string().contains("train.txt"), "{err}");
    assert!(matches!(
        SegDataset::from_pairs(Vec::new()),
        Err(DataError::Empty { .. })
    ));
}
