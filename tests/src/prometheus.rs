//! The cluster's Prometheus: its configuration (pods found through the harness's HTTP discovery
//! endpoint) and a small client for the query API that tests use.
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{IoContext, Result};

/// Scrape and discovery refresh interval: short, so tests see a new pod within seconds.
pub const SCRAPE_INTERVAL: &str = "2s";

/// Writes `prometheus.yml` scraping the pods that `discovery_url` lists.
pub fn write_config(path: &Path, discovery_url: &str) -> Result<()> {
    let body = format!(
        "# Written by kontrast-dev. Pods are discovered over HTTP because Debian's Prometheus has no\n\
         # kubernetes_sd_configs; the endpoint applies the chart's PodMonitor relabelling itself.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n  - job_name: kubernetes-pods\n    http_sd_configs:\n      - url: {discovery_url}\n        \
         refresh_interval: {SCRAPE_INTERVAL}\n"
    );
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
        let resp = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Response = resp.json().await.map_err(|e| e.to_string())?;
        if body.status != "success" {
            return Err(body.error.unwrap_or(body.status));
        }
        Ok(body.data.map(|d| d.result).unwrap_or_default())
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
