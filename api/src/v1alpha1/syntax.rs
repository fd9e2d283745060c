//! Hand-written twins of the schema's regular expressions, so `resolve` needs no regex engine. A
//! test checks each against its pattern in [`limits`](super::limits) on the same samples.

/// An absolute path without `..` components.
pub(crate) fn is_clean_absolute_path(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|c| c == "..")
}

/// A path written plainly: no empty (`//`) and no `.` components, so comparing it with a
/// directory as text compares the directories. A trailing `/` is allowed.
pub(crate) fn is_plain_path(path: &str) -> bool {
    !path.contains("//") && !path.split('/').any(|c| c == ".")
}

/// A plainly written path that is, lies inside or contains one of
/// [`FORBIDDEN_HOST_PATHS`](super::limits::FORBIDDEN_HOST_PATHS).
pub(crate) fn is_system_host_path(path: &str) -> bool {
    let dir = path.trim_end_matches('/');
    super::limits::FORBIDDEN_HOST_PATHS.iter().any(|d| {
        dir == *d
            || dir
                .strip_prefix(d)
                .is_some_and(|rest| rest.starts_with('/'))
            || d.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label, length aside.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// A DNS-1123 subdomain, length aside.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(is_dns_label)
}

/// A label value (non-empty), length aside.
pub(crate) fn is_label_value(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub(crate) fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    prefix.is_none_or(|p| p.len() <= 253 && is_dns_subdomain(p))
        && name.len() <= 63
        && is_label_value(name)
}

/// A resource quantity as Kubernetes writes it (`500m`, `32`, `200Gi`, `1e3`), not negative.
pub(crate) fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if !is_decimal(number) {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(is_decimal),
    }
}

/// The amount a [quantity](is_quantity) stands for, as a float (close enough to compare a
/// request with its limit); `None` if it is not one.
pub(crate) fn quantity_value(s: &str) -> Option<f64> {
    if !is_quantity(s) {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    // Rust reads `1.` and `.5` as Kubernetes does.
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 2f64.powi(10),
        "Mi" => 2f64.powi(20),
        "Gi" => 2f64.powi(30),
        "Ti" => 2f64.powi(40),
        "Pi" => 2f64.powi(50),
        "Ei" => 2f64.powi(60),
        exponent => {
            let e: f64 = exponent.get(1..)?.parse().ok()?;
            10f64.powf(e)
        }
    };
    Some(number * scale)
}

/// `digits`, `digits.`, `digits.digits` or `.digits`.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty())
}

/// An `http://` URL with a host and no whitespace.
pub(crate) fn is_http_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("http://") else {
        return false;
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    host_end > 0 && !s.chars().any(char::is_whitespace)
}

