//! The threaded loader. This module owns all of the pipeline's parallelism: a pool of plain
//! threads takes samples in order, a bounded window of `prefetch` batches gives back-pressure,
//! and batches are handed out in order. Because each sample's randomness depends only on
//! (seed, epoch, index, attempt), the batches are identical for any number of threads, and
//! `KONTRAST_DATA_SERIAL=1` (or `threads: 0`) runs everything on the caller's thread.
//!
//! Undecodable images are skipped, counted in [`LoaderStats`] and logged once per image. In
//! pre-training a skipped slot is refilled with the image at the same slot of the next batch
//! (then the one after, …), so batch sizes and batch boundaries never change and a resumed
//! epoch reads exactly what an uninterrupted one would. In evaluation a skipped image is left
//! out of its batch (the batch's `indices` say which images it holds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::crop::MultiCropSpec;
use crate::dataset::Dataset;
use crate::decode::JpegBackend;
pub use crate::pipeline::EvalTransform;
use crate::pipeline::{DecodeOptions, eval_view, pretrain_views};
use crate::resize::{Resampler, ResizeImpl};
use crate::rng::SampleRng;
use crate::sampler::Sampler;
use crate::{DataError, Result};

/// Environment switch that forces the serial path (any value but `0`/empty).
pub const SERIAL_ENV: &str = "KONTRAST_DATA_SERIAL";
/// Replacement images tried for one slot before the batch fails.
const MAX_ATTEMPTS: usize = 16;

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch on this rank.
    pub batch_per_rank: usize,
    /// Epoch (selects the shuffle and the augmentation randomness).
    pub epoch: u64,
    /// First batch to produce (resume inside an epoch).
    pub start_batch: usize,
    /// Worker threads (0 = serial on the caller's thread).
    pub threads: usize,
    /// Batches in flight ahead of the consumer (≥ 1).
    pub prefetch: usize,
    /// Seed of the augmentation randomness.
    pub seed: u64,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 scale when every crop keeps its output resolution.
    pub dct_scaling: bool,
    /// JPEG decoder.
    pub jpeg: JpegBackend,
    /// Resampler: Pillow-exact (default) or fast_image_resize (within one level, faster).
    pub resize: ResizeImpl,
    /// Counters to add to (e.g. shared across epochs); a fresh set if `None`.
    pub stats: Option<Arc<LoaderStats>>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_per_rank: 32,
            epoch: 0,
            start_batch: 0,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            prefetch: 4,
            seed: 0,
            dct_scaling: true,
            jpeg: JpegBackend::default(),
            resize: ResizeImpl::default(),
            stats: None,
        }
    }
}

/// Counters shared between the loader's threads and whoever reports metrics.
#[derive(Debug, Default)]
pub struct LoaderStats {
    /// Images that could not be read or decoded and were skipped.
    pub corrupt_skipped: AtomicU64,
    /// Images turned into views.
    pub images: AtomicU64,
    /// Batches handed to the consumer.
    pub batches: AtomicU64,
    /// Total time the consumer waited for batches, in nanoseconds.
    pub data_wait_ns: AtomicU64,
}

/// All crops of one index across a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Side of every image in pixels.
    pub size: usize,
    /// `batch × 3 × size × size` bytes: RGB planes (CHW) per image, images in batch order.
    pub data: Vec<u8>,
}

/// One batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Batch number within the epoch.
    pub number: usize,
    /// Data set index of every image, in batch order.
    pub indices: Vec<usize>,
    /// Label of every image (`None` for unlabelled data sets).
    pub labels: Vec<Option<u32>>,
    /// One view per crop index (pre-training: 0 query, 1 key, then the small crops; evaluation:
    /// a single view).
    pub views: Vec<View>,
    /// How long the consumer waited for this batch.
    pub data_wait: Duration,
    /// Images skipped as undecodable while making this batch.
    pub skipped: usize,
}

