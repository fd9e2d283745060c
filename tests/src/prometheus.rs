//! The cluster's Prometheus: its configuration (pods found through the harness's HTTP discovery
//! endpoint) and a small client for the query API that tests use.
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{IoContext, Result};

/// Scrape and discovery refresh interval: short, so tests see a new pod within seconds.
pub const SCRAPE_INTERVAL: &str = "2s";

/// How the cluster's Prometheus scrapes its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeOptions {
    /// Scrape, rule evaluation and discovery refresh interval (a Prometheus duration, e.g. `1s`).
    pub interval: String,
    /// Scrape the way the chart's ServiceMonitor and PodMonitor do: keep the labels a target
    /// exports itself over the target's (`honorLabels: true`, so the operator's per-run
    /// `namespace` survives) and drop worker pods other than node rank 0, which serve no
    /// metrics (`monitoring.podMonitor.onlyRankZero`).
    pub chart_monitors: bool,
}

impl Default for ScrapeOptions {
    fn default() -> Self {
        Self {
            interval: SCRAPE_INTERVAL.to_string(),
            chart_monitors: false,
        }
    }
}

/// Writes `prometheus.yml` scraping the pods that `discovery_url` lists.
pub fn write_config(path: &Path, discovery_url: &str) -> Result<()> {
    write_config_with(path, discovery_url, &ScrapeOptions::default())
}

/// Writes `prometheus.yml` scraping the pods that `discovery_url` lists, as `opts` says.
pub fn write_config_with(path: &Path, discovery_url: &str, opts: &ScrapeOptions) -> Result<()> {
    let interval = &opts.interval;
    let mut body = format!(
        "# Written by kontrast-dev. Pods are discovered over HTTP because Debian's Prometheus has no\n\
         # kubernetes_sd_configs; the endpoint applies the chart's PodMonitor relabelling itself.\n\
         global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
         scrape_configs:\n  - job_name: kubernetes-pods\n    http_sd_configs:\n      - url: {discovery_url}\n        \
         refresh_interval: {interval}\n"
    );
    if opts.chart_monitors {
        // `role` and `node_rank` are the discovery's names for the kontrast.dev/ pod labels.
        body.push_str(
            "    honor_labels: true\n    relabel_configs:\n      - source_labels: [role, node_rank]\n        \
             separator: ;\n        regex: 'worker;[1-9][0-9]*'\n        action: drop\n",
        );
    }
    std::fs::write(path, body).io("writing", path)
}

/// One series of an instant query's result.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    /// The series labels.
    pub metric: std::collections::BTreeMap<String, String>,
    /// `[timestamp, "value"]`.
    pub value: (f64, String),
}

impl Sample {
    /// The sample value as a number (NaN when unparsable).
    pub fn number(&self) -> f64 {
        self.value.1.parse().unwrap_or(f64::NAN)
    }
}

/// One series of a range selector's result: its stored samples.
#[derive(Debug, Clone, Deserialize)]
pub struct RawSeries {
    /// The series labels.
    pub metric: std::collections::BTreeMap<String, String>,
    /// `[timestamp, "value"]` pairs, oldest first.
    pub values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct MatrixResponse {
    status: String,
    #[serde(default)]
    data: Option<MatrixData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct MatrixData {
    #[serde(default)]
    result: Vec<RawSeries>,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Sample>,
}

/// A client for one Prometheus server's HTTP API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// A client for the server at `base` (e.g. `http://127.12.0.1:9090`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Runs an instant query; an error status from the server becomes `Err`.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        self.instant(&[("query", promql)]).await
    }

    /// Runs an instant query evaluated at `time` (Unix seconds), as a dashboard showing that
    /// moment would.
    pub async fn query_at(&self, promql: &str, time: f64) -> Result<Vec<Sample>, String> {
        self.instant(&[("query", promql), ("time", &format!("{time:.3}"))])
            .await
    }

    async fn instant(&self, params: &[(&str, &str)]) -> Result<Vec<Sample>, String> {
        let body: Response = self.get("query", params).await?;
        if body.status != "success" {
            return Err(body.error.unwrap_or(body.status));
        }
        Ok(body.data.map(|d| d.result).unwrap_or_default())
    }

    /// The raw samples a range selector (e.g. `up{job="x"}[10m]`) holds now, with their scrape
    /// timestamps: what was stored, without any evaluation over time.
    pub async fn raw_samples(&self, range_selector: &str) -> Result<Vec<RawSeries>, String> {
        let body: MatrixResponse = self.get("query", &[("query", range_selector)]).await?;
        if body.status != "success" {
            return Err(body.error.unwrap_or(body.status));
        }
        Ok(body.data.map(|d| d.result).unwrap_or_default())
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<T, String> {
        let resp = self
            .http
            .get(format!("{}/api/v1/{endpoint}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }

    /// The server's active scrape targets as raw JSON (for diagnostics).
    pub async fn targets(&self) -> Result<serde_json::Value, String> {
        let resp = self
            .http
            .get(format!("{}/api/v1/targets", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(opts: &ScrapeOptions) -> String {
        let dir = std::env::temp_dir().join(format!("kontrast-prom-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("prometheus-{}.yml", opts.chart_monitors));
        write_config_with(&file, "http://127.0.0.1:9091/sd/pods", opts).unwrap();
        // promtool (Debian's prometheus) checks the file the way the server loads it.
        let out = std::process::Command::new("promtool")
            .args(["check", "config"])
            .arg(&file)
            .output()
            .expect("promtool is installed with Debian's prometheus (scripts/setup-packages.sh)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        text
    }

    #[test]
    fn the_default_config_is_valid_and_unchanged() {
        let text = config(&ScrapeOptions::default());
        assert!(text.contains("scrape_interval: 2s"), "{text}");
        assert!(!text.contains("honor_labels"), "{text}");
        assert!(!text.contains("relabel_configs"), "{text}");
    }

    #[test]
    fn the_chart_monitors_config_is_valid_and_honours_labels() {
        let text = config(&ScrapeOptions {
            interval: "1s".into(),
            chart_monitors: true,
        });
        assert!(text.contains("scrape_interval: 1s"), "{text}");
        assert!(text.contains("refresh_interval: 1s"), "{text}");
        assert!(text.contains("honor_labels: true"), "{text}");
        assert!(text.contains("action: drop"), "{text}");
    }
}
