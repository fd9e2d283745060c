//! The part of kubelet's HTTPS API the apiserver proxies for `kubectl logs`:
//! `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines` and
//! `limitBytes`. TLS with the cluster CA's serving certificate; only clients presenting a
//! certificate from the same CA (the apiserver's kubelet-client certificate) are served.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Shared, paths};

/// TLS material of the kubelet API.
#[derive(Debug, Clone)]
pub struct KubeletTls {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// CA that client certificates must chain to.
    pub client_ca: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    tail_lines: Option<usize>,
    #[serde(default)]
    limit_bytes: Option<usize>,
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &text[text.len()..];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let dir = paths::pod_dir(&shared.cfg.state_dir, &ns, &pod);
    let file = dir
        .join("logs")
        .join(format!("{}.log", container.replace('/', "_")));
    let Ok(bytes) = tokio::fs::read(&file).await else {
        return (
            StatusCode::NOT_FOUND,
            format!("no logs for container {container:?} of pod {ns}/{pod} on this node\n"),
        )
            .into_response();
    };
    let mut start = bytes.len()
        - q.tail_lines
            .map(|n| tail_lines(&bytes, n).len())
            .unwrap_or(bytes.len());
    if let Some(limit) = q.limit_bytes {
        let end = (start + limit).min(bytes.len());
        return Body::from(bytes[start..end].to_vec()).into_response();
    }
    let follow = matches!(q.follow.as_deref(), Some("true") | Some("1"));
    if !follow {
        return Body::from(bytes[start..].to_vec()).into_response();
    }
    let key = format!("{ns}/{pod}");
    let initial = bytes[start..].to_vec();
    start = bytes.len();
    let stream = futures::stream::unfold(
        (Some(initial), start as u64, file, shared, key),
        |(first, pos, file, shared, key)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<_, std::io::Error>(first),
                    (None, pos, file, shared, key),
                ));
            }
            loop {
                let chunk = read_from(&file, pos).await.unwrap_or_default();
                if !chunk.is_empty() {
                    let next = pos + chunk.len() as u64;
                    return Some((Ok(chunk), (None, next, file, shared, key)));
                }
                let active = shared
                    .active
                    .lock()
                    .map(|a| a.contains(&key))
                    .unwrap_or(false);
                if !active {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Body::from_stream(stream).into_response()
}

async fn read_from(file: &Path, pos: u64) -> std::io::Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(pos)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn unsupported() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "the local node serves only /containerLogs (no exec, attach or port-forward)\n",
    )
        .into_response()
}

fn tls_config(tls: &KubeletTls) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("{}: {e}", tls.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.client_ca)
        .map_err(|e| format!("{}: {e}", tls.client_ca.display()))?
    {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())
}

/// Serves the kubelet API on `addr` until the future is dropped.
pub async fn serve(shared: Arc<Shared>, addr: SocketAddr, tls: KubeletTls) -> Result<(), String> {
    let config = tls_config(&tls)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(unsupported)
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    tracing::info!(%addr, "serving the kubelet API (container logs)");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keeps_the_last_lines_with_or_without_a_final_newline() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
