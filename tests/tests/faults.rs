//! Faults injected into one real training run on the local cluster: the real `kontrast` worker
//! in two pods over Gloo on real Fashion-MNIST images, the real `kontrast-operator` binary as two
//! leader-elected replicas. In order, during one run:
//!
//! 1. rank 1's training process is SIGKILLed mid-epoch, and the leading operator replica is
//!    SIGKILLed while the gang restarts (the standby takes over, the killed one comes back);
//! 2. the newest checkpoint is corrupted (one flipped byte) and a worker pod is evicted: a
//!    disruption, not counted against `maxRestarts`, that resumes from the checkpoint before;
//!    then rank 0's pod is deleted mid-epoch (`kubectl delete pod`): a disruption too;
//! 3. rank 1 is frozen with SIGSTOP: rank 0 blocks in its collective, the operator's stall
//!    detection restarts the gang instead of waiting for ever;
//! 4. every operator replica is SIGKILLed mid-run and new ones started: the new leader adopts
//!    the running gang;
//! 5. kube-apiserver and etcd are stopped for a while and started again: training goes on, the
//!    operator catches up, nothing restarts;
//! 6. one of the two evaluations points at a directory without data and fails: the run reports
//!    its training and the other evaluation as succeeded and the failed one on its own.
//!
//! Each recovery is timed (fault to the first training step of the next attempt) and the work it
//! lost is counted in steps; `docs/reliability.md` records the numbers this test prints.
//!
//! Needs `kontrast` and `kontrast-operator` built beside the test binaries (`make test` builds
//! every binary first; alone: `cargo build -p kontrast-worker -p kontrast-operator --bins`).
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kontrast_api::v1alpha1::{ContrastiveRun, EvaluationPhase, RunPhase, reason};
use kontrast_operator::progress;
use kontrast_tests::chart;
use kontrast_tests::cluster::cache_dir;
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

const NS: &str = "ml";
const RUN: &str = "faults";
const DATA_HOST_PATH: &str = "/var/lib/kontrast/faults-data";
const CHECKPOINT_HOST_PATH: &str = "/var/lib/kontrast/faults-checkpoints";
const TRAIN_IMAGES: u64 = 4096;
const TEST_IMAGES: u64 = 512;
const BATCH: u64 = 64;
const STEPS_PER_EPOCH: u64 = TRAIN_IMAGES / BATCH;
const EPOCHS: u32 = 8;
/// Long enough that a loaded machine's start-up (pods, rendezvous, data) never looks stalled.
const STALL_TIMEOUT_SECONDS: u64 = 20;
/// Any single wait of the test: a healthy attempt makes progress well within it.
const T: Duration = Duration::from_secs(240);
/// How long the control plane stays down.
const OUTAGE: Duration = Duration::from_secs(15);

/// The directory cargo put the test's binaries in, holding the product's binaries too.
fn binary_dir() -> PathBuf {
    chart::product_binary_dir(Path::new(env!("CARGO_BIN_EXE_kontrast-node")))
}

/// One replica of the operator binary, leader-elected, as the chart runs it.
struct Replica {
    identity: String,
    child: Child,
}

