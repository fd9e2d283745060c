//! DAVIS-2017 video object segmentation, as its evaluation code reads it: the sequences listed
//! in `ImageSets/2017/<split>.txt`, each a folder of frames `JPEGImages/480p/<seq>/<nnnnn>.jpg`
//! (in file-name order) with one annotation per frame, `Annotations/480p/<seq>/<nnnnn>.png`: a
//! palette PNG whose palette *index* is the object id (0 background, [`VOID`] void where
//! present).

use std::path::{Component, Path, PathBuf};

use crate::decode::{self, JpegBackend};
use crate::image::RgbImage;
use crate::segment::{Mask, decode_mask};
use crate::{DataError, Result};

/// The resolution folder the semi-supervised benchmark is scored at.
pub const RESOLUTION: &str = "480p";

/// The annotation index of void pixels (the DAVIS evaluation code counts them as background in
/// the semi-supervised task).
pub const VOID: u8 = 255;

/// One video: its frames and their annotations, in frame order.
#[derive(Debug, Clone)]
pub struct DavisSequence {
    name: String,
    frames: Vec<PathBuf>,
    annotations: Vec<PathBuf>,
}

/// The sequences of one split (`val`, `train`, …) of a DAVIS-2017 root (the directory holding
/// `JPEGImages/`, `Annotations/` and `ImageSets/`).
#[derive(Debug, Clone)]
pub struct DavisSplit {
    root: PathBuf,
    sequences: Vec<DavisSequence>,
}

fn davis_error(path: PathBuf, reason: impl Into<String>) -> DataError {
    DataError::Davis {
        path,
        reason: reason.into(),
    }
}

/// A sequence name must name one folder (the list is input, not trusted).
fn plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.contains(['/', '\\'])
}

/// The sequence names of `list`, in file order.
fn read_list(list: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(list).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            davis_error(list.into(), "missing (the split's list of sequence names)")
        } else {
            DataError::Unreadable {
                path: list.into(),
                source,
            }
        }
    })?;
    let mut names: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        if !plain_name(name) {
            return Err(davis_error(
                list.into(),
                format!("line {}: {name:?} is not a plain sequence name", n + 1),
            ));
        }
        if names.iter().any(|s| s == name) {
            return Err(davis_error(
                list.into(),
                format!("line {}: lists sequence {name} twice", n + 1),
            ));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(davis_error(list.into(), "lists no sequences"));
    }
    Ok(names)
}

/// The `.jpg` frames of `dir`, sorted by file name (the evaluation code's `np.sort(glob(...))`;
/// DAVIS names are zero-padded, so this is frame order).
fn frames_of(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            davis_error(dir.into(), "missing (the sequence's frame folder)")
        } else {
            DataError::Unreadable {
                path: dir.into(),
                source,
            }
        }
    })?;
    let mut frames: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    frames.sort();
    if frames.is_empty() {
        return Err(davis_error(dir.into(), "holds no .jpg frames"));
    }
    Ok(frames)
}

