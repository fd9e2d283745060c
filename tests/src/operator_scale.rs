//! The operator at scale on the local cluster (`kontrast-dev bench operator-scale`): many
//! `ContrastiveRun`s applied at once, each a gang of several pods, against the real
//! `kontrast-operator` binary. Measures the time from a run's creation until every pod of its
//! gang exists, the operator's CPU time and peak memory, and the apiserver requests the operator
//! causes, while the runs settle and then in a quiet steady state.
//!
//! The gangs' pods ask for a node label no node has, so they stay Pending: the benchmark measures
//! the control path, not hundreds of worker processes on one machine.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kontrast_api::v1alpha1::ContrastiveRun;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;

use crate::cluster::{Cluster, ClusterOptions};
use crate::error::{Error, Result};
use crate::wait;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// State directory of the benchmark's own cluster.
    pub state_dir: PathBuf,
    /// The `kontrast-node` binary.
    pub node_bin: PathBuf,
    /// The `kontrast-operator` binary under test.
    pub operator_bin: PathBuf,
    /// Runs applied at once.
    pub runs: usize,
    /// Pods per run (`spec.nodes`).
    pub pods: u32,
    /// Length of the quiet period measured after every pod exists.
    pub steady: Duration,
    /// The operator's `--concurrency`.
    pub concurrency: u16,
}

/// Apiserver requests by (verb, resource), from `apiserver_request_total`.
type Requests = BTreeMap<(String, String), f64>;

/// The measurements.
#[derive(Debug)]
pub struct Report {
    /// Seconds from each run's creation to its last pod's appearance, sorted.
    pub latencies: Vec<f64>,
    /// From the first creation to the last pod.
    pub wall: f64,
    /// Operator CPU seconds (user + system) until every pod existed.
    pub cpu_settle: f64,
    /// Operator CPU seconds during the steady period.
    pub cpu_steady: f64,
    /// Operator peak resident memory, bytes.
    pub peak_rss: u64,
    /// Requests while settling and during the steady period.
    pub settle: Requests,
    /// Requests during the steady period.
    pub steady: Requests,
}

/// The resources only the operator writes or lists here (the benchmark itself only creates the
/// runs, which [`Report::operator_requests`] subtracts, and lists pods once to start its watch).
/// Pods count for the verbs the scheduler and controller-manager do not use on them.
fn operator_caused(verb: &str, resource: &str) -> bool {
    match resource {
        // The controller-manager also reads and watches ConfigMaps and Services.
        "configmaps" | "services" => !matches!(verb, "GET" | "WATCH"),
        // The controller-manager's generic controllers (garbage collector, quota) list and
        // watch every resource, custom ones too; the operator itself lists runs once per watch.
        "contrastiveruns" | "contrastiveruns/status" => !matches!(verb, "GET" | "LIST" | "WATCH"),
        // The operator creates pods by server-side apply and lists a run's pods; the scheduler
        // and controller-manager watch them and patch their status.
        "pods" => matches!(verb, "APPLY" | "POST" | "DELETE" | "LIST"),
        _ => false,
    }
}

impl Report {
    /// Requests attributable to the operator in `requests`, less `own` requests the benchmark
    /// made itself.
    pub fn operator_requests(requests: &Requests, own: f64) -> f64 {
        requests
            .iter()
            .filter(|((verb, resource), _)| operator_caused(verb, resource))
            .map(|(_, n)| n)
            .sum::<f64>()
            - own
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }

    /// The report as a Markdown table and the request breakdown.
    pub fn render(&self, o: &Options) -> String {
        let runs = o.runs as f64;
        let mut out = String::new();
        out.push_str(&format!(
            "{} runs × {} pods, operator --concurrency {}\n\n",
            o.runs, o.pods, o.concurrency
        ));
        out.push_str("| measure | value |\n|---|---|\n");
        let rows = [
            (
                "run created → all its pods exist, p50".to_string(),
                format!("{:.2} s", self.percentile(0.5)),
            ),
            ("… p99".into(), format!("{:.2} s", self.percentile(0.99))),
            ("… max".into(), format!("{:.2} s", self.percentile(1.0))),
            (
                "first run created → last pod exists".into(),
                format!("{:.1} s", self.wall),
            ),
            (
                "operator CPU until then".into(),
                format!(
                    "{:.2} s ({:.1} ms per run)",
                    self.cpu_settle,
                    self.cpu_settle / runs * 1e3
                ),
            ),
            (
                "operator peak RSS".into(),
                format!("{:.1} MiB", self.peak_rss as f64 / 1048576.0),
            ),
            (
                "apiserver requests caused by the operator, per run".into(),
                format!("{:.1}", Self::operator_requests(&self.settle, runs) / runs),
            ),
            (
                format!("steady state ({} s): operator requests", o.steady.as_secs()),
                format!(
                    "{:.0} ({:.3} per run per minute)",
                    Self::operator_requests(&self.steady, 0.0),
                    Self::operator_requests(&self.steady, 0.0)
                        / runs
                        / (o.steady.as_secs_f64() / 60.0)
                ),
            ),
            (
                "steady state: operator CPU".into(),
                format!("{:.2} s", self.cpu_steady),
            ),
        ];
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        for (title, reqs) in [("settling", &self.settle), ("steady state", &self.steady)] {
            out.push_str(&format!(
                "\napiserver requests while {title} (all clients):\n\n"
            ));
            out.push_str("| verb | resource | requests | operator's |\n|---|---|---|---|\n");
            for ((verb, resource), n) in reqs.iter().filter(|(_, n)| **n > 0.0) {
                let mark = if operator_caused(verb, resource) {
                    "yes"
                } else {
                    ""
                };
                out.push_str(&format!("| {verb} | {resource} | {n:.0} | {mark} |\n"));
            }
        }
        out
    }
}

