//! Malformed and unusual inputs: skipped with a counted warning, or decoded sensibly; never a
//! crash, and pre-training batches keep their size.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{diff, read_image};
use kontrast_data::decode::{self, JpegBackend};
use kontrast_data::{
    Dataset, DatasetFormat, EvalTransform, Loader, LoaderConfig, MultiCropSpec, Sampler,
};

const BROKEN: [&str; 4] = ["truncated.jpg", "zero.jpg", "text.jpg", "huge.jpg"];

#[test]
fn each_malformed_file_is_rejected_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    for backend in [JpegBackend::default(), JpegBackend::Zune] {
        for name in BROKEN {
            let bytes = std::fs::read(dir.path().join("malformed").join(name)).expect("fixture");
            let err = match decode::decode(&bytes, backend, 1) {
                Ok(img) => panic!(
                    "{name} ({backend:?}) decoded to {}×{}",
                    img.width, img.height
                ),
                Err(e) => e,
            };
            assert!(!err.is_empty(), "{name}: empty reason");
            if name == "huge.jpg" {
                assert!(
                    err.contains("exceeds") || err.contains("limit"),
                    "{name}: {err}"
                );
            }
        }
    }
}

#[test]
fn unusual_but_valid_images_decode_to_rgb() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let odd = dir.path().join("odd");
    for (name, w, h) in [
        ("one_pixel.png", 1, 1),
        ("one_pixel.jpg", 1, 1),
        ("cmyk.jpg", 300, 200),
        ("gray.jpg", 300, 200),
        ("rgb16.png", 160, 120),
        ("gray16.png", 70, 50),
        ("palette.png", 90, 80),
        ("rgba.png", 90, 80),
    ] {
        for backend in [JpegBackend::default(), JpegBackend::Zune] {
            let bytes = std::fs::read(odd.join(name)).expect("fixture");
            let img = decode::decode(&bytes, backend, 1)
                .unwrap_or_else(|e| panic!("{name} ({backend:?}): {e}"));
            assert_eq!((img.width, img.height), (w, h), "{name}");
        }
    }
    // 16-bit samples keep their high byte: the 8-bit source comes back exactly.
    let rgb16 = decode::decode(
        &std::fs::read(odd.join("rgb16.png")).expect("fixture"),
        JpegBackend::default(),
        1,
    )
    .expect("decodes");
    assert_eq!(diff(&rgb16, &read_image(&odd.join("rgb16.npy"))).0, 0);
}

#[test]
fn a_folder_with_broken_files_yields_full_batches_and_counts_the_skips() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let root = dir.path().join("mixed");
    std::fs::create_dir(&root).expect("mkdir");
    for name in BROKEN {
        std::fs::copy(dir.path().join("malformed").join(name), root.join(name)).expect("copy");
    }
    for name in ["one_pixel.png", "cmyk.jpg", "gray.jpg", "rgb16.png"] {
        std::fs::copy(dir.path().join("odd").join(name), root.join(name)).expect("copy");
    }
    let ds = Arc::new(Dataset::open(DatasetFormat::Flat, &root).expect("flat"));
    assert_eq!(ds.len(), 8);
    let sampler = Sampler::new(ds.len(), 3, 0, 1).expect("sampler");
    let spec = MultiCropSpec::moco_v2(32);
    let config = LoaderConfig {
        batch_per_rank: 4,
        threads: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::clone(&ds), &sampler, spec, config.clone()).expect("loader");
    let stats = loader.stats();
    let batches: Vec<_> = loader.map(|b| b.expect("batch")).collect();
    assert_eq!(batches.len(), 2);
    let mut skipped = 0;
    for b in &batches {
        assert_eq!(b.indices.len(), 4, "batch size is kept");
        assert_eq!(b.views[0].data.len(), 4 * 3 * 32 * 32);
        for &i in &b.indices {
            assert!(
                !BROKEN.iter().any(|n| ds.describe(i).ends_with(n)),
                "a broken file made it into a batch"
            );
        }
        skipped += b.skipped;
    }
    assert!(
        skipped >= 4,
        "each broken file is tried and skipped at least once ({skipped})"
    );
    assert_eq!(
        stats.corrupt_skipped.load(Ordering::Relaxed),
        skipped as u64
    );

    // Evaluation leaves broken images out of their batch instead.
    let eval = Loader::eval(
        ds,
        (0..8).collect(),
        EvalTransform::Resize { size: 16 },
        config,
    )
    .expect("loader");
    let kept: usize = eval.map(|b| b.expect("batch").indices.len()).sum();
    assert_eq!(kept, 4);
}

#[test]
fn a_data_set_of_only_broken_files_fails_the_batch_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let ds =
        Arc::new(Dataset::open(DatasetFormat::Flat, &dir.path().join("malformed")).expect("flat"));
    let sampler = Sampler::new(ds.len(), 0, 0, 1).expect("sampler");
    let config = LoaderConfig {
        batch_per_rank: 2,
        threads: 1,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(ds, &sampler, MultiCropSpec::moco_v2(32), config).expect("loader");
    let err = loader
        .next()
        .expect("a result")
        .expect_err("every image is broken");
    assert!(err.to_string().contains("could not be decoded"), "{err}");
    assert!(
        loader.next().is_none(),
        "the loader stops after a failed batch"
    );
}
