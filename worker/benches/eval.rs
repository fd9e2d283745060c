//! The evaluation kernels in Rust and in their Python reference form
//! (`tests/reference/eval_bench.py`), side by side on the same input in one run:
//!
//! - linear SVM: the VOC07 protocol's shape (5011 training rows of 2048-d features, one SVM per
//!   class), `svm::train` with the protocol's settings against scikit-learn's `LinearSVC` with
//!   the same ones, classes one after the other on one thread each side;
//! - weighted kNN: `knn::weighted_knn_predict` against the InstDisc / MoCo kNN monitor in
//!   PyTorch (chunked `torch.mm`, top-k, one-hot weighted vote), same intra-op threads.
//!
//! `cargo bench -p kontrast-worker --bench eval -- [--tasks svm,knn] [--rounds 3] [--threads 1]
//! [--svm-classes 20] [--knn-test 10000] [--json FILE]` (`--help` for the sizes).
//!
//! The features are class-dependent Gaussian clusters from a fixed seed, written once as
//! safetensors for the Python side. Rounds alternate Rust and Python so that load from other
//! processes hits both alike (the side that goes first alternates too); the table shows the
//! median over rounds. Each side also reports what it computed (APs, predictions), so that the
//! two are shown to solve the same problem.
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use kontrast_worker::eval::average_precision::average_precision;
use kontrast_worker::eval::knn::weighted_knn_predict;
use kontrast_worker::eval::linear_svm::protocol_params;
use kontrast_worker::eval::svm;
use serde_json::{Value, json};
use tch::{Kind, Tensor};

use common::{median, python, run_reference};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Task {
    Svm,
    Knn,
}

