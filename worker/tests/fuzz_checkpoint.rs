//! Hostile bytes against the checkpoint readers: the JSON manifest and safetensors file of our
//! own checkpoints (with and without a manifest re-signed to match the damage, so the
//! safetensors parser is reached too), the pickle reader and the `torch.save` zip container
//! `kontrast import` reads. Valid inputs are mutated many times with fixed seeds; each must be
//! read or refused with a message, never panic (tests build with overflow checks), never size
//! an allocation from a hostile header, and never walk or copy without bound.

#[path = "../../data/tests/fuzzing/mod.rs"]
mod fuzzing;

use std::io::{Cursor, Write};
use std::path::Path;

use fuzzing::{Outcome, PeakAlloc, Rng, Tally, check, mutate, mutate_once, seeds};
use kontrast_worker::checkpoint::pickle::{self, MAX_PATHS};
use kontrast_worker::checkpoint::torch_save;
use kontrast_worker::checkpoint::{CheckpointError, CheckpointStore, Meta};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const MB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Our own checkpoints: manifest + safetensors.

/// A committed checkpoint of epoch 1 with tensors of several kinds and shapes.
fn saved_checkpoint(dir: &Path) -> CheckpointStore {
    let store = CheckpointStore::new(dir, 3);
    let weights = Tensor::from_slice(&[1.5f32, -2.0, 0.25, 4.0, 5.0, 6.0]).view([2, 3]);
    let counts = Tensor::from_slice(&[7i64, 8, 9]);
    let flags = Tensor::from_slice(&[true, false]);
    let half = Tensor::from_slice(&[0.5f32, 1.0]).to_kind(Kind::BFloat16);
    let scalar = Tensor::from_slice(&[3.0f64]).view([]);
    let meta = Meta {
        step: 10,
        config_hash: "abc".into(),
        extra: json!({"rng": [1, 2, 3], "loader": {"position": 4}}),
    };
    store
        .save(
            1,
            &[
                ("encoder.weight", &weights),
                ("queue.ptr", &counts),
                ("flags", &flags),
                ("half", &half),
                ("scalar", &scalar),
            ],
            &meta,
        )
        .expect("the checkpoint saves");
    store
}

/// The manifest text with the tensors file's size and checksum set to match `tensors`.
fn resigned(manifest: &[u8], tensors: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(manifest) else {
        return manifest.to_vec();
    };
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "tensorsSha256".into(),
            json!(format!("{:x}", Sha256::digest(tensors))),
        );
        map.insert("tensorsBytes".into(), json!(tensors.len()));
    }
    serde_json::to_vec(&doc).expect("serialises")
}

/// Values for manifest fields and safetensors header fields.
fn hostile_value(rng: &mut Rng) -> Value {
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(2),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(""),
        json!("epoch-0001.safetensors"),
        json!("../epoch-0001.safetensors"),
        json!("F32"),
        json!("I64"),
        json!("F8_E4M3"),
        json!("U64"),
        json!([]),
        json!([0]),
        json!([0, 0]),
        json!([0, u64::MAX]),
        json!([u64::MAX, 0]),
        json!([8, 4]),
        json!([u64::MAX, 2]),
        json!([0, 4_611_686_018_427_387_904u64, 4]),
        json!({}),
    ];
    rng.pick(&values).clone()
}

