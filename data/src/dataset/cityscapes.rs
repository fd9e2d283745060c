//! Cityscapes semantic segmentation with fine annotations: the images
//! `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` and their labels
//! `gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (8-bit grey, one of the 34 label ids per
//! pixel), mapped to the 19 evaluated classes by the `trainId` column of cityscapesScripts'
//! `labels.py`; every other id becomes [`IGNORE`].

use std::path::{Path, PathBuf};

use super::voc_segmentation::plain_name;
use crate::decode::{self, JpegBackend};
use crate::image::RgbImage;
use crate::segment::{IGNORE, Mask, decode_mask};
use crate::{DataError, Result};

/// The 19 evaluated classes, in train-id order.
pub const CITYSCAPES_CLASSES: [&str; 19] = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
];

/// The label ids of [`CITYSCAPES_CLASSES`], in order (train id = position).
const EVALUATED_LABEL_IDS: [u8; 19] = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
];

/// Label id → train id for every byte value ([`IGNORE`] for ids that are not evaluated).
pub const LABEL_TO_TRAIN_ID: [u8; 256] = {
    let mut table = [IGNORE; 256];
    let mut t = 0;
    while t < EVALUATED_LABEL_IDS.len() {
        table[EVALUATED_LABEL_IDS[t] as usize] = t as u8;
        t += 1;
    }
    table
};

/// Maps a decoded labelIds mask to train ids in place; refuses a value above 33, which means
/// the file is not a labelIds mask (e.g. a colour or instance-id image saved as grey).
pub fn to_train_ids(mask: &mut Mask) -> std::result::Result<(), String> {
    if let Some(p) = mask.data.iter().position(|&v| v > 33) {
        return Err(format!(
            "pixel ({}, {}) has label id {}; Cityscapes label ids are 0–33",
            p % mask.width.max(1),
            p / mask.width.max(1),
            mask.data[p]
        ));
    }
    for v in &mut mask.data {
        *v = LABEL_TO_TRAIN_ID[usize::from(*v)];
    }
    Ok(())
}

const IMAGE_SUFFIX: &str = "_leftImg8bit.png";
const LABEL_SUFFIX: &str = "_gtFine_labelIds.png";

/// The image and label pairs of one split (`train`, `val`, `test`) of a Cityscapes root (the
/// directory holding `leftImg8bit/` and `gtFine/`), sorted by city then file name.
#[derive(Debug, Clone)]
pub struct Cityscapes {
    names: Vec<String>,
    pairs: Vec<(PathBuf, PathBuf)>,
}

fn city_error(path: PathBuf, reason: impl Into<String>) -> DataError {
    DataError::Cityscapes {
        path,
        reason: reason.into(),
    }
}

/// Sorted entries of `dir` for which `keep` holds.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Unreadable {
        path: dir.into(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    Ok(paths)
}

