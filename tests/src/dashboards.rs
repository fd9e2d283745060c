//! The chart's Grafana dashboards (`charts/kontrast/dashboards/*.json`) as data: every query
//! they hold and Grafana's variable substitution, so tests can run them against a real
//! Prometheus (no Grafana server is available here).
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Where a query comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A panel's target.
    Panel {
        /// The panel's title.
        title: String,
    },
    /// A query variable; only its selector, the PromQL part of `label_values(selector, label)`.
    Variable {
        /// The variable's name.
        name: String,
        /// The label whose values it lists, when it is a `label_values` query.
        label: Option<String>,
    },
}

/// One query of a dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The dashboard's file name without `.json`.
    pub dashboard: String,
    /// Panel or variable.
    pub source: Source,
    /// The PromQL, Grafana variables not yet replaced.
    pub expr: String,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Panel { title } => write!(f, "{} panel {title:?}", self.dashboard),
            Source::Variable { name, .. } => write!(f, "{} variable {name:?}", self.dashboard),
        }
    }
}

/// Every `*.json` dashboard in `dir`, by file name without `.json`, in name order.
pub fn load(dir: &Path) -> Result<Vec<(String, Value)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        out.push((name.to_string(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        return Err(format!("no dashboard in {}", dir.display()));
    }
    Ok(out)
}

/// Every query of dashboard `name`: panel targets (rows' nested panels included) and query
/// variables. A panel without a query, or with an empty one, is an error.
pub fn queries(name: &str, dashboard: &Value) -> Result<Vec<Query>, String> {
    fn panels(name: &str, list: &Value, out: &mut Vec<Query>) -> Result<(), String> {
        for p in list.as_array().into_iter().flatten() {
            panels(name, &p["panels"], out)?;
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?").to_string();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                return Err(format!("{name}: panel {title:?} has no query"));
            }
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default().to_string();
                if expr.is_empty() {
                    return Err(format!("{name}: panel {title:?} has an empty query"));
                }
                out.push(Query {
                    dashboard: name.to_string(),
                    source: Source::Panel {
                        title: title.clone(),
                    },
                    expr,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    panels(name, &dashboard["panels"], &mut out)?;
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        // label_values(<selector>, <label>): the selector is PromQL, the label is not.
        let split = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','));
        let (expr, label) = match split {
            Some((sel, label)) => (sel.trim().to_string(), Some(label.trim().to_string())),
            None => (q.to_string(), None),
        };
        out.push(Query {
            dashboard: name.to_string(),
            source: Source::Variable {
                name: var["name"].as_str().unwrap_or("?").to_string(),
                label,
            },
            expr,
        });
    }
    Ok(out)
}

/// `expr` with Grafana's variables (`$name` and `${name}`) replaced from `vars`; variables not
/// in `vars` stay as they are, so a caller can tell that something was left unreplaced.
pub fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match vars.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[used..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Grafana's substitution with "All" selected for the dashboards' variables and a one-minute
/// rate interval.
pub fn all_selected(expr: &str) -> String {
    let vars: BTreeMap<&str, String> = [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "1h"),
        ("namespace", ".*"),
        ("run", ".*"),
        ("evaluation", ".*"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    substitute(expr, &vars)
}

/// `value` escaped for a PromQL regular-expression matcher, as Grafana escapes a selected value.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            // Backslash twice: once for the regular expression, once for the PromQL string.
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_in_both_spellings_and_unknown_ones_kept() {
        let vars: BTreeMap<&str, String> =
            [("run", "r1".to_string()), ("__rate_interval", "1m".into())].into();
        assert_eq!(
            substitute(
                r#"rate(x{run=~"$run", y="${run}"}[$__rate_interval]) $other $"#,
                &vars
            ),
            r#"rate(x{run=~"r1", y="r1"}[1m]) $other $"#
        );
        assert_eq!(
            all_selected("a{namespace=~\"$namespace\"}[$__interval]"),
            "a{namespace=~\".*\"}[1m]"
        );
    }

    #[test]
    fn regex_metacharacters_are_escaped() {
        assert_eq!(regex_escape("a.b-c"), r"a\\.b-c");
    }

    #[test]
    fn the_chart_dashboards_have_panel_and_variable_queries() {
        let all = load(&crate::chart::chart_dir().join("dashboards")).unwrap();
        assert!(all.len() >= 2);
        for (name, d) in &all {
            let qs = queries(name, d).unwrap();
            assert!(qs.iter().any(|q| matches!(q.source, Source::Panel { .. })));
            assert!(qs.iter().any(|q| matches!(
                &q.source,
                Source::Variable { label: Some(l), .. } if l == "run"
            )));
        }
        let bad = serde_json::json!({"panels": [{"type": "stat", "title": "t", "targets": []}]});
        assert!(queries("x", &bad).is_err());
    }
}