#[derive(Debug, Clone)]
enum Pipeline {
    Pretrain(MultiCropSpec),
    Eval(EvalTransform),
}

/// One slot of a batch: its image's views in CHW, or nothing (a skipped evaluation image).
struct SlotOut {
    image: Option<(usize, Option<u32>, Vec<Vec<u8>>)>,
    skipped: usize,
}

/// Everything the workers share read-only.
struct Plan {
    dataset: Arc<Dataset>,
    order: Vec<usize>,
    batch: usize,
    num_batches: usize,
    start_batch: usize,
    pipeline: Pipeline,
    seed: u64,
    epoch: u64,
    decode: DecodeOptions,
    resize: ResizeImpl,
    stats: Arc<LoaderStats>,
    warned: Mutex<HashSet<usize>>,
}

impl Plan {
    fn slots_in(&self, k: usize) -> usize {
        self.batch.min(self.order.len() - k * self.batch)
    }

    fn view_sizes(&self) -> Vec<usize> {
        match &self.pipeline {
            Pipeline::Pretrain(spec) => (0..spec.num_views()).map(|c| spec.size_of(c)).collect(),
            Pipeline::Eval(t) => vec![t.output_size()],
        }
    }

    fn skip(&self, index: usize, reason: &str) {
        self.stats.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
        let first = lock(&self.warned).insert(index);
        if first {
            tracing::warn!(index, file = %self.dataset.describe(index), reason, "skipping undecodable image");
        }
    }

    fn produce(&self, k: usize, slot: usize, resampler: &mut Resampler) -> Result<SlotOut> {
        let pos = k * self.batch + slot;
        let to_chw = |views: Vec<crate::RgbImage>| {
            views
                .into_iter()
                .map(|v| {
                    let mut out = vec![0u8; v.data.len()];
                    v.write_chw(&mut out);
                    out
                })
                .collect::<Vec<_>>()
        };
        match &self.pipeline {
            Pipeline::Pretrain(spec) => {
                let mut last = String::new();
                for attempt in 0..MAX_ATTEMPTS {
                    let index = self.order[(pos + attempt * self.batch) % self.order.len()];
                    let mut rng =
                        SampleRng::for_sample(self.seed, self.epoch, index, attempt as u64);
                    match pretrain_views(
                        &self.dataset,
                        index,
                        spec,
                        &mut rng,
                        self.decode,
                        resampler,
                    ) {
                        Ok(views) => {
                            self.stats.images.fetch_add(1, Ordering::Relaxed);
                            let label = self.dataset.label(index);
                            return Ok(SlotOut {
                                image: Some((index, label, to_chw(views))),
                                skipped: attempt,
                            });
                        }
                        Err(reason) => {
                            self.skip(index, &reason);
                            last = format!("{}: {reason}", self.dataset.describe(index));
                        }
                    }
                }
                Err(DataError::TooManyCorrupt {
                    batch: k,
                    skipped: MAX_ATTEMPTS,
                    last,
                })
            }
            Pipeline::Eval(t) => {
                let index = self.order[pos];
                match eval_view(&self.dataset, index, *t, self.decode, resampler) {
                    Ok(view) => {
                        self.stats.images.fetch_add(1, Ordering::Relaxed);
                        let label = self.dataset.label(index);
                        Ok(SlotOut {
                            image: Some((index, label, to_chw(vec![view]))),
                            skipped: 0,
                        })
                    }
                    Err(reason) => {
                        self.skip(index, &reason);
                        Ok(SlotOut {
                            image: None,
                            skipped: 1,
                        })
                    }
                }
            }
        }
    }

