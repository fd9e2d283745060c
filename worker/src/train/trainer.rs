//! The training loop of one rank: set up the device, the process group, the data, the model and
//! the optimiser; resume; run the epochs; checkpoint; report.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kontrast_api::config::{DatasetFormat, RunConfig};
use kontrast_api::progress::{CheckpointReport, KnnMonitorFailure, KnnMonitorReport, Report};
use kontrast_data::{Batch, Dataset, Loader, LoaderConfig, LoaderStats, MultiCropSpec, Sampler};
use tch::{Cuda, Device, Tensor};
use tracing::{debug, info, warn};

use crate::checkpoint::{CheckpointStore, Meta};
use crate::cuda_memory::cuda_memory;
use crate::dist::{Backend, ProcessGroup, Rendezvous, broadcast_parameters};
use crate::input::Normalizer;
use crate::model::memory_format::Layout;
use crate::model::{Gang, Moco, MocoSpec, Views};
use crate::telemetry::{LossKind, Metrics, Progress, Server};

use super::collectives::GradientAverager;
use super::error::TrainError;
use super::monitor::KnnMonitor;
use super::precision::MixedPrecision;
use super::progress_bar::ProgressBar;
use super::schedule::learning_rate;
use super::sgd::{Sgd, SgdConfig};
use super::state;
use super::step::{GradientSync, train_step_with_precision};

/// Where this process sits in the gang (from `launch`'s environment; one process otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Global rank.
    pub rank: usize,
    /// Ranks in the gang.
    pub world_size: usize,
    /// Rank on this node (the CUDA device).
    pub local_rank: usize,
}

impl Placement {
    /// Reads `RANK`, `WORLD_SIZE` and `LOCAL_RANK`; a single process when `RANK` is unset.
    pub fn from_env() -> Result<Self, TrainError> {
        fn var(name: &str, default: usize) -> Result<usize, TrainError> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| TrainError::Environment(format!("{name}={v:?} is not a number"))),
            }
        }
        Ok(Self {
            rank: var("RANK", 0)?,
            world_size: var("WORLD_SIZE", 1)?,
            local_rank: var("LOCAL_RANK", 0)?,
        })
    }
}

/// How the process runs, beyond the run config.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checkpoint directory; `None` trains without checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Resume from the newest valid checkpoint there.
    pub resume: bool,
    /// Seed of the initial weights, the data order and the augmentations.
    pub seed: u64,
    /// Data-loading threads (0: on the training thread).
    pub data_threads: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// A progress log line every this many steps.
    pub log_every: u64,
    /// Port of `/metrics` and `/progress` on rank 0 (overrides the run config's).
    pub metrics_port: Option<u16>,
    /// Timeout of the rendezvous and of each collective.
    pub collective_timeout: Duration,
    /// Layout of the convolution weights.
    pub layout: Layout,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final progress report (also rank 0's termination message).
    pub report: Report,
    /// Mean total loss of each epoch this process trained (this rank's batches).
    pub epoch_losses: Vec<f64>,
}

/// The pre-training images: an annotation file's list when the config names one (`flat` only,
/// checked by the API), else the format's own layout.
fn open_dataset(config: &RunConfig) -> Result<Dataset, kontrast_data::DataError> {
    let root: &std::path::Path = config.dataset.path.as_ref();
    match &config.dataset.annotations {
        Some(annotations) => Dataset::open_annotated(root, annotations.as_ref()),
        None => Dataset::open(data_format(config.dataset.format), root),
    }
}

fn data_format(format: DatasetFormat) -> kontrast_data::DatasetFormat {
    match format {
        DatasetFormat::Imagefolder => kontrast_data::DatasetFormat::Imagefolder,
        DatasetFormat::Flat => kontrast_data::DatasetFormat::Flat,
        DatasetFormat::FashionMnist => kontrast_data::DatasetFormat::FashionMnist,
    }
}

