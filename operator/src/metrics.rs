//! The operator's Prometheus metrics. Names are listed in `docs/metrics.md`; dashboards and
//! alerts use only those.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations, by result (`ok`/`error`).
    pub reconciles: IntCounterVec,
    /// Reconcile duration in seconds.
    pub reconcile_duration: HistogramVec,
    /// Reconcile errors by reason label.
    pub errors: IntCounterVec,
    /// Runs per phase (0/1 per run and phase).
    pub run_phase: IntGaugeVec,
    /// Counted restarts per run.
    pub run_restarts: IntGaugeVec,
    /// Training progress per run: `epoch`, `step`, `loss`, `images_per_second`.
    pub run_progress: GaugeVec,
    /// Evaluation results per run, evaluation and metric.
    eval_result: GaugeVec,
    /// Evaluations per phase (0/1 per run, evaluation and phase).
    eval_phase: IntGaugeVec,
    /// Evaluation label sets per run, so they can be removed with the run.
    eval_labels: Arc<Mutex<EvalLabels>>,
}

/// What evaluation series a run has.
#[derive(Default)]
struct RunEvalLabels {
    /// (evaluation, metric) pairs of results.
    results: BTreeSet<(String, String)>,
    /// Evaluations with a phase gauge.
    phases: BTreeSet<String>,
}

/// (namespace, run) → its evaluation series.
type EvalLabels = HashMap<(String, String), RunEvalLabels>;

/// The phases an evaluation can be in, for the one-hot evaluation phase gauge.
pub const EVALUATION_PHASES: [&str; 4] = ["Pending", "Running", "Succeeded", "Failed"];

/// Fields of the progress gauge.
pub const PROGRESS_FIELDS: [&str; 4] = ["epoch", "step", "loss", "images_per_second"];

/// The phases a run can be in, for the one-hot phase gauge.
pub const PHASES: [&str; 7] = [
    "Pending",
    "Training",
    "Restarting",
    "Evaluating",
    "Succeeded",
    "Failed",
    "Suspended",
];

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "kontrast_operator_reconciles_total",
                "Reconciliations of ContrastiveRuns",
            ),
            &["result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "kontrast_operator_reconcile_duration_seconds",
                "Time spent in one reconciliation",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &[],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "kontrast_operator_reconcile_errors_total",
                "Failed reconciliations by reason",
            ),
            &["reason"],
        )?;
        let run_phase = IntGaugeVec::new(
            Opts::new(
                "kontrast_run_phase",
                "1 for the phase a run is in, 0 otherwise",
            ),
            &["namespace", "run", "phase"],
        )?;
        let run_restarts = IntGaugeVec::new(
            Opts::new(
                "kontrast_run_restarts",
                "Gang restarts counted against maxRestarts",
            ),
            &["namespace", "run"],
        )?;
        let run_progress = GaugeVec::new(
            Opts::new(
                "kontrast_run_progress",
                "Training progress reported by rank 0 (field: epoch, step, loss, images_per_second, knn_monitor_top1)",
            ),
            &["namespace", "run", "field"],
        )?;
        let eval_result = GaugeVec::new(
            Opts::new(
                "kontrast_run_evaluation_result",
                "Evaluation results copied into the run's status",
            ),
            &["namespace", "run", "evaluation", "metric"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(run_phase.clone()))?;
        registry.register(Box::new(run_restarts.clone()))?;
        registry.register(Box::new(run_progress.clone()))?;
        let eval_phase = IntGaugeVec::new(
            Opts::new(
                "kontrast_run_evaluation_phase",
                "1 for each evaluation's phase, 0 for the others",
            ),
            &["namespace", "run", "evaluation", "phase"],
        )?;
        registry.register(Box::new(eval_result.clone()))?;
        registry.register(Box::new(eval_phase.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            run_phase,
            run_restarts,
            run_progress,
            eval_result,
            eval_phase,
            eval_labels: Arc::default(),
        })
    }

    /// Sets the one-hot phase gauge of a run.
    pub fn set_phase(&self, namespace: &str, run: &str, phase: &str) {
        for p in PHASES {
            self.run_phase
                .with_label_values(&[namespace, run, p])
                .set(i64::from(p == phase));
        }
    }

    /// Sets one evaluation result of a run.
    pub fn set_eval(&self, namespace: &str, run: &str, evaluation: &str, metric: &str, value: f64) {
        self.eval_result
            .with_label_values(&[namespace, run, evaluation, metric])
            .set(value);
        if let Ok(mut m) = self.eval_labels.lock() {
            m.entry((namespace.into(), run.into()))
                .or_default()
                .results
                .insert((evaluation.into(), metric.into()));
        }
    }

    /// Sets the one-hot phase gauge of one evaluation of a run.
    pub fn set_eval_phase(&self, namespace: &str, run: &str, evaluation: &str, phase: &str) {
        for p in EVALUATION_PHASES {
            self.eval_phase
                .with_label_values(&[namespace, run, evaluation, p])
                .set(i64::from(p == phase));
        }
        if let Ok(mut m) = self.eval_labels.lock() {
            m.entry((namespace.into(), run.into()))
                .or_default()
                .phases
                .insert(evaluation.into());
        }
    }

    /// Forgets every series of a deleted run.
    pub fn forget_run(&self, namespace: &str, run: &str) {
        for p in PHASES {
            let _ = self.run_phase.remove_label_values(&[namespace, run, p]);
        }
        for f in PROGRESS_FIELDS {
            let _ = self.run_progress.remove_label_values(&[namespace, run, f]);
        }
        let _ = self.run_restarts.remove_label_values(&[namespace, run]);
        let evals = self
            .eval_labels
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&(namespace.into(), run.into())));
        let Some(evals) = evals else {
            return;
        };
        for (e, metric) in &evals.results {
            let _ = self.eval_result.remove_label_values(&[
                namespace,
                run,
                e.as_str(),
                metric.as_str(),
            ]);
        }
        for e in &evals.phases {
            for p in EVALUATION_PHASES {
                let _ = self
                    .eval_phase
                    .remove_label_values(&[namespace, run, e.as_str(), p]);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_phase_is_one_hot_and_forgotten_with_the_run() {
        let m = Metrics::new().unwrap();
        m.set_phase("ns", "r", "Training");
        m.set_eval("ns", "r", "knn", "top1", 61.5);
        m.set_eval_phase("ns", "r", "knn", "Failed");
        let text = m.render();
        assert!(
            text.contains(r#"kontrast_run_evaluation_phase{evaluation="knn",namespace="ns",phase="Failed",run="r"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kontrast_run_evaluation_phase{evaluation="knn",namespace="ns",phase="Running",run="r"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kontrast_run_phase{namespace="ns",phase="Training",run="r"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kontrast_run_phase{namespace="ns",phase="Failed",run="r"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"kontrast_run_evaluation_result{evaluation="knn",metric="top1",namespace="ns",run="r"} 61.5"#), "{text}");
        m.forget_run("ns", "r");
        assert!(!m.render().contains(r#"run="r""#));
    }
}
