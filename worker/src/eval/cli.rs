//! `kontrast eval --evaluation NAME`: one evaluation of a finished run, on the newest checkpoint,
//! reported as one JSON object in the termination log (`{evaluation, kind, metrics}`), which the
//! operator copies into the run's status.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat, EvaluationTask, RunConfig};
use kontrast_data::{Dataset, DatasetFormat, EvalTransform, LoaderConfig, Split};
use serde_json::json;
use tch::{Cuda, Device};
use tracing::{error, info};

use crate::checkpoint::CheckpointStore;
use crate::model::Moco;
use crate::telemetry::TerminationLog;
use crate::train::error::{PERMANENT_EXIT_CODE, RETRYABLE_EXIT_CODE};
use crate::train::sgd::{Sgd, SgdConfig};
use crate::train::{config, state, trainer};

use super::features::extract;
use super::knn::weighted_knn_top1;

/// Arguments of `kontrast eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the evaluation in the run config.
    #[arg(long, env = "KONTRAST_EVALUATION")]
    pub evaluation: String,
    /// Run-config document.
    #[arg(long, env = "KONTRAST_CONFIG")]
    pub config: PathBuf,
    /// The run's checkpoint directory (the newest valid checkpoint is evaluated).
    #[arg(long, env = "KONTRAST_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,
    /// Data-loading threads.
    #[arg(long, env = "KONTRAST_DATA_THREADS", default_value_t = 1)]
    pub data_threads: usize,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Retrying cannot help (missing evaluation, unsupported kind, unreadable data).
    #[error("{0}")]
    Permanent(String),
    /// Worth another attempt.
    #[error("{0}")]
    Retryable(String),
}

fn permanent(e: impl std::fmt::Display) -> Failure {
    Failure::Permanent(e.to_string())
}

/// The model's input side for evaluation images.
fn transform(run: &RunConfig, format: EvaluationDatasetFormat) -> EvalTransform {
    let crop = run.recipe.crops.large.size as usize;
    match format {
        // Tiny images are evaluated whole at the training resolution.
        EvaluationDatasetFormat::FashionMnist => EvalTransform::Resize { size: crop },
        // ImageNet's 256 → 224, scaled to the training crop.
        _ => EvalTransform::ResizeCenterCrop {
            resize: crop * 8 / 7,
            crop,
        },
    }
}

fn splits(evaluation: &EvaluationConfig) -> Result<(Dataset, Dataset), Failure> {
    let root = Path::new(&evaluation.dataset.path);
    match evaluation.dataset.format {
        EvaluationDatasetFormat::FashionMnist => Ok((
            Dataset::open_split(DatasetFormat::FashionMnist, root, Split::Train)
                .map_err(permanent)?,
            Dataset::open_split(DatasetFormat::FashionMnist, root, Split::Test)
                .map_err(permanent)?,
        )),
        EvaluationDatasetFormat::Imagefolder => Ok((
            Dataset::open(DatasetFormat::Imagefolder, &root.join("train")).map_err(permanent)?,
            Dataset::open(DatasetFormat::Imagefolder, &root.join("val")).map_err(permanent)?,
        )),
        other => Err(Failure::Permanent(format!(
            "kNN evaluation reads fashionMnist or imagefolder data sets, not {other:?}"
        ))),
    }
}

fn knn(
    run: &RunConfig,
    evaluation: &EvaluationConfig,
    moco: &Moco,
    args: &Args,
    device: Device,
    k: u32,
    temperature: f64,
) -> Result<serde_json::Value, Failure> {
    let (train, test) = splits(evaluation)?;
    let classes = train.classes().len().max(
        (0..train.len())
            .filter_map(|i| train.label(i))
            .max()
            .map_or(0, |m| m as usize + 1),
    );
    let transform = transform(run, evaluation.dataset.format);
    let loader = LoaderConfig {
        batch_per_rank: 256,
        threads: args.data_threads,
        ..LoaderConfig::default()
    };
    let backbone = &moco.encoder_q().backbone;
    let (n_train, n_test) = (train.len(), test.len());
    let (train_f, train_l) = extract(
        backbone,
        Arc::new(train),
        (0..n_train).collect(),
        transform,
        loader.clone(),
        device,
    )
    .map_err(permanent)?;
    let (test_f, test_l) = extract(
        backbone,
        Arc::new(test),
        (0..n_test).collect(),
        transform,
        loader,
        device,
    )
    .map_err(permanent)?;
    let top1 = weighted_knn_top1(
        &train_f,
        &train_l,
        &test_f,
        &test_l,
        i64::from(k),
        temperature,
        classes as i64,
    );
    info!(
        top1,
        train = n_train,
        test = n_test,
        k,
        temperature,
        "kNN evaluation"
    );
    Ok(json!({ "top1": top1 * 100.0 }))
}

fn evaluate(args: &Args) -> Result<serde_json::Value, Failure> {
    let run = config::load(&args.config).map_err(permanent)?;
    let evaluation = run
        .evaluation(&args.evaluation)
        .ok_or_else(|| {
            Failure::Permanent(format!(
                "the run config has no evaluation named {:?}",
                args.evaluation
            ))
        })?
        .clone();
    let device = if evaluation.gpus > 0 && Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let loaded = CheckpointStore::new(&args.checkpoint_dir, run.checkpoint.keep)
        .latest()
        .map_err(|e| Failure::Retryable(e.to_string()))?
        .ok_or_else(|| {
            Failure::Permanent(format!(
                "no checkpoint in {} to evaluate",
                args.checkpoint_dir.display()
            ))
        })?;
    let moco = Moco::new(trainer::moco_spec(&run), device);
    let mut sgd = Sgd::new(
        moco.trainable(),
        SgdConfig {
            momentum: run.recipe.optimizer.momentum,
            weight_decay: run.recipe.optimizer.weight_decay,
        },
    );
    state::restore(&moco, &mut sgd, &loaded).map_err(permanent)?;
    info!(checkpoint = %loaded.path.display(), evaluation = %evaluation.name, "evaluating");
    let metrics = match evaluation.task {
        EvaluationTask::Knn { k, temperature } => {
            knn(&run, &evaluation, &moco, args, device, k, temperature)?
        }
        other => {
            return Err(Failure::Permanent(format!(
                "evaluation kind {:?} is not available in this worker build yet",
                other.kind()
            )));
        }
    };
    Ok(json!({
        "evaluation": evaluation.name,
        "kind": evaluation.task.kind(),
        "metrics": metrics,
        "checkpointEpoch": loaded.manifest.epoch,
    }))
}

/// Runs `kontrast eval`: the result JSON on stdout and in the termination log; a failure's
/// message there instead, with exit code 78 (permanent) or 1.
pub fn run(args: Args) -> ExitCode {
    let log = TerminationLog::from_env();
    match evaluate(&args) {
        Ok(result) => {
            let text = result.to_string();
            println!("{text}");
            // Best effort: stdout carries the result too.
            let _ = log.write(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "evaluation failed");
            let _ = log.write(&format!("evaluation {}: {e}", args.evaluation));
            ExitCode::from(match e {
                Failure::Permanent(_) => PERMANENT_EXIT_CODE,
                Failure::Retryable(_) => RETRYABLE_EXIT_CODE,
            })
        }
    }
}
