//! A checkpoint of our own: the input is split into the JSON manifest and the safetensors file
//! (the first two bytes say where). With the top bit of the first byte set, the manifest's size
//! and checksum are rewritten to match the tensors file, so the safetensors parser is reached.
#![no_main]

use kontrast_worker::checkpoint::CheckpointStore;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let resign = head[0] & 0x80 != 0;
    let cut = usize::from(u16::from_le_bytes(*head) & 0x7fff).min(rest.len());
    let (manifest, tensors) = rest.split_at(cut);
    let manifest = match serde_json::from_slice::<serde_json::Value>(manifest) {
        Ok(mut doc) if resign && doc.is_object() => {
            doc["tensorsSha256"] = format!("{:x}", Sha256::digest(tensors)).into();
            doc["tensorsBytes"] = tensors.len().into();
            serde_json::to_vec(&doc).expect("serialises")
        }
        _ => manifest.to_vec(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = CheckpointStore::new(dir.path(), 1);
    std::fs::write(store.manifest_path(1), manifest).expect("write");
    std::fs::write(store.tensors_path(1), tensors).expect("write");
    let _ = store.load(1);
    let _ = store.latest();
});
