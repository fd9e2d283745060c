//! Image + mask data sets and their loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::decode::{self, JpegBackend, Reason};
use crate::image::RgbImage;
use crate::loader::{LoaderConfig, LoaderStats, SERIAL_ENV};
use crate::resize::Resampler;
use crate::rng::SampleRng;
use crate::segment::mask::{Mask, decode_mask};
use crate::segment::transform::SegAugment;
use crate::{DataError, Result};

/// Separates the segmentation streams from the pre-training ones of the same index.
const SEGMENTATION_STREAM: u64 = 0x5e67;

/// How a mask file's values become labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Labels {
    /// The values are the labels (VOC's palette indices, trainIds).
    AsStored,
    /// Cityscapes labelIds, mapped to the 19 trainIds.
    CityscapesLabelIds,
}

/// A list of (image, label mask) file pairs.
#[derive(Debug, Clone)]
pub struct SegDataset {
    pairs: Vec<(PathBuf, PathBuf)>,
    labels: Labels,
}

fn unreadable(path: &Path, what: &str) -> DataError {
    DataError::Unreadable {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()),
    }
}

impl SegDataset {
    /// Pascal VOC: the ids of `ImageSets/Segmentation/<split>.txt` (e.g. `train`, `val`,
    /// `trainaug` where that list was added), images `JPEGImages/<id>.jpg` (or `.png`), masks
    /// `SegmentationClass/<id>.png` (or `SegmentationClassAug/<id>.png` for `trainaug`).
    pub fn voc(root: &Path, split: &str) -> Result<Self> {
        let list = root
            .join("ImageSets/Segmentation")
            .join(format!("{split}.txt"));
        let text = std::fs::read_to_string(&list).map_err(|source| DataError::Unreadable {
            path: list.clone(),
            source,
        })?;
        let mask_dirs = ["SegmentationClass", "SegmentationClassAug"];
        let mut pairs = Vec::new();
        for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let image = ["jpg", "png"]
                .iter()
                .map(|e| root.join("JPEGImages").join(format!("{id}.{e}")))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    unreadable(
                        &root.join("JPEGImages").join(format!("{id}.jpg")),
                        &format!("image of id {id} listed in {} is missing", list.display()),
                    )
                })?;
            let mask = mask_dirs
                .iter()
                .map(|d| root.join(d).join(format!("{id}.png")))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    unreadable(
                        &root.join(mask_dirs[0]).join(format!("{id}.png")),
                        &format!("mask of id {id} listed in {} is missing", list.display()),
                    )
                })?;
            pairs.push((image, mask));
        }
        Self::from_pairs_in(pairs, &list)
    }

    /// Every image under `images` (recursive, sorted) with the mask of the same relative path
    /// and stem under `masks`, as a PNG; an image without its mask is an error naming both.
    pub fn paired_dirs(images: &Path, masks: &Path) -> Result<Self> {
        let mut files = Vec::new();
        crate::dataset::walk_images(images, &mut files)?;
        let mut pairs = Vec::with_capacity(files.len());
        for image in files {
            let rel = image.strip_prefix(images).unwrap_or(&image);
            let mask = masks.join(rel).with_extension("png");
            if !mask.is_file() {
                return Err(unreadable(
                    &mask,
                    &format!("the mask of {} is missing", image.display()),
                ));
            }
            pairs.push((image, mask));
        }
        Self::from_pairs_in(pairs, images)
    }

    /// A Cityscapes split (see [`crate::dataset::cityscapes::Cityscapes`]): its
    /// `*_gtFine_labelIds.png` masks read as the 19 trainIds, every other id [`IGNORE`](super::IGNORE).
    pub fn cityscapes(root: &Path, split: &str) -> Result<Self> {
        let split = crate::dataset::cityscapes::Cityscapes::open(root, split)?;
        let mut data = Self::from_pairs_in(split.pairs().to_vec(), root)?;
        data.labels = Labels::CityscapesLabelIds;
        Ok(data)
    }

    /// Explicit pairs (e.g. Cityscapes' `*_leftImg8bit.png` with `*_gtFine_labelTrainIds.png`).
    pub fn from_pairs(pairs: Vec<(PathBuf, PathBuf)>) -> Result<Self> {
        Self::from_pairs_in(pairs, Path::new("(pairs)"))
    }

    fn from_pairs_in(pairs: Vec<(PathBuf, PathBuf)>, origin: &Path) -> Result<Self> {
        if pairs.is_empty() {
            return Err(DataError::Empty {
                path: origin.into(),
                expected: "image + mask pairs",
            });
        }
        tracing::info!(origin = %origin.display(), pairs = pairs.len(), "segmentation data set opened");
        Ok(Self {
            pairs,
            labels: Labels::AsStored,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs (never true for an opened data set).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The image and mask files of pair `i`.
    pub fn paths(&self, i: usize) -> Option<(&Path, &Path)> {
        self.pairs.get(i).map(|(a, b)| (a.as_path(), b.as_path()))
    }

    fn read(&self, i: usize, jpeg: JpegBackend) -> std::result::Result<(RgbImage, Mask), Reason> {
        let (image, mask) = self
            .paths(i)
            .ok_or_else(|| format!("index {i} out of range"))?;
        let bytes = std::fs::read(image).map_err(|e| format!("image read failed: {e}"))?;
        let image = decode::decode(&bytes, jpeg, 1).map_err(|e| format!("image: {e}"))?;
        let bytes =
            std::fs::read(mask).map_err(|e| format!("mask {} read failed: {e}", mask.display()))?;
        let path = mask;
        let mut mask = decode_mask(&bytes).map_err(|e| format!("mask {}: {e}", path.display()))?;
        if self.labels == Labels::CityscapesLabelIds {
            crate::dataset::cityscapes::to_train_ids(&mut mask)
                .map_err(|e| format!("mask {}: {e}", path.display()))?;
        }
        Ok((image, mask))
    }

    /// Reads and decodes pair `i` at full resolution.
    pub fn load(&self, i: usize) -> Result<(RgbImage, Mask)> {
        self.read(i, JpegBackend::default())
            .map_err(|reason| DataError::Decode {
                index: i,
                path: self.describe(i),
                reason,
            })
    }

    /// A printable name of pair `i` (its image file).
    pub fn describe(&self, i: usize) -> String {
        self.paths(i)
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_else(|| format!("#{i}"))
    }
}

/// One transformed pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSample {
    /// Index in the data set.
    pub index: usize,
    /// Width of image and mask.
    pub width: usize,
    /// Height of image and mask.
    pub height: usize,
    /// `3 × height × width` bytes, RGB planes (CHW).
    pub image: Vec<u8>,
    /// `height × width` class indices, [`crate::segment::IGNORE`] where none applies.
    pub mask: Vec<u8>,
}

/// One batch of pairs (sizes may differ between samples when evaluating at the original
/// resolution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegBatch {
    /// Batch number in this pass.
    pub number: usize,
    /// The pairs, in order; undecodable ones are left out.
    pub samples: Vec<SegSample>,
    /// How long the consumer waited for this batch.
    pub data_wait: Duration,
    /// Pairs skipped as undecodable while making this batch.
    pub skipped: usize,
}

