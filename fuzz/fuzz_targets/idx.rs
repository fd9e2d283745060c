//! Fashion-MNIST IDX files: the input is split into the images and the labels file (the first
//! two bytes say where), optionally gzip-named.
#![no_main]

use kontrast_data::{Dataset, DatasetFormat, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cut = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (images, labels) = rest.split_at(cut);
    let dir = tempfile::tempdir().expect("temp dir");
    // A gzip stream is recognised by its magic bytes, whatever the name.
    let suffix = if images.starts_with(&[0x1f, 0x8b]) {
        ".gz"
    } else {
        ""
    };
    std::fs::write(
        dir.path().join(format!("train-images-idx3-ubyte{suffix}")),
        images,
    )
    .expect("write");
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels).expect("write");
    if let Ok(ds) = Dataset::open_split(DatasetFormat::FashionMnist, dir.path(), Split::Train) {
        for i in [0, ds.len() - 1, ds.len()] {
            let _ = ds.label(i);
            let _ = ds.load(i);
        }
    }
});