    /// Concatenates the slots of batch `k` into views.
    fn assemble(&self, k: usize, slots: Vec<SlotOut>) -> Batch {
        let sizes = self.view_sizes();
        let present = slots.iter().filter(|s| s.image.is_some()).count();
        let mut views: Vec<View> = sizes
            .iter()
            .map(|&size| View {
                size,
                data: Vec::with_capacity(present * 3 * size * size),
            })
            .collect();
        let (mut indices, mut labels, mut skipped) = (Vec::new(), Vec::new(), 0);
        for s in slots {
            skipped += s.skipped;
            if let Some((index, label, chw)) = s.image {
                indices.push(index);
                labels.push(label);
                for (v, data) in views.iter_mut().zip(chw) {
                    v.data.extend_from_slice(&data);
                }
            }
        }
        Batch {
            number: k,
            indices,
            labels,
            views,
            data_wait: Duration::ZERO,
            skipped,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking worker is reported through `alive`; its poison carries no broken invariant.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct State {
    next_expected: usize,
    partial: HashMap<usize, (Vec<Option<SlotOut>>, usize)>,
    ready: BTreeMap<usize, Result<Batch>>,
    cancelled: bool,
    alive: usize,
}

struct Shared {
    plan: Plan,
    prefetch: usize,
    next_item: AtomicUsize,
    total_items: usize,
    state: Mutex<State>,
    space: Condvar,
    ready: Condvar,
}

/// Decrements the live-worker count even when a worker panics.
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).alive -= 1;
        self.0.ready.notify_all();
    }
}