impl SegBatch {
    /// `(width, height, images, masks)` concatenated (`b × 3 × h × w` and `b × h × w`) when all
    /// samples share one size, else `None`.
    pub fn stacked(&self) -> Option<(usize, usize, Vec<u8>, Vec<u8>)> {
        let first = self.samples.first()?;
        let (w, h) = (first.width, first.height);
        if self.samples.iter().any(|s| (s.width, s.height) != (w, h)) {
            return None;
        }
        let images = self
            .samples
            .iter()
            .flat_map(|s| s.image.iter().copied())
            .collect();
        let masks = self
            .samples
            .iter()
            .flat_map(|s| s.mask.iter().copied())
            .collect();
        Some((w, h, images, masks))
    }
}

/// Batches of (image, mask) pairs over a list of indices, in order: the last batch may be
/// smaller, undecodable pairs are skipped and counted. Random transforms draw from a stream
/// per `(seed, epoch, index)`, so the output does not depend on the thread count.
///
/// Of [`LoaderConfig`] it uses `batch_per_rank`, `threads`, `seed`, `epoch`, `jpeg`, `resize`
/// and `stats`. The threads work on one batch at a time (no prefetch across batches:
/// segmentation batches are small and evaluation is not data bound); masks are read at full
/// resolution, so there is no DCT-domain downscaling.
pub struct SegLoader {
    dataset: Arc<SegDataset>,
    indices: Vec<usize>,
    augment: SegAugment,
    config: LoaderConfig,
    threads: usize,
    stats: Arc<LoaderStats>,
    resamplers: Vec<Resampler>,
    next: usize,
}

