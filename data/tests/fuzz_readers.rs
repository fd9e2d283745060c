//! Hostile bytes against every reader of the crate: valid inputs (PNG and JPEG images, label
//! masks, Fashion-MNIST IDX files, VOC / VOC segmentation / DAVIS lists, COCO annotation files,
//! Cityscapes labels) mutated many times with fixed seeds. Each mutated input must be read or
//! refused with a message; a panic (arithmetic overflow included: tests build with overflow
//! checks) or an allocation sized from a hostile header fails the test with a seed to replay.
//! `docs/fuzzing.md` explains the seeds and the longer cargo-fuzz runs.

mod fuzzing;

use std::io::Write;
use std::path::Path;

use fuzzing::{INTERESTING_U32, PeakAlloc, Rng, Tally, check, mutate, mutate_once, seeds};
use kontrast_data::dataset::cityscapes::Cityscapes;
use kontrast_data::dataset::davis::DavisSplit;
use kontrast_data::dataset::voc_segmentation::VocSegmentation;
use kontrast_data::decode::{self, JpegBackend, MAX_PIXELS};
use kontrast_data::segment::decode_mask;
use kontrast_data::{Dataset, DatasetFormat, Split, VOC_CLASSES, VocSplit};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const MB: usize = 1 << 20;

/// What an image decoder may reserve for one declared image: up to [`MAX_PIXELS`] at eight
/// bytes a pixel (16-bit RGBA before conversion), never more.
const IMAGE_ALLOC_LIMIT: usize = 8 * MAX_PIXELS + 4 * MB;

/// Split names that must never reach outside a data set root or crash path handling.
const HOSTILE_SPLITS: [&str; 9] = [
    "",
    ".",
    "..",
    "../../etc/passwd",
    "val/../val",
    "/val",
    "val\0",
    "v\u{e1}l",
    "val\\..\\x",
];

// ---------------------------------------------------------------------------------------------
// Valid inputs.

fn png_image(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Vec<u8> {
    png_with(width, height, color, depth, data, None)
}

fn png_with(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<Vec<u8>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if let Some(palette) = palette {
            encoder.set_palette(palette);
        }
        let mut writer = encoder.write_header().expect("PNG header");
        writer.write_image_data(data).expect("PNG data");
        writer.finish().expect("PNG end");
    }
    out
}

fn ramp(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 37 + salt * 11) % 256) as u8).collect()
}

/// A palette of `n` distinct colours.
fn palette(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| [(i * 40) as u8, (i * 90) as u8, 255 - i as u8])
        .collect()
}

/// A palette mask of VOC classes (0–20 and 255), `width × height`.
fn voc_mask_png(width: u32, height: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..width * height)
        .map(|i| if i % 7 == 6 { 255 } else { (i % 21) as u8 })
        .collect();
    png_with(
        width,
        height,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &data,
        Some(palette(256)),
    )
}

/// PNGs of every colour type and depth the decoders handle, small enough to mutate quickly.
fn png_bases() -> Vec<(&'static str, Vec<u8>)> {
    use png::BitDepth::*;
    use png::ColorType::*;
    vec![
        ("rgb8", png_image(13, 11, Rgb, Eight, &ramp(13 * 11 * 3, 1))),
        ("gray8", png_image(9, 7, Grayscale, Eight, &ramp(9 * 7, 2))),
        ("rgba8", png_image(6, 5, Rgba, Eight, &ramp(6 * 5 * 4, 3))),
        (
            "gray-alpha8",
            png_image(6, 5, GrayscaleAlpha, Eight, &ramp(6 * 5 * 2, 4)),
        ),
        (
            "gray16",
            png_image(7, 3, Grayscale, Sixteen, &ramp(7 * 3 * 2, 5)),
        ),
        ("rgb16", png_image(5, 4, Rgb, Sixteen, &ramp(5 * 4 * 6, 6))),
        (
            "palette8",
            png_with(
                8,
                6,
                Indexed,
                Eight,
                &ramp(8 * 6, 7).iter().map(|v| v % 4).collect::<Vec<_>>(),
                Some(palette(4)),
            ),
        ),
        // 10 two-bit samples per row: three bytes, the last one padded.
        (
            "palette2",
            png_with(10, 3, Indexed, Two, &ramp(3 * 3, 8), Some(palette(4))),
        ),
        (
            "palette1",
            png_with(9, 2, Indexed, One, &ramp(2 * 2, 9), Some(palette(2))),
        ),
        ("gray4", png_image(5, 4, Grayscale, Four, &ramp(3 * 4, 10))),
        ("voc-mask", voc_mask_png(12, 9)),
    ]
}

