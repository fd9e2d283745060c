//! Sampler, loader and data sets end to end: sharding, determinism, resume, serial == parallel,
//! Fashion-MNIST and JPEG folders with the MoCo v2 and Revisiting crop sets.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::fashion_mnist_dir;
use kontrast_data::crop::{self, CropFamily};
use kontrast_data::{
    Batch, DataError, Dataset, DatasetFormat, EvalTransform, Loader, LoaderConfig, MultiCropSpec,
    SampleRng, Sampler, Split,
};

fn fashion_mnist(split: Split) -> Arc<Dataset> {
    Arc::new(
        Dataset::open_split(DatasetFormat::FashionMnist, &fashion_mnist_dir(), split)
            .expect("Fashion-MNIST installed"),
    )
}

/// Revisiting's crop set at Fashion-MNIST scale (2 × 32 + 4 × 16), to keep tests fast.
fn small_revisiting() -> MultiCropSpec {
    MultiCropSpec {
        large: CropFamily {
            count: 2,
            size: 32,
            scale: (0.2, 1.0),
        },
        small: CropFamily {
            count: 4,
            size: 16,
            scale: (0.05, 0.14),
        },
        ..MultiCropSpec::revisiting()
    }
}

fn collect(loader: Loader) -> Vec<Batch> {
    loader.map(|b| b.expect("batch")).collect()
}

fn config(batch: usize, threads: usize) -> LoaderConfig {
    LoaderConfig {
        batch_per_rank: batch,
        threads,
        prefetch: 3,
        seed: 42,
        ..LoaderConfig::default()
    }
}

fn strip_wait(mut batches: Vec<Batch>) -> Vec<Batch> {
    for b in &mut batches {
        b.data_wait = Default::default();
    }
    batches
}

#[test]
fn shards_are_disjoint_equal_and_cover_all_but_the_remainder() {
    let (len, world) = (1003, 4);
    let shards: Vec<Vec<usize>> = (0..world)
        .map(|r| {
            Sampler::new(len, 9, r, world)
                .expect("sampler")
                .epoch_indices(3)
        })
        .collect();
    let mut seen = HashSet::new();
    for s in &shards {
        assert_eq!(s.len(), len / world);
        for &i in s {
            assert!(i < len);
            assert!(seen.insert(i), "index {i} is in two shards");
        }
    }
    assert_eq!(seen.len(), len / world * world);
}

#[test]
fn shuffle_is_deterministic_per_seed_and_epoch_and_changes_between_epochs() {
    let s = Sampler::new(500, 1, 1, 2).expect("sampler");
    assert_eq!(s.epoch_indices(4), s.epoch_indices(4));
    assert_ne!(s.epoch_indices(4), s.epoch_indices(5));
    assert_ne!(
        s.epoch_indices(4),
        Sampler::new(500, 2, 1, 2)
            .expect("sampler")
            .epoch_indices(4)
    );
}

#[test]
fn sampler_rejects_a_rank_outside_the_world() {
    assert!(matches!(
        Sampler::new(10, 0, 2, 2),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        Sampler::new(1, 0, 0, 2),
        Err(DataError::Config(_))
    ));
}

#[test]
fn serial_and_parallel_loaders_give_identical_batches() {
    let ds = fashion_mnist(Split::Test);
    let sampler = Sampler::new(96, 5, 0, 1).expect("sampler");
    let serial = strip_wait(collect(
        Loader::new(Arc::clone(&ds), &sampler, small_revisiting(), config(8, 0)).expect("loader"),
    ));
    let parallel = strip_wait(collect(
        Loader::new(ds, &sampler, small_revisiting(), config(8, 3)).expect("loader"),
    ));
    assert_eq!(serial.len(), 12);
    assert_eq!(serial, parallel);
}

#[test]
fn resuming_at_a_batch_offset_reproduces_the_rest_of_the_epoch() {
    let ds = fashion_mnist(Split::Test);
    let sampler = Sampler::new(64, 5, 1, 2).expect("sampler");
    let full = strip_wait(collect(
        Loader::new(Arc::clone(&ds), &sampler, small_revisiting(), config(4, 2)).expect("loader"),
    ));
    let resumed = strip_wait(collect(
        Loader::new(
            ds,
            &sampler,
            small_revisiting(),
            LoaderConfig {
                start_batch: 5,
                ..config(4, 2)
            },
        )
        .expect("loader"),
    ));
    assert_eq!(full.len(), 8);
    assert_eq!(&full[5..], &resumed[..]);
    assert_eq!(resumed[0].number, 5);
}

