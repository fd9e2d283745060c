//! Image and label-mask decoding: JPEG (both backends, every DCT scale) and PNG.
#![no_main]

use kontrast_data::decode::{self, JpegBackend};
use kontrast_data::segment::decode_mask;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut backends = vec![JpegBackend::Zune];
    if JpegBackend::default() != JpegBackend::Zune {
        backends.push(JpegBackend::default());
    }
    for backend in backends {
        let _ = decode::probe(data, backend);
        for denom in decode::DCT_DENOMS {
            if let Ok(image) = decode::decode(data, backend, denom) {
                assert_eq!(image.data.len(), image.width * image.height * 3);
            }
        }
    }
    if let Ok(mask) = decode_mask(data) {
        assert_eq!(mask.data.len(), mask.width * mask.height);
    }
});