fn worker(shared: &Shared) {
    let _guard = AliveGuard(shared);
    let plan = &shared.plan;
    let mut resampler = Resampler::with_impl(plan.resize);
    loop {
        let item = shared.next_item.fetch_add(1, Ordering::Relaxed);
        if item >= shared.total_items {
            return;
        }
        let k = plan.start_batch + item / plan.batch;
        let slot = item % plan.batch;
        {
            let mut st = lock(&shared.state);
            while k >= st.next_expected + shared.prefetch && !st.cancelled {
                st = shared.space.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.cancelled {
                return;
            }
        }
        let out = plan.produce(k, slot, &mut resampler);
        let mut st = lock(&shared.state);
        if st.ready.contains_key(&k) || k < st.next_expected {
            continue; // the batch already failed
        }
        match out {
            Err(e) => {
                st.partial.remove(&k);
                st.ready.insert(k, Err(e));
                shared.ready.notify_all();
            }
            Ok(out) => {
                let n = plan.slots_in(k);
                let entry = st
                    .partial
                    .entry(k)
                    .or_insert_with(|| ((0..n).map(|_| None).collect(), 0));
                entry.0[slot] = Some(out);
                entry.1 += 1;
                if entry.1 == n {
                    let Some((slots, _)) = st.partial.remove(&k) else {
                        continue;
                    };
                    drop(st);
                    let batch = plan.assemble(k, slots.into_iter().flatten().collect());
                    lock(&shared.state).ready.insert(k, Ok(batch));
                    shared.ready.notify_all();
                }
            }
        }
    }
}

/// Produces the batches of one epoch (pre-training) or one pass (evaluation), in order.
pub struct Loader {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    serial: Option<Resampler>,
    next: usize,
    finished: bool,
}

impl Loader {
    /// Pre-training batches of `config.epoch` for the sampler's rank, starting at
    /// `config.start_batch`; full batches only.
    pub fn new(
        dataset: Arc<Dataset>,
        sampler: &Sampler,
        spec: MultiCropSpec,
        config: LoaderConfig,
    ) -> Result<Self> {
        spec.validate()?;
        let order = sampler.epoch_indices(config.epoch);
        let num_batches = sampler.batches_per_epoch(config.batch_per_rank.max(1));
        Self::start(
            dataset,
            order,
            num_batches,
            Pipeline::Pretrain(spec),
            config,
        )
    }

    /// Evaluation batches over `indices` in order (the last batch may be smaller).
    pub fn eval(
        dataset: Arc<Dataset>,
        indices: Vec<usize>,
        transform: EvalTransform,
        config: LoaderConfig,
    ) -> Result<Self> {
        match transform {
            EvalTransform::ResizeCenterCrop { resize, crop } if crop == 0 || crop > resize => {
                return Err(DataError::Config(format!(
                    "centre crop {crop} must be in 1..={resize}"
                )));
            }
            EvalTransform::Resize { size: 0 } => {
                return Err(DataError::Config("resize to 0 pixels".into()));
            }
            _ => {}
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(DataError::Config(format!(
                "index {bad} is outside the data set ({} samples)",
                dataset.len()
            )));
        }
        let num_batches = indices.len().div_ceil(config.batch_per_rank.max(1));
        Self::start(
            dataset,
            indices,
            num_batches,
            Pipeline::Eval(transform),
            config,
        )
    }

    fn start(
        dataset: Arc<Dataset>,
        order: Vec<usize>,
        num_batches: usize,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> Result<Self> {
        if config.batch_per_rank == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        let start_batch = config.start_batch.min(num_batches);
        let batch = config.batch_per_rank;
        let plan = Plan {
            dataset,
            order,
            batch,
            num_batches,
            start_batch,
            pipeline,
            seed: config.seed,
            epoch: config.epoch,
            decode: DecodeOptions {
                jpeg: config.jpeg,
                dct_scaling: config.dct_scaling,
            },
            resize: config.resize,
            stats: config.stats.unwrap_or_default(),
            warned: Mutex::new(HashSet::new()),
        };
        let total_items = (start_batch..num_batches).map(|k| plan.slots_in(k)).sum();
        let serial_env = std::env::var(SERIAL_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        let threads = if serial_env { 0 } else { config.threads };
        let shared = Arc::new(Shared {
            plan,
            prefetch: config.prefetch.max(1),
            next_item: AtomicUsize::new(0),
            total_items,
            state: Mutex::new(State {
                next_expected: start_batch,
                partial: HashMap::new(),
                ready: BTreeMap::new(),
                cancelled: false,
                alive: threads,
            }),
            space: Condvar::new(),
            ready: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("kontrast-data-{t}"))
                .spawn(move || worker(&s))
                .map_err(|e| DataError::Config(format!("cannot start loader thread: {e}")))?;
            handles.push(handle);
        }
        tracing::debug!(
            threads,
            batches = num_batches - start_batch,
            "loader started"
        );
        Ok(Self {
            shared,
            handles,
            serial: (threads == 0).then(|| Resampler::with_impl(config.resize)),
            next: start_batch,
            finished: false,
        })
    }

    /// Batches this loader yields in total (from `start_batch` on).
    pub fn len(&self) -> usize {
        self.shared.plan.num_batches - self.shared.plan.start_batch
    }

    /// Whether there is nothing to load.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters this loader adds to.
    pub fn stats(&self) -> Arc<LoaderStats> {
        Arc::clone(&self.shared.plan.stats)
    }

    fn next_serial(&mut self, k: usize) -> Result<Batch> {
        let plan = &self.shared.plan;
        let resampler = self
            .serial
            .get_or_insert_with(|| Resampler::with_impl(plan.resize));
        let slots = (0..plan.slots_in(k))
            .map(|s| plan.produce(k, s, resampler))
            .collect::<Result<Vec<_>>>()?;
        Ok(plan.assemble(k, slots))
    }

    fn next_parallel(&mut self, k: usize) -> Result<Batch> {
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        let result = loop {
            if let Some(r) = st.ready.remove(&k) {
                break r;
            }
            if st.alive == 0 {
                break Err(DataError::WorkerPanicked);
            }
            st = shared.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        st.next_expected = k + 1;
        drop(st);
        shared.space.notify_all();
        result
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.next >= self.shared.plan.num_batches {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let started = Instant::now();
        let result = if self.serial.is_some() {
            self.next_serial(k)
        } else {
            self.next_parallel(k)
        };
        let wait = started.elapsed();
        let stats = &self.shared.plan.stats;
        stats
            .data_wait_ns
            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(mut batch) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                batch.data_wait = wait;
                Some(Ok(batch))
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        lock(&self.shared.state).cancelled = true;
        self.shared.space.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
