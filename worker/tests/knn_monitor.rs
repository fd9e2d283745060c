//! The kNN monitor during training (`spec.monitor.knn`): it reports through the log, `/metrics`
//! and the progress report; it leaves training exactly as it was; and it measures what the `knn`
//! evaluation measures on the same checkpoint and data.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Proc, fashion_mnist_subset, free_port, kontrast, small_run, write_config};
use kontrast_api::config::{
    EvaluationConfig, EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationTask,
    KnnMonitorConfig, RunConfig,
};
use kontrast_data::{Dataset, DatasetFormat, Split};
use kontrast_worker::checkpoint::CheckpointStore;
use kontrast_worker::model::memory_format::Layout;
use kontrast_worker::train::config::{Overrides, standalone};
use kontrast_worker::train::trainer::{self, Options, Outcome};

/// Memory-bank and query images of the labelled split: all of them are used (the caps are
/// above), so the evaluation, which reads every image, sees the same data.
const BANK: usize = 96;
const QUERIES: usize = 48;

/// A labelled Fashion-MNIST split in `dir`: the first `BANK` real training images as `train`,
/// the first `QUERIES` real test images as `t10k`.
fn labelled_split(dir: &Path) -> PathBuf {
    let source = standalone(&Overrides::default())
        .expect("the embedded run resolves")
        .dataset
        .path;
    std::fs::create_dir_all(dir).expect("split directory");
    for (split, prefix, n) in [
        (Split::Train, "train", BANK),
        (Split::Test, "t10k", QUERIES),
    ] {
        let full = Dataset::open_split(DatasetFormat::FashionMnist, Path::new(&source), split)
            .expect("Fashion-MNIST (make setup installs dataset-fashion-mnist)");
        let mut images = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            images.extend(d.to_be_bytes());
        }
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let image = full.load(i).expect("an image");
            // Grey images come back as RGB with three equal channels.
            images.extend(image.data.iter().step_by(3));
            labels.push(full.label(i).expect("a label") as u8);
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).expect("images");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).expect("labels");
    }
    dir.to_path_buf()
}

/// Two epochs of four steps on 64 images, with the monitor on `split` after every epoch.
fn monitored_run(data: &Path, split: &Path) -> RunConfig {
    let mut config = small_run(data, 1, 2, 16, 32);
    config.monitor = Some(KnnMonitorConfig {
        every_epochs: 1,
        dataset: EvaluationDatasetConfig {
            format: EvaluationDatasetFormat::FashionMnist,
            path: split.display().to_string(),
        },
        k: 20,
        temperature: 0.07,
        max_train_images: 1000,
        max_val_images: 1000,
    });
    config
}

fn train_in_process(config: &RunConfig, checkpoints: &Path) -> Outcome {
    trainer::run(
        config,
        &Options {
            checkpoint_dir: Some(checkpoints.to_path_buf()),
            resume: false,
            seed: 11,
            data_threads: 0,
            prefetch: 1,
            log_every: 100,
            metrics_port: Some(0),
            collective_timeout: Duration::from_secs(60),
            layout: Layout::Auto,
        },
    )
    .expect("training runs")
}

#[test]
fn the_monitor_leaves_training_unchanged_and_agrees_with_the_knn_evaluation() {
    // One libtorch thread: the two runs must be bit-identical, reductions included.
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let split = labelled_split(&dir.path().join("labelled"));
    let monitored = monitored_run(&data, &split);
    let mut plain = monitored.clone();
    plain.monitor = None;

    let with = train_in_process(&monitored, &dir.path().join("with"));
    let without = train_in_process(&plain, &dir.path().join("without"));

    assert_eq!(with.epoch_losses.len(), 2);
    assert_eq!(
        with.epoch_losses, without.epoch_losses,
        "the monitor changed the per-epoch losses"
    );
    // Batch-norm running statistics, the queues and the optimiser state too: every tensor of
    // the final checkpoints is identical.
    let load = |name: &str| {
        CheckpointStore::new(dir.path().join(name), 2)
            .latest()
            .expect("read checkpoints")
            .expect("a final checkpoint")
    };
    let (a, b) = (load("with"), load("without"));
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.tensors {
        assert!(t.equal(&b.tensors[name]), "{name} differs");
    }

    let report = with.report.knn_monitor.expect("the last monitor result");
    assert_eq!(report.epoch, 2);
    assert!(
        (0.0..=100.0).contains(&report.top1) && report.top1 <= report.top5 && report.top5 <= 100.0,
        "{report:?}"
    );
    assert!(without.report.knn_monitor.is_none());

    // The `knn` evaluation of the final checkpoint on the same split and parameters.
    let mut evaluated = monitored.clone();
    evaluated.evaluations.push(EvaluationConfig {
        name: "knn".into(),
        dataset: EvaluationDatasetConfig {
            format: EvaluationDatasetFormat::FashionMnist,
            path: split.display().to_string(),
        },
        gpus: 0,
        task: EvaluationTask::Knn {
            k: 20,
            temperature: 0.07,
        },
    });
    let config = write_config(dir.path(), &evaluated);
    let checkpoints = dir.path().join("with");
    let eval = kontrast(
        dir.path(),
        &[
            "eval",
            "--evaluation",
            "knn",
            "--config",
            config.to_str().expect("UTF-8 path"),
            "--checkpoint-dir",
            checkpoints.to_str().expect("UTF-8 path"),
        ],
    );
    Proc::spawn(eval, dir.path(), "eval").assert_success(Duration::from_secs(120));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["checkpointEpoch"], 2, "{result}");
    let top1 = result["metrics"]["top1"].as_f64().expect("top1");
    assert!(
        (top1 - report.top1).abs() < 1e-9,
        "evaluation {top1}, monitor {}",
        report.top1
    );
}

