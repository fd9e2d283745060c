//! End to end with everything real that this machine has: the local 1.20 cluster, the chart
//! installed by helm, the operator binary running as the chart's Deployment under the chart's
//! ServiceAccount, the real `kontrast` worker training `examples/local/demo.yaml` on real
//! Fashion-MNIST images in two pods over Gloo, checkpointing every epoch, then the kNN and
//! linear-SVM evaluation Jobs; Prometheus scraping the operator and the workers through the
//! harness's HTTP discovery with the chart's monitors' relabelling; and every query of every
//! dashboard in `charts/kontrast/dashboards/` evaluated against that Prometheus at a moment the
//! dashboard is meant for.
//!
//! Needs `kontrast` and `kontrast-operator` built beside the test binaries (`make test` builds
//! every binary first; alone: `cargo build -p kontrast-worker -p kontrast-operator --bins`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kontrast_api::v1alpha1::{ContrastiveRun, EvaluationPhase, RunPhase};
use kontrast_tests::chart;
use kontrast_tests::cluster::cache_dir;
use kontrast_tests::dashboards::{self, Source};
use kontrast_tests::prometheus::{Sample, ScrapeOptions};
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;

/// The run: the demo's manifest, applied as a person would.
const MANIFEST: &str = "examples/local/demo.yaml";
const RUN: &str = "demo";
/// Not the operator's namespace, so the dashboards' `$namespace` selects the run's series only
/// when the operator's own per-run `namespace` label survives the scrape.
const NS: &str = "ml";
const RELEASE_NS: &str = "kontrast-system";
/// The manifest's data set volume and the sizes `scripts/demo.sh` writes there.
const DATA_HOST_PATH: &str = "/var/lib/kontrast/fashion-mnist-demo";
const CHECKPOINT_HOST_PATH: &str = "/var/lib/kontrast/checkpoints";
const TRAIN_IMAGES: u32 = 8192;
const TEST_IMAGES: u32 = 1024;
/// Every worker series is exported only while rank 0 trains: scrape every second.
const SCRAPE_INTERVAL: &str = "1s";
/// Grafana's `$__rate_interval` with a 15 s scrape interval set on the data source (4 × 15 s).
const RATE_INTERVAL: &str = "1m";

const TRAIN_TIMEOUT: Duration = Duration::from_secs(8 * 60);
const EVAL_TIMEOUT: Duration = Duration::from_secs(6 * 60);
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);

/// The moment each dashboard is evaluated at: Training shows a run while it trains (the workers
/// export their series only then), Evaluation a finished run's results.
const DASHBOARD_MOMENTS: &[(&str, Moment)] = &[
    ("evaluation", Moment::Finished),
    ("training", Moment::Training),
];

/// Panels that cannot show data on this machine, with the reason. The test fails when any other
/// panel is empty, and when one of these is not (the list would be stale).
const NO_DATA_HERE: &[(&str, &str, &str)] = &[(
    "training",
    "GPU memory allocated",
    "CPU-only run: the worker sets kontrast_train_gpu_memory_allocated_bytes for CUDA devices \
     only (docs/metrics.md: absent on CPU), and this machine trains without a GPU",
)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// The last scrape of rank 0 while it trained.
    Training,
    /// After the run succeeded and its results reached Prometheus.
    Finished,
}

/// Wall time per phase, printed as each ends and again at the end.
struct Phases {
    started: Instant,
    last: Instant,
    done: Vec<(String, Duration)>,
}

impl Phases {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    fn end(&mut self, name: &str) {
        let took = self.last.elapsed();
        self.last = Instant::now();
        println!("[e2e] phase {name}: {:.1} s", took.as_secs_f64());
        self.done.push((name.to_string(), took));
    }