fn crop_spec(config: &RunConfig) -> MultiCropSpec {
    let c = &config.recipe.crops;
    let family = |f: &kontrast_api::config::CropConfig| kontrast_data::CropFamily {
        count: f.count as usize,
        size: f.size as usize,
        scale: (f.scale[0], f.scale[1]),
    };
    MultiCropSpec {
        large: family(&c.large),
        small: family(&c.small),
        constrained: c.constrained,
        auto_augment_crops: config
            .recipe
            .auto_augment_crops
            .iter()
            .map(|&i| i as usize)
            .collect(),
    }
}

/// The model a run config describes.
pub fn moco_spec(config: &RunConfig) -> MocoSpec {
    let r = &config.recipe;
    MocoSpec {
        arch: r.arch,
        cifar_stem: r.cifar_stem,
        width: i64::from(r.width),
        dim: i64::from(r.moco.dim),
        queue_size: i64::from(r.moco.queue_size),
        mlp: r.moco.mlp,
        momentum: r.moco.momentum,
        temperature: r.moco.temperature,
        knn: r.knn_loss.map(|k| (i64::from(k.top_k), k.weight)),
        shuffle_keys: true,
    }
}

/// Turns a batch of u8 views into normalised float tensors on the device, grouped as the model
/// takes them: the large query crops, the key crop, the small crops (each image-major).
fn views(batch: &Batch, large: usize, input: &Normalizer) -> Views {
    let b = batch.indices.len();
    let upload = |i: usize| input.upload(&batch.views[i], b);
    // Several crops per image become one image-major batch: (b, n, 3, s, s) → (b·n, 3, s, s),
    // stacked as bytes and normalised once.
    let image_major = |indices: Vec<usize>| {
        let parts: Vec<Tensor> = indices.into_iter().map(upload).collect();
        let n = parts.len() as i64;
        let stacked = Tensor::stack(&parts, 1);
        let size = stacked.size();
        input.normalize(&stacked.view([b as i64 * n, 3, size[3], size[4]]))
    };
    let query_crops: Vec<usize> = std::iter::once(0).chain(2..large).collect();
    let small: Vec<usize> = (large..batch.views.len()).collect();
    Views {
        query: image_major(query_crops),
        key: input.apply(&batch.views[1], b),
        small: (!small.is_empty()).then(|| image_major(small)),
    }
}

fn device_for(config: &RunConfig, placement: &Placement) -> Result<Device, TrainError> {
    if config.world.gpus_per_node == 0 {
        return Ok(Device::Cpu);
    }
    let visible = Cuda::device_count();
    if (placement.local_rank as i64) >= visible {
        return Err(TrainError::Device(format!(
            "the run asks for {} GPUs per node but local rank {} sees {visible} CUDA devices",
            config.world.gpus_per_node, placement.local_rank
        )));
    }
    Ok(Device::Cuda(placement.local_rank))
}

