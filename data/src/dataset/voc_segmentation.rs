//! PASCAL VOC semantic segmentation, as the segmentation evaluations read it: the split list
//! `ImageSets/Segmentation/<split>.txt` and, per listed image, `JPEGImages/<id>.jpg` with its
//! label mask `SegmentationClass/<id>.png` — a palette PNG whose palette *index* is the class
//! (0 background, 1–20 the classes of [`VOC_CLASSES`], [`IGNORE`] on object borders and
//! unlabelled regions). A list may instead hold `<image> <mask>` path pairs relative to the root
//! (the `train_aug.txt` of the SegmentationClassAug extension: `JPEGImages/<id>.jpg
//! SegmentationClassAug/<id>.png`, with or without a leading `/`), whose masks are 8-bit grey
//! with the same values.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::voc::VOC_CLASSES;
use crate::decode::{self, JpegBackend};
use crate::image::RgbImage;
use crate::segment::{IGNORE, Mask, SegDataset, decode_mask};
use crate::{DataError, Result};

/// Classes of a VOC label mask: background, then the 20 object classes.
pub const VOC_SEGMENTATION_CLASSES: usize = VOC_CLASSES.len() + 1;

/// The name of class `c` of a VOC label mask (`background` for 0).
pub fn voc_segmentation_class_name(c: usize) -> Option<&'static str> {
    match c {
        0 => Some("background"),
        _ => VOC_CLASSES.get(c - 1).copied(),
    }
}

/// The image and mask pairs of one split of a VOC root (the directory holding `JPEGImages/`,
/// `SegmentationClass/` and `ImageSets/Segmentation/`).
#[derive(Debug, Clone)]
pub struct VocSegmentation {
    list: PathBuf,
    ids: Vec<String>,
    pairs: Vec<(PathBuf, PathBuf)>,
}

fn seg_error(path: PathBuf, reason: impl Into<String>) -> DataError {
    DataError::VocSegmentation {
        path,
        reason: reason.into(),
    }
}

/// Whether `name` is one plain path component (list entries are input, not trusted).
pub(super) fn plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.contains(['/', '\\'])
}

/// `relative` (forward slashes, one optional leading `/`) under `root`, if every component is
/// plain: a list must not reach outside the root.
fn under_root(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = relative.strip_prefix('/').unwrap_or(relative);
    let parts: Vec<&str> = relative.split('/').collect();
    parts
        .iter()
        .all(|p| plain_name(p))
        .then(|| parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// The `(id, image, mask)` entries of a split list, in file order.
fn read_list(root: &Path, list: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let text = std::fs::read_to_string(list).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            seg_error(
                list.into(),
                "missing (the split's list: one image id per line, or `<image> <mask>` pairs)",
            )
        } else {
            DataError::Unreadable {
                path: list.into(),
                source,
            }
        }
    })?;
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let malformed = |what: &str| {
            seg_error(
                list.into(),
                format!(
                    "line {}: {what} (expected `<id>` or `<image> <mask>`): {line:?}",
                    n + 1
                ),
            )
        };
        let (id, image, mask) = match fields[..] {
            [] => continue,
            [id] => {
                if !plain_name(id) {
                    return Err(malformed("the id is not a plain file name"));
                }
                (
                    id.to_string(),
                    root.join("JPEGImages").join(format!("{id}.jpg")),
                    root.join("SegmentationClass").join(format!("{id}.png")),
                )
            }
            [image, mask] => {
                let (Some(image), Some(mask)) = (under_root(root, image), under_root(root, mask))
                else {
                    return Err(malformed("a path leaves the data set root"));
                };
                let id = image
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                (id, image, mask)
            }
            _ => return Err(malformed("more than two fields")),
        };
        if !seen.insert(id.clone()) {
            return Err(seg_error(
                list.into(),
                format!("line {}: lists image {id} twice", n + 1),
            ));
        }
        entries.push((id, image, mask));
    }
    if entries.is_empty() {
        return Err(seg_error(list.into(), "lists no images"));
    }
    Ok(entries)
}

