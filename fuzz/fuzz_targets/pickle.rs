//! The pickle reader `kontrast import` decodes `torch.save` files with.
#![no_main]

use kontrast_worker::checkpoint::pickle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = pickle::decode(data) {
        let _ = decoded.leaves();
    }
});