/// `GET /metrics` on 127.0.0.1:`port`; `None` while nothing listens.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The value of the first series of `name` in an exposition.
fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_monitored_run_logs_exports_and_reports_each_measurement() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let split = labelled_split(&dir.path().join("labelled"));
    let mut config = monitored_run(&data, &split);
    config.recipe.epochs = 3;
    let config = write_config(dir.path(), &config);
    let port = free_port();
    let port_arg = port.to_string();
    let mut train = kontrast(
        dir.path(),
        &[
            "train",
            "--config",
            config.to_str().expect("UTF-8 path"),
            "--data-threads",
            "0",
            "--metrics-port",
            &port_arg,
        ],
    );
    train.env("KONTRAST_RUN", "demo");
    let mut train = Proc::spawn(train, dir.path(), "train");
    // The gauges appear with the first measurement (after epoch 1) and stay while the
    // remaining epochs train.
    let started = Instant::now();
    let mut seen = None;
    while seen.is_none() && started.elapsed() < Duration::from_secs(120) {
        if let Some(text) = scrape(port)
            && let (Some(top1), Some(top5)) = (
                gauge(&text, "kontrast_knn_monitor_top1"),
                gauge(&text, "kontrast_knn_monitor_top5"),
            )
        {
            seen = Some((text, top1, top5));
        }
        if train.child.try_wait().expect("poll the trainer").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    train.assert_success(Duration::from_secs(120));
    let (text, top1, top5) = seen.expect("the monitor's gauges on /metrics while training");
    assert!(
        (0.0..=100.0).contains(&top1) && (top1..=100.0).contains(&top5),
        "{top1} {top5}"
    );
    let series = text
        .lines()
        .find(|l| l.starts_with("kontrast_knn_monitor_top1{"))
        .expect("a top-1 series");
    assert!(
        series.contains("rank=\"0\"") && series.contains("run=\"demo\""),
        "{series}"
    );

    let log = train.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("kNN monitor")).collect();
    for epoch in 1..=3 {
        assert!(
            lines.iter().any(|l| l.contains(&format!("epoch={epoch} "))
                && l.contains("top1=")
                && l.contains("top5=")
                && l.contains("seconds=")),
            "no measurement after epoch {epoch} in {lines:#?}"
        );
    }
    let message =
        std::fs::read_to_string(dir.path().join("termination-log")).expect("the final report");
    let report: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    let last = &report["knnMonitor"];
    assert_eq!(last["epoch"], 3, "{report}");
    for field in ["top1", "top5"] {
        let v = last[field].as_f64().expect("a number");
        assert!((0.0..=100.0).contains(&v), "{field} {v}");
    }
}

#[test]
fn an_unreadable_monitor_split_is_a_permanent_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let config = monitored_run(&data, &dir.path().join("missing"));
    let err = trainer::run(
        &config,
        &Options {
            checkpoint_dir: None,
            resume: false,
            seed: 0,
            data_threads: 0,
            prefetch: 1,
            log_every: 100,
            metrics_port: Some(0),
            collective_timeout: Duration::from_secs(60),
            layout: Layout::Auto,
        },
    )
    .expect_err("the split does not exist");
    assert!(err.is_permanent(), "{err:?}");
    assert!(
        err.to_string().contains("spec.monitor.knn.dataset"),
        "{err}"
    );
}

#[test]
fn a_failing_measurement_is_reported_and_training_goes_on() {
    // An image-folder split opens (its files are listed), but no image in it decodes: every
    // measurement fails when it reads them, after the epoch's checkpoint.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let split = dir.path().join("undecodable");
    for part in ["train", "val"] {
        for class in ["coat", "shirt"] {
            let class_dir = split.join(part).join(class);
            std::fs::create_dir_all(&class_dir).expect("class directory");
            for i in 0..3 {
                std::fs::write(class_dir.join(format!("{i}.png")), b"not a PNG").expect("file");
            }
        }
    }
    let mut config = monitored_run(&data, &split);
    if let Some(monitor) = config.monitor.as_mut() {
        monitor.dataset.format = EvaluationDatasetFormat::Imagefolder;
    }
    let checkpoints = dir.path().join("checkpoints");
    let outcome = train_in_process(&config, &checkpoints);

    assert_eq!(outcome.epoch_losses.len(), 2, "both epochs trained");
    let last = CheckpointStore::new(&checkpoints, 2)
        .latest()
        .expect("read checkpoints")
        .expect("the final checkpoint");
    assert_eq!(last.manifest.epoch, 2);
    let report = outcome.report;
    assert_eq!(report.knn_monitor, None, "no measurement succeeded");
    let failure = report
        .knn_monitor_failure
        .expect("the failure is in the progress report");
    assert_eq!(failure.epoch, 2, "the latest failure: after the last epoch");
    assert!(
        failure.error.starts_with("spec.monitor.knn.dataset")
            && failure.error.contains(&split.display().to_string()),
        "{}",
        failure.error
    );
}
