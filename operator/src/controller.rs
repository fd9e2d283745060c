//! Reconciling `ContrastiveRun`s: validate and resolve the spec, apply the owned objects, drive the
//! gang through attempts ([`crate::gang`]), run the evaluations, and write a status that explains
//! every state.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kontrast_api::config::RunConfig;
use kontrast_api::labels;
use kontrast_api::v1alpha1::{
    CheckpointRef, ContrastiveRun, ContrastiveRunStatus, EvaluationPhase, EvaluationStatus,
    Failure, KnnMonitorFailure, KnnMonitorResult, Progress, RunPhase, condition, reason,
};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Resource, ResourceExt,
};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use serde_json::json;

use crate::cache;
use crate::gang::{self, Decision, GangState, PERMANENT_EXIT_CODE, PodView};
use crate::metrics::Metrics;
use crate::objects::{self, names};
use crate::{Error, Result, conditions, progress, stall};

/// Field manager of every server-side apply.
pub const MANAGER: &str = "kontrast-operator";
/// How often a training gang's progress is polled.
const POLL: Duration = Duration::from_secs(3);

/// What reconciliations share.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// HTTP client for rank 0's progress endpoint.
    pub http: reqwest::Client,
    /// Caches of the owned ConfigMaps and Services.
    pub owned: crate::cache::Owned,
    /// The stall clock of every training run.
    pub stall: crate::stall::Clocks,
}

fn kube_err(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let operation = operation.into();
    move |e| Error::Kube {
        operation,
        message: e.to_string(),
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn pod_view(p: &Pod) -> Option<PodView> {
    let labels = p.metadata.labels.as_ref()?;
    let attempt = labels.get(labels::ATTEMPT)?.parse().ok()?;
    let rank = labels.get(labels::NODE_RANK)?.parse().ok()?;
    let status = p.status.clone().unwrap_or_default();
    let terminated = status.container_statuses.iter().flatten().find_map(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .filter(|t| t.exit_code != 0)
            .or_else(|| c.state.as_ref().and_then(|s| s.terminated.clone()))
    });
    let tail = |m: String| {
        let m = m.trim();
        let start = m.len().saturating_sub(1024);
        let start = (start..m.len())
            .find(|i| m.is_char_boundary(*i))
            .unwrap_or(m.len());
        m[start..].to_string()
    };
    Some(PodView {
        name: p.name_any(),
        attempt,
        rank,
        phase: status.phase.clone().unwrap_or_else(|| "Pending".into()),
        deleting: p.metadata.deletion_timestamp.is_some(),
        // The deletion timestamp is when the grace period ends, not when deletion was asked for.
        deleted_at: p
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_second() - p.metadata.deletion_grace_period_seconds.unwrap_or(0)),
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        reason: status
            .reason
            .clone()
            .or_else(|| terminated.as_ref().and_then(|t| t.reason.clone())),
        finished_at: terminated
            .as_ref()
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0.as_second()),
        message: terminated
            .and_then(|t| t.message)
            .or(status.message)
            .map(tail),
    })
}

struct Run<'a> {
    ctx: &'a Context,
    run: &'a ContrastiveRun,
    name: String,
    ns: String,
    runs: Api<ContrastiveRun>,
    pods: Api<Pod>,
    status: ContrastiveRunStatus,
}

