//! Data sets: a class-per-folder tree (`imagefolder`), a flat directory of images (`flat`, e.g.
//! COCO `train2017`, optionally restricted to the images a COCO annotation file lists),
//! Fashion-MNIST's IDX files, PASCAL VOC's classification lists ([`voc`]) and DAVIS-2017
//! video sequences ([`davis`]); for semantic segmentation, VOC's segmentation lists
//! ([`voc_segmentation`]) and Cityscapes' fine annotations ([`cityscapes`]).

pub mod cityscapes;
mod coco;
pub mod davis;
mod flat;
mod idx;
mod imagefolder;
pub mod voc;
pub mod voc_segmentation;

use std::path::{Path, PathBuf};

use crate::image::RgbImage;
use crate::{DataError, Result};

/// On-disk layout of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    /// `root/<class>/<image>`: labels are the sorted class folders' indices.
    Imagefolder,
    /// `root/<image>` (sub-folders included), unlabelled.
    Flat,
    /// A directory holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    FashionMnist,
}

/// Which part of a data set that ships splits (Fashion-MNIST) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// The training split (60 000 images for Fashion-MNIST).
    #[default]
    Train,
    /// The test split (10 000 images).
    Test,
}

/// File extensions read by the folder formats (lower case).
pub(crate) const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Where one sample's pixels come from.
pub(crate) enum Source<'a> {
    /// Encoded bytes of a file.
    Encoded(Vec<u8>),
    /// Decoded grey pixels held in memory.
    Gray {
        width: usize,
        height: usize,
        pixels: &'a [u8],
    },
}

#[derive(Debug)]
enum Storage {
    Files {
        files: Vec<PathBuf>,
        labels: Option<Vec<u32>>,
        classes: Vec<String>,
    },
    Idx(idx::IdxImages),
}

/// An opened data set: the list of samples (read lazily for files) and their labels.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    storage: Storage,
}

impl Dataset {
    /// Opens the training split of a data set.
    pub fn open(format: DatasetFormat, path: &Path) -> Result<Self> {
        Self::open_split(format, path, Split::Train)
    }

    /// Opens a `flat` data set holding exactly the images a COCO-style annotation file lists
    /// (`images[].file_name`, relative to `path`), in the file's order.
    pub fn open_annotated(path: &Path, annotations: &Path) -> Result<Self> {
        require_dir(path)?;
        let storage = Storage::Files {
            files: coco::scan(path, annotations)?,
            labels: None,
            classes: Vec::new(),
        };
        tracing::info!(path = %path.display(), annotations = %annotations.display(), samples = storage_len(&storage), "data set opened");
        Ok(Self {
            root: path.into(),
            storage,
        })
    }

    /// An unlabelled data set of exactly `files`, in order (e.g. the images a list file names);
    /// `root` is only reported. Whether the files exist is checked when they are read.
    pub fn from_files(root: &Path, files: Vec<PathBuf>) -> Result<Self> {
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root.into(),
                expected: "a non-empty list of image files",
            });
        }
        let storage = Storage::Files {
            files,
            labels: None,
            classes: Vec::new(),
        };
        tracing::info!(path = %root.display(), samples = storage_len(&storage), "data set opened from a file list");
        Ok(Self {
            root: root.into(),
            storage,
        })
    }

    /// Opens one split. Folder formats have no splits: point them at the split's directory
    /// (`split` is ignored).
    pub fn open_split(format: DatasetFormat, path: &Path, split: Split) -> Result<Self> {
        require_dir(path)?;
        let storage = match format {
            DatasetFormat::Imagefolder => {
                let (files, labels, classes) = imagefolder::scan(path)?;
                Storage::Files {
                    files,
                    labels: Some(labels),
                    classes,
                }
            }
            DatasetFormat::Flat => Storage::Files {
                files: flat::scan(path)?,
                labels: None,
                classes: Vec::new(),
            },
            DatasetFormat::FashionMnist => Storage::Idx(idx::IdxImages::open(path, split)?),
        };
        tracing::info!(path = %path.display(), ?format, ?split, samples = storage_len(&storage), "data set opened");
        Ok(Self {
            root: path.into(),
            storage,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        storage_len(&self.storage)
    }

    /// Whether the data set has no samples (never true for an opened data set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label of sample `i` (`None` for unlabelled formats or out of range).
    pub fn label(&self, i: usize) -> Option<u32> {
        match &self.storage {
            Storage::Files { labels, .. } => labels.as_ref().and_then(|l| l.get(i).copied()),
            Storage::Idx(idx) => idx.labels.get(i).copied(),
        }
    }

    /// Class names in label order (empty when unlabelled; `"0"`…`"9"` for IDX files).
    pub fn classes(&self) -> Vec<String> {
        match &self.storage {
            Storage::Files { classes, .. } => classes.clone(),
            Storage::Idx(_) => (0..10).map(|c| c.to_string()).collect(),
        }
    }

    /// The data set's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A printable name of sample `i` (its file, or `idx[i]`).
    pub fn describe(&self, i: usize) -> String {
        match &self.storage {
            Storage::Files { files, .. } => files
                .get(i)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("#{i}")),
            Storage::Idx(_) => format!("idx[{i}]"),
        }
    }

    pub(crate) fn source(&self, i: usize) -> std::result::Result<Source<'_>, String> {
        match &self.storage {
            Storage::Files { files, .. } => {
                let path = files
                    .get(i)
                    .ok_or_else(|| format!("index {i} out of range"))?;
                std::fs::read(path)
                    .map(Source::Encoded)
                    .map_err(|e| format!("read failed: {e}"))
            }
            Storage::Idx(idx) => {
                let pixels = idx
                    .image(i)
                    .ok_or_else(|| format!("index {i} out of range"))?;
                Ok(Source::Gray {
                    width: idx.width,
                    height: idx.height,
                    pixels,
                })
            }
        }
    }

    /// Reads and decodes sample `i` at full resolution (Pillow's `open(...).convert("RGB")`).
    pub fn load(&self, i: usize) -> Result<RgbImage> {
        let decode_error = |reason: String| DataError::Decode {
            index: i,
            path: self.describe(i),
            reason,
        };
        match self.source(i).map_err(decode_error)? {
            Source::Encoded(bytes) => {
                crate::decode::decode(&bytes, crate::decode::JpegBackend::default(), 1)
                    .map_err(decode_error)
            }
            Source::Gray {
                width,
                height,
                pixels,
            } => Ok(RgbImage::from_gray(width, height, pixels)),
        }
    }
}

fn require_dir(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| DataError::Unreadable {
        path: path.into(),
        source,
    })?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(DataError::Unreadable {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        })
    }
}

fn storage_len(s: &Storage) -> usize {
    match s {
        Storage::Files { files, .. } => files.len(),
        Storage::Idx(idx) => idx.labels.len(),
    }
}

/// Whether `path` has one of [`EXTENSIONS`] (case-insensitive).
pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// All image files under `dir`, recursively, sorted (symlinks followed, as `os.walk` in
/// torchvision's `ImageFolder`).
pub(crate) fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Unreadable {
        path: dir.into(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk_images(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}