/// JPEGs: baseline and progressive, 4:4:4 / 4:2:0 / grey, and Adobe CMYK.
#[cfg(feature = "turbojpeg")]
fn jpeg_bases() -> Vec<(&'static str, Vec<u8>)> {
    use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};
    let encode =
        |width: usize, height: usize, format: PixelFormat, subsamp: Subsamp, progressive: bool| {
            let pixels = ramp(width * height * format.size(), width);
            let mut c = Compressor::new().expect("turbojpeg compressor");
            c.set_quality(80).expect("quality");
            c.set_subsamp(subsamp).expect("subsampling");
            c.set_progressive(progressive).expect("progressive");
            c.compress_to_vec(Image {
                pixels: pixels.as_slice(),
                width,
                pitch: width * format.size(),
                height,
                format,
            })
            .expect("JPEG encodes")
        };
    vec![
        (
            "jpeg444",
            encode(24, 16, PixelFormat::RGB, Subsamp::None, false),
        ),
        (
            "jpeg420-progressive",
            encode(19, 13, PixelFormat::RGB, Subsamp::Sub2x2, true),
        ),
        (
            "jpeg-gray",
            encode(16, 9, PixelFormat::GRAY, Subsamp::Gray, false),
        ),
        (
            "jpeg-cmyk",
            encode(16, 16, PixelFormat::CMYK, Subsamp::None, false),
        ),
    ]
}

#[cfg(not(feature = "turbojpeg"))]
fn jpeg_bases() -> Vec<(&'static str, Vec<u8>)> {
    Vec::new()
}

// ---------------------------------------------------------------------------------------------
// Structure-aware mutations: field overwrites behind valid checksums and markers.

/// The chunks of a PNG (`None` if the framing is already broken).
fn png_chunks(bytes: &[u8]) -> Option<Vec<([u8; 4], Vec<u8>)>> {
    let mut rest = bytes.strip_prefix(b"\x89PNG\r\n\x1a\n")?;
    let mut chunks = Vec::new();
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let data = rest.get(8..8 + len)?.to_vec();
        rest = rest.get(12 + len..)?;
        chunks.push((kind, data));
    }
    Some(chunks)
}

