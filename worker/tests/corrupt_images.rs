//! Corrupt files in the pre-training data: `kontrast train` skips them, counts every skip in
//! `kontrast_train_corrupt_images_skipped_total`, names them in its log, and finishes the run.
//!
//! The loader refills a corrupt image's slot with the image at the same slot of the next batch,
//! so a corrupt file is read once at its own place in the epoch and again whenever it is the
//! refill of a corrupt neighbour. The expected count replays that over the sampler's order of
//! each epoch, which the test reads from the same public `Sampler` the trainer uses.
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Proc;
use kontrast_api::config::DatasetFormat as ConfigFormat;
use kontrast_data::{Dataset, DatasetFormat, Sampler};
use kontrast_worker::train::config::{self, Overrides};

const BATCH: usize = 16;
const EPOCHS: u32 = 2;
/// A multiple of the batch, so every position of an epoch is a slot of its own (no tail dropped).
const IMAGES: usize = 128;
const LIMIT: Duration = Duration::from_secs(150);
const METRIC: &str = "kontrast_train_corrupt_images_skipped_total";

/// Files that cannot be decoded, and how each is made.
const CORRUPT: [&str; 6] = [
    "truncated.png",
    "truncated.jpg",
    "noise.png",
    "empty.jpeg",
    "bomb.png",
    "bad-crc.png",
];
/// Unusual files that are valid images: they must be trained on, not skipped.
const ODD_BUT_VALID: [&str; 2] = ["one-pixel.png", "gray-alpha-16bit.png"];

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG of `width × height` pixels of `bytes_per_pixel` bytes (`color_type`, `bit_depth` as in
/// the PNG header), rows unfiltered, in stored (uncompressed) deflate blocks: no encoder needed.
fn png(width: u32, height: u32, color_type: u8, bit_depth: u8, pixels: &[u8]) -> Vec<u8> {
    let row = pixels.len() / height as usize;
    let mut raw = Vec::with_capacity(pixels.len() + height as usize);
    for line in pixels.chunks_exact(row) {
        raw.push(0); // filter: none
        raw.extend_from_slice(line);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An imagefolder data set of real Fashion-MNIST images (as 8-bit grey PNGs), the odd but
/// valid files and the corrupt ones, spread over two class folders.
fn write_dataset(root: &Path) {
    let source = config::standalone(&Overrides::default())
        .expect("the embedded run resolves")
        .dataset
        .path;
    let fashion = Dataset::open(DatasetFormat::FashionMnist, Path::new(&source))
        .unwrap_or_else(|e| panic!("Fashion-MNIST at {source} (dataset-fashion-mnist): {e}"));
    let grey = |i: usize| {
        let image = fashion.load(i).expect("a Fashion-MNIST image");
        let pixels: Vec<u8> = image.data.chunks_exact(3).map(|px| px[0]).collect();
        (image.width as u32, image.height as u32, pixels)
    };
    let classes = [root.join("class-a"), root.join("class-b")];
    for dir in &classes {
        std::fs::create_dir_all(dir).expect("class folder");
    }
    let write = |i: usize, name: &str, bytes: &[u8]| {
        std::fs::write(classes[i % 2].join(name), bytes).expect("write an image file");
    };

    let (w, h, pixels) = grey(0);
    let valid = png(w, h, 0, 8, &pixels);
    write(0, "truncated.png", &valid[..valid.len() / 2]);
    // SOI and the start of a JFIF APP0 segment, then nothing: a JPEG cut off in its header.
    write(
        1,
        "truncated.jpg",
        &[
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
        ],
    );
    let mut state = 0x2545_F491_u32;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    write(2, "noise.png", &noise);
    write(3, "empty.jpeg", &[]);
    // A decompression bomb: a header declaring 65535 × 65535 pixels over 128 KiB of zeros.
    write(4, "bomb.png", &png(65_535, 65_535, 0, 8, &[0; 65_535])[..]);
    let mut bad_crc = valid.clone();
    let last_pixel = bad_crc.len() - 12 - 4 - 4 - 1;
    bad_crc[last_pixel] ^= 0xFF;
    write(5, "bad-crc.png", &bad_crc);

    write(0, "one-pixel.png", &png(1, 1, 2, 8, &[200, 30, 90]));
    let (w, h, pixels) = grey(1);
    let grey_alpha16: Vec<u8> = pixels.iter().flat_map(|&v| [v, v, 0xFF, 0xFF]).collect();
    write(1, "gray-alpha-16bit.png", &png(w, h, 4, 16, &grey_alpha16));

    let real = IMAGES - CORRUPT.len() - ODD_BUT_VALID.len();
    for i in 0..real {
        let (w, h, pixels) = grey(i + 2);
        write(i, &format!("fashion-{i:03}.png"), &png(w, h, 0, 8, &pixels));
    }
}

/// Skips the loader counts while producing each batch of `epoch`: a slot reads its own image,
/// then, while that one is corrupt, the image at the same slot of the following batches (16
/// tries at most). `None` if a slot runs out of tries, which fails the run.
fn skips_per_batch(sampler: &Sampler, epoch: u64, corrupt: &BTreeSet<usize>) -> Option<Vec<u64>> {
    const TRIES: u64 = 16;
    let order = sampler.epoch_indices(epoch);
    let batches = sampler.batches_per_epoch(BATCH);
    (0..batches)
        .map(|k| {
            let mut skips = 0;
            for slot in 0..BATCH {
                let mut tries = 0;
                while corrupt
                    .contains(&order[(k * BATCH + slot + tries as usize * BATCH) % order.len()])
                {
                    tries += 1;
                    if tries == TRIES {
                        return None;
                    }
                }
                skips += tries;
            }
            Some(skips)
        })
        .collect()
}

/// The counter's value in a `/metrics` body, whatever its labels.
fn counter(body: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(METRIC)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        rest.rsplit_once(' ')?
            .1
            .trim()
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    })
}

fn scrape(port: u16) -> Option<u64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    counter(response.split_once("\r\n\r\n")?.1)
}