/// Runs training to the end.
pub fn run(config: &RunConfig, options: &Options) -> Result<Outcome, TrainError> {
    let placement = Placement::from_env()?;
    if placement.world_size != config.world.world_size as usize {
        return Err(TrainError::Environment(format!(
            "WORLD_SIZE is {} but the run config has worldSize {}",
            placement.world_size, config.world.world_size
        )));
    }
    let leader = placement.rank == 0;
    let device = device_for(config, &placement)?;
    // Before anything heavy: a precision the device cannot run is a configuration error.
    let mut precision = MixedPrecision::new(config.recipe.precision, device)
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let dataset = Arc::new(open_dataset(config).map_err(TrainError::Dataset)?);
    let sampler = Sampler::new(
        dataset.len(),
        options.seed,
        placement.rank,
        placement.world_size,
    )
    .map_err(TrainError::Dataset)?;
    let batch_per_rank = config.world.batch_size_per_rank as usize;
    let steps_per_epoch = sampler.batches_per_epoch(batch_per_rank) as u64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "the data set has {} images: not one batch of {} per rank",
            dataset.len(),
            batch_per_rank
        )));
    }
    // Only rank 0 measures; its data is checked before anything heavy starts.
    let monitor = match (&config.monitor, leader) {
        (Some(m), true) => {
            let monitor = KnnMonitor::open(
                m,
                config.recipe.crops.large.size as usize,
                options.data_threads,
            )?;
            let (bank, queries) = monitor.sizes();
            info!(
                every_epochs = m.every_epochs,
                bank, queries, "kNN monitor ready"
            );
            Some(monitor)
        }
        _ => None,
    };
    let epochs = config.recipe.epochs;
    let total_steps = steps_per_epoch * u64::from(epochs);
    info!(
        rank = placement.rank,
        world_size = placement.world_size,
        ?device,
        precision = ?config.recipe.precision,
        images = dataset.len(),
        steps_per_epoch,
        "training starts"
    );

    let pg = if placement.world_size > 1 {
        let backend = if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        };
        let rv = Rendezvous::from_env(options.collective_timeout)?;
        Some(ProcessGroup::new(backend, &rv)?)
    } else {
        None
    };

    tch::manual_seed(options.seed as i64);
    let moco = Moco::new(moco_spec(config), device);
    if options.layout.channels_last(device) {
        let converted = moco
            .set_channels_last()
            .map_err(|e| TrainError::Environment(format!("channels_last layout: {e}")))?;
        debug!(converted, "convolution weights laid out channels_last");
    }
    let input = match precision.autocast_kind() {
        Some(kind) => Normalizer::new(device).with_kind(kind),
        None => Normalizer::new(device),
    };
    let mut sgd = Sgd::new(
        moco.trainable(),
        SgdConfig {
            momentum: config.recipe.optimizer.momentum,
            weight_decay: config.recipe.optimizer.weight_decay,
        },
    );
    let config_hash = state::config_hash(config)?;
    let store = options
        .checkpoint_dir
        .as_ref()
        .map(|dir| CheckpointStore::new(dir, config.checkpoint.keep));
    let mut start_epoch = 0;
    let mut step = 0;
    let mut last_checkpoint = None;
    let resumable = match (&store, options.resume) {
        (Some(store), true) => store.latest()?,
        _ => None,
    };
    if let Some(loaded) = resumable {
        for s in &loaded.skipped {
            warn!(epoch = s.epoch, reason = %s.reason, "skipping an unusable checkpoint");
        }
        if loaded.manifest.config_hash != config_hash {
            return Err(TrainError::IncompatibleCheckpoint {
                path: loaded.path.clone(),
                reason: "it was written by a run with another recipe or data set".into(),
            });
        }
        state::restore(&moco, &mut sgd, &loaded)?;
        precision
            .load_state(&loaded.tensors)
            .map_err(|e| TrainError::IncompatibleCheckpoint {
                path: loaded.path.clone(),
                reason: e.to_string(),
            })?;
        start_epoch = loaded.manifest.epoch;
        step = loaded.manifest.step;
        last_checkpoint = Some(CheckpointReport {
            epoch: loaded.manifest.epoch,
            path: loaded.path.display().to_string(),
        });
        info!(epoch = start_epoch, step, path = %loaded.path.display(), "resumed");
    }
    let mut reducer = match &pg {
        Some(pg) => {
            // Every rank starts from rank 0's state (weights, BN statistics, queues).
            let all: Vec<Tensor> = moco
                .params()
                .entries()
                .iter()
                .map(|e| e.tensor.shallow_clone())
                .collect();
            broadcast_parameters(pg, &all, 0)?;
            Some(GradientAverager::new(pg, &moco.trainable())?)
        }
        None => None,
    };

    let progress = Progress::new();
    let metrics = Metrics::new(
        std::env::var("KONTRAST_RUN").ok().as_deref(),
        Some(placement.rank as u32),
    )?;
    let _server = if leader {
        let port = options.metrics_port.unwrap_or(config.metrics.port);
        Some(Server::start(
            port,
            metrics.registry().clone(),
            progress.clone(),
        )?)
    } else {
        None
    };
    metrics.total_steps.set(total_steps as i64);
    progress.update(|r| {
        r.epoch = start_epoch;
        r.step = step;
        r.total_steps = total_steps;
        r.checkpoint = last_checkpoint.clone();
    });

    let stats = Arc::new(LoaderStats::default());
    let spec = crop_spec(config);
    let large = spec.large.count;
    let global_batch = f64::from(config.recipe.batch_size);
    let mut images_per_second: Option<f64> = None;
    let mut skipped_seen = 0;
    let mut epoch_losses = Vec::new();
    let mut bar = ProgressBar::new(total_steps, leader);
    bar.draw(step, "starting");
    for epoch in start_epoch..epochs {
        let (mut loss_sum, mut loss_steps) = (0.0, 0u64);
        // The RNG (key shuffles) is a function of (seed, epoch), so a resumed run draws what an
        // uninterrupted one would.
        tch::manual_seed(
            (options.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(i64::from(epoch)),
        );
        let lr = learning_rate(
            config.recipe.optimizer.schedule,
            config.recipe.optimizer.lr,
            epoch,
            epochs,
        );
        let knn_active = config
            .recipe
            .knn_loss
            .is_some_and(|k| epoch >= k.warmup_epochs);
        metrics.epoch.set(i64::from(epoch));
        metrics.learning_rate.set(lr);
        let loader = Loader::new(
            dataset.clone(),
            &sampler,
            spec.clone(),
            LoaderConfig {
                batch_per_rank,
                epoch: u64::from(epoch),
                start_batch: 0,
                threads: options.data_threads,
                prefetch: options.prefetch,
                seed: options.seed,
                stats: Some(stats.clone()),
                ..LoaderConfig::default()
            },
        )
        .map_err(TrainError::Data)?;
        let mut last = Instant::now();
        for batch in loader {
            let batch = batch.map_err(TrainError::Data)?;
            let inputs = views(&batch, large, &input);
            let report = train_step_with_precision(
                &moco,
                &mut sgd,
                &inputs,
                lr,
                knn_active,
                pg.as_ref().map(|g| g as &dyn Gang),
                reducer.as_mut().map(|r| r as &mut dyn GradientSync),
                &mut precision,
            )?;
            step += 1;
            if report.skipped {
                metrics.loss_scale_overflows.inc();
                debug!(
                    step,
                    loss_scale = report.loss_scale,
                    "gradients overflowed in fp16: optimiser step skipped, loss scale halved"
                );
            }
            loss_sum += report.losses.total;
            loss_steps += 1;
            let elapsed = last.elapsed();
            last = Instant::now();
            let rate = global_batch / elapsed.as_secs_f64().max(1e-9);
            // Exponential average: a smooth figure for dashboards and the progress line.
            let ips = images_per_second.map_or(rate, |r| 0.9 * r + 0.1 * rate);
            images_per_second = Some(ips);

            metrics.step.set(step as i64);
            metrics.set_loss(LossKind::InfoNce, report.losses.info_nce);
            if let Some(k) = report.losses.knn {
                metrics.set_loss(LossKind::Knn, k);
            }
            metrics.set_loss(LossKind::Total, report.losses.total);
            metrics.images_per_second.set(ips);
            metrics.step_seconds.observe(elapsed.as_secs_f64());
            metrics.observe_data_wait(batch.data_wait.as_secs_f64());
            if pg.is_some() {
                metrics
                    .allreduce_seconds
                    .observe(report.all_reduce.as_secs_f64());
            }
            let skipped = stats
                .corrupt_skipped
                .load(std::sync::atomic::Ordering::Relaxed);
            if skipped > skipped_seen {
                metrics
                    .corrupt_images_skipped
                    .inc_by(skipped - skipped_seen);
                skipped_seen = skipped;
            }
            progress.update(|r| {
                r.epoch = epoch;
                r.step = step;
                r.loss = Some(report.losses.total);
                r.images_per_second = Some(ips);
            });
            let logged = step % options.log_every.max(1) == 0 || step == total_steps;
            if logged {
                if let Device::Cuda(index) = device {
                    match cuda_memory(index) {
                        Ok(m) => metrics.set_gpu_memory_allocated(index, m.allocated),
                        Err(e) => debug!(error = %e, "no GPU memory statistics"),
                    }
                }
                bar.clear();
                info!(
                    epoch,
                    step,
                    total_steps,
                    loss = format_args!("{:.4}", report.losses.total),
                    info_nce = format_args!("{:.4}", report.losses.info_nce),
                    knn = report.losses.knn.map(|k| format!("{k:.4}")),
                    lr = format_args!("{lr:.5}"),
                    images_per_second = format_args!("{ips:.1}"),
                    data_wait_ms = batch.data_wait.as_millis() as u64,
                    "step"
                );
            }
            bar.draw(
                step,
                &format!(
                    "epoch {epoch} loss {:.4} {ips:.1} img/s",
                    report.losses.total
                ),
            );
        }
        epoch_losses.push(loss_sum / loss_steps.max(1) as f64);
        bar.clear();
        info!(
            epoch,
            mean_loss = epoch_losses.last().copied(),
            "epoch finished"
        );
        let done = epoch + 1;
        let due = done % config.checkpoint.every_epochs.max(1) == 0 || done == epochs;
        if let (Some(store), true, true) = (&store, due, leader) {
            let started = Instant::now();
            let mut tensors = state::tensors(&moco, &sgd);
            tensors.extend(precision.state());
            let path = store
                .save(
                    done,
                    &tensors,
                    &Meta {
                        step,
                        config_hash: config_hash.clone(),
                        extra: serde_json::json!({ "seed": options.seed }),
                    },
                )
                .map_err(|e| {
                    if e.is_storage_full() {
                        TrainError::CheckpointVolumeFull { source: e }
                    } else {
                        e.into()
                    }
                })?;
            metrics
                .checkpoint_write_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.checkpoint_last_epoch.set(i64::from(done));
            info!(epoch = done, path = %path.display(), "checkpoint written");
            progress.update(|r| {
                r.checkpoint = Some(CheckpointReport {
                    epoch: done,
                    path: path.display().to_string(),
                })
            });
        }
        if let Some(monitor) = monitor.as_ref().filter(|m| m.due(done, epochs)) {
            // After the checkpoint, so a failing measurement cannot cost the epoch. A failure
            // here (e.g. the volume went away) is reported and training goes on.
            match monitor.evaluate(&moco.encoder_q().backbone, device) {
                Ok(m) => {
                    info!(
                        epoch = done,
                        top1 = format_args!("{:.2}", m.top1),
                        top5 = format_args!("{:.2}", m.top5),
                        seconds = format_args!("{:.2}", m.seconds),
                        "kNN monitor"
                    );
                    if m.corrupt_skipped > 0 {
                        warn!(
                            skipped = m.corrupt_skipped,
                            "kNN monitor: undecodable images left out"
                        );
                        metrics.corrupt_images_skipped.inc_by(m.corrupt_skipped);
                    }
                    metrics.set_knn_monitor(m.top1, m.top5);
                    metrics.knn_monitor_seconds.observe(m.seconds);
                    progress.update(|r| {
                        r.knn_monitor = Some(KnnMonitorReport {
                            epoch: done,
                            top1: m.top1,
                            top5: m.top5,
                        });
                        r.knn_monitor_failure = None;
                    });
                }
                Err(e) => {
                    warn!(epoch = done, error = %e, "kNN monitor failed; training goes on");
                    metrics.knn_monitor_failures.inc();
                    progress.update(|r| {
                        r.knn_monitor_failure = Some(KnnMonitorFailure {
                            epoch: done,
                            error: e.reported(),
                        })
                    });
                }
            }
        }
        if let Some(pg) = &pg {
            // No rank runs ahead into the next epoch while rank 0 is still writing or measuring.
            pg.barrier()?;
        }
    }
    progress.update(|r| r.epoch = epochs);
    let report = progress.snapshot();
    if leader {
        progress.write_termination_message()?;
    }
    info!(step, "training finished");
    Ok(Outcome {
        report,
        epoch_losses,
    })
}
