//! Semantic segmentation (and video label propagation) inputs: label masks read from palette
//! PNGs, paired image + mask transforms that keep the two aligned (image bilinear or bicubic,
//! mask nearest, padding [`IGNORE`]), and a loader of (image, mask) pairs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kontrast_data::LoaderConfig;
//! use kontrast_data::segment::{SegAugment, SegDataset, SegLoader};
//!
//! let voc = Arc::new(SegDataset::voc("VOCdevkit/VOC2012".as_ref(), "val")?);
//! let indices = (0..voc.len()).collect();
//! for batch in SegLoader::new(voc, indices, SegAugment::evaluation(), LoaderConfig::default())? {
//!     for sample in batch?.samples {
//!         assert_eq!(sample.mask.len(), sample.width * sample.height);
//!     }
//! }
//! # Ok::<(), kontrast_data::DataError>(())
//! ```

mod loader;
mod mask;
pub mod transform;

pub use loader::{SegBatch, SegDataset, SegLoader, SegSample};
pub use mask::{IGNORE, Mask, decode_mask};
pub use transform::{RotateZoom, SegAugment, SegCrop};
