//! One pod's life on the node: prepare (address, volumes, environment), run init containers then
//! containers, restart them as `restartPolicy` says, report every change through `pods/status`,
//! and stop them (SIGTERM, grace period, SIGKILL to the whole process group) on deletion or when
//! the node stops.
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Shared;
use super::container::{self, Launch};
use super::env::{self, NodeFacts, Refs};
use super::hosts::PodName;
use super::paths;
use super::status::{self, ContainerStatus, State, Termination, now};
use super::volumes::{self, Mount, VolumeHost};

/// Why a pod's processes are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The pod object is being deleted: finalise the deletion afterwards.
    Deleted,
    /// The pod object is gone already.
    Gone,
    /// The node is shutting down: report the pod Failed.
    NodeShutdown,
}

/// A request to stop a pod's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Why.
    pub reason: StopReason,
}

/// A container ready to start.
struct Plan {
    spec: Container,
    launch: Option<Launch>,
    start_error: Option<String>,
    termination_file: PathBuf,
    fallback_to_logs: bool,
}

struct Running {
    child: tokio::process::Child,
    pid: u32,
    started: String,
}

/// Everything a running pod task holds.
struct PodRun {
    shared: Arc<Shared>,
    api: Api<Pod>,
    pod: Pod,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    start_time: String,
    restart_policy: String,
}

fn exit_code(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        _ => (255, None),
    }
}

fn read_message(file: &Path, log: &Path, exit: i32, fallback: bool) -> String {
    let mut msg = std::fs::read(file)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(status::MAX_MESSAGE)]).into_owned())
        .unwrap_or_default();
    if msg.is_empty() && fallback && exit != 0 {
        let tail = crate::process::tail(log, 80);
        let start = tail.len().saturating_sub(2048);
        let start = (start..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        msg = tail[start..].to_string();
    }
    msg
}

/// How long a status update is retried while the apiserver is away.
const STATUS_RETRY_LIMIT: Duration = Duration::from_secs(300);