/// A PNG of `chunks`, every CRC correct.
fn png_join(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in chunks {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

/// Mutates one chunk's payload (IHDR fields preferred) and re-signs it, so the decoder's
/// checks past the CRC are reached.
fn mutate_png_chunk(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut chunks = png_chunks(bytes)?;
    if chunks.is_empty() {
        return None;
    }
    let what = match rng.below(4) {
        0 => {
            // IHDR width, height, depth, colour type or interlace method.
            let (_, ihdr) = chunks.iter_mut().find(|(k, _)| k == b"IHDR")?;
            if ihdr.len() < 13 {
                return None;
            }
            match rng.below(3) {
                0 => {
                    let at = 4 * rng.below(2);
                    let value = *rng.pick(&INTERESTING_U32);
                    ihdr[at..at + 4].copy_from_slice(&value.to_be_bytes());
                    format!(
                        "IHDR {} = {value:#x}",
                        if at == 0 { "width" } else { "height" }
                    )
                }
                1 => {
                    let at = 8 + rng.below(5);
                    let value = rng.byte() % 20;
                    ihdr[at] = value;
                    format!("IHDR byte {at} = {value}")
                }
                _ => {
                    ihdr[12] = 1;
                    "IHDR interlaced (Adam7)".into()
                }
            }
        }
        1 => {
            let i = rng.below(chunks.len());
            let kind = String::from_utf8_lossy(&chunks[i].0).into_owned();
            let what = mutate_once(rng, &mut chunks[i].1);
            format!("{kind} payload: {what}")
        }
        2 => {
            let i = rng.below(chunks.len());
            let kind = String::from_utf8_lossy(&chunks[i].0).into_owned();
            if rng.one_in(2) {
                chunks.remove(i);
                format!("{kind} chunk removed")
            } else {
                let chunk = chunks[i].clone();
                chunks.insert(i, chunk);
                format!("{kind} chunk repeated")
            }
        }
        _ => {
            // An animation control and a first frame of random size ahead of the image data.
            let at = chunks.iter().position(|(k, _)| k == b"IDAT")?;
            let mut fctl = vec![0u8; 26];
            fctl[4..8].copy_from_slice(&(1 + rng.below(16) as u32).to_be_bytes());
            fctl[8..12].copy_from_slice(&(1 + rng.below(16) as u32).to_be_bytes());
            chunks.insert(at, (*b"fcTL", fctl));
            chunks.insert(1, (*b"acTL", [0, 0, 0, 1, 0, 0, 0, 0].to_vec()));
            "acTL + fcTL of a random first-frame size".into()
        }
    };
    Some((png_join(&chunks), what))
}

/// Overwrites the frame size of a JPEG's SOF marker.
fn mutate_jpeg_frame(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let sof = bytes
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))?;
    let mut out = bytes.to_vec();
    // FF Cx, length (2), precision (1), height (2), width (2), components (1).
    let at = sof + 5 + 2 * rng.below(2);
    let value = *rng.pick(&[0u16, 1, 0x7FFF, 0x8000, 0xFFFF, 0x2000]);
    out.get_mut(at..at + 2)?
        .copy_from_slice(&value.to_be_bytes());
    if rng.one_in(3) {
        // Component count too.
        let value = *rng.pick(&[0u8, 2, 4, 255]);
        *out.get_mut(sof + 9)? = value;
    }
    Some((out, format!("SOF field at {at} = {value:#x}")))
}

fn backends() -> Vec<JpegBackend> {
    let mut all = vec![JpegBackend::Zune];
    if JpegBackend::default() != JpegBackend::Zune {
        all.push(JpegBackend::default());
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Images and label masks (in memory).

#[test]
fn image_and_mask_decoders_survive_mutated_png_and_jpeg() {
    const TEST: &str = "image_and_mask_decoders_survive_mutated_png_and_jpeg";
    let mut bases = png_bases();
    bases.extend(jpeg_bases());
    let mut tally = Tally::default();
    for seed in seeds(TEST, 3000) {
        let mut rng = Rng::new(seed);
        let (name, base) = rng.pick(&bases);
        let structured = if base.starts_with(b"\x89PNG") {
            mutate_png_chunk(&mut rng, base)
        } else {
            mutate_jpeg_frame(&mut rng, base)
        };
        let (bytes, what) = match structured.filter(|_| rng.one_in(2)) {
            Some(done) => done,
            None => mutate(&mut rng, base),
        };
        let what = format!("{name}: {what}");
        for backend in backends() {
            tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
                decode::probe(&bytes, backend)
            }));
            let denom = *rng.pick(&decode::DCT_DENOMS);
            tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
                decode::decode(&bytes, backend, denom).map(|img| {
                    assert_eq!(img.data.len(), img.width * img.height * 3, "{what}");
                })
            }));
        }
        tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
            decode_mask(&bytes).map(|mask| {
                assert_eq!(mask.data.len(), mask.width * mask.height, "{what}");
            })
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