#[test]
fn fashion_mnist_opens_both_splits_with_labels() {
    let train = fashion_mnist(Split::Train);
    let test = fashion_mnist(Split::Test);
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    // The first test labels of Fashion-MNIST: ankle boot, pullover, trouser.
    assert_eq!(
        [test.label(0), test.label(1), test.label(2)],
        [Some(9), Some(2), Some(1)]
    );
    let img = test.load(0).expect("image");
    assert_eq!((img.width, img.height), (28, 28));
    assert!(
        img.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]),
        "grey replicated to RGB"
    );
}

#[test]
fn revisiting_batches_have_six_views_of_the_right_shapes() {
    let ds = fashion_mnist(Split::Test);
    let sampler = Sampler::new(ds.len(), 0, 0, 1).expect("sampler");
    let mut loader = Loader::new(ds, &sampler, small_revisiting(), config(5, 2)).expect("loader");
    let batch = loader.next().expect("one batch").expect("ok");
    assert_eq!(batch.views.len(), 6);
    for (c, v) in batch.views.iter().enumerate() {
        let size = if c < 2 { 32 } else { 16 };
        assert_eq!(v.size, size);
        assert_eq!(v.data.len(), 5 * 3 * size * size);
    }
    assert_eq!(batch.indices.len(), 5);
    assert!(batch.labels.iter().all(|l| l.is_some()));
}

#[test]
fn moco_v2_and_revisiting_run_on_a_jpeg_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    for n in ["china.jpg", "flower.jpg", "china.png", "flower.png"] {
        std::fs::copy(dir.path().join(n), images.join(n)).expect("copy");
    }
    let ds = Arc::new(Dataset::open(DatasetFormat::Flat, &images).expect("flat"));
    assert_eq!(ds.len(), 4);
    let sampler = Sampler::new(ds.len(), 0, 0, 1).expect("sampler");
    for spec in [MultiCropSpec::moco_v2(224), MultiCropSpec::revisiting()] {
        let n = spec.num_views();
        let batches = collect(
            Loader::new(Arc::clone(&ds), &sampler, spec.clone(), config(2, 2)).expect("loader"),
        );
        assert_eq!(batches.len(), 2);
        for b in &batches {
            assert_eq!(b.views.len(), n);
            for (c, v) in b.views.iter().enumerate() {
                assert_eq!(v.data.len(), 2 * 3 * spec.size_of(c) * spec.size_of(c));
            }
            assert_eq!(b.labels, vec![None, None]);
        }
    }
}

#[test]
fn a_coco_annotation_file_selects_and_orders_the_images_of_a_flat_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let images = dir.path().join("train2017");
    std::fs::create_dir_all(images.join("sub")).expect("mkdir");
    for (from, to) in [
        ("china.jpg", "000000000009.jpg"),
        ("flower.jpg", "sub/000000000025.jpg"),
        ("china.png", "not-listed.png"),
    ] {
        std::fs::copy(dir.path().join(from), images.join(to)).expect("copy");
    }
    let annotations = dir.path().join("instances_train2017.json");
    std::fs::write(
        &annotations,
        r#"{"info": {"description": "COCO-style"}, "licenses": [],
            "images": [{"id": 25, "file_name": "sub/000000000025.jpg", "height": 427, "width": 640},
                       {"id": 9, "file_name": "000000000009.jpg", "height": 427, "width": 640}],
            "annotations": [{"id": 1, "image_id": 9, "bbox": [0, 0, 10, 10], "category_id": 1}],
            "categories": [{"id": 1, "name": "person"}]}"#,
    )
    .expect("write annotations");
    let ds = Arc::new(Dataset::open_annotated(&images, &annotations).expect("annotated"));
    assert_eq!(ds.len(), 2);
    assert!(ds.describe(0).ends_with("sub/000000000025.jpg"));
    assert!(ds.describe(1).ends_with("000000000009.jpg"));
    let sampler = Sampler::new(ds.len(), 0, 0, 1).expect("sampler");
    let batches = collect(
        Loader::new(ds, &sampler, MultiCropSpec::moco_v2(64), config(2, 1)).expect("loader"),
    );
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].views[0].data.len(), 2 * 3 * 64 * 64);
}