impl PodRun {
    fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    /// Reports `status`, retrying while the apiserver is unreachable or failing (as a kubelet
    /// does): a pod that finishes during a control-plane outage must not stay Running for ever.
    async fn patch(&self, status: Value) {
        let body = json!({"status": status});
        let deadline = Instant::now() + STATUS_RETRY_LIMIT;
        let mut pause = Duration::from_millis(250);
        loop {
            let result = self
                .api
                .patch_status(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Strategic(body.clone()),
                )
                .await;
            let e = match result {
                Ok(_) => return,
                Err(e) => e,
            };
            // The apiserver answered and refused: the pod is gone or the update is wrong.
            let permanent = matches!(&e, kube::Error::Api(s) if s.code < 500);
            if permanent || Instant::now() > deadline {
                tracing::warn!(pod = %self.name, error = %e, "status update failed");
                return;
            }
            tracing::debug!(pod = %self.name, error = %e, "status update failed, retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn base_status(&self) -> Value {
        json!({
            "hostIP": self.shared.cfg.host_ip.to_string(),
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "startTime": self.start_time,
        })
    }

    async fn report(
        &self,
        phase: &str,
        init: &[ContainerStatus],
        main: &[ContainerStatus],
        extra: Option<(&str, &str)>,
    ) {
        let mut s = self.base_status();
        let initialized = init
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
        let ready = !main.is_empty()
            && main
                .iter()
                .all(|c| matches!(c.state, State::Running { .. }));
        s["phase"] = json!(phase);
        s["conditions"] = json!([
            status::condition("Initialized", initialized, None),
            status::condition(
                "ContainersReady",
                ready,
                (!ready).then_some("ContainersNotReady")
            ),
            status::condition("Ready", ready, (!ready).then_some("ContainersNotReady")),
        ]);
        s["containerStatuses"] = json!(
            main.iter()
                .map(ContainerStatus::to_json)
                .collect::<Vec<_>>()
        );
        if !init.is_empty() {
            s["initContainerStatuses"] = json!(
                init.iter()
                    .map(ContainerStatus::to_json)
                    .collect::<Vec<_>>()
            );
        }
        if let Some((reason, message)) = extra {
            s["reason"] = json!(reason);
            s["message"] = json!(message);
        }
        self.patch(s).await;
    }

    async fn fetch_refs(&self) -> Result<Refs, String> {
        let ns = self
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let (cms, secrets) = env::referenced(&self.pod);
        let mut refs = Refs::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in cms {
            match cm_api.get_opt(&n).await {
                Ok(Some(cm)) => {
                    refs.config_maps.insert(n, cm);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading configmap {n:?}: {e}")),
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in secrets {
            match s_api.get_opt(&n).await {
                Ok(Some(s)) => {
                    refs.secrets.insert(n, s);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading secret {n:?}: {e}")),
            }
        }
        Ok(refs)
    }

    /// Builds every container's launch plan. `Err((transient, reason, message))`.
    async fn prepare(
        &self,
        hostname: &str,
    ) -> Result<(Vec<Plan>, Vec<Plan>), (bool, &'static str, String)> {
        let refs = self
            .fetch_refs()
            .await
            .map_err(|m| (true, "ContainerCreating", m))?;
        let cfg = &self.shared.cfg;
        let host = VolumeHost {
            state_dir: cfg.state_dir.clone(),
            host_path_allow: cfg.host_paths.clone(),
        };
        let vols = volumes::materialise(&self.pod, &self.dir, &host, &refs).map_err(|e| {
            (
                e.is_transient(),
                if e.is_transient() {
                    "ContainerCreating"
                } else {
                    "UnsupportedVolume"
                },
                e.to_string(),
            )
        })?;
        let facts = NodeFacts {
            node_name: cfg.name.clone(),
            host_ip: cfg.host_ip,
            cpu: env::parse_quantity(&cfg.capacity.cpu).unwrap_or(1.0),
            memory: env::parse_quantity(&cfg.capacity.memory).unwrap_or(1e9),
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut plan = |c: &Container| -> Result<Plan, (bool, &'static str, String)> {
            let image = c.image.clone().unwrap_or_default();
            let image_dir = cfg.images.dir_for(&image).cloned();
            let host_path =
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
            let path = match &image_dir {
                Some(d) => format!("{}:{host_path}", d.display()),
                None => host_path,
            };
            let base = vec![
                ("PATH".to_string(), path),
                (
                    "HOME".to_string(),
                    std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
                ),
                ("HOSTNAME".to_string(), hostname.to_string()),
                ("LANG".to_string(), "C.UTF-8".to_string()),
                (
                    "KUBERNETES_SERVICE_HOST".to_string(),
                    cfg.apiserver_host.clone(),
                ),
                (
                    "KUBERNETES_SERVICE_PORT".to_string(),
                    cfg.apiserver_port.to_string(),
                ),
                (
                    "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                    cfg.apiserver_port.to_string(),
                ),
            ];
            let envs = env::resolve(&self.pod, c, self.ip, &facts, &refs, base)
                .map_err(|e| (true, "CreateContainerConfigError", e.0))?;
            let vars: HashMap<String, String> = envs.iter().cloned().collect();
            let mut mounts = vec![Mount {
                source: self.dir.join("hosts"),
                target: "/etc/hosts".into(),
                read_only: false,
            }];
            mounts.extend(
                volumes::mounts_for(c, &vols)
                    .map_err(|e| (false, "CreateContainerConfigError", e.to_string()))?,
            );
            let termination_file = self.dir.join("termination").join(&c.name);
            let _ = std::fs::write(&termination_file, b"");
            let tm_path = c
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into());
            mounts.push(Mount {
                source: termination_file.clone(),
                target: tm_path.into(),
                read_only: false,
            });
            let argv: Vec<String> = c
                .command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .map(|a| env::expand(a, &vars))
                .collect();
            let (launch, start_error) = match argv.split_first() {
                None => (
                    None,
                    Some(format!(
                        "container {:?} has no command: the local node cannot run an image's entrypoint (image {image:?})",
                        c.name
                    )),
                ),
                Some((prog, args)) => match container::resolve_program(
                    prog,
                    image_dir.as_deref(),
                    vars.get("PATH").map(String::as_str),
                ) {
                    None => (
                        None,
                        Some(format!(
                            "exec: {prog:?}: executable file not found in $PATH"
                        )),
                    ),
                    Some(program) => (
                        Some(Launch {
                            mounts: container::keep_program_visible(mounts, &program, &self.name),
                            program,
                            args: args.to_vec(),
                            env: envs,
                            cwd: Some(
                                c.working_dir
                                    .clone()
                                    .map(PathBuf::from)
                                    .unwrap_or_else(|| self.dir.join("work")),
                            ),
                            log: self.log_path(&c.name),
                            hostname: hostname.to_string(),
                        }),
                        None,
                    ),
                },
            };
            Ok(Plan {
                spec: c.clone(),
                launch,
                start_error,
                termination_file,
                fallback_to_logs: c.termination_message_policy.as_deref()
                    == Some("FallbackToLogsOnError"),
            })
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(&mut plan)
            .collect::<Result<Vec<_>, _>>()?;
        let main = spec
            .containers
            .iter()
            .map(&mut plan)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((init, main))
    }

    fn start(&self, p: &Plan) -> Result<Running, Termination> {
        let failed = |message: String| Termination {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message,
            started: now(),
            finished: now(),
        };
        let Some(launch) = &p.launch else {
            let message = p.start_error.clone().unwrap_or_default();
            tracing::warn!(pod = %self.name, container = %p.spec.name, %message, "container cannot start");
            return Err(failed(message));
        };
        let _ = std::fs::write(&p.termination_file, b"");
        match container::spawn(launch) {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(pod = %self.name, container = %p.spec.name, pid, program = %launch.program.display(), "container started");
                Ok(Running {
                    child,
                    pid,
                    started: now(),
                })
            }
            Err(e) => {
                let message = format!("starting {}: {e}", launch.program.display());
                tracing::warn!(pod = %self.name, container = %p.spec.name, %message, "container cannot start");
                Err(failed(message))
            }
        }
    }

    fn finished(&self, p: &Plan, started: &str, st: std::process::ExitStatus) -> Termination {
        let (code, signal) = exit_code(st);
        let message = read_message(
            &p.termination_file,
            &self.log_path(&p.spec.name),
            code,
            p.fallback_to_logs,
        );
        tracing::info!(pod = %self.name, container = %p.spec.name, code, "container exited");
        Termination {
            exit_code: code,
            signal,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message,
            started: started.to_string(),
            finished: now(),
        }
    }

    /// Stops every running process: SIGTERM, then SIGKILL after `grace`.
    async fn kill_all(
        &self,
        plans: &[Plan],
        running: &mut [Option<Running>],
        statuses: &mut [ContainerStatus],
        grace: Duration,
    ) {
        for r in running.iter().flatten() {
            container::signal(r.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut alive = false;
            for (i, slot) in running.iter_mut().enumerate() {
                if let Some(r) = slot {
                    match r.child.try_wait() {
                        Ok(Some(st)) => {
                            statuses[i].state =
                                State::Terminated(self.finished(&plans[i], &r.started, st));
                            *slot = None;
                        }
                        Ok(None) => alive = true,
                        Err(_) => *slot = None,
                    }
                }
            }
            if !alive {
                return;
            }
            if Instant::now() >= deadline {
                for r in running.iter().flatten() {
                    container::signal(r.pid, libc::SIGKILL);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn waiting(c: &Container, reason: &str, message: &str) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        state: State::Waiting {
            reason: reason.into(),
            message: message.into(),
        },
        last: None,
        restarts: 0,
    }
}

/// What ended the pod task.
enum Outcome {
    Finished,
    Stopped(StopReason),
}

/// Runs pod `pod` until it ends or is stopped.
pub async fn run(
    shared: Arc<Shared>,
    pod: Pod,
    ip: Ipv4Addr,
    mut stop: watch::Receiver<Option<StopRequest>>,
) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let dir = paths::pod_dir(&shared.cfg.state_dir, &ns, &name);
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let run = PodRun {
        shared: shared.clone(),
        api: api.clone(),
        pod: pod.clone(),
        name: name.clone(),
        ip,
        dir: dir.clone(),
        start_time: now(),
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
    };
    for sub in ["logs", "termination", "work"] {
        let _ = std::fs::create_dir_all(dir.join(sub));
    }
    let hosts_added = shared
        .hosts
        .lock()
        .map(|mut h| {
            h.add(
                PodName {
                    namespace: ns.clone(),
                    name: name.clone(),
                    hostname: hostname.clone(),
                    subdomain: spec.subdomain.clone(),
                    ip,
                },
                dir.join("hosts"),
            )
        })
        .is_ok_and(|r| r.is_ok());
    if !hosts_added {
        tracing::warn!(pod = %name, "writing the pod's hosts file failed");
    }

    let key = format!("{ns}/{name}");
    if let Ok(mut a) = shared.active.lock() {
        a.insert(key.clone());
    }
    let outcome = drive(&run, &hostname, &mut stop).await;
    if let Ok(mut a) = shared.active.lock() {
        a.remove(&key);
    }

    if let Ok(mut h) = shared.hosts.lock() {
        let _ = h.remove(&ns, &name);
    }
    if let Ok(mut p) = shared.pool.lock() {
        p.release(ip);
    }
    match outcome {
        Outcome::Finished | Outcome::Stopped(StopReason::Gone) => {}
        Outcome::Stopped(StopReason::Deleted) => {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(pod = %name, "pod deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "finalising pod deletion failed"),
            }
        }
        Outcome::Stopped(StopReason::NodeShutdown) => {
            run.patch(json!({"phase": "Failed", "reason": "Shutdown", "message": "Pod was terminated in response to node shutdown."})).await;
        }
    }
}

async fn drive(
    run: &PodRun,
    hostname: &str,
    stop: &mut watch::Receiver<Option<StopRequest>>,
) -> Outcome {
    let spec = run.pod.spec.clone().unwrap_or_default();
    let init_specs: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    let mut init: Vec<ContainerStatus> = init_specs
        .iter()
        .map(|c| waiting(c, "PodInitializing", ""))
        .collect();
    let mut main: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| waiting(c, "ContainerCreating", ""))
        .collect();
    run.report("Pending", &init, &main, None).await;

    // Prepare, retrying while a referenced object is missing (as kubelet does).
    let (init_plans, plans) = loop {
        match run.prepare(hostname).await {
            Ok(p) => break p,
            Err((transient, reason, message)) => {
                tracing::warn!(pod = %run.name, reason, %message, "pod not startable");
                if !transient {
                    for c in &mut main {
                        c.state = State::Waiting {
                            reason: reason.into(),
                            message: message.clone(),
                        };
                    }
                    run.report("Failed", &init, &main, Some((reason, &message)))
                        .await;
                    return Outcome::Finished;
                }
                for c in &mut main {
                    c.state = State::Waiting {
                        reason: reason.into(),
                        message: message.clone(),
                    };
                }
                run.report("Pending", &init, &main, None).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => {}
                }
                let requested = *stop.borrow();
                if let Some(req) = requested {
                    return Outcome::Stopped(req.reason);
                }
            }
        }
    };

    // Init containers, one after the other.
    for (i, p) in init_plans.iter().enumerate() {
        loop {
            let mut running: Vec<Option<Running>> = vec![None];
            let term = match run.start(p) {
                Err(t) => t,
                Ok(r) => {
                    init[i].state = State::Running {
                        started: r.started.clone(),
                        pid: r.pid,
                    };
                    run.report("Pending", &init, &main, None).await;
                    running[0] = Some(r);
                    loop {
                        let requested = *stop.borrow();
                        if let Some(req) = requested {
                            let mut st = vec![init[i].clone()];
                            run.kill_all(std::slice::from_ref(p), &mut running, &mut st, req.grace)
                                .await;
                            return Outcome::Stopped(req.reason);
                        }
                        let r = running[0].as_mut().map(|r| r.child.try_wait());
                        if let Some(Ok(Some(st))) = r {
                            let started = running[0].take().map(|r| r.started).unwrap_or_default();
                            break run.finished(p, &started, st);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            };
            let ok = term.exit_code == 0;
            init[i].state = State::Terminated(term);
            if ok {
                break;
            }
            if run.restart_policy == "Never" {
                run.report("Failed", &init, &main, None).await;
                return Outcome::Finished;
            }
            init[i].restarts += 1;
            run.report("Pending", &init, &main, None).await;
            tokio::time::sleep(backoff(init[i].restarts)).await;
        }
    }
    run.report("Pending", &init, &main, None).await;

    // Main containers.
    let mut running: Vec<Option<Running>> = Vec::with_capacity(plans.len());
    let mut restart_at: Vec<Option<Instant>> = vec![None; plans.len()];
    for (i, p) in plans.iter().enumerate() {
        match run.start(p) {
            Ok(r) => {
                main[i].state = State::Running {
                    started: r.started.clone(),
                    pid: r.pid,
                };
                running.push(Some(r));
            }
            Err(t) => {
                main[i].state = State::Terminated(t);
                running.push(None);
            }
        }
    }
    let phase = |main: &[ContainerStatus], policy: &str| {
        status::terminal_phase(main, policy).unwrap_or("Running")
    };
    run.report(phase(&main, &run.restart_policy), &init, &main, None)
        .await;
    if let Some(p) = status::terminal_phase(&main, &run.restart_policy) {
        tracing::info!(pod = %run.name, phase = p, "pod finished");
        return Outcome::Finished;
    }
    loop {
        let requested = *stop.borrow();
        if let Some(req) = requested {
            run.kill_all(&plans, &mut running, &mut main, req.grace)
                .await;
            return Outcome::Stopped(req.reason);
        }
        let mut changed = false;
        for i in 0..plans.len() {
            if let Some(r) = running[i].as_mut()
                && let Ok(Some(st)) = r.child.try_wait()
            {
                let term = run.finished(&plans[i], &r.started, st);
                running[i] = None;
                let restart = run.restart_policy == "Always"
                    || (run.restart_policy == "OnFailure" && term.exit_code != 0);
                main[i].state = State::Terminated(term.clone());
                if restart {
                    main[i].last = Some(term);
                    main[i].restarts += 1;
                    main[i].state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!("back-off restarting container {}", plans[i].spec.name),
                    };
                    restart_at[i] = Some(Instant::now() + backoff(main[i].restarts));
                }
                changed = true;
            }
            if restart_at[i].is_some_and(|t| Instant::now() >= t) {
                restart_at[i] = None;
                match run.start(&plans[i]) {
                    Ok(r) => {
                        main[i].state = State::Running {
                            started: r.started.clone(),
                            pid: r.pid,
                        };
                        running[i] = Some(r);
                    }
                    Err(t) => main[i].state = State::Terminated(t),
                }
                changed = true;
            }
        }
        if changed {
            let terminal = status::terminal_phase(&main, &run.restart_policy);
            run.report(terminal.unwrap_or("Running"), &init, &main, None)
                .await;
            if let Some(p) = terminal {
                tracing::info!(pod = %run.name, phase = p, "pod finished");
                return Outcome::Finished;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Restart back-off: 1 s doubling to 30 s (kubelet uses 10 s to 5 min; shorter suits tests).
fn backoff(restarts: i32) -> Duration {
    Duration::from_secs(1u64 << restarts.clamp(0, 5).min(5)).min(Duration::from_secs(30))
}
