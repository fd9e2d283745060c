//! `kontrast eval --evaluation NAME`: one evaluation of a finished run, on the newest checkpoint,
//! reported as one JSON object (`{evaluation, kind, metrics, dataset, checkpoint, checkpointEpoch,
//! seconds}`) on stdout and in the termination log, which the operator copies into the run's
//! status; pushed to a Pushgateway too when one is configured.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kontrast_api::config::{EvaluationConfig, EvaluationDatasetFormat, EvaluationTask, RunConfig};
use kontrast_data::{EvalTransform, LoaderConfig, VocSplit};
use serde_json::json;
use tch::{Cuda, Device};
use tracing::{error, info, warn};

use crate::checkpoint::CheckpointStore;
use crate::model::Moco;
use crate::telemetry::pushgateway::{Pushgateway, evaluation_exposition};
use crate::telemetry::{MAX_MESSAGE_BYTES, TerminationLog};
use crate::train::error::{PERMANENT_EXIT_CODE, RETRYABLE_EXIT_CODE};
use crate::train::sgd::{Sgd, SgdConfig};
use crate::train::{config, state, trainer};

use super::features::extract;
use super::knn::weighted_knn_accuracy;
use super::labelled::{self, LabelledSplits};
use super::linear_svm::{self, SvmData};

/// The Pushgateway job every evaluation result is pushed under.
const PUSH_JOB: &str = "kontrast-eval";

/// How long a push may take before it is given up.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Pushgateway (`http://host:port`) to push the result to; default: the run config's
    /// `metrics.pushgateway`.
    #[arg(long, env = "KONTRAST_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
    /// The run's name: a grouping label of the pushed result.
    #[arg(long = "run", env = "KONTRAST_RUN", default_value = "")]
    pub run_name: String,
    /// The run's namespace: a grouping label of the pushed result.
    #[arg(long, env = "KONTRAST_NAMESPACE", default_value = "")]
    pub namespace: String,
}

/// A finished evaluation: its result document and where to push it.
struct Outcome {
    result: serde_json::Value,
    pushgateway: Option<String>,
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
    labelled::transform(run.recipe.crops.large.size as usize, format)
}

fn splits(evaluation: &EvaluationConfig) -> Result<LabelledSplits, Failure> {
    LabelledSplits::open(
        evaluation.dataset.format,
        Path::new(&evaluation.dataset.path),
    )
    .map_err(permanent)
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
    let splits = splits(evaluation)?;
    let classes = splits.classes();
    let LabelledSplits { train, test } = splits;
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
    let accuracy = weighted_knn_accuracy(
        &train_f,
        &train_l,
        &test_f,
        &test_l,
        i64::from(k),
        temperature,
        classes as i64,
    );
    info!(
        top1 = accuracy.top1,
        top5 = accuracy.top5,
        train = n_train,
        test = n_test,
        k,
        temperature,
        "kNN evaluation"
    );
    Ok(json!({ "top1": accuracy.top1 * 100.0, "top5": accuracy.top5 * 100.0 }))
}

fn linear_svm(
    run: &RunConfig,
    evaluation: &EvaluationConfig,
    moco: &Moco,
    args: &Args,
    device: Device,
    cost: f64,
) -> Result<serde_json::Value, Failure> {
    let data = match evaluation.dataset.format {
        EvaluationDatasetFormat::Voc => {
            let root = Path::new(&evaluation.dataset.path);
            SvmData::Voc {
                trainval: VocSplit::open(root, "trainval").map_err(permanent)?,
                test: VocSplit::open(root, "test").map_err(permanent)?,
            }
        }
        _ => {
            let LabelledSplits { train, test } = splits(evaluation)?;
            SvmData::Classes { train, test }
        }
    };
    let loader = LoaderConfig {
        batch_per_rank: 256,
        threads: args.data_threads,
        ..LoaderConfig::default()
    };
    let result = linear_svm::evaluate(
        data,
        &moco.encoder_q().backbone,
        transform(run, evaluation.dataset.format),
        loader,
        device,
        cost,
    )
    .map_err(permanent)?;
    info!(map = result.map, cost, "linear SVM evaluation");
    let ap: serde_json::Map<String, serde_json::Value> = result
        .ap
        .into_iter()
        .map(|(c, ap)| (c, json!(ap)))
        .collect();
    Ok(json!({ "mAP": result.map, "ap": ap }))
}