/// An error naming the first of `paths` that is not a file, with how many are missing.
fn require_files<'a>(
    paths: impl Iterator<Item = &'a PathBuf>,
    total: usize,
    what: &str,
    list: &Path,
) -> Result<()> {
    let missing: Vec<&PathBuf> = paths.filter(|p| !p.is_file()).collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(seg_error(
            (*first).clone(),
            format!(
                "missing: {} of the {total} {what} listed in {} are not there",
                missing.len(),
                list.display()
            ),
        )),
    }
}

impl VocSegmentation {
    /// Reads `ImageSets/Segmentation/<split>.txt` under `root` and checks that every listed
    /// image and mask exists.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        super::require_dir(root)?;
        let list = root
            .join("ImageSets")
            .join("Segmentation")
            .join(format!("{split}.txt"));
        if !plain_name(split) {
            return Err(seg_error(list, "the split is not a plain file name"));
        }
        let entries = read_list(root, &list)?;
        let total = entries.len();
        require_files(entries.iter().map(|e| &e.1), total, "images", &list)?;
        require_files(entries.iter().map(|e| &e.2), total, "masks", &list)?;
        let (ids, pairs) = entries
            .into_iter()
            .map(|(id, image, mask)| (id, (image, mask)))
            .unzip();
        tracing::info!(root = %root.display(), split, images = total, "VOC segmentation split opened");
        Ok(Self { list, ids, pairs })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the split has no images (never true for an opened split).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The list file the split was read from.
    pub fn list(&self) -> &Path {
        &self.list
    }

    /// Image ids (file stems), in list order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// `(image, mask)` files, in list order.
    pub fn pairs(&self) -> &[(PathBuf, PathBuf)] {
        &self.pairs
    }

    /// The label mask of image `i`: palette indices (or grey values), every one a class of
    /// [`VOC_SEGMENTATION_CLASSES`] or [`IGNORE`].
    pub fn load_mask(&self, i: usize) -> Result<Mask> {
        let (_, path) = self.pair(i)?;
        let bytes = std::fs::read(path).map_err(|source| DataError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let mask = decode_mask(&bytes).map_err(|reason| DataError::Decode {
            index: i,
            path: path.display().to_string(),
            reason,
        })?;
        check_labels(&mask, path)?;
        Ok(mask)
    }

    /// Image `i` decoded at full resolution with its label mask (same size).
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
                "the image is {}×{} but its mask is {}×{}",
                image.width, image.height, mask.width, mask.height
            )));
        }
        Ok((image, mask))
    }

    /// The pairs as a segmentation data set for [`crate::segment::SegLoader`] (VOC masks need
    /// no remapping).
    pub fn seg_dataset(&self) -> Result<SegDataset> {
        SegDataset::from_pairs(self.pairs.clone())
    }

    fn pair(&self, i: usize) -> Result<&(PathBuf, PathBuf)> {
        self.pairs.get(i).ok_or_else(|| {
            DataError::Config(format!(
                "index {i} is outside the VOC segmentation split ({} images)",
                self.len()
            ))
        })
    }
}

/// Rejects a mask holding a value that is neither a VOC class nor [`IGNORE`] (a mask saved with
/// another palette or as colours would otherwise be scored as wrong classes).
fn check_labels(mask: &Mask, path: &Path) -> Result<()> {
    let bad = mask
        .data
        .iter()
        .position(|&v| usize::from(v) >= VOC_SEGMENTATION_CLASSES && v != IGNORE);
    match bad {
        None => Ok(()),
        Some(p) => Err(DataError::Label {
            path: path.into(),
            reason: format!(
                "pixel ({}, {}) has label {}; VOC labels are 0–{} or {IGNORE}",
                p % mask.width.max(1),
                p / mask.width.max(1),
                mask.data[p],
                VOC_SEGMENTATION_CLASSES - 1
            ),
        }),
    }
}

