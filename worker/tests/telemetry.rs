//! The metrics and progress endpoint over real TCP.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kontrast_api::progress::{CheckpointReport, Report};
use kontrast_worker::telemetry::{LossKind, Metrics, Progress, Server};

/// One HTTP/1.1 exchange: (status line, headers, body).
fn request(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", addr.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// The value of the sample `name` carrying every label of `labels` (`key="value"`), in any order.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let have: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
        (n == name && labels.iter().all(|l| have.contains(l))).then(|| value.parse().ok())?
    })
}

fn start() -> (Metrics, Progress, Server) {
    let metrics = Metrics::new(Some("demo"), Some(0)).unwrap();
    let progress = Progress::new();
    let server = Server::start(0, metrics.registry().clone(), progress.clone()).unwrap();
    (metrics, progress, server)
}

#[test]
fn metrics_are_served_in_the_prometheus_text_format() {
    let (metrics, _progress, server) = start();
    metrics.set_loss(LossKind::Total, 7.25);
    metrics.step.set(42);
    metrics.step_seconds.observe(0.3);
    let (status, headers, body) = request(server.local_addr(), "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let labels = [r#"run="demo""#, r#"rank="0""#];
    let loss = [r#"kind="total""#, labels[0], labels[1]];
    assert_eq!(
        sample(&body, "kontrast_train_loss", &loss),
        Some(7.25),
        "{body}"
    );
    assert_eq!(
        sample(&body, "kontrast_train_step", &labels),
        Some(42.0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE kontrast_train_step_seconds histogram"),
        "{body}"
    );
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
}

#[test]
fn progress_is_served_as_camel_case_json_and_follows_updates() {
    let (_metrics, progress, server) = start();
    let (_, _, body) = request(server.local_addr(), "GET", "/progress");
    assert_eq!(
        serde_json::from_str::<Report>(&body).unwrap(),
        Report::default()
    );

    progress.update(|r| {
        r.epoch = 3;
        r.step = 120;
        r.total_steps = 400;
        r.loss = Some(5.5);
        r.images_per_second = Some(812.0);
        r.checkpoint = Some(CheckpointReport {
            epoch: 2,
            path: "/ckpt/epoch-0002.json".into(),
        });
    });
    let (status, headers, body) = request(server.local_addr(), "GET", "/progress?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: application/json"),
        "{headers}"
    );
    assert!(body.contains("\"totalSteps\":400"), "{body}");
    assert!(body.contains("\"imagesPerSecond\":812.0"), "{body}");
    assert_eq!(
        serde_json::from_str::<Report>(&body).unwrap(),
        progress.snapshot()
    );
}

#[test]
fn health_unknown_paths_and_other_methods_are_answered() {
    let (_metrics, _progress, server) = start();
    let addr = server.local_addr();
    assert_eq!(request(addr, "GET", "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(request(addr, "GET", "/nope").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        request(addr, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    let (status, _, body) = request(addr, "HEAD", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
}

#[test]
fn dropping_the_server_stops_it_and_frees_the_port() {
    let (_metrics, _progress, server) = start();
    let addr = server.local_addr();
    assert_eq!(request(addr, "GET", "/healthz").0, "HTTP/1.1 200 OK");
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", addr.port())).is_err());
}

/// One request with a body, written in one piece (the server reads the head and ignores the
/// rest, so all of it arrives before the answer and the close cannot reset the connection).
fn request_with_body(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", addr.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_endpoint_refuses_every_write_method_and_nothing_changes() {
    // The pod port is reachable from the whole cluster network: it must be read-only.
    let (metrics, progress, server) = start();
    let addr = server.local_addr();
    metrics.step.set(42);
    progress.update(|r| {
        r.step = 42;
        r.total_steps = 400;
    });
    let metrics_before = request(addr, "GET", "/metrics").2;
    let progress_before = progress.snapshot();
    let bodies = [
        (
            "/metrics",
            "kontrast_train_step{run=\"demo\",rank=\"0\"} 1\n",
        ),
        ("/progress", r#"{"step":1,"totalSteps":1}"#),
        ("/healthz", "down"),
        ("/", ""),
        ("/admin", "{}"),
    ];
    for method in [
        "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ] {
        for (path, body) in bodies {
            assert_eq!(
                request_with_body(addr, method, path, body),
                "HTTP/1.1 405 Method Not Allowed",
                "{method} {path}"
            );
        }
    }
    assert_eq!(request(addr, "GET", "/metrics").2, metrics_before);
    assert_eq!(progress.snapshot(), progress_before);
    assert_eq!(request(addr, "GET", "/healthz").0, "HTTP/1.1 200 OK");
}