/// `apiserver_request_total` summed by verb and resource[/subresource].
async fn requests(client: &kube::Client) -> Result<Requests> {
    let req = hyper::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| Error::State {
            path: PathBuf::from("/metrics"),
            message: e.to_string(),
        })?;
    let text = client.request_text(req).await?;
    let mut out = Requests::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((label("verb"), resource)).or_default() += n;
    }
    Ok(out)
}

fn delta(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// User + system CPU seconds and peak RSS of `pid`.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let cpu = (field(11) + field(12)) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, hwm)
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark on a cluster of its own and returns the measurements.
pub async fn run(o: &Options) -> Result<Report> {
    let mut copts = ClusterOptions::new(o.state_dir.clone(), o.node_bin.clone());
    copts
        .node
        .images
        .push("kontrast-worker=/nonexistent".into());
    let cluster = Cluster::up(copts).await?;
    let client = cluster.client().await?;

    crate::crd::install(&client).await?;
    let ns = "scale";
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}}))
            .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;

    let log = std::fs::File::create(o.state_dir.join("logs/kontrast-operator.log")).map_err(
        |source| Error::Io {
            action: "creating",
            path: o.state_dir.join("logs/kontrast-operator.log"),
            source,
        },
    )?;
    let err = log.try_clone().map_err(|source| Error::Io {
        action: "duplicating",
        path: o.state_dir.join("logs/kontrast-operator.log"),
        source,
    })?;
    let child = Command::new(&o.operator_bin)
        .arg("--metrics-addr")
        .arg(format!("{}:0", cluster.state.host))
        .arg("--concurrency")
        .arg(o.concurrency.to_string())
        .env("KUBECONFIG", &cluster.state.kubeconfig)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|source| Error::Io {
            action: "starting",
            path: o.operator_bin.clone(),
            source,
        })?;
    let operator = Operator(child);
    let pid = operator.0.id();
    // Let it start its watches before the burst.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every pod's first appearance, as this process's watch sees it.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let watch = {
        let seen = seen.clone();
        let stream = watcher(pods, watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(event)) = stream.try_next().await {
                let pods: Vec<Pod> = match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    _ => Vec::new(),
                };
                let now = Instant::now();
                if let Ok(mut seen) = seen.lock() {
                    for p in pods {
                        if let Some(name) = p.metadata.name {
                            seen.entry(name).or_insert(now);
                        }
                    }
                }
            }
        })
    };

    let before = requests(&client).await?;
    let (cpu0, _) = usage(pid);
    let runs: Api<ContrastiveRun> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(0..o.runs)
        .map(|i| {
            let runs = runs.clone();
            let pods = o.pods;
            async move {
                let name = format!("s{i:04}");
                let run: ContrastiveRun = serde_json::from_value(json!({
                    "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
                    "metadata": {"name": name},
                    "spec": {
                        "image": "ghcr.io/kontrast-dev/kontrast-worker:0.1.0",
                        "nodes": pods,
                        "dataset": {"format": "imagefolder", "path": "/data/x"},
                        "recipe": {"preset": "mocov2", "arch": "resnet18", "epochs": 1,
                                   "batchSize": 4 * pods, "moco": {"queueSize": 64 * pods}},
                        "scheduling": {"nodeSelector": {"kontrast.dev/benchmark": "no-such-node"}},
                    }
                }))
                .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
                let t = Instant::now();
                runs.create(&PostParams::default(), &run).await?;
                Ok::<_, Error>((name, t))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;

    let want = o.runs * o.pods as usize;
    wait::until(
        "every pod of every run",
        Duration::from_secs(600),
        Duration::from_millis(100),
        || {
            let n = seen.lock().map(|s| s.len()).unwrap_or(0);
            async move { (n >= want).then_some(()) }
        },
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, _) = usage(pid);
    let settled = requests(&client).await?;

    tokio::time::sleep(o.steady).await;
    let (cpu2, peak_rss) = usage(pid);
    let end = requests(&client).await?;
    watch.abort();

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = created
        .iter()
        .filter_map(|(run, t)| {
            (0..o.pods)
                .map(|rank| seen.get(&format!("{run}-w-1-{rank}")))
                .collect::<Option<Vec<_>>>()
                .and_then(|times| times.into_iter().max())
                .map(|last| last.duration_since(*t).as_secs_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    drop(operator);
    cluster.down();
    Ok(Report {
        latencies,
        wall,
        cpu_settle: cpu1 - cpu0,
        cpu_steady: cpu2 - cpu1,
        peak_rss,
        settle: delta(&settled, &before),
        steady: delta(&end, &settled),
    })
}