#[test]
fn corrupt_images_are_skipped_counted_and_named_and_training_completes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    write_dataset(&root);

    let dataset = Dataset::open(DatasetFormat::Imagefolder, &root).expect("the imagefolder");
    assert_eq!(dataset.len(), IMAGES);
    let corrupt: BTreeSet<usize> = (0..dataset.len())
        .filter(|&i| CORRUPT.iter().any(|n| dataset.describe(i).ends_with(n)))
        .collect();
    assert_eq!(corrupt.len(), CORRUPT.len());

    // A seed under which every epoch can be filled, and whose last epoch meets its last corrupt
    // file in its first half: the counter is final four training steps and a checkpoint before
    // the process exits, time enough for the scraper to see it.
    let last = u64::from(EPOCHS) - 1;
    let (seed, per_epoch) = (0..10_000u64)
        .find_map(|seed| {
            let sampler = Sampler::new(IMAGES, seed, 0, 1).expect("sampler");
            let per_epoch: Vec<Vec<u64>> = (0..=last)
                .map(|epoch| skips_per_batch(&sampler, epoch, &corrupt))
                .collect::<Option<_>>()?;
            per_epoch[last as usize][IMAGES / BATCH / 2..]
                .iter()
                .all(|&s| s == 0)
                .then_some((seed, per_epoch))
        })
        .expect("a seed that meets every corrupt file early in the last epoch");
    let expected: u64 = per_epoch.iter().flatten().sum();
    assert!(
        expected >= CORRUPT.len() as u64 * u64::from(EPOCHS),
        "each corrupt file is read at least once an epoch"
    );

    let mut run = common::small_run(&root, 1, EPOCHS, BATCH as u32, 3 * BATCH as u32);
    run.dataset.format = ConfigFormat::Imagefolder;
    let config = common::write_config(dir.path(), &run);
    let port = common::free_port();
    let cmd = common::kontrast(
        dir.path(),
        &[
            "train",
            "--config",
            config.to_str().expect("UTF-8 path"),
            "--checkpoint-dir",
            dir.path().join("checkpoints").to_str().expect("UTF-8 path"),
            "--seed",
            &seed.to_string(),
            "--data-threads",
            "0",
            "--metrics-port",
            &port.to_string(),
            "--log-every",
            "1",
        ],
    );
    let mut train = Proc::spawn(cmd, dir.path(), "train");

    // Scrape until the process exits; the last value read is the final count.
    let mut seen = Vec::new();
    while train.child.try_wait().expect("poll the process").is_none() {
        assert!(
            train.started.elapsed() < LIMIT,
            "still running after {LIMIT:?}\n{}",
            train.stderr()
        );
        if let Some(value) = scrape(port) {
            seen.push(value);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    train.assert_success(Duration::from_secs(1));
    let log = train.stderr();
    assert!(log.contains("training finished"), "{log}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the counter only grows: {seen:?}"
    );
    assert_eq!(
        seen.last().copied(),
        Some(expected),
        "{METRIC} after {EPOCHS} epochs (values seen: {seen:?})\n{log}"
    );

    let skip_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("skipping undecodable image"))
        .collect();
    // One warning per file and epoch, however often the file was tried in it.
    for name in CORRUPT {
        let named = skip_lines.iter().filter(|l| l.contains(name)).count();
        assert_eq!(
            named, EPOCHS as usize,
            "the log names {name} {named} times:\n{log}"
        );
    }
    assert_eq!(skip_lines.len(), CORRUPT.len() * EPOCHS as usize, "{log}");
    for name in ODD_BUT_VALID {
        assert!(
            !skip_lines.iter().any(|l| l.contains(name)),
            "{name} is a valid image but was skipped:\n{log}"
        );
    }
    let report = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["epoch"], EPOCHS, "{report}");
    // Skipped slots are refilled: every epoch still has all its steps.
    assert_eq!(
        report["step"],
        u64::from(EPOCHS) * (IMAGES / BATCH) as u64,
        "{report}"
    );
    eprintln!(
        "{} corrupt files, {expected} skips over {EPOCHS} epochs (seed {seed}, per batch {per_epoch:?}), {:.1} s",
        CORRUPT.len(),
        started.elapsed().as_secs_f64()
    );
}