/// An APNG whose first frame (the one decoded) is smaller than the image it declares.
fn apng_with_small_first_frame(
    color: png::ColorType,
    depth: png::BitDepth,
    samples: u8,
) -> Vec<u8> {
    let (width, height, frame_w, frame_h) = (8u32, 4u32, 2u32, 2u32);
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    let color_byte = match color {
        png::ColorType::Grayscale => 0,
        png::ColorType::Indexed => 3,
        png::ColorType::Rgb => 2,
        _ => 6,
    };
    ihdr.extend_from_slice(&[depth as u8, color_byte, 0, 0, 0]);
    let mut fctl = Vec::new();
    for v in [0u32, frame_w, frame_h, 0, 0] {
        fctl.extend_from_slice(&v.to_be_bytes());
    }
    fctl.extend_from_slice(&[0, 1, 0, 100, 0, 0]);
    let row = 1 + (frame_w as usize * usize::from(samples) * depth as usize).div_ceil(8);
    let mut raw = Vec::new();
    for y in 0..frame_h as usize {
        raw.push(0);
        raw.extend((1..row).map(|x| ((x + y) % 3) as u8));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).expect("deflate");
    let idat = z.finish().expect("deflate");
    let mut chunks = vec![(*b"IHDR", ihdr)];
    if color == png::ColorType::Indexed {
        chunks.push((*b"PLTE", palette(4)));
    }
    chunks.push((*b"acTL", [0, 0, 0, 1, 0, 0, 0, 0].to_vec()));
    chunks.push((*b"fcTL", fctl));
    chunks.push((*b"IDAT", idat));
    chunks.push((*b"IEND", Vec::new()));
    png_join(&chunks)
}