#[test]
fn eval_loader_keeps_every_image_and_its_label_in_order() {
    let ds = fashion_mnist(Split::Test);
    let indices: Vec<usize> = (0..23).collect();
    let batches = collect(
        Loader::eval(
            Arc::clone(&ds),
            indices.clone(),
            EvalTransform::Resize { size: 32 },
            config(10, 2),
        )
        .expect("loader"),
    );
    assert_eq!(
        batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
        vec![10, 10, 3]
    );
    let all: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(all, indices);
    assert_eq!(batches[0].labels[0], ds.label(0));
    assert_eq!(batches[0].views[0].data.len(), 10 * 3 * 32 * 32);
}

#[test]
fn every_accepted_small_crop_overlaps_the_key_crop_by_ten_percent() {
    let mut rng = SampleRng::from_parts(&[1]);
    let (mut accepted, mut fallback) = (0, 0);
    for i in 0..20_000 {
        let (w, h) = (200 + i % 500, 150 + (i * 7) % 400);
        let key = crop::random_resized_crop(&mut rng, w, h, (0.2, 1.0));
        let (b, target) = crop::constrained_crop(&mut rng, w, h, (0.05, 0.14), &key);
        assert!(b.left + b.width <= w && b.top + b.height <= h);
        match target {
            Some(t) => {
                accepted += 1;
                assert!(
                    b.intersection(&key) as f64 >= 0.1 * t,
                    "crop {b:?} vs key {key:?}, target {t}"
                );
            }
            None => fallback += 1,
        }
    }
    assert!(
        accepted > 19_000,
        "{accepted} accepted, {fallback} fell back"
    );
}

#[test]
fn missing_and_empty_data_set_directories_are_typed_errors_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    match Dataset::open(DatasetFormat::Flat, &missing) {
        Err(e @ DataError::Unreadable { .. }) => assert!(e.to_string().contains("nope")),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    for format in [
        DatasetFormat::Flat,
        DatasetFormat::Imagefolder,
        DatasetFormat::FashionMnist,
    ] {
        match Dataset::open(format, dir.path()) {
            Err(e @ DataError::Empty { .. }) => {
                assert!(e.to_string().contains(&dir.path().display().to_string()))
            }
            other => panic!("{format:?}: expected Empty, got {other:?}"),
        }
    }
}

#[test]
fn imagefolder_labels_follow_sorted_class_folders() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::fixtures(dir.path());
    let root = dir.path().join("folder");
    for (class, file) in [
        ("b_flower", "flower.png"),
        ("a_china", "china.jpg"),
        ("a_china", "china.png"),
    ] {
        std::fs::create_dir_all(root.join(class)).expect("mkdir");
        std::fs::copy(dir.path().join(file), root.join(class).join(file)).expect("copy");
    }
    let ds = Dataset::open(DatasetFormat::Imagefolder, &root).expect("imagefolder");
    assert_eq!(
        ds.classes(),
        vec!["a_china".to_string(), "b_flower".to_string()]
    );
    assert_eq!(
        (0..3).map(|i| ds.label(i)).collect::<Vec<_>>(),
        vec![Some(0), Some(0), Some(1)]
    );
    assert!(Path::new(&ds.describe(2)).ends_with("b_flower/flower.png"));
}

#[test]
fn loader_stats_count_images_batches_and_wait() {
    let ds = fashion_mnist(Split::Test);
    let sampler = Sampler::new(40, 0, 0, 1).expect("sampler");
    let loader = Loader::new(ds, &sampler, small_revisiting(), config(10, 2)).expect("loader");
    let stats = loader.stats();
    assert_eq!(collect(loader).len(), 4);
    assert_eq!(stats.images.load(Ordering::Relaxed), 40);
    assert_eq!(stats.batches.load(Ordering::Relaxed), 4);
    assert_eq!(stats.corrupt_skipped.load(Ordering::Relaxed), 0);
}
