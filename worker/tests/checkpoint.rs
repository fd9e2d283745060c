//! Checkpoints on a real file system, each test in its own directory.
use std::path::Path;

use kontrast_worker::checkpoint::{CheckpointError, CheckpointStore, Meta, hash_json};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn bytes(t: &Tensor) -> Vec<u8> {
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.contiguous().copy_data_u8(&mut buf, numel);
    buf
}

fn meta(step: u64) -> Meta {
    Meta {
        step,
        config_hash: "abc".into(),
        extra: json!({"rng": [1, 2, 3]}),
    }
}

/// A checkpoint whose only tensor holds `epoch`, to tell them apart.
fn save_marked(store: &CheckpointStore, epoch: u32) {
    let t = Tensor::from_slice(&[epoch as i64]);
    store
        .save(epoch, &[("marker", &t)], &meta(epoch as u64 * 10))
        .unwrap();
}

fn marker(store: &CheckpointStore) -> i64 {
    let loaded = store.latest().unwrap().expect("a checkpoint");
    loaded.tensors["marker"].int64_value(&[0])
}

fn epochs(store: &CheckpointStore) -> Vec<u32> {
    store.list().unwrap().iter().map(|e| e.epoch).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn tensors_of_several_kinds_round_trip_bit_exactly_with_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    let special = Tensor::from_slice(&[
        f32::NAN,
        -0.0,
        f32::INFINITY,
        f32::MIN_POSITIVE / 2.0,
        1.0 / 3.0,
    ]);
    let weights = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    // Not contiguous: stored as its values.
    let transposed = Tensor::randn([5, 7], (Kind::Float, Device::Cpu)).transpose(0, 1);
    let ptr = Tensor::from_slice(&[i64::MAX, -1, 0]);
    let scalar = Tensor::from(4096i64);
    let queue = Tensor::randn([128, 16], (Kind::Double, Device::Cpu));
    let half = Tensor::randn([6], (Kind::BFloat16, Device::Cpu));
    let rng = Tensor::from_slice(&[0u8, 255, 7]);
    let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
    let tensors = [
        ("special", &special),
        ("encoder_q.conv1.weight", &weights),
        ("transposed", &transposed),
        ("queue_ptr", &ptr),
        ("scalar", &scalar),
        ("queue", &queue),
        ("bf16", &half),
        ("rng_state", &rng),
        ("empty", &empty),
    ];
    let path = store.save(1, &tensors, &meta(77)).unwrap();
    assert_eq!(path, dir.path().join("epoch-0001.json"));

    let loaded = store.latest().unwrap().unwrap();
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.manifest.epoch, 1);
    assert_eq!(loaded.manifest.step, 77);
    assert_eq!(loaded.manifest.config_hash, "abc");
    assert_eq!(loaded.manifest.extra, json!({"rng": [1, 2, 3]}));
    assert!(loaded.skipped.is_empty());
    assert_eq!(loaded.tensors.len(), tensors.len());
    for (name, original) in tensors {
        let back = &loaded.tensors[name];
        assert_eq!(back.kind(), original.kind(), "{name}");
        assert_eq!(back.size(), original.size(), "{name}");
        assert_eq!(bytes(back), bytes(original), "{name}");
    }
}

#[test]
fn only_the_newest_keep_checkpoints_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 2);
    for epoch in 1..=5 {
        save_marked(&store, epoch);
    }
    assert_eq!(epochs(&store), [4, 5]);
    assert_eq!(
        names(dir.path()),
        [
            "epoch-0004.json",
            "epoch-0004.safetensors",
            "epoch-0005.json",
            "epoch-0005.safetensors"
        ]
    );
    assert_eq!(marker(&store), 5);
}