impl Run<'_> {
    async fn event(&self, kind: EventType, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: kind,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&ev, &self.run.object_ref(&()))
            .await
        {
            tracing::warn!(run = %self.name, error = %e, "publishing an event failed");
        }
    }

    async fn save_status(&mut self) -> Result<()> {
        self.status.observed_generation = self.run.metadata.generation;
        // Nothing changed since the status this reconcile started from: no write.
        if self.run.status.as_ref() == Some(&self.status) {
            self.record_status_metrics();
            return Ok(());
        }
        let body = json!({"apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun", "status": self.status});
        self.runs
            .patch_status(
                &self.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(kube_err(format!("apply status of {}", self.name)))?;
        self.record_status_metrics();
        Ok(())
    }

    fn record_status_metrics(&self) {
        let phase = self.status.phase.unwrap_or(RunPhase::Pending);
        self.ctx
            .metrics
            .set_phase(&self.ns, &self.name, phase.as_str());
        self.ctx
            .metrics
            .run_restarts
            .with_label_values(&[&self.ns, &self.name])
            .set(i64::from(self.status.restarts));
    }

    async fn apply<K>(&self, api: &Api<K>, name: &str, obj: &K) -> Result<()>
    where
        K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(kube_err(format!("apply {name}")))?;
        Ok(())
    }

    fn set_phase(&mut self, phase: RunPhase) {
        self.status.phase = Some(phase);
    }

    fn condition(&mut self, kind: &str, status: bool, reason: &str, message: &str) {
        conditions::set(
            &mut self.status.conditions,
            kind,
            status,
            reason,
            message,
            self.run.metadata.generation,
        );
    }

    async fn worker_pods(&self) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!(
            "{}={},{}=worker",
            labels::RUN,
            self.name,
            labels::ROLE
        ));
        Ok(self
            .pods
            .list(&lp)
            .await
            .map_err(kube_err(format!("list pods of {}", self.name)))?
            .items)
    }

    async fn delete_pods(&self, names: &[String]) -> Result<()> {
        for n in names {
            match self.pods.delete(n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err(format!("delete pod {n}"))(e)),
            }
        }
        Ok(())
    }

    async fn invalid(&mut self, message: String) -> Result<Action> {
        tracing::info!(run = %self.name, %message, "invalid spec");
        let first = self
            .status
            .conditions
            .iter()
            .all(|c| c.reason != reason::INVALID_SPEC || c.message != message);
        self.set_phase(RunPhase::Failed);
        self.condition(condition::READY, false, reason::INVALID_SPEC, &message);
        self.condition(condition::FAILED, true, reason::INVALID_SPEC, &message);
        self.save_status().await?;
        if first {
            self.event(
                EventType::Warning,
                reason::INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
        }
        Ok(Action::await_change())
    }

    async fn fail(&mut self, why: &str, message: String) -> Result<Action> {
        self.ctx.stall.forget(&self.clock_key());
        self.set_phase(RunPhase::Failed);
        self.status.completion_time = Some(now());
        self.condition(condition::TRAINING, false, why, &message);
        self.condition(condition::FAILED, true, why, &message);
        self.condition(condition::READY, false, why, &message);
        self.save_status().await?;
        self.event(EventType::Warning, why, "Fail", message).await;
        let pods: Vec<String> = self
            .worker_pods()
            .await?
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        self.delete_pods(&pods).await?;
        Ok(Action::await_change())
    }

    async fn attempt_failed(&mut self, f: gang::Failure, attempt: u32) -> Result<Action> {
        let record = Failure {
            attempt: Some(attempt),
            pod: Some(f.pod.clone()),
            rank: Some(f.rank),
            exit_code: f.exit_code,
            reason: f.reason.clone(),
            message: f.message.clone(),
            counted: f.counted,
            time: Some(now()),
        };
        self.status.last_failure = Some(record);
        let code = f
            .exit_code
            .map(|c| format!(" with exit code {c}"))
            .unwrap_or_default();
        let what = format!(
            "attempt {attempt}: rank {} ({}) failed{code}: {} [{}]",
            f.rank, f.pod, f.message, f.reason
        );
        if f.exit_code == Some(PERMANENT_EXIT_CODE) {
            return self
                .fail(
                    reason::PERMANENT_ERROR,
                    format!("{what}; the error is permanent, not retrying"),
                )
                .await;
        }
        let max = self.run.spec.failure_policy.max_restarts;
        if f.counted && self.status.restarts >= max {
            return self
                .fail(
                    reason::RESTARTS_EXHAUSTED,
                    format!("{what}; maxRestarts ({max}) exhausted"),
                )
                .await;
        }
        if f.counted {
            self.status.restarts += 1;
        } else {
            self.status.disruptions += 1;
        }
        let why = match f.reason.as_str() {
            "Stalled" => reason::STALLED,
            _ if !f.counted => reason::DISRUPTED,
            _ => reason::RANK_FAILED,
        };
        self.status.attempt = Some(attempt + 1);
        self.set_phase(RunPhase::Restarting);
        let message = format!(
            "{what}; restarting the gang as attempt {} from the last checkpoint",
            attempt + 1
        );
        self.condition(condition::TRAINING, false, why, &message);
        // The status is written before any pod is deleted: a crash in between repeats the
        // deletion, never loses the failure.
        self.save_status().await?;
        self.event(EventType::Warning, why, "Restart", message)
            .await;
        let pods: Vec<String> = self
            .worker_pods()
            .await?
            .iter()
            .filter(|p| pod_view(p).is_some_and(|v| v.attempt == attempt))
            .map(ResourceExt::name_any)
            .collect();
        self.delete_pods(&pods).await?;
        Ok(Action::requeue(Duration::from_secs(1)))
    }

    fn record_progress(&mut self, r: progress::Report) {
        let previous = self.status.progress.clone();
        let advanced = previous.as_ref().is_none_or(|p| r.step != p.step);
        let updated_at = if advanced {
            Some(now())
        } else {
            previous.as_ref().and_then(|p| p.updated_at.clone())
        };
        self.status.progress = Some(Progress {
            epoch: r.epoch,
            step: r.step,
            total_steps: r.total_steps,
            images_per_second: r.images_per_second,
            loss: r.loss,
            knn_monitor: r.knn_monitor.map(|k| KnnMonitorResult {
                epoch: k.epoch,
                top1: k.top1,
                top5: k.top5,
            }),
            knn_monitor_failure: r.knn_monitor_failure.map(|f| KnnMonitorFailure {
                epoch: f.epoch,
                error: f.error,
            }),
            updated_at,
        });
        if let Some(c) = r.checkpoint {
            self.status.last_checkpoint = Some(CheckpointRef {
                epoch: c.epoch,
                path: c.path,
                time: Some(now()),
            });
        }
        let m = &self.ctx.metrics.run_progress;
        m.with_label_values(&[&self.ns, &self.name, "epoch"])
            .set(f64::from(r.epoch));
        m.with_label_values(&[&self.ns, &self.name, "step"])
            .set(r.step as f64);
        if let Some(l) = r.loss {
            m.with_label_values(&[&self.ns, &self.name, "loss"]).set(l);
        }
        if let Some(ips) = r.images_per_second {
            m.with_label_values(&[&self.ns, &self.name, "images_per_second"])
                .set(ips);
        }
        if let Some(k) = r.knn_monitor {
            m.with_label_values(&[&self.ns, &self.name, "knn_monitor_top1"])
                .set(k.top1);
        }
    }

    async fn poll_progress(&mut self, pods: &[Pod], attempt: u32) -> Option<gang::Failure> {
        let rank0 = pods
            .iter()
            .find(|p| pod_view(p).is_some_and(|v| v.rank == 0))?;
        let ip = rank0.status.as_ref()?.pod_ip.clone()?;
        let report = progress::fetch(&self.ctx.http, &ip, self.run.spec.metrics.port).await;
        let step = report.as_ref().map(|r| r.step);
        if let Some(r) = report {
            self.record_progress(r);
        }
        let idle = self.ctx.stall.observe(
            &self.clock_key(),
            stall::Observation {
                attempt,
                step,
                all_started: pods
                    .iter()
                    .filter_map(pod_view)
                    .all(|v| v.phase == "Running"),
            },
            Instant::now(),
        );
        let limit = self.run.spec.failure_policy.stall_timeout_seconds()?;
        let idle = idle.as_secs_f64();
        (idle > limit).then(|| gang::Failure {
            pod: rank0.name_any(),
            rank: 0,
            exit_code: None,
            reason: "Stalled".into(),
            message: format!(
                "no training step for {idle:.0}s (stallTimeout {})",
                self.run.spec.failure_policy.stall_timeout
            ),
            counted: true,
        })
    }

    fn clock_key(&self) -> String {
        self.run
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.ns, self.name))
    }

    async fn train(&mut self, config: &RunConfig) -> Result<Action> {
        let attempt = self.status.attempt.unwrap_or(1);
        self.status.attempt = Some(attempt);
        let created = self.status.phase == Some(RunPhase::Training);
        // The cache answers only for a whole, live gang of this attempt (the steady state);
        // anything else — a pod missing, failed, finished or of another attempt, which a lagging
        // cache could also show — is read from the apiserver before a decision is made on it.
        let cached = self.ctx.owned.pods(
            &self.ns,
            &[(labels::RUN, self.name.as_str()), (labels::ROLE, "worker")],
        );
        let cached_views: Vec<PodView> = cached.iter().filter_map(pod_view).collect();
        let whole = created
            && cached_views.len() == self.run.spec.nodes as usize
            && cached_views.iter().all(|v| {
                v.attempt == attempt
                    && !v.deleting
                    && matches!(v.phase.as_str(), "Pending" | "Running")
            });
        let pods = if whole {
            cached
        } else {
            self.worker_pods().await?
        };
        let views: Vec<PodView> = pods.iter().filter_map(pod_view).collect();
        let state = GangState {
            attempt,
            nodes: self.run.spec.nodes,
            created,
        };
        match gang::decide(state, &views) {
            Decision::RemoveStale(stale) => {
                self.delete_pods(&stale).await?;
                if self.status.phase.is_none() {
                    self.set_phase(RunPhase::Pending);
                    self.save_status().await?;
                }
                Ok(Action::requeue(Duration::from_secs(1)))
            }
            Decision::Create(ranks) => {
                if let Some((scheduler, group)) = objects::pod_group::build(self.run, attempt) {
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        self.ctx.client.clone(),
                        &self.ns,
                        &objects::pod_group::api_resource(scheduler),
                    );
                    let group_name = objects::pod_group::name(&self.name, attempt);
                    api.patch(
                        &group_name,
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&group),
                    )
                    .await
                    .map_err(kube_err(format!(
                        "apply {scheduler:?} PodGroup {group_name} (is that scheduler installed?)"
                    )))?;
                }
                for rank in &ranks {
                    let pod = objects::pod::build(self.run, config, attempt, *rank);
                    self.apply(&self.pods, &names::pod(&self.name, attempt, *rank), &pod)
                        .await?;
                }
                tracing::info!(run = %self.name, attempt, ranks = ?ranks, "created worker pods");
                self.status.start_time.get_or_insert_with(now);
                self.set_phase(RunPhase::Training);
                let msg = format!(
                    "attempt {attempt}: {} worker pods created",
                    self.run.spec.nodes
                );
                self.condition(condition::TRAINING, true, "GangCreated", &msg);
                self.condition(condition::READY, true, "Valid", "the spec is valid");
                self.save_status().await?;
                self.event(EventType::Normal, "GangCreated", "Create", msg)
                    .await;
                Ok(Action::requeue(POLL))
            }
            Decision::Running => {
                let Some(stall) = self.poll_progress(&pods, attempt).await else {
                    self.save_status().await?;
                    return Ok(Action::requeue(POLL));
                };
                if whole {
                    // A silent rank 0 may have finished or failed where the cache cannot see it
                    // yet (it lags after an outage): only the apiserver's pods may restart a gang.
                    let fresh = self.worker_pods().await?;
                    let views: Vec<PodView> = fresh.iter().filter_map(pod_view).collect();
                    if gang::decide(state, &views) != Decision::Running {
                        self.save_status().await?;
                        return Ok(Action::requeue(Duration::from_secs(1)));
                    }
                }
                self.attempt_failed(stall, attempt).await
            }
            Decision::AttemptFailed(f) => self.attempt_failed(f, attempt).await,
            Decision::Succeeded => {
                self.ctx.stall.forget(&self.clock_key());
                // Rank 0 leaves its final progress report as its termination message.
                let last = pods
                    .iter()
                    .find(|p| pod_view(p).is_some_and(|v| v.rank == 0))
                    .and_then(termination_message);
                if let Some(r) =
                    last.and_then(|m| serde_json::from_str::<progress::Report>(m.trim()).ok())
                {
                    self.record_progress(r);
                }
                let msg = format!(
                    "all {} ranks of attempt {attempt} finished",
                    self.run.spec.nodes
                );
                self.condition(condition::TRAINING, false, "Completed", &msg);
                if config.evaluations.is_empty() {
                    return self.succeed().await;
                }
                self.set_phase(RunPhase::Evaluating);
                self.condition(
                    condition::EVALUATING,
                    true,
                    "JobsCreated",
                    "evaluation Jobs running",
                );
                self.save_status().await?;
                self.event(EventType::Normal, "TrainingSucceeded", "Train", msg)
                    .await;
                Ok(Action::requeue(Duration::from_secs(1)))
            }
        }
    }

    async fn succeed(&mut self) -> Result<Action> {
        self.set_phase(RunPhase::Succeeded);
        self.status.completion_time = Some(now());
        let failed: Vec<String> = self
            .status
            .evaluations
            .iter()
            .filter(|e| e.phase == EvaluationPhase::Failed)
            .map(|e| e.name.clone())
            .collect();
        let msg = if failed.is_empty() {
            "training and evaluations finished".to_string()
        } else {
            format!(
                "training finished; evaluations failed: {}",
                failed.join(", ")
            )
        };
        self.condition(condition::SUCCEEDED, true, "Completed", &msg);
        self.save_status().await?;
        self.event(EventType::Normal, "Succeeded", "Complete", msg)
            .await;
        Ok(Action::await_change())
    }

    async fn evaluate(&mut self, config: &RunConfig) -> Result<Action> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let mut all_done = true;
        for spec in &self.run.spec.evaluations {
            let job_name = names::eval_job(&self.name, &spec.name);
            let job = objects::job::build(self.run, spec);
            if jobs
                .get_opt(&job_name)
                .await
                .map_err(kube_err(format!("get job {job_name}")))?
                .is_none()
            {
                self.apply(&jobs, &job_name, &job).await?;
            }
            let current = jobs
                .get_opt(&job_name)
                .await
                .map_err(kube_err(format!("get job {job_name}")))?;
            let js = current.and_then(|j| j.status).unwrap_or_default();
            let (phase, message) = if js.succeeded.unwrap_or(0) > 0 {
                match self.eval_result(&job_name).await? {
                    Ok(metrics) => {
                        for (k, v) in &metrics {
                            self.ctx
                                .metrics
                                .set_eval(&self.ns, &self.name, &spec.name, k, *v);
                        }
                        self.status.results.insert(spec.name.clone(), metrics);
                        (EvaluationPhase::Succeeded, None)
                    }
                    Err(e) => (EvaluationPhase::Failed, Some(e)),
                }
            } else if js.failed.unwrap_or(0) > 0 {
                let msg = self
                    .eval_pod_message(&job_name)
                    .await
                    .unwrap_or_else(|| "the evaluation Job failed".into());
                (EvaluationPhase::Failed, Some(msg))
            } else {
                all_done = false;
                (EvaluationPhase::Running, None)
            };
            let phase_name = match phase {
                EvaluationPhase::Pending => "Pending",
                EvaluationPhase::Running => "Running",
                EvaluationPhase::Succeeded => "Succeeded",
                EvaluationPhase::Failed => "Failed",
            };
            self.ctx
                .metrics
                .set_eval_phase(&self.ns, &self.name, &spec.name, phase_name);
            let entry = EvaluationStatus {
                name: spec.name.clone(),
                phase,
                job: Some(job_name.clone()),
                message: message.clone(),
                completion_time: matches!(
                    phase,
                    EvaluationPhase::Succeeded | EvaluationPhase::Failed
                )
                .then(now),
            };
            let previous = self
                .status
                .evaluations
                .iter()
                .position(|e| e.name == spec.name);
            let newly_failed = phase == EvaluationPhase::Failed
                && previous
                    .is_none_or(|i| self.status.evaluations[i].phase != EvaluationPhase::Failed);
            match previous {
                Some(i) if self.status.evaluations[i].phase == phase => {}
                Some(i) => self.status.evaluations[i] = entry,
                None => self.status.evaluations.push(entry),
            }
            if newly_failed {
                let msg = format!(
                    "evaluation {} failed: {}",
                    spec.name,
                    message.unwrap_or_default()
                );
                self.condition(
                    condition::EVALUATING,
                    false,
                    reason::EVALUATION_FAILED,
                    &msg,
                );
                self.event(
                    EventType::Warning,
                    reason::EVALUATION_FAILED,
                    "Evaluate",
                    msg,
                )
                .await;
            }
        }
        let _ = config;
        if all_done {
            if self
                .status
                .evaluations
                .iter()
                .all(|e| e.phase == EvaluationPhase::Succeeded)
            {
                self.condition(
                    condition::EVALUATING,
                    false,
                    "Completed",
                    "every evaluation finished",
                );
            }
            return self.succeed().await;
        }
        self.save_status().await?;
        Ok(Action::requeue(POLL))
    }

    async fn eval_pod_message(&self, job: &str) -> Option<String> {
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let pods = self.pods.list(&lp).await.ok()?;
        pods.items.iter().find_map(termination_message)
    }

    /// The metrics of a succeeded evaluation, from its pod's termination message.
    async fn eval_result(&self, job: &str) -> Result<Result<BTreeMap<String, f64>, String>> {
        let Some(msg) = self.eval_pod_message(job).await else {
            return Ok(Err("the evaluation pod left no termination message".into()));
        };
        Ok(parse_result(&msg))
    }
}