/// Sets a random field of a random object in `doc` (one level of nesting at most) to a hostile
/// value.
fn mutate_json_field(rng: &mut Rng, doc: &mut Value) -> String {
    let Some(map) = doc.as_object_mut() else {
        return "not an object".into();
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    if keys.is_empty() {
        return "empty object".into();
    }
    let key = rng.pick(&keys).clone();
    let value = hostile_value(rng);
    let slot = map.get_mut(&key).expect("a listed key");
    match slot {
        Value::Object(inner) if !inner.is_empty() && !rng.one_in(4) => {
            let inner_keys: Vec<String> = inner.keys().cloned().collect();
            let inner_key = rng.pick(&inner_keys).clone();
            let what = format!("{key}.{inner_key} = {value}");
            inner.insert(inner_key, value);
            what
        }
        _ => {
            let what = format!("{key} = {value}");
            *slot = value;
            what
        }
    }
}

/// A safetensors file with one field of its JSON header replaced (length prefix fixed up).
fn mutate_safetensors_header(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let mut header: Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let what = mutate_json_field(rng, &mut header);
    let text = serde_json::to_vec(&header).ok()?;
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Some((out, format!("header {what}")))
}

#[test]
fn checkpoint_manifests_and_tensor_files_survive_mutation() {
    const TEST: &str = "checkpoint_manifests_and_tensor_files_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let store = saved_checkpoint(dir.path());
    let (manifest_path, tensors_path) = (store.manifest_path(1), store.tensors_path(1));
    let manifest = std::fs::read(&manifest_path).expect("manifest");
    let tensors = std::fs::read(&tensors_path).expect("tensors");
    assert_eq!(
        store
            .load(1)
            .expect("the valid checkpoint loads")
            .tensors
            .len(),
        5
    );

    let mut tally = Tally::default();
    for seed in seeds(TEST, 1200) {
        let mut rng = Rng::new(seed);
        let (m, t, what, must_fail) = match rng.below(5) {
            0 => {
                let (m, what) = mutate(&mut rng, &manifest);
                (m, tensors.clone(), format!("manifest: {what}"), false)
            }
            1 => {
                let mut doc: Value = serde_json::from_slice(&manifest).expect("JSON");
                let what = mutate_json_field(&mut rng, &mut doc);
                let m = serde_json::to_vec(&doc).expect("serialises");
                (m, tensors.clone(), format!("manifest field {what}"), false)
            }
            2 => {
                // Damage the manifest does not vouch for: the checksum must catch it.
                let (t, what) = mutate(&mut rng, &tensors);
                let changed = t != tensors;
                (
                    manifest.clone(),
                    t,
                    format!("tensors (unsigned): {what}"),
                    changed,
                )
            }
            3 => {
                let (t, what) = mutate(&mut rng, &tensors);
                (
                    resigned(&manifest, &t),
                    t,
                    format!("tensors (re-signed): {what}"),
                    false,
                )
            }
            _ => {
                let (t, what) = mutate_safetensors_header(&mut rng, &tensors)
                    .unwrap_or_else(|| mutate(&mut rng, &tensors));
                (
                    resigned(&manifest, &t),
                    t,
                    format!("tensors (re-signed): {what}"),
                    false,
                )
            }
        };
        std::fs::write(&manifest_path, &m).expect("write manifest");
        std::fs::write(&tensors_path, &t).expect("write tensors");
        let limit = 64 * (m.len() + t.len()) + MB;
        let outcome = check(TEST, seed, &what, limit, || {
            let loaded = store.load(1);
            if let Ok(loaded) = &loaded {
                for (name, tensor) in &loaded.tensors {
                    assert!(
                        tensor.numel() <= t.len(),
                        "{name}: more elements than bytes"
                    );
                }
            }
            // `latest` must agree: the same checkpoint, or none usable.
            match (store.latest(), &loaded) {
                (Ok(Some(latest)), Ok(_)) => assert_eq!(latest.manifest.epoch, 1),
                (Ok(None), Err(CheckpointError::Corrupt { .. })) => {}
                (Err(_), Err(_)) => {}
                (other, _) => panic!(
                    "latest() disagrees with load(): {:?}",
                    other.map(|l| l.map(|l| l.manifest.epoch))
                ),
            }
            loaded.map(|_| ())
        });
        if must_fail {
            assert!(
                matches!(outcome, Outcome::Refused(ref e) if e.contains("SHA-256") || e.contains("bytes")),
                "{TEST}: seed {seed:#x} ({what}): damage behind the checksum was not refused"
            );
        }
        tally.add(outcome);
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

// ---------------------------------------------------------------------------------------------
// Pickles and torch.save containers.

/// A protocol-2 pickle written opcode by opcode, as `torch.save` writes one.
#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    memo: u32,
}

impl Pickler {
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    fn memoize(&mut self) -> &mut Self {
        self.out.push(b'r');
        self.out.extend_from_slice(&self.memo.to_le_bytes());
        self.memo += 1;
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.memoize()
    }

    fn int(&mut self, v: i64) -> &mut Self {
        match u8::try_from(v) {
            Ok(small) => self.raw(&[b'K', small]),
            Err(_) => {
                self.out.extend_from_slice(&[0x8a, 8]);
                self.raw(&v.to_le_bytes())
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.raw(b"c")
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
            .memoize()
    }

    fn tuple(&mut self, items: &[i64]) -> &mut Self {
        self.raw(b"(");
        for &v in items {
            self.int(v);
        }
        self.raw(b"t")
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, t: &TensorSpec) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").raw(b"(");
        self.raw(b"(")
            .str("storage")
            .global("torch", t.storage_class)
            .str(&t.key)
            .str("cpu")
            .int(t.numel)
            .raw(b"tQ");
        self.int(t.offset).tuple(&t.size).tuple(&t.stride);
        self.raw(&[0x89])
            .global("collections", "OrderedDict")
            .raw(b")R")
            .raw(b"tR")
    }
}

#[derive(Clone, Debug)]
struct TensorSpec {
    name: String,
    storage_class: &'static str,
    key: String,
    numel: i64,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn tensor_specs() -> Vec<TensorSpec> {
    let spec =
        |name: &str, class, key: &str, numel, offset, size: &[i64], stride: &[i64]| TensorSpec {
            name: name.into(),
            storage_class: class,
            key: key.into(),
            numel,
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
        };
    vec![
        spec(
            "module.encoder_q.conv1.weight",
            "FloatStorage",
            "0",
            6,
            0,
            &[2, 3],
            &[3, 1],
        ),
        spec(
            "module.encoder_q.fc.bias",
            "FloatStorage",
            "0",
            6,
            2,
            &[4],
            &[1],
        ),
        spec("module.queue_ptr", "LongStorage", "1", 3, 0, &[3], &[1]),
        spec(
            "module.encoder_k.conv1.weight",
            "FloatStorage",
            "0",
            6,
            0,
            &[3, 2],
            &[1, 3],
        ),
    ]
}

/// `{'epoch': 3, 'arch': 'resnet18', 'state_dict': OrderedDict(name: tensor, ...)}`.
fn checkpoint_pickle(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut p = Pickler::default();
    p.raw(&[0x80, 2]).raw(b"}").memoize().raw(b"(");
    p.str("epoch")
        .int(3)
        .str("arch")
        .str("resnet18")
        .str("state_dict");
    p.global("collections", "OrderedDict")
        .raw(b")R")
        .memoize()
        .raw(b"(");
    for t in tensors {
        p.str(&t.name).tensor(t);
    }
    p.raw(b"u").raw(b"u.");
    p.out
}

/// The storage records the specs name: `numel` elements of their kind.
fn storages(tensors: &[TensorSpec]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for t in tensors {
        if out.iter().any(|(k, _)| *k == t.key) {
            continue;
        }
        let element = if t.storage_class == "LongStorage" {
            8
        } else {
            4
        };
        let n = usize::try_from(t.numel).unwrap_or(0).min(1024) * element;
        out.push((t.key.clone(), (0..n).map(|i| (i * 7) as u8).collect()));
    }
    out
}

/// A `torch.save` zip container holding `pickle` and `records` under `archive/`.
fn container(
    pickle: &[u8],
    records: &[(String, Vec<u8>)],
    method: zip::CompressionMethod,
) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::FileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", options)
        .expect("zip entry");
    zip.write_all(pickle).expect("zip write");
    zip.start_file("archive/byteorder", options)
        .expect("zip entry");
    zip.write_all(b"little").expect("zip write");
    for (key, bytes) in records {
        zip.start_file(format!("archive/data/{key}"), options)
            .expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// Numbers that break sizes, strides and offsets.
const HOSTILE_I64: [i64; 14] = [
    0,
    1,
    -1,
    2,
    3,
    5,
    6,
    7,
    1 << 31,
    1 << 40,
    i64::MAX,
    i64::MIN,
    u32::MAX as i64,
    -(1 << 62),
];

/// One tensor argument replaced by a hostile number (or a shape of another rank).
fn mutate_tensor_args(rng: &mut Rng, specs: &mut [TensorSpec]) -> String {
    let i = rng.below(specs.len());
    let t = &mut specs[i];
    let v = *rng.pick(&HOSTILE_I64);
    match rng.below(6) {
        0 => {
            t.numel = v;
            format!("{} numel = {v}", t.name)
        }
        1 => {
            t.offset = v;
            format!("{} offset = {v}", t.name)
        }
        2 if !t.size.is_empty() => {
            let d = rng.below(t.size.len());
            t.size[d] = v;
            format!("{} size[{d}] = {v}", t.name)
        }
        3 if !t.stride.is_empty() => {
            let d = rng.below(t.stride.len());
            t.stride[d] = v;
            format!("{} stride[{d}] = {v}", t.name)
        }
        4 => {
            let rank = *rng.pick(&[0usize, 1, 3, 65]);
            t.size = vec![1; rank];
            t.stride = vec![0; rank];
            format!("{} rank {rank}", t.name)
        }
        _ => {
            t.storage_class = *rng.pick(&[
                "DoubleStorage",
                "HalfStorage",
                "BoolStorage",
                "ByteStorage",
                "ComplexFloatStorage",
            ]);
            format!("{} storage class {}", t.name, t.storage_class)
        }
    }
}

fn read_container(path: &Path) -> Result<usize, torch_save::TorchSaveError> {
    let file = torch_save::read(path)?;
    for (name, t) in &file.tensors {
        assert!(t.numel() <= 1 << 20, "{name}: {} elements", t.numel());
    }
    Ok(file.tensors.len())
}

#[test]
fn pickles_survive_mutation() {
    const TEST: &str = "pickles_survive_mutation";
    let specs = tensor_specs();
    let base = checkpoint_pickle(&specs);
    let valid = pickle::decode(&base).expect("the valid pickle decodes");
    assert_eq!(valid.leaves().expect("leaves").len(), 2 + specs.len());
    let mut tally = Tally::default();
    for seed in seeds(TEST, 6000) {
        let mut rng = Rng::new(seed);
        let (bytes, what) = if rng.one_in(3) {
            let mut specs = specs.clone();
            let what = mutate_tensor_args(&mut rng, &mut specs);
            let mut bytes = checkpoint_pickle(&specs);
            let more = if rng.one_in(2) {
                format!(", then {}", mutate_once(&mut rng, &mut bytes))
            } else {
                String::new()
            };
            (bytes, format!("{what}{more}"))
        } else {
            mutate(&mut rng, &base)
        };
        tally.add(check(TEST, seed, &what, 64 * bytes.len() + MB, || {
            let decoded = pickle::decode(&bytes).map_err(|e| e.to_string())?;
            let leaves = decoded.leaves().map_err(|e| e.to_string())?;
            Ok::<_, String>(leaves.len())
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

#[test]
fn pickles_that_share_containers_without_end_are_refused_in_bounded_time() {
    // `[a, a]` containing itself: 2^64 paths before the depth bound. While the walk was
    // unbounded in breadth, `kontrast import` never finished on such a file.
    let cyclic = b"\x80\x02]q\x00(h\x00h\x00K\x01e.";
    let decoded = pickle::decode(cyclic).expect("decodes");
    let err = decoded.leaves().expect_err("too many paths");
    assert!(err.to_string().contains(&MAX_PATHS.to_string()), "{err}");

    // Acyclic but exponential: L(k+1) = (L(k), L(k)), 40 levels.
    let mut p = Pickler::default();
    p.raw(&[0x80, 2]).raw(b"(K\x01t").memoize();
    for level in 0..40u32 {
        p.raw(b"(");
        p.raw(b"j").raw(&level.to_le_bytes());
        p.raw(b"j").raw(&level.to_le_bytes());
        p.raw(b"t").memoize();
    }
    p.raw(b".");
    let decoded = pickle::decode(&p.out).expect("decodes");
    assert!(decoded.leaves().is_err());

    // One huge memoised tuple applied to a global many times, and a huge list passed to
    // `_rebuild_parameter` many times: linear work, nothing copied per application.
    let n = 20_000;
    let mut p = Pickler::default();
    p.raw(&[0x80, 2]).raw(b"(");
    for _ in 0..n {
        p.raw(b"K\x01");
    }
    p.raw(b"t").memoize(); // memo 0: the tuple
    p.global("torch._utils", "_rebuild_parameter"); // memo 1
    let (global, tuple) = (1u32.to_le_bytes(), 0u32.to_le_bytes());
    p.raw(b"(");
    for _ in 0..n {
        // `_rebuild_parameter(*huge)`, result dropped.
        p.raw(b"j").raw(&global).raw(b"j").raw(&tuple).raw(b"R0");
        // `_rebuild_parameter(huge)`, result dropped.
        p.raw(b"j").raw(&global).raw(b"(j").raw(&tuple).raw(b"tR0");
    }
    p.raw(b"t.");
    take_and_check(&p.out);
}

fn take_and_check(bytes: &[u8]) {
    fuzzing::take_peak();
    let started = std::time::Instant::now();
    let decoded = pickle::decode(bytes);
    let peak = fuzzing::take_peak();
    // The object table itself grows with the input (about 80 000 objects here).
    assert!(peak < 32 * MB, "one allocation of {peak} bytes");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "decoding took {:?}",
        started.elapsed()
    );
    if let Ok(decoded) = decoded {
        let _ = decoded.leaves();
    }
}

#[test]
fn torch_save_containers_survive_mutation() {
    const TEST: &str = "torch_save_containers_survive_mutation";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("checkpoint.pth.tar");
    let specs = tensor_specs();
    let pickle = checkpoint_pickle(&specs);
    let records = storages(&specs);
    let base = container(&pickle, &records, zip::CompressionMethod::Stored);
    std::fs::write(&path, &base).expect("write");
    assert_eq!(
        read_container(&path).expect("the valid file reads"),
        specs.len()
    );

    let mut tally = Tally::default();
    for seed in seeds(TEST, 1500) {
        let mut rng = Rng::new(seed);
        let method = if rng.one_in(4) {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let (bytes, what) = match rng.below(4) {
            0 => {
                let (p, what) = mutate(&mut rng, &pickle);
                (container(&p, &records, method), format!("data.pkl: {what}"))
            }
            1 => {
                let mut specs = specs.clone();
                let what = mutate_tensor_args(&mut rng, &mut specs);
                // Records keep their sizes: a changed numel or kind no longer matches them.
                (
                    container(&checkpoint_pickle(&specs), &records, method),
                    what,
                )
            }
            2 => {
                let mut records = records.clone();
                let i = rng.below(records.len());
                let what = mutate_once(&mut rng, &mut records[i].1);
                let key = records[i].0.clone();
                (
                    container(&pickle, &records, method),
                    format!("data/{key}: {what}"),
                )
            }
            _ => {
                let (z, what) = mutate(&mut rng, &base);
                (z, format!("zip: {what}"))
            }
        };
        std::fs::write(&path, &bytes).expect("write");
        tally.add(check(TEST, seed, &what, 64 * bytes.len() + 2 * MB, || {
            read_container(&path)
        }));
    }
    tally.report(TEST);
    tally.assert_both_paths();
}

/// Offset of the first zip header with `signature`.
fn find_header(zip: &[u8], signature: [u8; 4]) -> usize {
    zip.windows(4)
        .position(|w| w == signature)
        .expect("a zip header")
}

/// Rewrites the uncompressed size of the zip's first entry (local header and central
/// directory) to `size`.
fn declare_size(zip: &mut [u8], size: u32) {
    let local = find_header(zip, [0x50, 0x4b, 0x03, 0x04]);
    zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    let central = find_header(zip, [0x50, 0x4b, 0x01, 0x02]);
    zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
}

#[test]
fn compressed_records_that_inflate_past_their_declared_size_are_refused() {
    // A deflated data.pkl of a valid pickle followed by 8 MiB of zeros, declaring only the
    // pickle's length: the reader used to inflate all of it.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bomb.pth");
    let specs = tensor_specs();
    let pickle = checkpoint_pickle(&specs);
    let mut padded = pickle.clone();
    padded.resize(pickle.len() + 8 * MB, 0);
    let mut zip = container(&padded, &storages(&specs), zip::CompressionMethod::Deflated);
    declare_size(&mut zip, pickle.len() as u32);
    std::fs::write(&path, &zip).expect("write");
    fuzzing::take_peak();
    let err = torch_save::read(&path).expect_err("more bytes than declared");
    assert!(fuzzing::take_peak() < MB, "the record was inflated");
    assert!(err.to_string().contains("declares"), "{err}");

    // And one that declares far more than its compressed bytes can hold.
    let mut zip = container(&pickle, &storages(&specs), zip::CompressionMethod::Deflated);
    declare_size(&mut zip, u32::MAX - 1);
    std::fs::write(&path, &zip).expect("write");
    let err = torch_save::read(&path).expect_err("an impossible expansion");
    assert!(err.to_string().contains("compressed bytes"), "{err}");
}

#[test]
fn views_that_repeat_their_storage_are_refused_before_any_copy() {
    // A stride of 0 over a 6-element storage, 2^40 elements long: copied out contiguous it
    // would ask libtorch for 4 TiB.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("expanded.pth");
    let mut specs = tensor_specs();
    specs[0].size = vec![1 << 40];
    specs[0].stride = vec![0];
    let zip = container(
        &checkpoint_pickle(&specs),
        &storages(&specs),
        zip::CompressionMethod::Stored,
    );
    std::fs::write(&path, zip).expect("write");
    let err = torch_save::read(&path).expect_err("a repeating view");
    assert!(err.to_string().contains("repeats"), "{err}");
}

#[test]
fn a_record_header_claiming_a_huge_size_reserves_no_memory_for_it() {
    // A stored data.pkl whose headers claim 60 MB: the reader reserved up to 64 MiB up front.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.pth");
    let specs = tensor_specs();
    let mut zip = container(
        &checkpoint_pickle(&specs),
        &storages(&specs),
        zip::CompressionMethod::Stored,
    );
    let claimed = 60_000_000u32.to_le_bytes();
    let local = find_header(&zip, [0x50, 0x4b, 0x03, 0x04]);
    zip[local + 18..local + 22].copy_from_slice(&claimed);
    let central = find_header(&zip, [0x50, 0x4b, 0x01, 0x02]);
    zip[central + 20..central + 24].copy_from_slice(&claimed);
    declare_size(&mut zip, 60_000_000);
    std::fs::write(&path, &zip).expect("write");
    fuzzing::take_peak();
    let result = torch_save::read(&path);
    let peak = fuzzing::take_peak();
    assert!(peak < MB, "one allocation of {peak} bytes");
    assert!(result.is_err(), "the record is not there");
}
