//! The data pipeline of Kontrast: datasets, a distributed sampler, multi-scale (constrained)
//! cropping, the MoCo v2 augmentations, AutoAugment and a threaded loader with bounded prefetch.
//!
//! Every transform follows torchvision + Pillow semantics (what the reference implementations
//! run), so the pixels a model sees here are the pixels it would see in Python; `docs/data.md`
//! lists the tolerances and the few deliberate deviations.
//!
//! [`segment`] pairs images with label masks for segmentation and video evaluation (mask-aligned
//! transforms, nearest-neighbour labels, palette PNG masks).
//!
//! The loader emits `u8` views (`batch × 3 × size × size`, RGB, CHW per image); normalisation to
//! float happens on the device, with [`MEAN`] and [`STD`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use kontrast_data::{Dataset, DatasetFormat, Loader, LoaderConfig, MultiCropSpec, Sampler};
//!
//! let dataset = Arc::new(Dataset::open(DatasetFormat::Flat, "train2017".as_ref())?);
//! let sampler = Sampler::new(dataset.len(), 0, 0, 1)?;
//! let config = LoaderConfig { batch_per_rank: 64, threads: 8, ..LoaderConfig::default() };
//! for batch in Loader::new(dataset, &sampler, MultiCropSpec::revisiting(), config)? {
//!     let batch = batch?;
//!     assert_eq!(batch.views.len(), 6);
//! }
//! # Ok::<(), kontrast_data::DataError>(())
//! ```
#![deny(missing_docs)]

pub mod augment;
pub mod crop;
pub mod dataset;
pub mod decode;
mod error;
pub mod image;
pub mod loader;
pub mod normalize;
pub mod pipeline;
pub mod resize;
pub mod rng;
pub mod sampler;
pub mod segment;

pub use crop::{CropBox, CropFamily, MultiCropSpec};
pub use dataset::voc::{VOC_CLASSES, VocLabels, VocSplit};
pub use dataset::{Dataset, DatasetFormat, Split};
pub use error::DataError;
pub use image::RgbImage;
pub use loader::{Batch, EvalTransform, Loader, LoaderConfig, LoaderStats, View};
pub use normalize::{MEAN, STD, normalize_into};
pub use rng::SampleRng;
pub use sampler::Sampler;

/// Result of this crate's fallible operations.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