impl DavisSplit {
    /// Reads the sequence list of `split` under `root` and checks that every listed sequence
    /// has frames and an annotation for each frame (the semi-supervised scores need them all),
    /// naming the first missing file.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        super::require_dir(root)?;
        let list = root
            .join("ImageSets")
            .join("2017")
            .join(format!("{split}.txt"));
        let mut sequences = Vec::new();
        for name in read_list(&list)? {
            let frames = frames_of(&root.join("JPEGImages").join(RESOLUTION).join(&name))?;
            let annotation_dir = root.join("Annotations").join(RESOLUTION).join(&name);
            let annotations: Vec<PathBuf> = frames
                .iter()
                .map(|f| {
                    annotation_dir.join(f.with_extension("png").file_name().unwrap_or_default())
                })
                .collect();
            if let Some(missing) = annotations.iter().find(|a| !a.is_file()) {
                return Err(davis_error(
                    missing.clone(),
                    format!(
                        "missing: sequence {name} has {} frames and every frame needs its annotation",
                        frames.len()
                    ),
                ));
            }
            sequences.push(DavisSequence {
                name,
                frames,
                annotations,
            });
        }
        tracing::info!(
            root = %root.display(),
            split,
            sequences = sequences.len(),
            frames = sequences.iter().map(DavisSequence::len).sum::<usize>(),
            "DAVIS split opened"
        );
        Ok(Self {
            root: root.into(),
            sequences,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sequences, in list order.
    pub fn sequences(&self) -> &[DavisSequence] {
        &self.sequences
    }
}

impl DavisSequence {
    /// The sequence's name (its folder).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the sequence has no frames (never true for an opened split).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The file of frame `i`.
    pub fn frame_path(&self, i: usize) -> Option<&Path> {
        self.frames.get(i).map(PathBuf::as_path)
    }

    /// The annotation file of frame `i`.
    pub fn annotation_path(&self, i: usize) -> Option<&Path> {
        self.annotations.get(i).map(PathBuf::as_path)
    }

    fn read(&self, files: &[PathBuf], i: usize) -> Result<(String, Vec<u8>)> {
        let path = files.get(i).ok_or_else(|| DataError::Decode {
            index: i,
            path: format!("{}[{i}]", self.name),
            reason: format!("the sequence has {} frames", files.len()),
        })?;
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| DataError::Decode {
            index: i,
            path: shown.clone(),
            reason: format!("read failed: {e}"),
        })?;
        Ok((shown, bytes))
    }

    /// Frame `i`, decoded to RGB.
    pub fn frame(&self, i: usize) -> Result<RgbImage> {
        let (path, bytes) = self.read(&self.frames, i)?;
        decode::decode(&bytes, JpegBackend::default(), 1).map_err(|reason| DataError::Decode {
            index: i,
            path,
            reason,
        })
    }

    /// The annotation of frame `i`: per pixel its palette index (the object id, or [`VOID`]).
    pub fn annotation(&self, i: usize) -> Result<Mask> {
        let (path, bytes) = self.read(&self.annotations, i)?;
        decode_mask(&bytes).map_err(|reason| DataError::Decode {
            index: i,
            path,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first colours of the DAVIS palette (index 0 black, 1 red, 2 green, …); the test
    /// palettes put them out of index order so a decoder returning colours would be caught.
    const COLOURS: [[u8; 3]; 4] = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]];

    /// A palette PNG of `indices` at `depth` bits per index.
    fn palette_png(width: u32, height: u32, indices: &[u8], depth: png::BitDepth) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(depth);
        let mut palette: Vec<u8> = COLOURS.iter().rev().flatten().copied().collect();
        palette.resize(256 * 3, 7);
        encoder.set_palette(palette);
        let bits = depth as usize;
        let per_byte = 8 / bits;
        let row_bytes = (width as usize).div_ceil(per_byte);
        let mut data = vec![0u8; row_bytes * height as usize];
        for (i, &v) in indices.iter().enumerate() {
            let (y, x) = (i / width as usize, i % width as usize);
            let shift = 8 - bits * (x % per_byte + 1);
            data[y * row_bytes + x / per_byte] |= v << shift;
        }
        let mut writer = encoder.write_header().expect("PNG header");
        writer.write_image_data(&data).expect("PNG data");
        writer.finish().expect("PNG end");
        out
    }

    /// A grey PNG (decodable as a frame; the reader only looks at the `.jpg` name).
    fn grey_png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("PNG header");
        let pixels: Vec<u8> = (0..width * height).map(|i| (i * 13 % 256) as u8).collect();
        writer.write_image_data(&pixels).expect("PNG data");
        writer.finish().expect("PNG end");
        out
    }