    fn report(&self) {
        println!("[e2e] time per phase:");
        for (name, took) in &self.done {
            println!("[e2e]   {name:<28} {:>7.1} s", took.as_secs_f64());
        }
        println!(
            "[e2e]   {:<28} {:>7.1} s",
            "total",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directory cargo put the test's binaries in, holding the product's binaries too.
fn binary_dir() -> PathBuf {
    chart::product_binary_dir(Path::new(env!("CARGO_BIN_EXE_kontrast-node")))
}

fn kubectl() -> PathBuf {
    let path = cache_dir().join("kubernetes/bin/kubectl");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-kubernetes.sh",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    let path = cache_dir().join("venv/bin/python");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-python.sh",
        path.display()
    );
    path
}

/// Every file under `dir`, recursively, relative names.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Operator log, pod list and the end of every run pod's log, for failure messages.
async fn diagnose(tc: &TestCluster) -> String {
    let mut out = String::new();
    let runs: Api<ContrastiveRun> = Api::namespaced(tc.client.clone(), NS);
    if let Ok(run) = runs.get(RUN).await {
        out.push_str(&format!("run status: {:?}\n", run.status));
    }
    out.push_str(&kontrast_tests::testing::describe_pods(tc, NS, 30).await);
    out.push_str(&format!(
        "--- operator log\n{}\n",
        chart::operator_log(&tc.client, &tc.cluster.state, RELEASE_NS).await
    ));
    out
}

/// Follows the run, printing a line whenever its phase, epoch or step changes, until `done`
/// says so; panics with diagnostics after `timeout` or when the run fails.
async fn follow(
    tc: &TestCluster,
    what: &str,
    timeout: Duration,
    done: impl Fn(RunPhase) -> bool,
) -> ContrastiveRun {
    let runs: Api<ContrastiveRun> = Api::namespaced(tc.client.clone(), NS);
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(run) = runs.get(RUN).await {
            let status = run.status.clone().unwrap_or_default();
            let phase = status.phase;
            let line = match &status.progress {
                Some(p) => format!(
                    "{phase:?} epoch {} step {}/{} loss {:.3} images/s {:.0}",
                    p.epoch,
                    p.step,
                    p.total_steps,
                    p.loss.unwrap_or(f64::NAN),
                    p.images_per_second.unwrap_or(f64::NAN)
                ),
                None => format!("{phase:?}"),
            };
            if line != last {
                println!("[e2e]   {line}");
                last = line;
            }
            if phase.is_some_and(&done) {
                return run;
            }
            if phase == Some(RunPhase::Failed) {
                panic!("the run failed while {what}:\n{}", diagnose(tc).await);
            }
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not done after {} s:\n{}",
                timeout.as_secs(),
                diagnose(tc).await
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Samples with at least one finite value count as data (a quantile of no observations is NaN).
fn has_data(samples: &[Sample]) -> bool {
    samples.iter().any(|s| s.number().is_finite())
}

fn one_value(samples: &[Sample], what: &str) -> f64 {
    assert_eq!(samples.len(), 1, "{what}: {samples:?}");
    samples[0].number()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_trains_evaluates_and_fills_every_dashboard_panel() {
    let mut phases = Phases::new();
    let bin = binary_dir();
    let repo = chart::repo_root();

    // The node maps both images to cargo's build directory: the chart's operator Deployment runs
    // the real kontrast-operator, the run's pods the real `kontrast`.
    let tc = TestCluster::start_with(
        env!("CARGO_TARGET_TMPDIR"),
        "e2e",
        env!("CARGO_BIN_EXE_kontrast-node"),
        |o| {
            for image in ["kontrast-worker", "kontrast-operator"] {
                o.node.images.push(format!("{image}={}", bin.display()));
            }
            o.prometheus = ScrapeOptions {
                interval: SCRAPE_INTERVAL.into(),
                chart_monitors: true,
            };
        },
    )
    .await
    .expect("cluster starts");
    let state = tc.cluster.state.clone();
    phases.end("cluster up");

    let helm_home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e/helm-home");
    let port = chart::free_port().expect("a free port");
    let mut install = chart::install_command(&helm_home, &state, "kontrast", RELEASE_NS, port, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::task::spawn_blocking(move || install.output())
        .await
        .expect("helm runs")
        .expect("helm starts");
    if !out.status.success() {
        panic!(
            "helm install failed:\n{}{}\noperator log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            chart::operator_log(&tc.client, &state, RELEASE_NS).await
        );
    }
    phases.end("helm install");

    tc.namespace(NS).await.expect("namespace");
    let data = state.host_path_dir(Path::new(DATA_HOST_PATH));
    run_ok(
        Command::new(python())
            .arg(repo.join("scripts/fashion-mnist-subset.py"))
            .args(["--train", &TRAIN_IMAGES.to_string()])
            .args(["--test", &TEST_IMAGES.to_string()])
            .arg("--out")
            .arg(&data),
    );
    phases.end("data");

    run_ok(
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&state.kubeconfig)
            .args(["apply", "-n", NS, "-f"])
            .arg(repo.join(MANIFEST)),
    );
    let trained = follow(&tc, "training", TRAIN_TIMEOUT, |p| {
        matches!(p, RunPhase::Evaluating | RunPhase::Succeeded)
    })
    .await;
    phases.end("training");
    let run = follow(&tc, "evaluating", EVAL_TIMEOUT, |p| {
        p == RunPhase::Succeeded
    })
    .await;
    phases.end("evaluation");

    // The run's status: one attempt, both epochs checkpointed, both evaluations' numbers.
    let status = run.status.clone().expect("a status");
    let epochs = run.spec.recipe.epochs.expect("the manifest sets epochs");
    assert_eq!(
        (status.attempt, status.restarts),
        (Some(1), 0),
        "{status:?}"
    );
    let progress = status.progress.clone().expect("progress");
    assert_eq!(progress.epoch, epochs, "{progress:?}");
    assert!(
        progress.total_steps > 0 && progress.step == progress.total_steps,
        "{progress:?}"
    );
    assert!(
        progress.loss.is_some_and(|l| l.is_finite() && l > 0.0),
        "{progress:?}"
    );
    // The manifest's kNN monitor measured after the last epoch too.
    let monitor = progress.knn_monitor.expect("a kNN monitor result");
    assert_eq!(monitor.epoch, epochs, "{monitor:?}");
    assert!(
        (0.0..=100.0).contains(&monitor.top1) && monitor.top5 >= monitor.top1,
        "{monitor:?}"
    );
    let checkpoint = status.last_checkpoint.clone().expect("a checkpoint");
    assert_eq!(checkpoint.epoch, epochs, "{checkpoint:?}");
    let files = files_under(&state.host_path_dir(Path::new(CHECKPOINT_HOST_PATH)));
    for epoch in 1..=epochs {
        let stem = format!("epoch-{epoch:04}");
        assert!(
            files.iter().any(|f| f.contains(&stem)),
            "no checkpoint of epoch {epoch}: {files:?}"
        );
    }
    assert!(
        status
            .evaluations
            .iter()
            .all(|e| e.phase == EvaluationPhase::Succeeded)
            && status.evaluations.len() == 2,
        "{:?}",
        status.evaluations
    );
    // Chance is 10 % top-1 and about 10 mAP on ten balanced classes; raw pixels reach ~80 %.
    let result = |evaluation: &str, metric: &str| {
        status
            .results
            .get(evaluation)
            .and_then(|m| m.get(metric))
            .copied()
            .unwrap_or_else(|| panic!("no {evaluation}.{metric} in {:?}", status.results))
    };
    let top1 = result("knn", "top1");
    let map = result("svm", "mAP");
    println!(
        "[e2e] results: knn top1 {top1:.2} %, svm mAP {map:.2} (trained: {:?})",
        trained.status.and_then(|s| s.progress)
    );
    assert!((50.0..=100.0).contains(&top1), "kNN top-1 {top1}");
    assert!((40.0..=100.0).contains(&map), "linear SVM mAP {map}");

    // Prometheus: the evaluation results as the operator exports them, once scraped.
    let prom = state.prometheus();
    let sel = format!(r#"namespace="{NS}", run="{RUN}""#);
    // One series per number in status.results: kNN top-1 and top-5, the SVM's mAP.
    let series: usize = status.results.values().map(|m| m.len()).sum();
    assert_eq!(series, 3, "{:?}", status.results);
    let results = wait::until(
        "every evaluation result in Prometheus",
        PROMETHEUS_TIMEOUT,
        Duration::from_millis(500),
        || {
            let prom = prom.clone();
            let q = format!("kontrast_run_evaluation_result{{{sel}}}");
            async move {
                let s = prom.query(&q).await.ok()?;
                (s.len() == series).then_some(s)
            }
        },
    )
    .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => panic!("{e}; targets: {:?}", prom.targets().await),
    };
    let finished_at = now_unix();
    for s in &results {
        let label = |name: &str| s.metric.get(name).map(String::as_str).unwrap_or_default();
        let want = result(label("evaluation"), label("metric"));
        assert!(
            (s.number() - want).abs() < 1e-6,
            "{s:?} differs from status {want}"
        );
    }

    // Rank 0 was scraped all through training; its last scrape is the moment the Training
    // dashboard is evaluated at.
    let steps = prom
        .raw_samples(&format!("kontrast_train_step{{{sel}}}[1h]"))
        .await
        .expect("raw samples");
    let samples: Vec<(f64, f64)> = steps
        .iter()
        .flat_map(|s| s.values.iter())
        .map(|(t, v)| (*t, v.parse().unwrap_or(f64::NAN)))
        .collect();
    assert!(
        samples.len() >= 5,
        "only {} scrapes of rank 0 while it trained: {steps:?}",
        samples.len()
    );
    let training_at = samples.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let last_step = samples.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    assert!(last_step > 0.0, "{samples:?}");
    println!(
        "[e2e] {} scrapes of rank 0; last at step {last_step} of {}",
        samples.len(),
        progress.total_steps
    );
    // Only node rank 0 is a target (the PodMonitor's onlyRankZero); rank 1 serves no metrics.
    let ranks = prom
        .raw_samples(&format!(r#"up{{namespace="{NS}", role="worker"}}[1h]"#))
        .await
        .expect("raw samples");
    let scraped: BTreeSet<&str> = ranks
        .iter()
        .filter_map(|s| s.metric.get("node_rank").map(String::as_str))
        .collect();
    assert_eq!(scraped, BTreeSet::from(["0"]), "{ranks:?}");

    // The training series, at that moment.
    let at = |q: String| {
        let prom = prom.clone();
        async move {
            prom.query_at(&q, training_at)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"))
        }
    };
    let losses = at(format!("kontrast_train_loss{{{sel}}}")).await;
    let kinds: BTreeSet<&str> = losses
        .iter()
        .filter_map(|s| s.metric.get("kind").map(String::as_str))
        .collect();
    assert!(
        kinds.contains("infonce") && kinds.contains("total"),
        "{losses:?}"
    );
    assert!(
        losses
            .iter()
            .all(|s| s.number().is_finite() && s.number() > 0.0),
        "{losses:?}"
    );
    let ips = one_value(
        &at(format!("kontrast_train_images_per_second{{{sel}}}")).await,
        "images/s",
    );
    assert!(ips > 0.0, "images/s {ips}");
    let steps_seen = one_value(
        &at(format!(
            r#"kontrast_train_step_seconds_bucket{{{sel}, le="+Inf"}}"#
        ))
        .await,
        "step histogram",
    );
    assert!(steps_seen > 0.0, "{steps_seen} steps observed");
    let reduces = one_value(
        &at(format!("kontrast_train_allreduce_seconds_count{{{sel}}}")).await,
        "all-reduce histogram",
    );
    assert!(
        reduces > 0.0,
        "{reduces} all-reduces: the two ranks did not train together"
    );
    phases.end("prometheus series");

    // Every dashboard query, with Grafana's variables set as a person looking at this run would.
    let all =
        dashboards::load(&chart::chart_dir().join("dashboards")).unwrap_or_else(|e| panic!("{e}"));
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let assigned: BTreeSet<&str> = DASHBOARD_MOMENTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names, assigned,
        "every dashboard needs its moment in DASHBOARD_MOMENTS"
    );
    let mut empty: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut checked = 0;
    for (name, dashboard) in &all {
        let moment = DASHBOARD_MOMENTS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .expect("assigned above");
        let time = match moment {
            Moment::Training => training_at,
            Moment::Finished => finished_at,
        };
        let mut vars: BTreeMap<&str, String> = BTreeMap::from([
            ("__rate_interval", RATE_INTERVAL.to_string()),
            ("__interval", RATE_INTERVAL.to_string()),
            ("__range", "1h".to_string()),
        ]);
        let queries = dashboards::queries(name, dashboard).unwrap_or_else(|e| panic!("{e}"));
        // Variables first, in their order (later ones refer to earlier ones), as Grafana does.
        for q in &queries {
            let Source::Variable { name: var, label } = &q.source else {
                continue;
            };
            let label = label
                .as_deref()
                .unwrap_or_else(|| panic!("{q}: not label_values"));
            let expr = dashboards::substitute(&q.expr, &vars);
            assert!(!expr.contains('$'), "{q}: unknown variable in {expr}");
            let found = prom
                .query_at(&expr, time)
                .await
                .unwrap_or_else(|e| panic!("{q}: {expr}: {e}"));
            let values: BTreeSet<&str> = found
                .iter()
                .filter_map(|s| s.metric.get(label).map(String::as_str))
                .collect();
            let pick = match var.as_str() {
                "namespace" => Some(NS),
                "run" => Some(RUN),
                _ => None,
            };
            match pick {
                Some(v) => {
                    assert!(values.contains(v), "{q} offers {values:?}, not {v}");
                    vars.insert(var, dashboards::regex_escape(v));
                }
                None => {
                    assert!(!values.is_empty(), "{q} offers nothing");
                    // "All", the variable's default.
                    vars.insert(var, ".*".to_string());
                }
            }
            checked += 1;
        }
        for q in &queries {
            let Source::Panel { title } = &q.source else {
                continue;
            };
            let expr = dashboards::substitute(&q.expr, &vars);
            assert!(!expr.contains('$'), "{q}: unknown variable in {expr}");
            let result = prom.query_at(&expr, time).await;
            match result {
                Ok(samples) if has_data(&samples) => {
                    println!("[e2e]   {q}: {} series", samples.len());
                }
                other => empty
                    .entry((name.clone(), title.clone()))
                    .or_default()
                    .push(format!("{expr} at {time:.0} ({moment:?}) gave {other:?}")),
            }
            checked += 1;
        }
    }
    let expected: BTreeSet<(String, String)> = NO_DATA_HERE
        .iter()
        .map(|(d, p, _)| (d.to_string(), p.to_string()))
        .collect();
    let got: BTreeSet<(String, String)> = empty.keys().cloned().collect();
    for (d, p, why) in NO_DATA_HERE {
        println!("[e2e] no data expected in {d} panel {p:?}: {why}");
    }
    assert!(
        got == expected,
        "panels without data: {got:?}, expected exactly {expected:?}:\n{}",
        empty
            .iter()
            .map(|((d, p), why)| format!("{d} {p:?}: {}", why.join("; ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("[e2e] {checked} dashboard queries evaluated");
    phases.end("dashboards");

    drop(tc);
    phases.end("teardown");
    phases.report();
}
