//! The list and annotation files of the evaluation data sets: the first byte picks the reader,
//! the rest is the file.
#![no_main]

use std::path::Path;

use kontrast_data::Dataset;
use kontrast_data::VocSplit;
use kontrast_data::dataset::davis::DavisSplit;
use kontrast_data::dataset::voc_segmentation::VocSegmentation;
use libfuzzer_sys::fuzz_target;

fn put(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, file)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for id in ["a", "b"] {
        put(root, &format!("JPEGImages/{id}.jpg"), b"x");
        put(root, &format!("SegmentationClass/{id}.png"), b"x");
    }
    match which % 4 {
        0 => {
            for class in kontrast_data::VOC_CLASSES {
                put(root, &format!("ImageSets/Main/{class}_val.txt"), file);
            }
            let _ = VocSplit::open(root, "val");
        }
        1 => {
            put(root, "ImageSets/Segmentation/val.txt", file);
            if let Ok(split) = VocSegmentation::open(root, "val") {
                for i in 0..split.len() {
                    let _ = split.load(i);
                }
            }
        }
        2 => {
            put(root, "ImageSets/2017/val.txt", file);
            put(root, "JPEGImages/480p/a/00000.jpg", b"x");
            put(root, "Annotations/480p/a/00000.png", b"x");
            let _ = DavisSplit::open(root, "val");
        }
        _ => {
            put(root, "ann.json", file);
            let _ = Dataset::open_annotated(root, &root.join("ann.json"));
        }
    }
});