/// Synthetic segmentation fixtures for the readers' tests: real Fashion-MNIST images pasted
/// onto a background, with exact masks (the object is the item's pixels of grey level ≥ 32).
#[cfg(test)]
pub(super) mod synthetic {
    use std::path::Path;

    use crate::dataset::{Dataset, DatasetFormat, Split};
    use crate::image::RgbImage;
    use crate::segment::{IGNORE, Mask};

    /// Where the Debian package puts Fashion-MNIST.
    pub const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

    /// Test image `k` of Fashion-MNIST pasted at `(left, top)` onto a `width × height` gradient,
    /// and whether each pixel belongs to the item.
    pub fn pasted(
        k: usize,
        width: usize,
        height: usize,
        left: usize,
        top: usize,
    ) -> (RgbImage, Vec<bool>) {
        let items = Dataset::open_split(
            DatasetFormat::FashionMnist,
            Path::new(FASHION_MNIST),
            Split::Test,
        )
        .expect("Fashion-MNIST (package dataset-fashion-mnist)");
        let item = items.load(k).expect("a Fashion-MNIST image");
        let mut data = Vec::with_capacity(width * height * 3);
        let mut object = vec![false; width * height];
        for y in 0..height {
            for x in 0..width {
                let inside =
                    x >= left && y >= top && x - left < item.width && y - top < item.height;
                let grey = if inside {
                    item.data[((y - top) * item.width + x - left) * 3]
                } else {
                    0
                };
                if inside && grey >= 32 {
                    object[y * width + x] = true;
                    data.extend_from_slice(&[grey, grey / 2, 255 - grey]);
                } else {
                    data.extend_from_slice(&[(x * 4 % 256) as u8, (y * 4 % 256) as u8, 90]);
                }
            }
        }
        (
            RgbImage {
                width,
                height,
                data,
            },
            object,
        )
    }

    /// `class` on the object, [`IGNORE`] on a one-pixel ring around it (VOC's boundary), 0
    /// elsewhere.
    pub fn ringed_mask(object: &[bool], width: usize, height: usize, class: u8) -> Mask {
        let mut data = vec![0u8; width * height];
        for y in 0..height {
            for x in 0..width {
                let i = y * width + x;
                if object[i] {
                    data[i] = class;
                    continue;
                }
                let near = (y.saturating_sub(1)..(y + 2).min(height)).any(|yy| {
                    (x.saturating_sub(1)..(x + 2).min(width)).any(|xx| object[yy * width + xx])
                });
                if near {
                    data[i] = IGNORE;
                }
            }
        }
        Mask {
            width,
            height,
            data,
        }
    }