impl SegLoader {
    /// A loader over `indices` of `dataset`.
    pub fn new(
        dataset: Arc<SegDataset>,
        indices: Vec<usize>,
        augment: SegAugment,
        config: LoaderConfig,
    ) -> Result<Self> {
        augment.validate()?;
        if config.batch_per_rank == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(DataError::Config(format!(
                "index {bad} is outside the segmentation data set ({} pairs)",
                dataset.len()
            )));
        }
        let serial_env = std::env::var(SERIAL_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        let threads = if serial_env { 0 } else { config.threads };
        let stats = config.stats.clone().unwrap_or_default();
        let resamplers = (0..threads.max(1))
            .map(|_| Resampler::with_impl(config.resize))
            .collect();
        Ok(Self {
            dataset,
            indices,
            augment,
            config,
            threads,
            stats,
            resamplers,
            next: 0,
        })
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        self.indices.len().div_ceil(self.config.batch_per_rank)
    }

    /// Whether there is nothing to load.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The counters this loader adds to.
    pub fn stats(&self) -> Arc<LoaderStats> {
        Arc::clone(&self.stats)
    }

    fn produce(&self, index: usize, resampler: &mut Resampler) -> Option<SegSample> {
        let result = self
            .dataset
            .read(index, self.config.jpeg)
            .and_then(|(image, mask)| {
                let mut rng = SampleRng::from_parts(&[
                    self.config.seed,
                    self.config.epoch,
                    index as u64,
                    SEGMENTATION_STREAM,
                ]);
                self.augment.apply(image, mask, &mut rng, resampler)
            });
        match result {
            Ok((image, mask)) => {
                self.stats.images.fetch_add(1, Ordering::Relaxed);
                let mut chw = vec![0u8; image.data.len()];
                image.write_chw(&mut chw);
                Some(SegSample {
                    index,
                    width: image.width,
                    height: image.height,
                    image: chw,
                    mask: mask.data,
                })
            }
            Err(reason) => {
                self.stats.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(index, file = %self.dataset.describe(index), reason, "skipping undecodable segmentation pair");
                None
            }
        }
    }

    fn batch(&mut self, k: usize) -> SegBatch {
        let b = self.config.batch_per_rank;
        let slots = &self.indices[k * b..((k + 1) * b).min(self.indices.len())];
        let mut resamplers = std::mem::take(&mut self.resamplers);
        let outs: Vec<Option<SegSample>> = if self.threads <= 1 || slots.len() == 1 {
            slots
                .iter()
                .map(|&i| self.produce(i, &mut resamplers[0]))
                .collect()
        } else {
            let next = AtomicUsize::new(0);
            let mut outs: Vec<Option<SegSample>> = vec![None; slots.len()];
            let this = &*self;
            let parts: Vec<Vec<(usize, Option<SegSample>)>> = std::thread::scope(|s| {
                let handles: Vec<_> = resamplers
                    .iter_mut()
                    .take(slots.len())
                    .map(|r| {
                        let next = &next;
                        s.spawn(move || {
                            let mut done = Vec::new();
                            loop {
                                let j = next.fetch_add(1, Ordering::Relaxed);
                                let Some(&i) = slots.get(j) else { break };
                                done.push((j, this.produce(i, r)));
                            }
                            done
                        })
                    })
                    .collect();
                // A panicking worker loses its samples; they are counted as skipped below.
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (j, out) in parts.into_iter().flatten() {
                outs[j] = out;
            }
            outs
        };
        self.resamplers = resamplers;
        let skipped = outs.iter().filter(|o| o.is_none()).count();
        SegBatch {
            number: k,
            samples: outs.into_iter().flatten().collect(),
            data_wait: Duration::ZERO,
            skipped,
        }
    }
}

impl Iterator for SegLoader {
    type Item = Result<SegBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len() {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let started = Instant::now();
        let mut batch = self.batch(k);
        batch.data_wait = started.elapsed();
        self.stats
            .data_wait_ns
            .fetch_add(batch.data_wait.as_nanos() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Some(Ok(batch))
    }
}
