//! Label and annotation keys that several parts agree on. The operator puts them on the objects it
//! creates; Prometheus discovery (the chart's PodMonitor and the local cluster's HTTP discovery)
//! turns the `kontrast.dev/` pod labels into series labels by dropping the prefix.

/// Domain prefix of every Kontrast label and annotation.
pub const PREFIX: &str = "kontrast.dev/";
/// Name of the `ContrastiveRun` an object belongs to.
pub const RUN: &str = "kontrast.dev/run";
/// Attempt number (1-based) of the gang a worker pod belongs to.
pub const ATTEMPT: &str = "kontrast.dev/attempt";
/// Node rank of a worker pod inside its gang.
pub const NODE_RANK: &str = "kontrast.dev/node-rank";
/// Role of a pod: `worker` (training) or `eval`.
pub const ROLE: &str = "kontrast.dev/role";
/// Name of the evaluation (in `spec.evaluations`) an evaluation Job and its pod run.
pub const EVALUATION: &str = "kontrast.dev/evaluation";

/// Kueue's label naming the LocalQueue a workload is admitted through (`spec.scheduling.queueName`).
pub const KUEUE_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";

/// Annotation asking Prometheus to scrape a pod (`"true"`).
pub const SCRAPE: &str = "prometheus.io/scrape";
/// Annotation naming the port Prometheus scrapes.
pub const SCRAPE_PORT: &str = "prometheus.io/port";
/// Annotation naming the HTTP path Prometheus scrapes (default `/metrics`).
pub const SCRAPE_PATH: &str = "prometheus.io/path";

/// The Prometheus label a `kontrast.dev/` pod label becomes: the prefix dropped and every character
/// that is not valid in a Prometheus label name replaced by `_`. `None` for other labels.
pub fn series_label(pod_label: &str) -> Option<String> {
    let rest = pod_label.strip_prefix(PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    let mut out: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kontrast_labels_become_series_labels_without_the_prefix() {
        assert_eq!(series_label(RUN).as_deref(), Some("run"));
        assert_eq!(series_label(NODE_RANK).as_deref(), Some("node_rank"));
    }

    #[test]
    fn foreign_and_empty_labels_are_not_series_labels() {
        assert_eq!(series_label("app.kubernetes.io/name"), None);
        assert_eq!(series_label(PREFIX), None);
    }

    #[test]
    fn series_labels_never_start_with_a_digit() {
        assert_eq!(
            series_label("kontrast.dev/9lives").as_deref(),
            Some("_9lives")
        );
    }
}
