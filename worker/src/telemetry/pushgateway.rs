//! Pushing an evaluation's result to a Prometheus Pushgateway (`spec.metrics.pushgateway`): one
//! `PUT /metrics/job@base64/…/<label>@base64/<value>…` of the text exposition format, replacing
//! the group's previous push. A blocking HTTP/1.1 request over std's TCP is all this needs — the
//! Pushgateway is an in-cluster `http://` Service — and keeps an HTTP client stack out of the
//! worker. Label values travel base64url-encoded (the Pushgateway's `@base64` suffix), so a
//! value may hold any character, `/` included.
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A push that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The URL is not an `http://host[:port][/prefix]` URL.
    #[error("pushgateway URL {0:?} must be http://host[:port][/path]")]
    Url(String),
    /// The connection or the exchange failed.
    #[error("pushing to {url}: {source}")]
    Io {
        /// The Pushgateway.
        url: String,
        /// The reason.
        #[source]
        source: std::io::Error,
    },
    /// The Pushgateway answered with an error.
    #[error("pushing to {url}: {status}")]
    Status {
        /// The Pushgateway.
        url: String,
        /// Its status line.
        status: String,
    },
}

/// A Pushgateway: where to connect and the path prefix it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushgateway {
    url: String,
    host: String,
    port: u16,
    prefix: String,
}

/// RFC 4648 base64url with padding, as the Pushgateway decodes `@base64` label values.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes a label value for the text exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text of an evaluation's results: `kontrast_evaluation_result{metric=…}` per
/// metric and `kontrast_evaluation_duration_seconds`.
pub fn evaluation_exposition<'a>(
    metrics: impl IntoIterator<Item = (&'a str, f64)>,
    seconds: f64,
) -> String {
    let mut text = String::from(
        "# HELP kontrast_evaluation_result Result of an evaluation, per metric.\n\
         # TYPE kontrast_evaluation_result gauge\n",
    );
    for (name, value) in metrics {
        text.push_str(&format!(
            "kontrast_evaluation_result{{metric=\"{}\"}} {value}\n",
            escape(name)
        ));
    }
    text.push_str(&format!(
        "# HELP kontrast_evaluation_duration_seconds Wall time of the evaluation.\n\
         # TYPE kontrast_evaluation_duration_seconds gauge\n\
         kontrast_evaluation_duration_seconds {seconds}\n"
    ));
    text
}

impl Pushgateway {
    /// Parses `http://host[:port][/prefix]` (port 80 when absent).
    pub fn parse(url: &str) -> Result<Self, PushError> {
        let bad = || PushError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port has colons but ends in `]`.
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || prefix.contains(['?', '#']) {
            return Err(bad());
        }
        Ok(Self {
            url: url.to_string(),
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }

    /// The request path of a group: `job` and then each grouping label, values base64url.
    pub fn group_path(&self, job: &str, grouping: &[(&str, &str)]) -> String {
        let mut path = format!(
            "{}/metrics/job@base64/{}",
            self.prefix,
            base64url(job.as_bytes())
        );
        for (label, value) in grouping {
            // An empty value is written as a lone `=` (the Pushgateway's convention).
            let encoded = if value.is_empty() {
                "=".to_string()
            } else {
                base64url(value.as_bytes())
            };
            path.push_str(&format!("/{label}@base64/{encoded}"));
        }
        path
    }

    /// Replaces the group's metrics with `body` (text exposition format).
    pub fn push(
        &self,
        job: &str,
        grouping: &[(&str, &str)],
        body: &str,
        timeout: Duration,
    ) -> Result<(), PushError> {
        let io = |source| PushError::Io {
            url: self.url.clone(),
            source,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("the host has no address")))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let request = format!(
            "PUT {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.group_path(job, grouping),
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let text = String::from_utf8_lossy(&response);
        let status = text.lines().next().unwrap_or_default().trim().to_string();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        if code.starts_with('2') {
            Ok(())
        } else {
            // The body says why (e.g. a metric clashing with one pushed by another group).
            let detail = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
            Err(PushError::Status {
                url: self.url.clone(),
                status: format!("{status} {detail}").trim().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("a/b?", "YS9iPw=="),
            ("\u{fb}\u{ff}", "w7vDvw=="),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn urls_parse_into_host_port_and_prefix() {
        let p = Pushgateway::parse("http://pg.monitoring:9091/gw/").expect("parses");
        assert_eq!(
            (p.host.as_str(), p.port, p.prefix.as_str()),
            ("pg.monitoring", 9091, "/gw")
        );
        let p = Pushgateway::parse("http://pg").expect("parses");
        assert_eq!((p.port, p.prefix.as_str()), (80, ""));
        let p = Pushgateway::parse("http://[::1]:9091").expect("parses");
        assert_eq!((p.host.as_str(), p.port), ("::1", 9091));
        for bad in [
            "https://pg:9091",
            "pg:9091",
            "http://:9091",
            "http://pg:x",
            "http://pg/a?b",
        ] {
            assert!(Pushgateway::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Pushgateway::parse("http://pg:9091")
                .expect("parses")
                .group_path("kontrast", &[("run", "a/b"), ("evaluation", "")]),
            "/metrics/job@base64/a29udHJhc3Q=/run@base64/YS9i/evaluation@base64/="
        );
    }
}
