//! Reading rank 0's progress endpoint (`GET http://<pod IP>:<metrics port>/progress`), the
//! source of `status.progress` and of stall detection. The report type is the API's.
use std::time::Duration;

pub use kontrast_api::progress::{CheckpointReport, Report};

/// Fetches the report; `None` when rank 0 does not answer (yet).
pub async fn fetch(http: &reqwest::Client, ip: &str, port: u16) -> Option<Report> {
    let url = format!("http://{ip}:{port}/progress");
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}