#[test]
fn a_mask_whose_first_animation_frame_is_smaller_than_the_image_is_refused() {
    // Regression (the chunk mutations above reach it): the mask reader sized rows from the
    // header and indexed past the rows of the smaller frame.
    for (color, depth, samples) in [
        (png::ColorType::Indexed, png::BitDepth::Eight, 1),
        (png::ColorType::Indexed, png::BitDepth::Two, 1),
        (png::ColorType::Grayscale, png::BitDepth::Eight, 1),
    ] {
        let bytes = apng_with_small_first_frame(color, depth, samples);
        let err = decode_mask(&bytes).expect_err("a partial first frame is no label mask");
        assert!(err.contains("frame"), "{color:?} {depth:?}: {err}");
        // The image decoder reads the same file without panicking, too.
        for backend in backends() {
            let _ = decode::decode(&bytes, backend, 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST IDX files.

fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).expect("gzip");
    z.finish().expect("gzip")
}

/// Writes the training split's two files (raw or gzip-compressed) into `dir`, replacing both
/// spellings.
fn write_idx(dir: &Path, images: &[u8], labels: &[u8], gz: bool) {
    for (stem, bytes) in [
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
    ] {
        let raw = dir.join(stem);
        let packed = dir.join(format!("{stem}.gz"));
        let _ = std::fs::remove_file(&raw);
        let _ = std::fs::remove_file(&packed);
        if gz {
            std::fs::write(packed, gzip(bytes)).expect("write .gz");
        } else {
            std::fs::write(raw, bytes).expect("write");
        }
    }
}

/// Opens the training split and reads a few samples.
fn read_idx(dir: &Path) -> kontrast_data::Result<()> {
    let ds = Dataset::open_split(DatasetFormat::FashionMnist, dir, Split::Train)?;
    for i in [0, ds.len() / 2, ds.len() - 1, ds.len()] {
        let _ = ds.label(i);
        if i < ds.len() {
            let img = ds.load(i)?;
            assert_eq!(img.data.len(), img.width * img.height * 3);
        } else {
            assert!(ds.load(i).is_err(), "index {i} is past the end");
        }
    }
    Ok(())
}

#[test]
fn fashion_mnist_idx_files_survive_mutation() {
    const TEST: &str = "fashion_mnist_idx_files_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let (n, h, w) = (6u32, 4u32, 3u32);
    let images = idx(0x0803, &[n, h, w], &ramp((n * h * w) as usize, 0));
    let labels = idx(0x0801, &[n], &[0, 1, 2, 9, 5, 3]);
    write_idx(dir.path(), &images, &labels, false);
    read_idx(dir.path()).expect("the valid files read");

    let mut tally = Tally::default();
    for seed in seeds(TEST, 1500) {
        let mut rng = Rng::new(seed);
        let (mut imgs, mut lbls) = (images.clone(), labels.clone());
        let what = match rng.below(4) {
            0 => {
                let (m, what) = mutate(&mut rng, &images);
                imgs = m;
                format!("images: {what}")
            }
            1 => {
                let (m, what) = mutate(&mut rng, &labels);
                lbls = m;
                format!("labels: {what}")
            }
            2 => {
                // A header dimension set to a huge or empty value.
                let d = rng.below(3);
                let value = *rng.pick(&INTERESTING_U32);
                imgs[4 + 4 * d..8 + 4 * d].copy_from_slice(&value.to_be_bytes());
                if d == 0 && rng.one_in(2) {
                    lbls[4..8].copy_from_slice(&value.to_be_bytes());
                }
                format!("image dimension {d} = {value:#x}")
            }
            _ => {
                let (a, what_a) = mutate(&mut rng, &images);
                let (b, what_b) = mutate(&mut rng, &labels);
                (imgs, lbls) = (a, b);
                format!("images: {what_a}; labels: {what_b}")
            }
        };
        let gz = rng.one_in(3);
        write_idx(dir.path(), &imgs, &lbls, gz);
        let what = format!("{what}{}", if gz { " (gzip)" } else { "" });
        let limit = 16 * (imgs.len() + lbls.len()) + MB;
        tally.add(check(TEST, seed, &what, limit, || read_idx(dir.path())));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn idx_headers_declaring_huge_or_empty_sizes_are_errors() {
    // Regression: 2^32 − 1 in all three dimensions overflowed the size product (a debug panic).
    let dir = tempfile::tempdir().expect("temp dir");
    let m = u32::MAX;
    for (dims, body) in [
        ([m, m, m], 64),
        ([m, 1, 1], 64),
        ([1, m, m], 64),
        ([0x0001_0000, 0x0001_0000, 0x0001_0000], 64),
        ([3, 0, 5], 0),
        ([3, 5, 0], 0),
    ] {
        let images = idx(0x0803, &dims, &vec![7; body]);
        let labels = idx(0x0801, &[dims[0]], &[1; 3]);
        write_idx(dir.path(), &images, &labels, false);
        fuzzing::take_peak();
        let err = read_idx(dir.path()).expect_err("a size that does not fit the file");
        assert!(
            fuzzing::take_peak() < MB,
            "{dims:?}: a large allocation for a {body}-byte body"
        );
        let text = err.to_string();
        assert!(
            text.contains("IDX file") || text.contains("no images"),
            "{dims:?}: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// List and annotation files.

/// Writes `bytes` at `root/relative`, creating folders.
fn put(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn rgb_png(width: u32, height: u32) -> Vec<u8> {
    png_image(
        width,
        height,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &ramp((width * height * 3) as usize, 3),
    )
}

#[test]
fn voc_classification_lists_survive_mutation() {
    const TEST: &str = "voc_classification_lists_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let ids = ["000005", "000007", "000009"];
    for id in ids {
        put(root, &format!("JPEGImages/{id}.jpg"), b"not decoded here");
    }
    let list = |c: usize| -> Vec<u8> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("{id} {}\n", [1, -1, 0][(i + c) % 3]))
            .collect::<String>()
            .into_bytes()
    };
    let path = |class: &str| format!("ImageSets/Main/{class}_trainval.txt");
    for (c, class) in VOC_CLASSES.iter().enumerate() {
        put(root, &path(class), &list(c));
    }
    VocSplit::open(root, "trainval").expect("the valid lists read");

    let mut tally = Tally::default();
    for seed in seeds(TEST, 400) {
        let mut rng = Rng::new(seed);
        let c = if rng.one_in(2) {
            0
        } else {
            rng.below(VOC_CLASSES.len())
        };
        let (bytes, what) = mutate(&mut rng, &list(c));
        put(root, &path(VOC_CLASSES[c]), &bytes);
        let what = format!("{}: {what}", VOC_CLASSES[c]);
        tally.add(check(TEST, seed, &what, 16 * bytes.len() + MB, || {
            VocSplit::open(root, "trainval").and_then(|s| {
                assert_eq!(s.labels().len(), s.len());
                s.dataset().map(|_| ())
            })
        }));
        put(root, &path(VOC_CLASSES[c]), &list(c));
    }
    for split in HOSTILE_SPLITS {
        tally.add(check(TEST, 0, split, MB, || VocSplit::open(root, split)));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn voc_segmentation_lists_and_masks_survive_mutation() {
    const TEST: &str = "voc_segmentation_lists_and_masks_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let mask = voc_mask_png(12, 9);
    for id in ["2008_000002", "2008_000003"] {
        put(root, &format!("JPEGImages/{id}.jpg"), &rgb_png(12, 9));
        put(root, &format!("SegmentationClass/{id}.png"), &mask);
        put(root, &format!("SegmentationClassAug/{id}.png"), &mask);
    }
    let lists: [&[u8]; 2] = [
        b"2008_000002\n2008_000003\n",
        b"/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n\
          JPEGImages/2008_000003.jpg SegmentationClassAug/2008_000003.png\n",
    ];
    let list_path = "ImageSets/Segmentation/train.txt";
    for list in lists {
        put(root, list_path, list);
        let split = VocSegmentation::open(root, "train").expect("the valid list reads");
        for i in 0..split.len() {
            split.load(i).expect("the valid pair loads");
        }
    }

    let mut tally = Tally::default();
    for seed in seeds(TEST, 500) {
        let mut rng = Rng::new(seed);
        let list = *rng.pick(&lists);
        let (what, list_bytes, mask_bytes) = if rng.one_in(2) {
            let (bytes, what) = mutate(&mut rng, list);
            (format!("list: {what}"), bytes, mask.clone())
        } else {
            let (bytes, what) = match mutate_png_chunk(&mut rng, &mask).filter(|_| rng.one_in(2)) {
                Some(done) => done,
                None => mutate(&mut rng, &mask),
            };
            (format!("mask: {what}"), list.to_vec(), bytes)
        };
        put(root, list_path, &list_bytes);
        put(root, "SegmentationClass/2008_000003.png", &mask_bytes);
        put(root, "SegmentationClassAug/2008_000003.png", &mask_bytes);
        tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
            let split = VocSegmentation::open(root, "train")?;
            for i in 0..=split.len() {
                let _ = split.load_mask(i);
                match split.load(i) {
                    Ok((image, mask)) => assert_eq!(image.width * image.height, mask.data.len()),
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
            split.seg_dataset().map(|_| ())
        }));
    }
    put(root, list_path, lists[0]);
    for split in HOSTILE_SPLITS {
        tally.add(check(TEST, 0, split, MB, || {
            VocSegmentation::open(root, split)
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn davis_lists_and_annotations_survive_mutation() {
    const TEST: &str = "davis_lists_and_annotations_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let annotation = png_with(
        5,
        3,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &[0, 1, 2, 0, 255, 1, 1, 0, 0, 2, 0, 0, 1, 1, 255],
        Some(palette(256)),
    );
    for seq in ["bear", "car-shadow"] {
        for f in 0..2 {
            put(
                root,
                &format!("JPEGImages/480p/{seq}/{f:05}.jpg"),
                &rgb_png(5, 3),
            );
            put(
                root,
                &format!("Annotations/480p/{seq}/{f:05}.png"),
                &annotation,
            );
        }
    }
    let list: &[u8] = b"bear\ncar-shadow\n";
    let list_path = "ImageSets/2017/val.txt";
    put(root, list_path, list);
    DavisSplit::open(root, "val").expect("the valid list reads");

    let mut tally = Tally::default();
    for seed in seeds(TEST, 500) {
        let mut rng = Rng::new(seed);
        let (what, list_bytes, annotation_bytes) = if rng.one_in(2) {
            let (bytes, what) = mutate(&mut rng, list);
            (format!("list: {what}"), bytes, annotation.clone())
        } else {
            let (bytes, what) =
                match mutate_png_chunk(&mut rng, &annotation).filter(|_| rng.one_in(2)) {
                    Some(done) => done,
                    None => mutate(&mut rng, &annotation),
                };
            (format!("annotation: {what}"), list.to_vec(), bytes)
        };
        put(root, list_path, &list_bytes);
        put(root, "Annotations/480p/bear/00001.png", &annotation_bytes);
        tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
            let split = DavisSplit::open(root, "val")?;
            for seq in split.sequences() {
                for i in 0..=seq.len() {
                    let _ = seq.frame(i);
                    if let Ok(mask) = seq.annotation(i) {
                        assert_eq!(mask.data.len(), mask.width * mask.height);
                    }
                }
            }
            Ok::<_, kontrast_data::DataError>(())
        }));
    }
    put(root, list_path, list);
    for split in HOSTILE_SPLITS {
        tally.add(check(TEST, 0, split, MB, || DavisSplit::open(root, split)));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn cityscapes_labels_survive_mutation() {
    const TEST: &str = "cityscapes_labels_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let ids: Vec<u8> = (0..10 * 6).map(|i| (i % 34) as u8).collect();
    let labels = png_image(10, 6, png::ColorType::Grayscale, png::BitDepth::Eight, &ids);
    let stem = "aachen_000000_000019";
    put(
        root,
        &format!("leftImg8bit/val/aachen/{stem}_leftImg8bit.png"),
        &rgb_png(10, 6),
    );
    let label_path = format!("gtFine/val/aachen/{stem}_gtFine_labelIds.png");
    put(root, &label_path, &labels);
    Cityscapes::open(root, "val")
        .expect("the valid split opens")
        .load(0)
        .expect("and loads");

    let mut tally = Tally::default();
    for seed in seeds(TEST, 500) {
        let mut rng = Rng::new(seed);
        let (bytes, what) = match mutate_png_chunk(&mut rng, &labels).filter(|_| rng.one_in(2)) {
            Some(done) => done,
            None => mutate(&mut rng, &labels),
        };
        put(root, &label_path, &bytes);
        tally.add(check(TEST, seed, &what, IMAGE_ALLOC_LIMIT, || {
            let split = Cityscapes::open(root, "val")?;
            let _ = split.load_mask(1);
            split.load(0).map(|(image, mask)| {
                assert_eq!(image.width * image.height, mask.data.len());
                assert!(mask.data.iter().all(|&v| v < 19 || v == 255));
            })
        }));
    }
    for split in HOSTILE_SPLITS {
        tally.add(check(TEST, 0, split, MB, || Cityscapes::open(root, split)));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn coco_annotation_files_survive_mutation() {
    const TEST: &str = "coco_annotation_files_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    put(root, "a.jpg", b"x");
    put(root, "sub/b.png", b"x");
    let json: &[u8] = br#"{"info": {"year": 2017}, "images": [{"id": 1, "file_name": "a.jpg", "width": 4},
        {"id": 2, "file_name": "sub/b.png"}], "annotations": [{"id": 7, "bbox": [1, 2, 3.5, 4e2]}]}"#;
    let annotations = root.join("ann.json");
    std::fs::write(&annotations, json).expect("write");
    assert_eq!(
        Dataset::open_annotated(root, &annotations)
            .expect("valid")
            .len(),
        2
    );

    let mut tally = Tally::default();
    for seed in seeds(TEST, 600) {
        let mut rng = Rng::new(seed);
        let (bytes, what) = mutate(&mut rng, json);
        std::fs::write(&annotations, &bytes).expect("write");
        tally.add(check(TEST, seed, &what, 16 * bytes.len() + MB, || {
            Dataset::open_annotated(root, &annotations).map(|ds| {
                for i in 0..=ds.len() {
                    let _ = ds.describe(i);
                }
            })
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}
