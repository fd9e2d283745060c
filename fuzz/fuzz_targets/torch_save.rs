//! A whole `torch.save` file: zip container, pickle and storage records.
#![no_main]

use kontrast_worker::checkpoint::torch_save;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("checkpoint.pth");
    std::fs::write(&path, data).expect("write");
    let _ = torch_save::read(&path);
});