fn evaluate(args: &Args) -> Result<Outcome, Failure> {
    let started = Instant::now();
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
        EvaluationTask::LinearSvm { cost } => {
            linear_svm(&run, &evaluation, &moco, args, device, cost)?
        }
        EvaluationTask::Davis { k, temperature } => super::davis::run(
            &evaluation,
            &moco.encoder_q().backbone,
            device,
            k,
            temperature,
        )
        .map_err(permanent)?,
        EvaluationTask::Retrieval => super::segment_retrieval::run(
            &evaluation,
            run.recipe.crops.large.size as usize,
            &moco.encoder_q().backbone,
            args.data_threads,
            device,
        )
        .map_err(permanent)?,
        EvaluationTask::Segmentation {
            epochs,
            batch_size,
            mode,
        } => super::segmentation::run(
            &evaluation,
            run.recipe.crops.large.size as usize,
            &moco,
            args.data_threads,
            device,
            epochs,
            batch_size,
            mode,
        )
        .map_err(permanent)?,
    };
    Ok(Outcome {
        result: json!({
            "evaluation": evaluation.name,
            "kind": evaluation.task.kind(),
            "metrics": metrics,
            "dataset": evaluation.dataset,
            "checkpoint": loaded.path.display().to_string(),
            "checkpointEpoch": loaded.manifest.epoch,
            "seconds": started.elapsed().as_secs_f64(),
        }),
        pushgateway: args
            .pushgateway
            .clone()
            .or_else(|| run.metrics.pushgateway.clone()),
    })
}

/// The numeric metrics of a result, nested breakdowns flattened with dots (`ap.cat`).
fn numeric_metrics(metrics: &serde_json::Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Some(top) = metrics.as_object() else {
        return out;
    };
    for (name, value) in top {
        match value {
            serde_json::Value::Object(inner) => out.extend(
                inner
                    .iter()
                    .filter_map(|(k, v)| v.as_f64().map(|f| (format!("{name}.{k}"), f))),
            ),
            other => out.extend(other.as_f64().map(|f| (name.clone(), f))),
        }
    }
    out
}

/// The result as the termination message carries it: whole when it fits the kubelet's limit,
/// else without the per-class/per-sequence breakdowns (the operator reads only the top-level
/// numbers; stdout keeps everything).
fn termination_text(result: &serde_json::Value) -> String {
    let text = result.to_string();
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let mut compact = result.clone();
    if let Some(metrics) = compact.get_mut("metrics").and_then(|m| m.as_object_mut()) {
        metrics.retain(|_, v| v.is_number());
    }
    compact.to_string()
}

/// Pushes the result's numbers to the Pushgateway, grouped by namespace, run and evaluation.
/// A failed push is logged, not fatal: the result is in the termination message and the run's
/// status either way.
fn push(args: &Args, gateway: &str, result: &serde_json::Value) {
    let metrics = numeric_metrics(&result["metrics"]);
    let seconds = result["seconds"].as_f64().unwrap_or_default();
    let body = evaluation_exposition(metrics.iter().map(|(k, v)| (k.as_str(), *v)), seconds);
    let grouping = [
        ("namespace", args.namespace.as_str()),
        ("run", args.run_name.as_str()),
        ("evaluation", args.evaluation.as_str()),
    ];
    let pushed =
        Pushgateway::parse(gateway).and_then(|g| g.push(PUSH_JOB, &grouping, &body, PUSH_TIMEOUT));
    match pushed {
        Ok(()) => info!(
            pushgateway = gateway,
            metrics = metrics.len(),
            "result pushed"
        ),
        Err(e) => warn!(error = %e, "the result could not be pushed"),
    }
}

/// Runs `kontrast eval`: the result JSON on stdout and in the termination log; a failure's
/// message there instead, with exit code 78 (permanent) or 1.
pub fn run(args: Args) -> ExitCode {
    let log = TerminationLog::from_env();
    match evaluate(&args) {
        Ok(Outcome {
            result,
            pushgateway,
        }) => {
            println!("{result}");
            // Best effort: stdout carries the result too.
            let _ = log.write(&termination_text(&result));
            if let Some(gateway) = pushgateway {
                push(&args, &gateway, &result);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_result_keeps_its_top_level_numbers_in_the_termination_message() {
        let per_sequence: serde_json::Map<String, serde_json::Value> = (0..400)
            .map(|i| {
                (
                    format!("sequence-{i:03}"),
                    json!(50.0 + f64::from(i) / 10.0),
                )
            })
            .collect();
        let result = json!({
            "evaluation": "davis",
            "kind": "davis",
            "metrics": {"J&F": 61.5, "J": 60.0, "F": 63.0, "sequences": per_sequence},
        });
        assert!(result.to_string().len() > MAX_MESSAGE_BYTES);
        let text = termination_text(&result);
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(
            parsed["metrics"],
            json!({"J&F": 61.5, "J": 60.0, "F": 63.0})
        );
        assert_eq!(parsed["evaluation"], "davis");

        let small = json!({"metrics": {"top1": 90.0, "ap": {"cat": 1.0}}});
        assert_eq!(termination_text(&small), small.to_string());
        assert_eq!(
            numeric_metrics(&small["metrics"]),
            vec![("ap.cat".to_string(), 1.0), ("top1".to_string(), 90.0)]
        );
    }
}