    fn encoder<'a>(
        out: &'a mut Vec<u8>,
        width: usize,
        height: usize,
        color: png::ColorType,
    ) -> png::Encoder<'a, &'a mut Vec<u8>> {
        let mut encoder = png::Encoder::new(out, width as u32, height as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
    }

    /// VOC's colour map (`bitget` of the devkit's `labelcolormap`): colours differ from indices,
    /// so a decoder returning colours would be caught.
    fn voc_palette() -> Vec<u8> {
        (0..=255u8)
            .flat_map(|i| {
                let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, i);
                for shift in (0..8).rev() {
                    r |= (c & 1) << shift;
                    g |= ((c >> 1) & 1) << shift;
                    b |= ((c >> 2) & 1) << shift;
                    c >>= 3;
                }
                [r, g, b]
            })
            .collect()
    }

    /// `mask` as an 8-bit palette PNG with VOC's colour map.
    pub fn palette_png(mask: &Mask) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = encoder(&mut out, mask.width, mask.height, png::ColorType::Indexed);
        encoder.set_palette(voc_palette());
        let mut writer = encoder.write_header().expect("PNG header");
        writer.write_image_data(&mask.data).expect("PNG data");
        writer.finish().expect("PNG end");
        out
    }

    /// `mask` as an 8-bit grey PNG (Cityscapes' `labelIds`, VOC's SegmentationClassAug).
    pub fn grey_png(mask: &Mask) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = encoder(&mut out, mask.width, mask.height, png::ColorType::Grayscale)
            .write_header()
            .expect("PNG header");
        writer.write_image_data(&mask.data).expect("PNG data");
        writer.finish().expect("PNG end");
        out
    }

    /// `image` as an RGB PNG.
    pub fn rgb_png(image: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = encoder(&mut out, image.width, image.height, png::ColorType::Rgb)
            .write_header()
            .expect("PNG header");
        writer.write_image_data(&image.data).expect("PNG data");
        writer.finish().expect("PNG end");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{grey_png, palette_png, pasted, rgb_png, ringed_mask};
    use super::*;

    /// One synthetic image: its id, the exact mask written for it.
    struct Written {
        id: String,
        mask: Mask,
    }

    /// A VOC root whose `train.txt` lists `n` images (Fashion-MNIST item `k` as class `k % 20 + 1`
    /// on a 40 × 36 background, with a boundary ring). The images are PNG bytes under the `.jpg`
    /// names (decoding goes by content; the reader checks the names).
    fn root_with(n: usize) -> (tempfile::TempDir, Vec<Written>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        }
        let mut written = Vec::new();
        for k in 0..n {
            let id = format!("2008_{k:06}");
            let (image, object) = pasted(k, 40, 36, 3 + k, 4);
            let mask = ringed_mask(&object, 40, 36, (k % 20 + 1) as u8);
            std::fs::write(
                dir.path().join(format!("JPEGImages/{id}.jpg")),
                rgb_png(&image),
            )
            .expect("image");
            std::fs::write(
                dir.path().join(format!("SegmentationClass/{id}.png")),
                palette_png(&mask),
            )
            .expect("mask");
            written.push(Written { id, mask });
        }
        let list: String = written.iter().map(|w| format!("{}\n", w.id)).collect();
        std::fs::write(dir.path().join("ImageSets/Segmentation/train.txt"), list).expect("list");
        (dir, written)
    }

    fn error(root: &Path, split: &str) -> String {
        VocSegmentation::open(root, split)
            .expect_err("the split is broken")
            .to_string()
    }

    #[test]
    fn reads_the_list_and_decodes_palette_indices_not_colours() {
        let (dir, written) = root_with(3);
        let split = VocSegmentation::open(dir.path(), "train").expect("open");
        assert_eq!(split.len(), 3);
        assert_eq!(
            split.ids(),
            written.iter().map(|w| w.id.clone()).collect::<Vec<_>>()
        );
        for (i, w) in written.iter().enumerate() {
            let (image, mask) = split.load(i).expect("pair");
            assert_eq!((image.width, image.height), (40, 36));
            assert_eq!(mask, w.mask, "image {i}");
            // The fixture has all three kinds of pixel.
            let class = (i % 20 + 1) as u8;
            for v in [0, class, IGNORE] {
                assert!(mask.data.contains(&v), "image {i} lacks {v}");
            }
        }
        assert!(
            split.pairs()[1]
                .1
                .ends_with("SegmentationClass/2008_000001.png")
        );
        assert_eq!(split.seg_dataset().expect("data set").len(), 3);
        assert_eq!(voc_segmentation_class_name(0), Some("background"));
        assert_eq!(voc_segmentation_class_name(20), Some("tvmonitor"));
        assert_eq!(voc_segmentation_class_name(21), None);
    }

    #[test]
    fn reads_a_segmentation_class_aug_pair_list() {
        let (dir, written) = root_with(2);
        let aug = dir.path().join("SegmentationClassAug");
        std::fs::create_dir_all(&aug).expect("dir");
        // Grey masks, as the extension ships them; one line with the leading slash of
        // DeepLab's train_aug.txt, one without.
        for w in &written {
            std::fs::write(aug.join(format!("{}.png", w.id)), grey_png(&w.mask)).expect("mask");
        }
        std::fs::write(
            dir.path().join("ImageSets/Segmentation/train_aug.txt"),
            format!(
                "/JPEGImages/{0}.jpg /SegmentationClassAug/{0}.png\nJPEGImages/{1}.jpg SegmentationClassAug/{1}.png\n",
                written[0].id, written[1].id
            ),
        )
        .expect("list");
        let split = VocSegmentation::open(dir.path(), "train_aug").expect("open");
        assert_eq!(split.ids(), [written[0].id.clone(), written[1].id.clone()]);
        assert!(split.pairs()[0].1.starts_with(&aug));
        assert_eq!(split.load_mask(1).expect("mask"), written[1].mask);
    }

    #[test]
    fn a_missing_list_image_or_mask_is_named() {
        let (dir, written) = root_with(3);
        let err = error(dir.path(), "val");
        assert!(
            err.contains("ImageSets/Segmentation/val.txt") && err.contains("missing"),
            "{err}"
        );

        std::fs::remove_file(
            dir.path()
                .join(format!("SegmentationClass/{}.png", written[2].id)),
        )
        .expect("rm");
        let err = error(dir.path(), "train");
        assert!(
            err.contains(&format!("SegmentationClass/{}.png", written[2].id)),
            "{err}"
        );
        assert!(err.contains("1 of the 3 masks listed in"), "{err}");

        std::fs::remove_file(dir.path().join(format!("JPEGImages/{}.jpg", written[0].id)))
            .expect("rm");
        let err = error(dir.path(), "train");
        assert!(
            err.contains(&format!("JPEGImages/{}.jpg", written[0].id)),
            "{err}"
        );
        assert!(err.contains("1 of the 3 images listed in"), "{err}");

        let err = error(&dir.path().join("VOC2012"), "train");
        assert!(
            err.contains("VOC2012") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn malformed_lists_are_reported_with_their_line_number() {
        for (text, needle) in [
            (
                "2008_000000\n../x\n",
                "line 2: the id is not a plain file name",
            ),
            ("a b c\n", "line 1: more than two fields"),
            (
                "JPEGImages/../x.jpg m.png\n",
                "line 1: a path leaves the data set root",
            ),
            (
                "2008_000000\n2008_000000\n",
                "line 2: lists image 2008_000000 twice",
            ),
            ("\n \n", "lists no images"),
        ] {
            let (dir, _) = root_with(1);
            std::fs::write(dir.path().join("ImageSets/Segmentation/train.txt"), text)
                .expect("list");
            let err = error(dir.path(), "train");
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("train.txt"), "{err}");
        }
        let (dir, _) = root_with(1);
        let err = error(dir.path(), "../train");
        assert!(err.contains("the split is not a plain file name"), "{err}");
    }

    #[test]
    fn a_mask_with_a_value_outside_the_classes_or_the_wrong_size_is_rejected() {
        let (dir, written) = root_with(2);
        let mut bad = written[0].mask.clone();
        bad.data[5 * 40 + 7] = 21;
        let path = dir
            .path()
            .join(format!("SegmentationClass/{}.png", written[0].id));
        std::fs::write(&path, palette_png(&bad)).expect("mask");
        let split = VocSegmentation::open(dir.path(), "train").expect("open");
        let err = split.load_mask(0).expect_err("label 21").to_string();
        assert!(
            err.contains("pixel (7, 5) has label 21; VOC labels are 0–20 or 255"),
            "{err}"
        );
        assert!(err.contains(&written[0].id), "{err}");

        let small = Mask::ignore(39, 36);
        let path = dir
            .path()
            .join(format!("SegmentationClass/{}.png", written[1].id));
        std::fs::write(&path, palette_png(&small)).expect("mask");
        let err = split.load(1).expect_err("size").to_string();
        assert!(
            err.contains("the image is 40×36 but its mask is 39×36"),
            "{err}"
        );

        std::fs::write(&path, b"not a png").expect("mask");
        let err = split.load_mask(1).expect_err("not a PNG").to_string();
        assert!(err.contains("not a PNG"), "{err}");
        let err = split.load_mask(2).expect_err("out of range").to_string();
        assert!(err.contains("index 2 is outside"), "{err}");
    }
}