/// A Go duration without sign (`90s`, `1h30m`, `1.5h`) in seconds; `None` if it is not one.
// Hand-parsed: kube's parser panics on overflow (`99999999999999999999h`).
pub(crate) fn duration_seconds(s: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("\u{b5}s", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
        if int.is_empty() || frac.is_empty() || !is_decimal(number) {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let (unit, scale) = UNITS.iter().find(|(unit, _)| tail.starts_with(unit))?;
        total += value * scale;
        rest = &tail[unit.len()..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::super::limits::*;
    use super::*;

    fn agrees(pattern: &str, check: fn(&str) -> bool, samples: &[&str]) {
        let re = regex::Regex::new(pattern).expect("pattern compiles");
        for s in samples {
            assert_eq!(
                re.is_match(s),
                check(s),
                "{pattern} vs the Rust check on {s:?}"
            );
        }
    }

    #[test]
    fn path_check_agrees_with_the_schema_pattern() {
        agrees(
            ABSOLUTE_PATH_PATTERN,
            is_clean_absolute_path,
            &[
                "/",
                "/data",
                "/data/",
                "/a/b/c",
                "/a/./b",
                "/a/.hidden",
                "/a/...",
                "/a/..b",
                "/a/b..",
                "//a",
                "/..",
                "/a/..",
                "/a/../b",
                "a/b",
                "",
                "./a",
                "/a b/ü",
            ],
        );
    }

    #[test]
    fn dns_checks_agree_with_the_schema_patterns() {
        let samples = [
            "a",
            "knn",
            "voc07-svm",
            "a-b-c",
            "0abc",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a..b",
            ".a",
            "",
            "a.b-c.d",
        ];
        agrees(DNS_LABEL_PATTERN, is_dns_label, &samples);
        agrees(DNS_SUBDOMAIN_PATTERN, is_dns_subdomain, &samples);
        agrees(
            LABEL_VALUE_PATTERN,
            is_label_value,
            &["a", "A.b_c-d", "_a", "a_", "", "team-1", "a b"],
        );
    }

    #[test]
    fn quantity_check_agrees_with_the_schema_pattern() {
        agrees(
            QUANTITY_PATTERN,
            is_quantity,
            &[
                "1", "32", "500m", "200Gi", "1.5", "1.", ".5", "+1", "-1", "1e3", "1E-3", "1e",
                "Gi", "", "1.5.5", "1 Gi", "1gi", "1Ki", "12kb", ".", "1e+3",
            ],
        );
    }

    #[test]
    fn url_check_agrees_with_the_schema_pattern() {
        agrees(
            HTTP_URL_PATTERN,
            is_http_url,
            &[
                "http://pushgateway:9091",
                "https://pg.example.com/path?x=1",
                "http://",
                "ftp://x",
                "http:///x",
                "http://a b",
                "pushgateway:9091",
            ],
        );
    }

    #[test]
    fn quantities_are_valued_like_kubernetes() {
        for (q, v) in [
            ("32", 32.0),
            ("500m", 0.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("+2", 2.0),
            ("1Ki", 1024.0),
            ("200Gi", 200.0 * 1024f64.powi(3)),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("2k", 2000.0),
        ] {
            let got = quantity_value(q);
            assert!(
                got.is_some_and(|g| (g - v).abs() <= v * 1e-12),
                "{q}: {got:?}"
            );
        }
        for q in ["-1", "lots", "", "1 Gi"] {
            assert_eq!(quantity_value(q), None, "{q}");
        }
        assert!(quantity_value("1e400").is_some_and(f64::is_infinite));
    }

    #[test]
    fn system_host_paths_are_recognised_however_they_are_nested() {
        for p in [
            "/",
            "/etc",
            "/etc/",
            "/etc/kubernetes",
            "/var",
            "/var/",
            "/var/lib",
            "/var/run/docker.sock",
            "/run/containerd/containerd.sock",
            "/var/lib/kubelet/pods",
            "/proc/1/root",
        ] {
            assert!(is_system_host_path(p), "{p}");
        }
        for p in [
            "/data",
            "/data/etc",
            "/etcetera",
            "/var/lib/kontrast/checkpoints",
            "/usr/share/datasets",
            "/srv/run",
        ] {
            assert!(!is_system_host_path(p), "{p}");
        }
        for p in ["//etc", "/./etc", "/data/.", "/data//x"] {
            assert!(!is_plain_path(p), "{p}");
        }
        for p in ["/", "/data/", "/a/.hidden", "/a/..b"] {
            assert!(is_plain_path(p), "{p}");
        }
    }

    #[test]
    fn durations_are_read_the_go_way() {
        assert_eq!(duration_seconds("15m"), Some(900.0));
        assert_eq!(duration_seconds("1h30m"), Some(5400.0));
        assert_eq!(duration_seconds("90s"), Some(90.0));
        assert_eq!(duration_seconds("-5m"), None);
        assert_eq!(duration_seconds("15"), None);
        assert_eq!(duration_seconds("fifteen minutes"), None);
        let re = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
        for ok in ["15m", "1h30m", "90s", "1.5h", "500ms"] {
            assert!(re.is_match(ok) && duration_seconds(ok).is_some(), "{ok}");
        }
    }
}