    /// A root listing `sequences` (name, frame count) in `val.txt`, 5×3 frames whose annotation
    /// of frame `f` holds index `f % 3` at pixel `f`, 255 at the last pixel and 0 elsewhere.
    fn root_with(sequences: &[(&str, usize)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let sets = dir.path().join("ImageSets/2017");
        std::fs::create_dir_all(&sets).expect("sets dir");
        let list: String = sequences.iter().map(|(n, _)| format!("{n}\n")).collect();
        std::fs::write(sets.join("val.txt"), list).expect("list");
        for &(name, count) in sequences {
            let frames = dir.path().join("JPEGImages/480p").join(name);
            let annotations = dir.path().join("Annotations/480p").join(name);
            std::fs::create_dir_all(&frames).expect("frames dir");
            std::fs::create_dir_all(&annotations).expect("annotations dir");
            // Written out of order: the reader sorts.
            for f in (0..count).rev() {
                std::fs::write(frames.join(format!("{f:05}.jpg")), grey_png(5, 3)).expect("frame");
                let mut indices = vec![0u8; 15];
                indices[f % 15] = (f % 3) as u8;
                indices[14] = VOID;
                std::fs::write(
                    annotations.join(format!("{f:05}.png")),
                    palette_png(5, 3, &indices, png::BitDepth::Eight),
                )
                .expect("annotation");
            }
        }
        dir
    }

    fn error(root: &Path) -> String {
        DavisSplit::open(root, "val")
            .expect_err("the split is broken")
            .to_string()
    }

    #[test]
    fn reads_sequences_in_list_order_and_frames_in_name_order() {
        let dir = root_with(&[("dog", 3), ("bike-packing", 12)]);
        let split = DavisSplit::open(dir.path(), "val").expect("open");
        let names: Vec<&str> = split.sequences().iter().map(DavisSequence::name).collect();
        assert_eq!(names, ["dog", "bike-packing"]);
        let bike = &split.sequences()[1];
        assert_eq!(bike.len(), 12);
        for f in 0..12 {
            let frame = bike.frame_path(f).expect("frame");
            assert!(
                frame.ends_with(format!("{f:05}.jpg")),
                "{}",
                frame.display()
            );
            let annotation = bike.annotation(f).expect("annotation");
            assert_eq!((annotation.width, annotation.height), (5, 3));
            let mut want = vec![0u8; 15];
            want[f % 15] = (f % 3) as u8;
            want[14] = VOID;
            assert_eq!(annotation.data, want, "frame {f}");
        }
        let image = bike.frame(4).expect("frame 4");
        assert_eq!((image.width, image.height), (5, 3));
        assert_eq!(image.data[3..6], [13, 13, 13]);
    }

    #[test]
    fn packed_palette_indices_are_read_as_indices() {
        let indices: Vec<u8> = (0..21).map(|i| (i % 4) as u8).collect();
        for depth in [
            png::BitDepth::Two,
            png::BitDepth::Four,
            png::BitDepth::Eight,
        ] {
            let mask = decode_mask(&palette_png(7, 3, &indices, depth)).expect("decode");
            assert_eq!(mask.data, indices, "{depth:?}");
        }
    }

    #[test]
    fn a_missing_list_frame_folder_or_annotation_is_named() {
        let dir = root_with(&[("dog", 3)]);
        std::fs::remove_file(dir.path().join("Annotations/480p/dog/00001.png")).expect("rm");
        let err = error(dir.path());
        assert!(err.contains("Annotations/480p/dog/00001.png"), "{err}");
        assert!(err.contains("missing"), "{err}");

        let dir = root_with(&[("dog", 3)]);
        std::fs::write(dir.path().join("ImageSets/2017/val.txt"), "dog\ncows\n").expect("list");
        let err = error(dir.path());
        assert!(err.contains("JPEGImages/480p/cows"), "{err}");

        let dir = root_with(&[("dog", 3)]);
        let err = DavisSplit::open(dir.path(), "test-dev")
            .expect_err("no such list")
            .to_string();
        assert!(err.contains("ImageSets/2017/test-dev.txt"), "{err}");

        let err = error(&dir.path().join("DAVIS"));
        assert!(err.contains("DAVIS"), "{err}");
    }

    #[test]
    fn malformed_lists_are_rejected() {
        for (text, needle) in [
            (
                "dog\n../dog\n",
                "line 2: \"../dog\" is not a plain sequence name",
            ),
            ("dog\n\ndog\n", "line 3: lists sequence dog twice"),
            ("\n \n", "lists no sequences"),
        ] {
            let dir = root_with(&[("dog", 3)]);
            std::fs::write(dir.path().join("ImageSets/2017/val.txt"), text).expect("list");
            let err = error(dir.path());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let dir = root_with(&[("dog", 1)]);
        std::fs::remove_file(dir.path().join("JPEGImages/480p/dog/00000.jpg")).expect("rm");
        assert!(error(dir.path()).contains("holds no .jpg frames"));
    }

    #[test]
    fn an_rgb_annotation_is_a_decode_error_naming_the_file() {
        let dir = root_with(&[("dog", 2)]);
        let path = dir.path().join("Annotations/480p/dog/00001.png");
        let mut rgb = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut rgb, 1, 1);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().expect("PNG header");
            writer.write_image_data(&[128, 0, 0]).expect("PNG data");
            writer.finish().expect("PNG end");
        }
        std::fs::write(&path, rgb).expect("annotation");
        let split = DavisSplit::open(dir.path(), "val").expect("open");
        let err = split.sequences()[0]
            .annotation(1)
            .expect_err("an RGB mask is not a label map")
            .to_string();
        assert!(
            err.contains("00001.png") && err.contains("palette"),
            "{err}"
        );
    }
}