#[derive(Debug, Parser)]
#[command(about = "Evaluation kernels: Rust versus the Python reference")]
struct Args {
    /// Benchmarks to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Task::Svm, Task::Knn])]
    tasks: Vec<Task>,
    /// Rounds (each: Rust and Python, the first alternating); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Intra-op threads on both sides for the kNN (`tch::set_num_threads` and
    /// `torch.set_num_threads`); the SVMs are single-threaded on both sides.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// SVM training rows (VOC07 trainval: 5011).
    #[arg(long, default_value_t = 5011)]
    svm_train: i64,
    /// SVM test rows (VOC07 test: 4952).
    #[arg(long, default_value_t = 4952)]
    svm_test: i64,
    /// SVM classes, one-vs-rest (VOC: 20).
    #[arg(long, default_value_t = 20)]
    svm_classes: i64,
    /// The protocol's cost C (the API's default).
    #[arg(long, default_value_t = 0.5)]
    cost: f64,
    /// kNN bank rows.
    #[arg(long, default_value_t = 60_000)]
    knn_train: i64,
    /// kNN queries.
    #[arg(long, default_value_t = 10_000)]
    knn_test: i64,
    /// kNN classes.
    #[arg(long, default_value_t = 10)]
    knn_classes: i64,
    /// Neighbours per query.
    #[arg(long, default_value_t = 20)]
    k: i64,
    /// Vote temperature T.
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    /// Feature dimension (ResNet-50's pooled features: 2048).
    #[arg(long, default_value_t = 2048)]
    dim: i64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Python interpreter with torch and scikit-learn (default: the repository's `.venv`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Runs `eval_bench.py` with `arguments` (the output file last) and returns its JSON.
fn run_python(args: &Args, mut arguments: Vec<String>, out: &Path) -> anyhow::Result<Value> {
    arguments.push(out.display().to_string());
    run_reference(
        &python(args.python.as_deref()),
        "eval_bench.py",
        arguments,
        None,
        out,
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `rows` features around one centre per class, `spread·centre[label] + noise`, labels uniform
/// over the classes. With `offset`, shifted by it and clamped at 0: non-negative and mostly
/// nonzero, as pooled ReLU features are, and still linear in the class signal.
fn clusters(centres: &Tensor, rows: i64, spread: f64, offset: Option<f64>) -> (Tensor, Tensor) {
    let classes = centres.size()[0];
    let labels = Tensor::randint(classes, [rows], (Kind::Int64, tch::Device::Cpu));
    let noise = Tensor::randn([rows, centres.size()[1]], (Kind::Float, tch::Device::Cpu));
    let x = centres.index_select(0, &labels) * spread + noise;
    let x = match offset {
        Some(offset) => (x + offset).clamp_min(0.0),
        None => x,
    };
    (x, labels)
}

/// Runs `rust` and `python` once each (a round), Rust first in odd rounds and Python first in
/// even ones, so that neither side always inherits the other's cache and load.
fn round<A, B>(
    round: usize,
    rust: impl FnOnce() -> anyhow::Result<A>,
    python: impl FnOnce() -> anyhow::Result<B>,
) -> anyhow::Result<(A, B)> {
    if round % 2 == 1 {
        let a = rust()?;
        Ok((a, python()?))
    } else {
        let b = python()?;
        Ok((rust()?, b))
    }
}

fn to_f32(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(&t.contiguous().view([-1]))?)
}

fn to_i64(t: &Tensor) -> anyhow::Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(&t.contiguous().view([-1]))?)
}

/// One row of the results table.
struct Row {
    task: &'static str,
    size: String,
    rust: Vec<f64>,
    python: Vec<f64>,
    agreement: String,
}

fn svm_bench(args: &Args, dir: &Path) -> anyhow::Result<Row> {
    tch::manual_seed(11);
    let classes = args.svm_classes;
    // Spread 0.05 over 2048 dims puts two centres ≈ 3 noise σ apart: overlapping classes, so
    // the APs are far from 100 (as on VOC) and the solver needs a realistic number of passes.
    let centres = Tensor::randn([classes, args.dim], (Kind::Float, tch::Device::Cpu));
    let normalise = |x: Tensor| {
        // The protocol's normalisation: each row divided by its norm + 1e-5.
        let norm = x.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        x / (norm + 1e-5)
    };
    let (train_x, train_y) = clusters(&centres, args.svm_train, 0.05, Some(2.0));
    let (test_x, test_y) = clusters(&centres, args.svm_test, 0.05, Some(2.0));
    let (train_x, test_x) = (normalise(train_x), normalise(test_x));
    let file = dir.join("svm.safetensors");
    Tensor::write_safetensors(
        &[
            ("train_x", &train_x),
            ("train_y", &train_y),
            ("test_x", &test_x),
            ("test_y", &test_y),
        ],
        &file,
    )?;
    let dim = args.dim as usize;
    let train_dense = to_f32(&train_x)?;
    let test_dense = to_f32(&test_x)?;
    let train_labels = to_i64(&train_y)?;
    let test_labels = to_i64(&test_y)?;
    let params = protocol_params(args.cost);

    let (mut rust_s, mut python_s) = (Vec::new(), Vec::new());
    let (mut rust_ap, mut rust_iter) = (Vec::new(), Vec::new());
    let mut reference = Value::Null;
    for r in 1..=args.rounds {
        let rust = || -> anyhow::Result<f64> {
            // Timed as scikit-learn's fits are: liblinear's rows, then one SVM per class.
            let started = Instant::now();
            let x = svm::Features::new(&train_dense, dim)?;
            let mut models = Vec::new();
            for c in 0..classes {
                let positive: Vec<bool> = train_labels.iter().map(|&l| l == c).collect();
                models.push(svm::train(&x, &positive, &params)?);
            }
            let seconds = started.elapsed().as_secs_f64();
            rust_ap.clear();
            rust_iter.clear();
            for (c, model) in (0..classes).zip(&models) {
                let ranked: Vec<(f64, bool)> = test_dense
                    .chunks_exact(dim)
                    .map(|row| model.decision(row))
                    .zip(test_labels.iter().map(|&l| l == c))
                    .collect();
                let ap = average_precision(&ranked).context("a class without test positives")?;
                rust_ap.push(ap * 100.0);
                rust_iter.push(model.iterations);
            }
            Ok(seconds)
        };
        let python = || -> anyhow::Result<f64> {
            let arguments = [
                "svm".to_string(),
                file.display().to_string(),
                args.cost.to_string(),
                params.max_iter.to_string(),
            ];
            reference = run_python(args, arguments.to_vec(), &dir.join("svm.json"))?;
            Ok(reference["classes"]
                .as_array()
                .context("no classes in the reference's output")?
                .iter()
                .map(|c| c["seconds"].as_f64().unwrap_or(f64::NAN))
                .sum())
        };
        let (seconds, py) = round(r, rust, python)?;
        rust_s.push(seconds);
        python_s.push(py);
        println!("svm: round {r}: Rust {seconds:.3} s, Python {py:.3} s");
    }
    let py_classes = reference["classes"].as_array().cloned().unwrap_or_default();
    let py_ap: Vec<f64> = py_classes
        .iter()
        .map(|c| c["ap"].as_f64().unwrap_or(f64::NAN))
        .collect();
    let py_iter: Vec<u64> = py_classes
        .iter()
        .map(|c| c["n_iter"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        py_ap.len() == rust_ap.len(),
        "the reference trained {} classes",
        py_ap.len()
    );
    let max_diff = rust_ap
        .iter()
        .zip(&py_ap)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let same_iterations = rust_iter
        .iter()
        .zip(&py_iter)
        .filter(|(a, b)| **a as u64 == **b)
        .count();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("svm: iterations per class, Rust {rust_iter:?}, scikit-learn {py_iter:?}");
    Ok(Row {
        task: "linear SVM (VOC07 protocol)",
        size: format!(
            "{} × {}, {} classes, C {}",
            args.svm_train, args.dim, classes, args.cost
        ),
        rust: rust_s,
        python: python_s,
        agreement: format!(
            "mAP {:.3} / {:.3}, max |ΔAP| {:.2e}, iterations equal in {same_iterations}/{classes} classes",
            mean(&rust_ap),
            mean(&py_ap),
            max_diff
        ),
    })
}

fn knn_bench(args: &Args, dir: &Path) -> anyhow::Result<Row> {
    tch::manual_seed(12);
    let centres = Tensor::randn(
        [args.knn_classes, args.dim],
        (Kind::Float, tch::Device::Cpu),
    );
    let normalise = |x: Tensor| {
        let norm = x
            .norm_scalaropt_dim(2, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        x / norm
    };
    // Wider than the SVM's: a top-1 in the range of a kNN monitor on CIFAR-10.
    let (train, train_labels) = clusters(&centres, args.knn_train, 0.1, None);
    let (test, test_labels) = clusters(&centres, args.knn_test, 0.1, None);
    let (train, test) = (normalise(train), normalise(test));
    let file = dir.join("knn.safetensors");
    Tensor::write_safetensors(
        &[
            ("train", &train),
            ("train_labels", &train_labels),
            ("test", &test),
        ],
        &file,
    )?;
    let (mut rust_s, mut python_s) = (Vec::new(), Vec::new());
    let mut rust_predictions = Vec::new();
    let mut reference = Value::Null;
    for r in 1..=args.rounds {
        let rust = || -> anyhow::Result<f64> {
            let started = Instant::now();
            let predicted = weighted_knn_predict(
                &train,
                &train_labels,
                &test,
                args.k,
                args.temperature,
                args.knn_classes,
            );
            let seconds = started.elapsed().as_secs_f64();
            rust_predictions = to_i64(&predicted)?;
            Ok(seconds)
        };
        let python = || -> anyhow::Result<f64> {
            let arguments = [
                "knn".to_string(),
                file.display().to_string(),
                args.k.to_string(),
                args.temperature.to_string(),
                args.knn_classes.to_string(),
                args.threads.to_string(),
            ];
            reference = run_python(args, arguments.to_vec(), &dir.join("knn.json"))?;
            Ok(reference["seconds"].as_f64().unwrap_or(f64::NAN))
        };
        let (seconds, py) = round(r, rust, python)?;
        rust_s.push(seconds);
        python_s.push(py);
        println!("knn: round {r}: Rust {seconds:.3} s, Python {py:.3} s");
    }
    let py_predictions: Vec<i64> = reference["predictions"]
        .as_array()
        .context("no predictions in the reference's output")?
        .iter()
        .map(|v| v.as_i64().unwrap_or(-1))
        .collect();
    ensure!(
        py_predictions.len() == rust_predictions.len(),
        "{} reference predictions for {} queries",
        py_predictions.len(),
        rust_predictions.len()
    );
    let differing = rust_predictions
        .iter()
        .zip(&py_predictions)
        .filter(|(a, b)| a != b)
        .count();
    let labels = to_i64(&test_labels)?;
    let top1 = |p: &[i64]| {
        p.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64 * 100.0
    };
    Ok(Row {
        task: "weighted kNN",
        size: format!(
            "{} bank × {} queries × {}, k {}, T {}, {} classes",
            args.knn_train, args.knn_test, args.dim, args.k, args.temperature, args.knn_classes
        ),
        rust: rust_s,
        python: python_s,
        agreement: format!(
            "top-1 {:.2} % / {:.2} %, {differing} of {} predictions differ",
            top1(&rust_predictions),
            top1(&py_predictions),
            rust_predictions.len()
        ),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds > 0 && args.threads > 0,
        "--rounds and --threads must be positive"
    );
    tch::set_num_threads(args.threads as i32);
    let dir = tempfile::tempdir()?;
    let load_before = load_average();
    println!(
        "threads {} (kNN; SVMs single-threaded) | rounds {} | load average {load_before}",
        args.threads, args.rounds
    );
    let mut rows = Vec::new();
    for task in &args.tasks {
        rows.push(match task {
            Task::Svm => svm_bench(&args, dir.path())?,
            Task::Knn => knn_bench(&args, dir.path())?,
        });
    }
    let load_after = load_average();
    println!("load average at the end {load_after}");
    println!();
    println!(
        "| task | size | Rust s | Python s | ratio (Python/Rust, > 1: Rust faster) | agreement |"
    );
    println!("|---|---|---:|---:|---:|---|");
    let mut results = Vec::new();
    for r in &rows {
        let (rust, py) = (median(&r.rust), median(&r.python));
        println!(
            "| {} | {} | {rust:.3} | {py:.3} | {:.2} | {} |",
            r.task,
            r.size,
            py / rust,
            r.agreement
        );
        results.push(json!({
            "task": r.task,
            "size": r.size,
            "rust_s": rust,
            "python_s": py,
            "ratio": py / rust,
            "rust_rounds": r.rust,
            "python_rounds": r.python,
            "agreement": r.agreement,
        }));
    }
    if let Some(path) = &args.json {
        let report = json!({
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": [load_before, load_after],
            "results": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