impl Cityscapes {
    /// Finds every `*_leftImg8bit.png` of `split` and checks that each has its
    /// `*_gtFine_labelIds.png`.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        super::require_dir(root)?;
        let images = root.join("leftImg8bit").join(split);
        if !plain_name(split) {
            return Err(city_error(images, "the split is not a plain folder name"));
        }
        if !images.is_dir() {
            return Err(city_error(
                images,
                "missing (expected leftImg8bit/<split>/<city>/<name>_leftImg8bit.png)",
            ));
        }
        let labels = root.join("gtFine").join(split);
        let (mut names, mut pairs, mut missing) = (Vec::new(), Vec::new(), Vec::new());
        for city in sorted_entries(&images, Path::is_dir)? {
            let city_name = city
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let files = sorted_entries(&city, |p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(IMAGE_SUFFIX))
            })?;
            for image in files {
                let file = image
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let stem = &file[..file.len() - IMAGE_SUFFIX.len()];
                let label = labels
                    .join(&city_name)
                    .join(format!("{stem}{LABEL_SUFFIX}"));
                if !label.is_file() {
                    missing.push(label.clone());
                }
                names.push(format!("{city_name}/{stem}"));
                pairs.push((image, label));
            }
        }
        if pairs.is_empty() {
            return Err(city_error(
                images,
                "holds no <city>/<name>_leftImg8bit.png images",
            ));
        }
        if let Some(first) = missing.first() {
            return Err(city_error(
                first.clone(),
                format!(
                    "missing: {} of the {} images of {split} have no gtFine labelIds file",
                    missing.len(),
                    pairs.len()
                ),
            ));
        }
        tracing::info!(root = %root.display(), split, images = pairs.len(), "Cityscapes split opened");
        Ok(Self { names, pairs })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the split has no images (never true for an opened split).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `<city>/<name>` of every image, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `(image, labelIds)` files, in order.
    pub fn pairs(&self) -> &[(PathBuf, PathBuf)] {
        &self.pairs
    }

    /// The labels of image `i` as train ids (0–18, [`IGNORE`] elsewhere).
    pub fn load_mask(&self, i: usize) -> Result<Mask> {
        let (_, path) = self.pair(i)?;
        let bytes = std::fs::read(path).map_err(|source| DataError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let mut mask = decode_mask(&bytes).map_err(|reason| DataError::Decode {
            index: i,
            path: path.display().to_string(),
            reason,
        })?;
        to_train_ids(&mut mask).map_err(|reason| DataError::Label {
            path: path.clone(),
            reason,
        })?;
        Ok(mask)
    }

    /// Image `i` decoded at full resolution with its train-id mask (same size).
    pub fn load(&self, i: usize) -> Result<(RgbImage, Mask)> {
        let (image_path, _) = self.pair(i)?;
        let decode_error = |reason: String| DataError::Decode {
            index: i,
            path: image_path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(image_path).map_err(|e| decode_error(e.to_string()))?;
        let image = decode::decode(&bytes, JpegBackend::default(), 1).map_err(decode_error)?;
        let mask = self.load_mask(i)?;
        if (image.width, image.height) != (mask.width, mask.height) {
            return Err(decode_error(format!(
                "the image is {}×{} but its labels are {}×{}",
                image.width, image.height, mask.width, mask.height
            )));
        }
        Ok((image, mask))
    }

    fn pair(&self, i: usize) -> Result<&(PathBuf, PathBuf)> {
        self.pairs.get(i).ok_or_else(|| {
            DataError::Config(format!(
                "index {i} is outside the Cityscapes split ({} images)",
                self.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::voc_segmentation::synthetic::{grey_png, pasted, rgb_png};
    use super::*;

    /// cityscapesScripts' `labels.py`: (name, id, trainId) of all 34 ids (255 = not evaluated).
    const LABELS: [(&str, u8, u8); 34] = [
        ("unlabeled", 0, 255),
        ("ego vehicle", 1, 255),
        ("rectification border", 2, 255),
        ("out of roi", 3, 255),
        ("static", 4, 255),
        ("dynamic", 5, 255),
        ("ground", 6, 255),
        ("road", 7, 0),
        ("sidewalk", 8, 1),
        ("parking", 9, 255),
        ("rail track", 10, 255),
        ("building", 11, 2),
        ("wall", 12, 3),
        ("fence", 13, 4),
        ("guard rail", 14, 255),
        ("bridge", 15, 255),
        ("tunnel", 16, 255),
        ("pole", 17, 5),
        ("polegroup", 18, 255),
        ("traffic light", 19, 6),
        ("traffic sign", 20, 7),
        ("vegetation", 21, 8),
        ("terrain", 22, 9),
        ("sky", 23, 10),
        ("person", 24, 11),
        ("rider", 25, 12),
        ("car", 26, 13),
        ("truck", 27, 14),
        ("bus", 28, 15),
        ("caravan", 29, 255),
        ("trailer", 30, 255),
        ("train", 31, 16),
        ("motorcycle", 32, 17),
        ("bicycle", 33, 18),
    ];

    #[test]
    fn label_ids_map_to_the_nineteen_train_ids_of_the_official_table() {
        for (name, id, train) in LABELS {
            assert_eq!(LABEL_TO_TRAIN_ID[usize::from(id)], train, "{name} ({id})");
            if train != IGNORE {
                assert_eq!(CITYSCAPES_CLASSES[usize::from(train)], name);
            }
        }
        assert!(LABEL_TO_TRAIN_ID[34..].iter().all(|&t| t == IGNORE));
        let evaluated = LABEL_TO_TRAIN_ID.iter().filter(|&&t| t != IGNORE).count();
        assert_eq!(evaluated, 19);
    }

    /// Label id of the synthetic scene at pixel `(x, y)`: an item (Fashion-MNIST `k`) as
    /// person (24) or car (26) on road (7) below sky (23), above a band alternating unlabeled (0)
    /// and ego vehicle (1).
    fn scene(k: usize, width: usize, height: usize) -> (RgbImage, Mask) {
        let (image, object) = pasted(k, width, height, 5, 6);
        let data = (0..width * height)
            .map(|i| {
                let y = i / width;
                if object[i] {
                    if k.is_multiple_of(2) { 24 } else { 26 }
                } else if y >= height - 2 {
                    (i % 2) as u8
                } else if y < height / 3 {
                    23
                } else {
                    7
                }
            })
            .collect();
        (
            image,
            Mask {
                width,
                height,
                data,
            },
        )
    }

    /// A root with cities `aachen` (2 images) and `bremen` (1) in `val`, written out of order.
    fn root() -> (tempfile::TempDir, Vec<(String, Mask)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut written = Vec::new();
        for (k, (city, frame)) in [("bremen", 3), ("aachen", 19), ("aachen", 4)]
            .into_iter()
            .enumerate()
        {
            let stem = format!("{city}_{frame:06}_000019");
            let images = dir.path().join("leftImg8bit/val").join(city);
            let labels = dir.path().join("gtFine/val").join(city);
            std::fs::create_dir_all(&images).expect("dir");
            std::fs::create_dir_all(&labels).expect("dir");
            let (image, ids) = scene(k, 48, 40);
            std::fs::write(
                images.join(format!("{stem}_leftImg8bit.png")),
                rgb_png(&image),
            )
            .expect("image");
            std::fs::write(
                labels.join(format!("{stem}_gtFine_labelIds.png")),
                grey_png(&ids),
            )
            .expect("labels");
            // The other gtFine files sit next to it and must be ignored.
            std::fs::write(
                labels.join(format!("{stem}_gtFine_color.png")),
                rgb_png(&image),
            )
            .expect("colour");
            written.push((format!("{city}/{stem}"), ids));
        }
        written.sort_by(|a, b| a.0.cmp(&b.0));
        (dir, written)
    }

    #[test]
    fn pairs_images_with_their_label_ids_and_maps_them_to_train_ids() {
        let (dir, written) = root();
        let split = Cityscapes::open(dir.path(), "val").expect("open");
        let names: Vec<&str> = written.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(split.names(), names);
        for (i, (_, ids)) in written.iter().enumerate() {
            let (image, mask) = split.load(i).expect("pair");
            assert_eq!((image.width, image.height), (48, 40));
            let expected: Vec<u8> = ids
                .data
                .iter()
                .map(|&v| LABEL_TO_TRAIN_ID[usize::from(v)])
                .collect();
            assert_eq!(mask.data, expected, "image {i}");
            // road, sky, an object class and ignored ids are all there.
            for v in [0, 10, IGNORE] {
                assert!(mask.data.contains(&v), "image {i} lacks {v}");
            }
            assert!(
                mask.data.contains(&11) || mask.data.contains(&13),
                "image {i}"
            );
        }
        assert!(
            split.pairs()[0]
                .1
                .ends_with("gtFine/val/aachen/aachen_000004_000019_gtFine_labelIds.png")
        );
    }

    #[test]
    fn the_segmentation_data_set_reads_the_same_train_ids() {
        let (dir, written) = root();
        let split = Cityscapes::open(dir.path(), "val").expect("open");
        let data = crate::segment::SegDataset::cityscapes(dir.path(), "val").expect("open");
        assert_eq!(data.len(), written.len());
        for i in 0..data.len() {
            let (image, mask) = data.load(i).expect("pair");
            let (expected_image, expected_mask) = split.load(i).expect("pair");
            assert_eq!(mask, expected_mask, "image {i}");
            assert_eq!(image, expected_image, "image {i}");
            assert!(
                mask.data.contains(&IGNORE) && !mask.data.iter().any(|&v| v > 18 && v != IGNORE)
            );
        }
        // A mask that is not labelIds is refused, naming its file.
        let (_, labels) = &split.pairs()[0];
        let bad = Mask {
            width: 48,
            height: 40,
            data: vec![40; 48 * 40],
        };
        std::fs::write(labels, grey_png(&bad)).expect("overwrite");
        let err = data.load(0).expect_err("label id 40").to_string();
        assert!(
            err.contains("label id 40") && err.contains("labelIds"),
            "{err}"
        );
    }

    fn error(root: &Path, split: &str) -> String {
        Cityscapes::open(root, split)
            .expect_err("broken")
            .to_string()
    }

    #[test]
    fn missing_folders_labels_and_images_are_named() {
        let (dir, written) = root();
        let err = error(dir.path(), "train");
        assert!(
            err.contains("leftImg8bit/train") && err.contains("missing"),
            "{err}"
        );
        let err = error(dir.path(), "../val");
        assert!(
            err.contains("the split is not a plain folder name"),
            "{err}"
        );
        let err = error(&dir.path().join("cityscapes"), "val");
        assert!(
            err.contains("cityscapes") && err.contains("cannot be read"),
            "{err}"
        );

        let stem = written[1].0.clone();
        let label = dir
            .path()
            .join("gtFine/val")
            .join(format!("{stem}_gtFine_labelIds.png"));
        std::fs::remove_file(&label).expect("rm");
        let err = error(dir.path(), "val");
        assert!(
            err.contains(&format!("{stem}_gtFine_labelIds.png")),
            "{err}"
        );
        assert!(
            err.contains("1 of the 3 images of val have no gtFine labelIds file"),
            "{err}"
        );

        std::fs::create_dir_all(dir.path().join("leftImg8bit/test/berlin")).expect("dir");
        let err = error(dir.path(), "test");
        assert!(
            err.contains("leftImg8bit/test") && err.contains("holds no"),
            "{err}"
        );
    }

    #[test]
    fn a_mask_that_is_not_label_ids_is_rejected() {
        let (dir, written) = root();
        let split = Cityscapes::open(dir.path(), "val").expect("open");
        let mut bad = written[0].1.clone();
        bad.data[3 * 48 + 2] = 34;
        std::fs::write(&split.pairs()[0].1, grey_png(&bad)).expect("labels");
        let err = split.load_mask(0).expect_err("id 34").to_string();
        assert!(
            err.contains("pixel (2, 3) has label id 34; Cityscapes label ids are 0–33"),
            "{err}"
        );
        let narrow = Mask {
            width: 47,
            height: 40,
            data: vec![7; 47 * 40],
        };
        std::fs::write(&split.pairs()[1].1, grey_png(&narrow)).expect("labels");
        let err = split.load(1).expect_err("size").to_string();
        assert!(
            err.contains("the image is 48×40 but its labels are 47×40"),
            "{err}"
        );
        std::fs::write(&split.pairs()[2].1, b"").expect("labels");
        let err = split.load_mask(2).expect_err("empty").to_string();
        assert!(err.contains("empty mask file"), "{err}");
        let err = split.load_mask(3).expect_err("out of range").to_string();
        assert!(err.contains("index 3 is outside"), "{err}");
    }
}