#[test]
fn a_newest_checkpoint_with_a_flipped_byte_is_skipped_for_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    save_marked(&store, 1);
    save_marked(&store, 2);
    let path = store.tensors_path(2);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x01;
    std::fs::write(&path, data).unwrap();

    let loaded = store.latest().unwrap().unwrap();
    assert_eq!(loaded.manifest.epoch, 1);
    assert_eq!(loaded.tensors["marker"].int64_value(&[0]), 1);
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].epoch, 2);
    assert!(
        loaded.skipped[0].reason.contains("SHA-256"),
        "{:?}",
        loaded.skipped
    );
    assert!(matches!(
        store.load(2),
        Err(CheckpointError::Corrupt { .. })
    ));
}

#[test]
fn truncated_missing_or_garbled_newer_checkpoints_are_all_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 5);
    for epoch in 1..=4 {
        save_marked(&store, epoch);
    }
    let truncated = std::fs::read(store.tensors_path(4)).unwrap();
    std::fs::write(store.tensors_path(4), &truncated[..truncated.len() / 2]).unwrap();
    std::fs::remove_file(store.tensors_path(3)).unwrap();
    std::fs::write(store.manifest_path(2), b"{\"formatVersion\": 1, \"epo").unwrap();

    let loaded = store.latest().unwrap().unwrap();
    assert_eq!(loaded.manifest.epoch, 1);
    let skipped: Vec<u32> = loaded.skipped.iter().map(|s| s.epoch).collect();
    assert_eq!(skipped, [4, 3, 2]);
    assert!(
        loaded.skipped[0].reason.contains("bytes"),
        "{:?}",
        loaded.skipped
    );
    assert!(
        loaded.skipped[1].reason.contains("missing"),
        "{:?}",
        loaded.skipped
    );
    assert!(
        loaded.skipped[2].reason.contains("manifest"),
        "{:?}",
        loaded.skipped
    );
}

#[test]
fn leftovers_of_a_crashed_save_are_ignored_and_cleaned_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    save_marked(&store, 1);
    // A crash while writing epoch 2: a temporary tensors file, then a committed tensors file
    // whose manifest never came.
    std::fs::write(dir.path().join("epoch-0002.safetensors.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("epoch-0002.json.tmp"), b"{").unwrap();
    std::fs::write(dir.path().join("epoch-0003.safetensors"), b"orphan").unwrap();
    assert_eq!(epochs(&store), [1]);
    assert_eq!(marker(&store), 1);

    save_marked(&store, 2);
    assert_eq!(
        names(dir.path()),
        [
            "epoch-0001.json",
            "epoch-0001.safetensors",
            "epoch-0002.json",
            "epoch-0002.safetensors"
        ]
    );
    assert_eq!(marker(&store), 2);
}

#[test]
fn saving_an_epoch_discards_later_checkpoints_of_an_abandoned_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 5);
    for epoch in 1..=3 {
        save_marked(&store, epoch);
    }
    save_marked(&store, 1);
    assert_eq!(epochs(&store), [1]);
}

#[test]
fn an_empty_or_missing_directory_has_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 2);
    assert!(store.latest().unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
    let missing = CheckpointStore::new(dir.path().join("not/there"), 2);
    assert!(missing.latest().unwrap().is_none());
    assert!(matches!(
        missing.load(1),
        Err(CheckpointError::NotFound { epoch: 1, .. })
    ));
}

#[test]
fn duplicate_tensor_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("run"), 2);
    let t = Tensor::from_slice(&[1.0f32]);
    let err = store
        .save(1, &[("a", &t), ("a", &t)], &Meta::default())
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::DuplicateName(ref n) if n == "a"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists());
}

#[test]
fn the_config_hash_is_stable_and_tells_configs_apart() {
    let a = hash_json(&json!({"lr": 0.03, "epochs": 200})).unwrap();
    assert_eq!(a, hash_json(&json!({"lr": 0.03, "epochs": 200})).unwrap());
    assert_ne!(a, hash_json(&json!({"lr": 0.06, "epochs": 200})).unwrap());
    assert_eq!(a.len(), 64);
}
