//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while opening or reading a data set.
///
/// A single undecodable image is not an error of the loader: it is skipped and counted (see
/// [`crate::LoaderStats`]); [`DataError::Decode`] surfaces only where one image is asked for
/// directly.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data set path is missing or not readable.
    #[error("data set path {path} cannot be read: {source}; check the path and its permissions")]
    Unreadable {
        /// The path that was opened.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The data set directory exists but holds no usable images.
    #[error("data set directory {path} holds no images ({expected})")]
    Empty {
        /// The directory.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// An IDX (MNIST-style) file is malformed.
    #[error("IDX file {path} is malformed: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An annotation file (the image list of a `flat` data set) is malformed or names images
    /// that are not there.
    #[error("annotation file {path}: {reason}")]
    Annotations {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A PASCAL VOC class list is missing or malformed, or names an image that is not there.
    #[error("PASCAL VOC file {path}: {reason}")]
    Voc {
        /// The list or image file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A DAVIS-2017 sequence list is missing or malformed, or a sequence lacks its frames or
    /// annotations.
    #[error("DAVIS file {path}: {reason}")]
    Davis {
        /// The list, folder or file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A PASCAL VOC segmentation list is missing or malformed, or names an image or mask that
    /// is not there.
    #[error("PASCAL VOC segmentation file {path}: {reason}")]
    VocSegmentation {
        /// The list, image or mask file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A Cityscapes split folder is missing or empty, or an image lacks its `gtFine` labels.
    #[error("Cityscapes file {path}: {reason}")]
    Cityscapes {
        /// The folder or file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A label mask decodes but holds a value that is no class of its data set.
    #[error("label mask {path}: {reason}")]
    Label {
        /// The mask file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One image could not be read or decoded.
    #[error("image {index} ({path}) could not be decoded: {reason}")]
    Decode {
        /// Index of the image in the data set.
        index: usize,
        /// Its file (or `idx[<n>]` for in-memory images).
        path: String,
        /// The decoder's reason.
        reason: String,
    },
    /// A batch could not be filled because too many consecutive replacement images were corrupt.
    #[error(
        "batch {batch}: {skipped} images in a row could not be decoded (last: {last}); \
         the data set looks broken"
    )]
    TooManyCorrupt {
        /// Batch number within the epoch.
        batch: usize,
        /// How many were tried.
        skipped: usize,
        /// The last failure.
        last: String,
    },
    /// A configuration value is out of range.
    #[error("invalid data pipeline configuration: {0}")]
    Config(String),
    /// A loader thread died (a bug); the epoch cannot be completed.
    #[error("a data loader thread panicked; see the log above")]
    WorkerPanicked,
}