/// The first container's termination message.
fn termination_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

/// Reads `{"metrics": {"name": number, …}, …}` from an evaluation's termination message.
pub fn parse_result(message: &str) -> Result<BTreeMap<String, f64>, String> {
    let v: serde_json::Value = serde_json::from_str(message.trim())
        .map_err(|e| format!("result is not JSON ({e}): {}", message.trim()))?;
    let metrics = v
        .get("metrics")
        .and_then(|m| m.as_object())
        .ok_or_else(|| "result has no \"metrics\" object".to_string())?;
    Ok(metrics
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
        .collect())
}

async fn reconcile(run: Arc<ContrastiveRun>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values::<&str>(&[])
        .start_timer();
    let result = reconcile_run(&run, &ctx).await;
    timer.observe_duration();
    ctx.metrics
        .reconciles
        .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
        .inc();
    result
}

async fn reconcile_run(run: &ContrastiveRun, ctx: &Context) -> Result<Action> {
    let name = run.name_any();
    let ns = run.namespace().unwrap_or_else(|| "default".into());
    if run.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget_run(&ns, &name);
        return Ok(Action::await_change());
    }
    let mut r = Run {
        ctx,
        run,
        name: name.clone(),
        ns: ns.clone(),
        runs: Api::namespaced(ctx.client.clone(), &ns),
        pods: Api::namespaced(ctx.client.clone(), &ns),
        status: run.status.clone().unwrap_or_default(),
    };
    let invalid_before = conditions::get(&r.status.conditions, condition::READY)
        .is_some_and(|c| c.reason == reason::INVALID_SPEC);
    let spec_changed = r.status.observed_generation != run.metadata.generation;
    if name.len() > names::MAX_RUN_NAME {
        return r.invalid(format!("metadata.name: at most {} characters (the workers' DNS names derive from it), not {}", names::MAX_RUN_NAME, name.len())).await;
    }
    let config = match run.spec.resolve() {
        Ok(c) => c,
        Err(e) => return r.invalid(e.to_string()).await,
    };
    if invalid_before && spec_changed {
        // A corrected spec starts the run afresh.
        r.status = ContrastiveRunStatus::default();
    }
    if matches!(
        r.status.phase,
        Some(RunPhase::Succeeded) | Some(RunPhase::Failed)
    ) {
        ctx.metrics.set_phase(
            &ns,
            &name,
            r.status.phase.unwrap_or(RunPhase::Failed).as_str(),
        );
        return Ok(Action::await_change());
    }
    // The ConfigMap and Service change only with the spec: applied when the cache says they are
    // missing or differ, so a steady reconcile writes nothing.
    let mut cm = objects::config_map::build(run, &config);
    let hash = cache::mark(&mut cm);
    let cm_name = names::config_map(&name);
    if !ctx.owned.config_map_is(&ns, &cm_name, &cm, &hash) {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        r.apply(&cms, &cm_name, &cm).await?;
    }
    let mut svc = objects::service::build(run);
    let hash = cache::mark(&mut svc);
    let svc_name = names::service(&name);
    if !ctx.owned.service_is(&ns, &svc_name, &svc, &hash) {
        let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
        r.apply(&svcs, &svc_name, &svc).await?;
    }

    if run.spec.suspend {
        let pods: Vec<String> = r
            .worker_pods()
            .await?
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        r.delete_pods(&pods).await?;
        if r.status.phase != Some(RunPhase::Suspended) {
            r.set_phase(RunPhase::Suspended);
            r.condition(
                condition::TRAINING,
                false,
                reason::SUSPENDED,
                "spec.suspend is true: the gang is stopped and resumes from its last checkpoint",
            );
            r.save_status().await?;
            r.event(
                EventType::Normal,
                reason::SUSPENDED,
                "Suspend",
                "gang stopped".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    if r.status.phase == Some(RunPhase::Suspended) {
        // Resume: a new attempt, not counted, restarts from the last checkpoint.
        r.status.attempt = Some(r.status.attempt.unwrap_or(1) + 1);
        r.set_phase(RunPhase::Restarting);
        r.save_status().await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    match r.status.phase {
        Some(RunPhase::Evaluating) => r.evaluate(&config).await,
        _ => r.train(&config).await,
    }
}

fn error_policy(run: Arc<ContrastiveRun>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(run = %run.name_any(), %error, "reconcile failed");
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until `shutdown` resolves. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        client: &kube::Client,
        ns: &Option<String>,
    ) -> Api<K> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let runs: Api<ContrastiveRun> = api(&client, &namespace);
    let pods: Api<Pod> = api(&client, &namespace);
    let svcs: Api<Service> = api(&client, &namespace);
    let cms: Api<ConfigMap> = api(&client, &namespace);
    let jobs: Api<Job> = api(&client, &namespace);
    let owned = watcher::Config::default().labels(labels::RUN);
    Controller::new(runs, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .owns(pods, owned.clone())
        .owns(svcs, owned.clone())
        .owns(cms, owned.clone())
        .owns(jobs, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_results_are_read_from_the_metrics_object() {
        let r = parse_result(
            r#"{"evaluation":"knn","kind":"knn","metrics":{"top1":61.5,"top5":88.0,"note":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            BTreeMap::from([("top1".to_string(), 61.5), ("top5".to_string(), 88.0)])
        );
        assert!(parse_result("not json").unwrap_err().contains("not JSON"));
        assert!(parse_result("{}").unwrap_err().contains("metrics"));
    }
}
