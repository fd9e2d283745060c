//! The metrics and progress endpoint: blocking HTTP/1.1 on one background thread.
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use kontrast_api::progress::Report;
use prometheus::Registry;
use prometheus::TEXT_FORMAT;

use super::TelemetryError;
use super::metrics::encode;
use super::termination::TerminationLog;

/// A client gets this long to send its request and read the answer: requests are served one
/// at a time, so a stuck client must not hold up the operator's polls for longer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests are a line and a few headers; anything longer is not for us.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The progress report shared between the trainer (writes) and the server (reads). Cloning
/// shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<Report>>);

impl Progress {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the report in place.
    pub fn update(&self, f: impl FnOnce(&mut Report)) {
        // A panic elsewhere while holding the lock leaves a valid report: keep serving it.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Replaces the report.
    pub fn set(&self, report: Report) {
        self.update(|r| *r = report);
    }

    /// A copy of the current report.
    pub fn snapshot(&self) -> Report {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Leaves the current report as the container's termination message (rank 0, on success),
    /// where the operator records the final numbers. `Ok(false)`: no termination log here.
    pub fn write_termination_message(&self) -> Result<bool, TelemetryError> {
        TerminationLog::from_env().write_report(&self.snapshot())
    }
}

/// The running endpoint. Serves `GET /metrics`, `GET /progress` and `GET /healthz` (`HEAD` too)
/// until dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `0.0.0.0:port` (all interfaces: the operator and Prometheus reach the pod IP).
    /// Port 0 picks a free port; see [`Server::local_addr`].
    pub fn start(
        port: u16,
        registry: Registry,
        progress: Progress,
    ) -> Result<Self, TelemetryError> {
        Self::bind(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            registry,
            progress,
        )
    }

    /// Listens on `addr`.
    pub fn bind(
        addr: SocketAddr,
        registry: Registry,
        progress: Progress,
    ) -> Result<Self, TelemetryError> {
        let listener = TcpListener::bind(addr).map_err(|source| TelemetryError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kontrast-telemetry".into())
                .spawn(move || serve(listener, &registry, &progress, &stop))
                .map_err(TelemetryError::Thread)?
        };
        tracing::info!(%addr, "serving /metrics and /progress");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks: a connection of our own wakes it to see the flag.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let woke = TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), IO_TIMEOUT);
        match (woke, self.thread.take()) {
            (Ok(_), Some(thread)) => {
                if thread.join().is_err() {
                    tracing::warn!("the metrics server thread panicked");
                }
            }
            // Unreachable from here: leave the thread, it ends at its next connection.
            (Err(e), _) => tracing::debug!(error = %e, "could not wake the metrics server"),
            (Ok(_), None) => {}
        }
    }
}

fn serve(listener: TcpListener, registry: &Registry, progress: &Progress, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, registry, progress) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) => {
                // E.g. out of file descriptors: back off rather than spin.
                tracing::warn!(error = %e, "accepting a metrics connection");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads the request head (line and headers; a body is ignored).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

fn handle(mut stream: TcpStream, registry: &Registry, progress: &Progress) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match encode(registry) {
            Ok(text) => ("200 OK", TEXT_FORMAT, text),
            Err(e) => ("500 Internal Server Error", PLAIN, format!("{e}\n")),
        },
        ("GET" | "HEAD", "/progress") => match serde_json::to_string(&progress.snapshot()) {
            Ok(json) => ("200 OK", JSON, json),
            Err(e) => ("500 Internal Server Error", PLAIN, format!("{e}\n")),
        },
        ("GET" | "HEAD", "/healthz") => ("200 OK", PLAIN, "ok\n".to_string()),
        ("GET" | "HEAD", _) => ("404 Not Found", PLAIN, "not found\n".to_string()),
        ("", _) => return Ok(()), // a bare connect, e.g. the wake-up on shutdown
        _ => (
            "405 Method Not Allowed",
            PLAIN,
            "method not allowed\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

const PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