impl Replica {
    fn start(bin: &Path, tc: &TestCluster, identity: &str) -> Self {
        let port = chart::free_port().expect("a free port");
        let log_path = tc
            .cluster
            .state
            .state_dir
            .join(format!("logs/kontrast-operator-{identity}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log");
        let child = Command::new(bin.join("kontrast-operator"))
            .args(["--leader-elect", "--identity", identity])
            .arg("--metrics-addr")
            .arg(format!("{}:{port}", tc.cluster.state.host))
            .env("KUBECONFIG", &tc.cluster.state.kubeconfig)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        Self {
            identity: identity.into(),
            child,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds a process by its environment: the training process (not its launcher) of `rank` in
/// this run. The node runs containers as host processes, so `/proc` sees them.
fn training_process(rank: u32) -> Option<i32> {
    let want_run = format!("KONTRAST_RUN={RUN}");
    let want_rank = format!("RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |v: &str| vars.contains(&v.as_bytes());
        if !(has(&want_run) && has(&want_rank)) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "train") && !args.iter().any(|a| a == "launch") {
            return Some(pid);
        }
    }
    None
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid this test found by its environment a moment ago.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Where rank 0 of an attempt is, read from its own progress endpoint (the one the operator
/// polls every few seconds), so that a fault lands where the test means it to.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    step: u64,
    checkpoint: u32,
}

struct Test {
    tc: TestCluster,
    http: reqwest::Client,
    runs: Api<ContrastiveRun>,
    /// Recovery time and steps lost per fault, printed at the end.
    table: Vec<(String, f64, u64)>,
}

impl Test {
    async fn status(&self) -> ContrastiveRun {
        self.runs.get(RUN).await.expect("the run exists")
    }

    /// Waits until the run's status satisfies `ok`, failing with the status and the workers'
    /// logs when it does not within [`T`] or when the run fails.
    async fn until(&self, what: &str, ok: impl Fn(&ContrastiveRun) -> bool) -> ContrastiveRun {
        let deadline = Instant::now() + T;
        loop {
            if let Ok(run) = self.runs.get(RUN).await {
                if ok(&run) {
                    return run;
                }
                self.give_up_if_failed(what, run.status.as_ref().and_then(|s| s.phase))
                    .await;
            }
            self.give_up_after(what, deadline).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Panics with diagnostics when the run failed while the test waited for `what`.
    async fn give_up_if_failed(&self, what: &str, phase: Option<RunPhase>) {
        if phase == Some(RunPhase::Failed) {
            panic!(
                "the run failed waiting for {what}:\n{}",
                self.diagnose().await
            );
        }
    }

    /// Panics with diagnostics once `deadline` has passed.
    async fn give_up_after(&self, what: &str, deadline: Instant) {
        if Instant::now() > deadline {
            panic!("{what}: not within {T:?}:\n{}", self.diagnose().await);
        }
    }

    async fn diagnose(&self) -> String {
        let mut out = String::new();
        if let Ok(run) = self.runs.get(RUN).await {
            out.push_str(&format!("status: {:#?}\n", run.status));
        }
        out.push_str(&kontrast_tests::testing::describe_pods(&self.tc, NS, 15).await);
        let logs = self.tc.cluster.state.state_dir.join("logs");
        for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("kontrast-operator-") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!(
                    "--- {name}\n{}\n",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                ));
            }
        }
        out
    }

    /// Everything the containers of `pod` wrote.
    fn pod_log(&self, pod: &str) -> String {
        kontrast_tests::testing::pod_log(&self.tc.cluster, NS, pod)
    }

    /// The step rank 0 of `attempt` resumed from, from its log line `resumed epoch=E step=S`.
    async fn resumed(&self, attempt: u32) -> (u32, u64) {
        let pod = format!("{RUN}-w-{attempt}-0");
        wait::until(
            &format!("{pod} logs that it resumed"),
            T,
            Duration::from_millis(250),
            || {
                let log = strip_ansi(&self.pod_log(&pod));
                async move {
                    let line = log.lines().find(|l| l.contains("resumed epoch="))?;
                    let field = |name: &str| -> Option<u64> {
                        let rest = line.split(&format!("{name}=")).nth(1)?;
                        rest.split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse()
                            .ok()
                    };
                    Some((u32::try_from(field("epoch")?).ok()?, field("step")?))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Rank 0 of `attempt`'s progress report, once its pod runs and answers.
    async fn report(&self, attempt: u32) -> Option<Snapshot> {
        let pods: Api<Pod> = Api::namespaced(self.tc.client.clone(), NS);
        let pod = pods.get(&format!("{RUN}-w-{attempt}-0")).await.ok()?;
        let ip = kontrast_tests::testing::pod_ip(&pod)?;
        let port = pod
            .spec?
            .containers
            .first()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some("metrics"))?
            .container_port;
        let r = progress::fetch(&self.http, &ip, u16::try_from(port).ok()?).await?;
        Some(Snapshot {
            step: r.step,
            checkpoint: r.checkpoint.map_or(0, |c| c.epoch),
        })
    }

    /// Polls rank 0 of `attempt` until its report satisfies `ok`.
    async fn until_report(
        &self,
        what: &str,
        attempt: u32,
        ok: impl Fn(Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.report(attempt).await
                && ok(s)
            {
                return s;
            }
            let phase = self
                .runs
                .get(RUN)
                .await
                .ok()
                .and_then(|r| r.status)
                .and_then(|s| s.phase);
            self.give_up_if_failed(what, phase).await;
            self.give_up_after(what, deadline).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the first training step of `attempt` after its resume point; records the time
    /// from `fault` and the steps lost relative to `before`, and returns the resume point.
    async fn recovered(
        &mut self,
        name: &str,
        fault: Instant,
        before: Snapshot,
        attempt: u32,
    ) -> (u32, u64) {
        let (epoch, step) = self.resumed(attempt).await;
        self.until_report(
            &format!("attempt {attempt} trains past step {step}"),
            attempt,
            |s| s.step > step,
        )
        .await;
        let seconds = fault.elapsed().as_secs_f64();
        let lost = before.step.saturating_sub(step);
        println!(
            "[faults] {name}: attempt {attempt} resumed at epoch {epoch} (step {step}); fault at \
             step {} with epoch {} checkpointed; recovered in {seconds:.1} s, {lost} steps lost",
            before.step, before.checkpoint
        );
        self.table.push((name.into(), seconds, lost));
        (epoch, step)
    }

    /// Waits until `attempt` is well inside an epoch that is not yet checkpointed, with at least
    /// `min_checkpoint` epochs checkpointed, so that a fault lands mid-epoch.
    async fn mid_epoch(&self, attempt: u32, min_checkpoint: u32) -> Snapshot {
        self.until_report(
            &format!("attempt {attempt} mid-epoch after checkpoint {min_checkpoint}"),
            attempt,
            |s| {
                let into = s.step % STEPS_PER_EPOCH;
                s.checkpoint >= min_checkpoint
                    && s.step / STEPS_PER_EPOCH == u64::from(s.checkpoint)
                    && (STEPS_PER_EPOCH / 4..STEPS_PER_EPOCH * 3 / 4).contains(&into)
            },
        )
        .await
    }

    async fn leader(&self) -> String {
        let leases: Api<Lease> = Api::namespaced(self.tc.client.clone(), "default");
        wait::until("an operator leads", T, Duration::from_millis(250), || {
            let leases = leases.clone();
            async move {
                leases
                    .get("kontrast-operator")
                    .await
                    .ok()?
                    .spec?
                    .holder_identity
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.tc.client.clone(), NS);
        let lp = ListParams::default().fields(&format!("involvedObject.name={RUN}"));
        events
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The newest checkpoint's tensors file of the run, on the host.
fn newest_checkpoint(dir: &Path, epoch: u32) -> PathBuf {
    let path = dir.join(format!("epoch-{epoch:04}.safetensors"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_killed_evicted_frozen_ranks_a_killed_operator_and_a_corrupt_checkpoint() {
    let bin = binary_dir();
    let repo = chart::repo_root();
    let tc = TestCluster::with_real_worker(
        env!("CARGO_TARGET_TMPDIR"),
        "faults",
        env!("CARGO_BIN_EXE_kontrast-node"),
        &bin,
        NS,
    )
    .await
    .expect("cluster starts");

    let state = tc.cluster.state.clone();
    let data = state.host_path_dir(Path::new(DATA_HOST_PATH));
    let python = cache_dir().join("venv/bin/python");
    let out = Command::new(&python)
        .arg(repo.join("scripts/fashion-mnist-subset.py"))
        .args(["--train", &TRAIN_IMAGES.to_string()])
        .args(["--test", &TEST_IMAGES.to_string()])
        .arg("--out")
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("{} (scripts/setup-python.sh): {e}", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The second evaluation's directory exists but holds no data set.
    let empty = state.host_path_dir(Path::new("/var/lib/kontrast/faults-empty"));
    std::fs::create_dir_all(&empty).expect("empty data directory");

    let mut replicas: Vec<Replica> = vec![
        Replica::start(&bin, &tc, "a"),
        Replica::start(&bin, &tc, "b"),
    ];
    let runs: Api<ContrastiveRun> = Api::namespaced(tc.client.clone(), NS);
    let run: ContrastiveRun = serde_json::from_value(json!({
        "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
        "metadata": {"name": RUN},
        "spec": {
            "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
            "nodes": 2,
            "gpusPerNode": 0,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "dataset": {"format": "fashionMnist", "path": "/data/fashion-mnist",
                        "volume": {"hostPath": {"path": DATA_HOST_PATH}}},
            "recipe": {"preset": "mocov2", "arch": "resnet18", "width": 8, "cifarStem": true,
                       "epochs": EPOCHS, "batchSize": BATCH,
                       "moco": {"queueSize": 1024, "momentum": 0.99, "temperature": 0.1},
                       "crops": {"large": {"size": 28}}},
            "checkpoint": {"volume": {"hostPath": {"path": CHECKPOINT_HOST_PATH}},
                           "everyEpochs": 1, "keep": 3},
            "failurePolicy": {"maxRestarts": 3, "stallTimeout": format!("{STALL_TIMEOUT_SECONDS}s")},
            "evaluations": [
                {"name": "knn", "kind": "knn", "k": 20,
                 "dataset": {"format": "fashionMnist", "path": "/data/fashion-mnist-eval",
                             "volume": {"hostPath": {"path": DATA_HOST_PATH}}}},
                {"name": "knn-nodata", "kind": "knn", "k": 20,
                 "dataset": {"format": "fashionMnist", "path": "/data/empty",
                             "volume": {"hostPath": {"path": "/var/lib/kontrast/faults-empty"}}}},
            ],
        }
    }))
    .expect("a ContrastiveRun");
    runs.create(&PostParams::default(), &run)
        .await
        .expect("the apiserver accepts the run");
    let checkpoints = state
        .host_path_dir(Path::new(CHECKPOINT_HOST_PATH))
        .join(RUN);
    let mut t = Test {
        tc,
        http: reqwest::Client::new(),
        runs,
        table: Vec::new(),
    };

    // 1. SIGKILL rank 1 mid-epoch, then the leading operator while the gang restarts.
    let before = t.mid_epoch(1, 1).await;
    let pid = training_process(1).expect("rank 1's training process");
    let fault = Instant::now();
    signal(pid, libc::SIGKILL);
    t.until("the gang restarts", |r| {
        r.status.as_ref().and_then(|s| s.attempt) == Some(2)
    })
    .await;
    let leader = t.leader().await;
    let i = replicas
        .iter()
        .position(|r| r.identity == leader)
        .expect("the leader is one of the replicas");
    replicas[i].kill();
    println!("[faults] killed the leading operator replica {leader} during the restart");
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[i] = Replica::start(&bin, &t.tc, &format!("{leader}2"));
    let (epoch, _) = t
        .recovered("rank SIGKILL + operator leader SIGKILL", fault, before, 2)
        .await;
    assert!(
        epoch >= before.checkpoint,
        "resumed at epoch {epoch}, before the last checkpoint ({})",
        before.checkpoint
    );
    let status = t.status().await.status.expect("status");
    assert_eq!((status.restarts, status.disruptions), (1, 0), "{status:?}");
    let failure = status.last_failure.expect("the failure is recorded");
    assert_eq!(failure.rank, Some(1), "{failure:?}");
    assert!(failure.counted, "{failure:?}");
    // The standby takes the Lease once the killed leader's expires.
    let leases: Api<Lease> = Api::namespaced(t.tc.client.clone(), "default");
    wait::until(
        "the standby takes over",
        T,
        Duration::from_millis(250),
        || {
            let leases = leases.clone();
            let leader = leader.clone();
            async move {
                let holder = leases
                    .get("kontrast-operator")
                    .await
                    .ok()?
                    .spec?
                    .holder_identity?;
                (holder != leader).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // 2. Corrupt the checkpoint just written, then evict a worker pod.
    let before = t.mid_epoch(2, before.checkpoint + 1).await;
    let newest = newest_checkpoint(&checkpoints, before.checkpoint);
    let mut bytes = std::fs::read(&newest).expect("read the newest checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&newest, bytes).expect("corrupt the newest checkpoint");
    let fault = Instant::now();
    let eviction = json!({
        "apiVersion": "policy/v1beta1", "kind": "Eviction",
        "metadata": {"name": format!("{RUN}-w-2-1"), "namespace": NS},
    });
    let request =
        hyper::Request::post(format!("/api/v1/namespaces/{NS}/pods/{RUN}-w-2-1/eviction"))
            .header("content-type", "application/json")
            .body(eviction.to_string().into_bytes())
            .expect("an eviction request");
    t.tc.client
        .request_text(request)
        .await
        .expect("the apiserver evicts the pod");
    let (epoch, _) = t
        .recovered("corrupt newest checkpoint + pod eviction", fault, before, 3)
        .await;
    assert_eq!(
        epoch,
        before.checkpoint - 1,
        "the corrupt epoch-{} checkpoint must be skipped for the one before",
        before.checkpoint
    );
    let log = strip_ansi(&t.pod_log(&format!("{RUN}-w-3-0")));
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("skipping")
            && l.contains(&format!("epoch-{:04}", before.checkpoint))),
        "no warning naming the corrupt checkpoint:\n{log}"
    );
    let status = t.status().await.status.expect("status");
    assert_eq!(
        (status.restarts, status.disruptions),
        (1, 1),
        "an eviction is a disruption, not a counted restart: {status:?}"
    );

    // 2b. Delete rank 0's pod mid-epoch, as `kubectl delete pod` does (graceful, SIGTERM): a
    //     disruption like the eviction; the next attempt resumes from the newest checkpoint.
    let before = t.mid_epoch(3, before.checkpoint).await;
    let pods: Api<Pod> = Api::namespaced(t.tc.client.clone(), NS);
    let fault = Instant::now();
    pods.delete(&format!("{RUN}-w-3-0"), &DeleteParams::default())
        .await
        .expect("the apiserver deletes the pod");
    let (epoch, _) = t
        .recovered("worker pod deleted (rank 0)", fault, before, 4)
        .await;
    assert_eq!(
        epoch, before.checkpoint,
        "resumed from the newest checkpoint"
    );
    let status = t.status().await.status.expect("status");
    assert_eq!(
        (status.restarts, status.disruptions),
        (1, 2),
        "a deleted pod is a disruption, not a counted restart: {status:?}"
    );
    let failure = status.last_failure.expect("the deletion is recorded");
    assert_eq!(
        (failure.reason.as_str(), failure.rank, failure.counted),
        ("Deleted", Some(0), false),
        "{failure:?}"
    );

    // 3. Freeze rank 1: rank 0 waits in a collective, the stall detection restarts the gang.
    let before = t.mid_epoch(4, before.checkpoint).await;
    let pid = training_process(1).expect("rank 1's training process");
    let fault = Instant::now();
    signal(pid, libc::SIGSTOP);
    let (epoch, _) = t.recovered("rank SIGSTOP (hang)", fault, before, 5).await;
    assert!(epoch >= before.checkpoint);
    let status = t.status().await.status.expect("status");
    assert_eq!((status.restarts, status.disruptions), (2, 2), "{status:?}");
    let failure = status.last_failure.expect("the stall is recorded");
    assert_eq!(failure.reason, "Stalled", "{failure:?}");
    assert!(
        fault.elapsed() < Duration::from_secs(STALL_TIMEOUT_SECONDS * 4),
        "the stall took {:?} to break",
        fault.elapsed()
    );

    // 4. Every operator replica SIGKILLed mid-run, new ones started: the gang trains on
    //    untouched and the new leader adopts it, no second gang.
    let killed_at = t.mid_epoch(5, epoch).await;
    for r in &mut replicas {
        r.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    replicas = vec![
        Replica::start(&bin, &t.tc, "c"),
        Replica::start(&bin, &t.tc, "d"),
    ];
    let adopted = Instant::now();
    wait::until("a new replica leads", T, Duration::from_millis(250), || {
        let leases = leases.clone();
        async move {
            let holder = leases
                .get("kontrast-operator")
                .await
                .ok()?
                .spec?
                .holder_identity?;
            (holder == "c" || holder == "d").then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let run = t
        .until("the new leader reports progress", |r| {
            r.status
                .as_ref()
                .and_then(|s| s.progress.as_ref())
                .is_some_and(|p| p.step > killed_at.step)
        })
        .await;
    println!(
        "[faults] all operator replicas killed at step {}; a new one leads and reports step {:?} \
         {:.1} s later",
        killed_at.step,
        run.status
            .as_ref()
            .and_then(|s| s.progress.as_ref())
            .map(|p| p.step),
        adopted.elapsed().as_secs_f64()
    );
    let mut workers: Vec<String> = pods
        .list(
            &ListParams::default()
                .labels(&format!("kontrast.dev/run={RUN},kontrast.dev/role=worker")),
        )
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    workers.sort();
    assert_eq!(
        workers,
        [format!("{RUN}-w-5-0"), format!("{RUN}-w-5-1")],
        "the gang the new leader found is the only one"
    );
    t.table.push((
        "all operator replicas SIGKILLed".into(),
        adopted.elapsed().as_secs_f64(),
        0,
    ));

    // 5. The control plane goes away while the gang trains: kube-apiserver and etcd stopped,
    //    then started again. Training needs neither; nothing may be restarted for it.
    let before = t.mid_epoch(5, epoch + 1).await;
    let outage = Instant::now();
    t.tc.cluster
        .stop_component("kube-apiserver")
        .expect("stop kube-apiserver");
    t.tc.cluster.stop_component("etcd").expect("stop etcd");
    tokio::time::sleep(OUTAGE).await;
    t.tc.cluster.start_component("etcd").expect("start etcd");
    t.tc.cluster
        .start_component("kube-apiserver")
        .expect("start kube-apiserver");
    let back = Instant::now();
    let run = t
        .until(
            "the operator reports progress made during the outage",
            |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.progress.as_ref())
                    .is_some_and(|p| p.step > before.step)
                    || r.status.as_ref().and_then(|s| s.phase) != Some(RunPhase::Training)
            },
        )
        .await;
    let seconds = back.elapsed().as_secs_f64();
    println!(
        "[faults] control plane down {:.1} s from step {}; status current again {seconds:.1} s \
         after it came back (step {:?})",
        (back - outage).as_secs_f64(),
        before.step,
        run.status
            .as_ref()
            .and_then(|s| s.progress.as_ref())
            .map(|p| p.step)
    );
    t.table
        .push(("kube-apiserver + etcd restart".into(), seconds, 0));

    // 6. Training finishes; one evaluation succeeds, the one without data fails on its own.
    let run = t
        .until("the run finishes", |r| {
            r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Succeeded)
        })
        .await;
    let status = run.status.expect("status");
    assert_eq!(
        status.last_checkpoint.as_ref().map(|c| c.epoch),
        Some(EPOCHS),
        "{status:?}"
    );
    let top1 = status.results["knn"]["top1"];
    assert!((10.0..=100.0).contains(&top1), "kNN top-1 {top1}");
    let by_name = |n: &str| {
        status
            .evaluations
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("evaluation {n} in {status:?}"))
    };
    assert_eq!(by_name("knn").phase, EvaluationPhase::Succeeded);
    let failed = by_name("knn-nodata");
    assert_eq!(failed.phase, EvaluationPhase::Failed, "{failed:?}");
    assert!(
        failed.message.as_deref().is_some_and(|m| !m.is_empty()),
        "the failed evaluation says why: {failed:?}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.reason == reason::EVALUATION_FAILED),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        (status.attempt, status.restarts, status.disruptions),
        (Some(5), 2, 2),
        "the control-plane outage must not restart the gang"
    );

    // The story is in the Events too.
    let reasons = t.event_reasons().await;
    for want in [reason::RANK_FAILED, reason::DISRUPTED, reason::STALLED] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} Event: {reasons:?}"
        );
    }

    println!("[faults] fault                                      recovery   steps lost");
    for (name, seconds, lost) in &t.table {
        println!(
            "[faults] {name:<42} {seconds:>6.1} s   {lost:>4} (epoch = {STEPS_PER_EPOCH} steps)"
        );
    }
    for (name, _, lost) in &t.table {
        // Everything after the last good checkpoint is lost, nothing before it; with the newest
        // checkpoint corrupt, one more interval.
        let allowed = if name.starts_with("corrupt") { 2 } else { 1 } * STEPS_PER_EPOCH;
        assert!(
            *lost <= allowed,
            "{name}: {lost} steps lost (at most {allowed})"
        );
    }
    drop(replicas);
    t.tc.finish();
}
