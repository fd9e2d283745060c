//! `kontrast eval` end to end: a short training run writes a checkpoint, the evaluation Job's
//! command evaluates it, leaves `{evaluation, kind, metrics, …}` in the termination log and pushes
//! the numbers to a real Pushgateway.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Proc, fashion_mnist_subset, free_port, kontrast, small_run, train_for_eval, write_config,
};
use kontrast_api::config::{
    EvaluationConfig, EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationTask,
};

/// Debian's Pushgateway on a free loopback port, stopped on drop.
struct Pushgateway {
    child: Child,
    port: u16,
}

impl Pushgateway {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                dir.join("pushgateway.db").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-pushgateway (`make setup` installs it)");
        let gateway = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while gateway.get("/-/ready").is_none() {
            assert!(
                Instant::now() < deadline,
                "the Pushgateway did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }

    /// The body of `GET path`, if the Pushgateway answered 200.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.contains(" 200 ").then(|| body.to_string())
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_knn_evaluation_of_the_newest_checkpoint_lands_in_the_termination_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    // The test split is the training split and k is 1: every test image finds itself, so top-1
    // is 100 % whatever the training did — this checks the plumbing, not the representation.
    for kind in ["images-idx3", "labels-idx1"] {
        std::fs::copy(
            data.join(format!("train-{kind}-ubyte")),
            data.join(format!("t10k-{kind}-ubyte")),
        )
        .expect("copy the split");
    }
    let mut config = small_run(&data, 1, 1, 16, 32);
    config.evaluations.push(EvaluationConfig {
        name: "knn".into(),
        dataset: EvaluationDatasetConfig {
            format: EvaluationDatasetFormat::FashionMnist,
            path: data.display().to_string(),
        },
        gpus: 0,
        task: EvaluationTask::Knn {
            k: 1,
            temperature: 0.07,
        },
    });
    let run = train_for_eval(dir.path(), &config);

    let gateway = Pushgateway::start(dir.path());
    let mut eval = run.eval("knn", &[]);
    // What the operator puts into the evaluation Job's environment.
    eval.env(
        "KONTRAST_PUSHGATEWAY",
        format!("http://127.0.0.1:{}", gateway.port),
    )
    .env("KONTRAST_RUN", "fashion/run")
    .env("KONTRAST_NAMESPACE", "ml");
    Proc::spawn(eval, dir.path(), "eval").assert_success(Duration::from_secs(120));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["evaluation"], "knn", "{result}");
    assert_eq!(result["kind"], "knn", "{result}");
    assert_eq!(result["checkpointEpoch"], 1, "{result}");
    assert_eq!(result["dataset"]["format"], "fashionMnist", "{result}");
    assert!(
        result["checkpoint"]
            .as_str()
            .is_some_and(|c| c.ends_with("epoch-0001.json")),
        "{result}"
    );
    assert!(
        result["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{result}"
    );
    let top1 = result["metrics"]["top1"].as_f64().expect("top1");
    assert!(
        top1 > 90.0,
        "top-1 {top1} when every test image is in the training set"
    );

    // The Pushgateway holds the result under the run's grouping labels (the `/` in the run's
    // name survives: label values travel base64-encoded).
    let exposition = gateway.get("/metrics").expect("the Pushgateway's metrics");
    let series = exposition
        .lines()
        .find(|l| l.starts_with("kontrast_evaluation_result{") && l.contains(r#"metric="top1""#))
        .unwrap_or_else(|| panic!("no pushed top1 in:\n{exposition}"));
    for label in [
        r#"evaluation="knn""#,
        r#"job="kontrast-eval""#,
        r#"namespace="ml""#,
        r#"run="fashion/run""#,
    ] {
        assert!(series.contains(label), "{label} missing from {series}");
    }
    let pushed: f64 = series
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a sample value");
    assert!(
        (pushed - top1).abs() < 1e-9,
        "pushed {pushed}, result {top1}"
    );
    assert!(
        exposition.contains("kontrast_evaluation_duration_seconds{"),
        "{exposition}"
    );
}

#[test]
fn an_evaluation_missing_from_the_config_fails_permanently_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 16);
    let config_path = write_config(dir.path(), &small_run(&data, 1, 1, 16, 32));
    let config_arg = config_path.display().to_string();
    let eval = kontrast(
        dir.path(),
        &[
            "eval",
            "--evaluation",
            "voc",
            "--config",
            &config_arg,
            "--checkpoint-dir",
            "/nonexistent",
        ],
    );
    let mut proc = Proc::spawn(eval, dir.path(), "eval");
    let status = proc.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(78), "{}", proc.stderr());
    let message = std::fs::read_to_string(dir.path().join("termination-log")).unwrap_or_default();
    assert!(message.contains("\"voc\""), "{message}");
}
