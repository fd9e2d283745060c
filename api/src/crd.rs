//! The generated CustomResourceDefinition, as objects and as the committed files: the YAML in
//! `crds/` and the API reference in `docs/api.md` (the `crdgen` binary prints both; tests fail when
//! the committed copies are stale).

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::Value;

use crate::v1alpha1::ContrastiveRun;

/// The command that regenerates `crds/contrastiverun.yaml`.
pub const REGENERATE_YAML: &str =
    "cargo run -p kontrast-api --bin crdgen > crds/contrastiverun.yaml";
/// The command that prints the CRD without CEL rules, for apiservers before 1.28.
pub const REGENERATE_WITHOUT_CEL: &str = "cargo run -p kontrast-api --bin crdgen -- --without-cel";
/// The command that regenerates `docs/api.md`.
pub const REGENERATE_MARKDOWN: &str =
    "cargo run -p kontrast-api --bin crdgen -- --markdown > docs/api.md";

/// The `ContrastiveRun` CRD, CEL rules included: what clusters from 1.28 on get (CEL rules came
/// in 1.25, their `fieldPath` and `reason` in 1.28). Install this
/// rather than `ContrastiveRun::crd()`: descriptions are unwrapped for `kubectl explain`, and
/// `nullable` is dropped (the apiserver then prunes an explicit `null`, which serde reads as
/// unset anyway), so that apiservers publishing OpenAPI v2 keep the field types.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = ContrastiveRun::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            visit(schema, &mut |s| {
                if let Some(d) = &mut s.description {
                    *d = unwrap_lines(d);
                }
                s.nullable = None;
            });
        }
    }
    crd
}

/// The CRD without any `x-kubernetes-validations`, for apiservers older than 1.28 such as the
/// local 1.20 test cluster: server-side apply of a CRD carrying CEL rules fails there with
/// "field not declared in schema", and a plain create drops the rules anyway. The operator's
/// `resolve` checks the same rules, so nothing goes unchecked.
pub fn crd_without_cel() -> CustomResourceDefinition {
    let mut crd = crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            visit(schema, &mut |s| s.x_kubernetes_validations = None);
        }
    }
    crd
}

/// Apply `f` to `schema` and every schema nested in it.
fn visit(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        visit(child, f);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => visit(item, f),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(|i| visit(i, f)),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &mut schema.additional_properties {
        visit(extra, f);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(|s| visit(s, f));
    }
    if let Some(not) = &mut schema.not {
        visit(not, f);
    }
}

/// Rustdoc wraps lines; `kubectl explain` wraps again. Keep only paragraph breaks.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The full CRD as YAML, with a header saying how it was made.
pub fn crd_yaml() -> String {
    let header = format!(
        "# Generated from the kontrast-api crate; do not edit.\n# Regenerate: {REGENERATE_YAML}\n"
    );
    header + &to_yaml(&value_of(&crd()))
}

/// The CRD without CEL rules as YAML (see [`crd_without_cel`]).
pub fn crd_without_cel_yaml() -> String {
    let header =
        "# Generated from the kontrast-api crate without CEL rules, for apiservers before 1.28.\n";
    header.to_owned() + &to_yaml(&value_of(&crd_without_cel()))
}

fn value_of(crd: &CustomResourceDefinition) -> Value {
    // A CRD is plain data: serialisation cannot fail.
    serde_json::to_value(crd).expect("a CRD serialises to JSON")
}

/// JSON as block-style YAML. Strings that YAML could read as something else are double-quoted
/// (JSON escapes are valid YAML); multi-line strings become literal blocks.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(list) if !list.is_empty() => write_list(&mut out, list, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_string(key));
        out.push(':');
        // Lists under a key sit at the key's indent, as kubectl writes them.
        write_child(out, value, indent, indent + 2);
    }
}

fn write_list(out: &mut String, list: &[Value], indent: usize) {
    for value in list {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match value {
            Value::Object(map) if !map.is_empty() => {
                // The first key shares the dash's line; the rest align with it.
                let mut inner = String::new();
                write_map(&mut inner, map, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            other => write_child(out, other, indent + 2, indent + 2),
        }
    }
}

/// Write what follows `key:` or `-`: an inline scalar, or a nested block on the next lines, a list
/// at `list_indent` and a map at `nested`.
fn write_child(out: &mut String, value: &Value, list_indent: usize, nested: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, nested);
        }
        Value::Array(list) if !list.is_empty() => {
            out.push('\n');
            write_list(out, list, list_indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, nested));
            out.push('\n');
        }
    }
}

fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn key_string(key: &str) -> String {
    if is_plain_safe(key) {
        key.to_owned()
    } else {
        serde_json::to_string(key).expect("a string serialises to JSON")
    }
}

fn scalar_string(s: &str, indent: usize) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    // Valid JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).expect("a string serialises to JSON")
}

/// Whether `s` reads back as the same string when written unquoted (in block context).
fn is_plain_safe(s: &str) -> bool {
    const WORDS: [&str; 13] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", ".nan", "<<",
    ];
    let mut chars = s.chars();
    let (Some(first), second) = (chars.next(), chars.next()) else {
        return false;
    };
    let starts_well = first.is_ascii_alphabetic()
        || first == '/'
        || first == '_'
        || (first == '.' && !second.is_some_and(|c| c.is_ascii_digit()));
    // Control characters, and what YAML 1.1 takes for line breaks or a byte-order mark.
    let odd =
        |c: char| c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}');
    starts_well
        && !s.chars().any(odd)
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with([' ', ':'])
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// `s` as a literal block (`|` or `|-`) when it has several lines and no character that would
/// need escaping; continuation lines are indented to `indent`.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let fits = body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with([' ', '\n'])
        && body.lines().all(|l| !l.ends_with(' '))
        && !body.chars().any(|c| c.is_control() && c != '\n');
    if !fits {
        return None;
    }
    let mut out = String::from(if body.len() == s.len() { "|-" } else { "|" });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    Some(out)
}

/// The API reference in Markdown, generated from the CRD's schema.
pub fn markdown_reference() -> String {
    let crd = value_of(&crd());
    let version = &crd["spec"]["versions"][0];
    let root = &version["schema"]["openAPIV3Schema"];
    let mut out = String::new();
    let _ = write!(
        out,
        "# ContrastiveRun API reference\n\n\
         <!-- Generated from the CRD schema; do not edit. Regenerate: {REGENERATE_MARKDOWN} -->\n\n\
         `{group}/{version}`, kind `ContrastiveRun` (namespaced; short name `crun`; category `kontrast`).\n\
         {desc}\n\n\
         A spec is checked three times: by the OpenAPI schema (types, ranges, patterns: the *Constraints* \
         column), by CEL rules on clusters from 1.28 on (*CEL* entries on single fields, and the \
         [cross-field rules](#cross-field-rules)), and by the operator, which applies the preset and \
         reports every violation in the `Ready` condition (reason `InvalidSpec`), naming the field. \
         Recipe fields left unset take the preset's value (see `spec.recipe.preset`).\n\n\
         Apiservers before 1.28 do not know every field of these rules: server-side apply of the \
         CRD fails there (\"field not declared in schema\", seen on 1.20) and a plain create drops \
         the rules; install the CRD without them \
         there (`{REGENERATE_WITHOUT_CEL}`): the operator still checks every rule.\n\n",
        group = crd["spec"]["group"].as_str().unwrap_or_default(),
        version = version["name"].as_str().unwrap_or_default(),
        desc = one_line(root["description"].as_str().unwrap_or_default()),
    );

    out.push_str("## Printer columns\n\n| Column | Type | JSON path |\n|---|---|---|\n");
    for column in version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` |",
            column["name"].as_str().unwrap_or_default(),
            column["type"].as_str().unwrap_or_default(),
            column["jsonPath"].as_str().unwrap_or_default()
        );
    }

    let mut rules = Vec::new();
    for section in ["spec", "status"] {
        let _ = write!(
            out,
            "\n## `{section}`\n\n| Field | Type | Default | Constraints | Description |\n|---|---|---|---|---|\n"
        );
        let schema = &root["properties"][section];
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            let required = is_required(schema, name);
            field_rows(
                &mut out,
                &mut rules,
                &format!("{section}.{name}"),
                child,
                required,
            );
        }
        collect_rules(&mut rules, section, schema);
    }

    out.push_str("\n## Cross-field rules\n\nCEL rules (`x-kubernetes-validations`) on objects, by the field they report. The apiserver evaluates them from Kubernetes 1.28 on, the operator whatever the version; where a field is unset they assume the preset's value, as the operator does.\n\n| Field | Rule | Message |\n|---|---|---|\n");
    rules.sort();
    for (path, rule, message) in rules {
        let _ = writeln!(
            out,
            "| `{path}` | `{}` | {} |",
            cell(&rule).replace('`', "'"),
            cell(&message)
        );
    }
    out
}

fn is_required(parent: &Value, name: &str) -> bool {
    parent["required"]
        .as_array()
        .is_some_and(|r| r.iter().any(|v| v == name))
}

fn field_rows(
    out: &mut String,
    rules: &mut Vec<(String, String, String)>,
    path: &str,
    schema: &Value,
    required: bool,
) {
    let default = schema
        .get("default")
        .map(|d| format!("`{}`", cell(&d.to_string())))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| `{path}` | {} | {default} | {} | {} |",
        type_name(schema),
        cell(&constraints(schema, required).join("; ")),
        cell(&one_line(
            schema["description"].as_str().unwrap_or_default()
        ))
    );
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            field_rows(
                out,
                rules,
                &format!("{path}.{name}"),
                child,
                is_required(schema, name),
            );
        }
        collect_rules(rules, path, schema);
    }
    let items = &schema["items"];
    if let Some(properties) = items["properties"].as_object() {
        for (name, child) in properties {
            field_rows(
                out,
                rules,
                &format!("{path}[].{name}"),
                child,
                is_required(items, name),
            );
        }
        collect_rules(rules, &format!("{path}[]"), items);
    }
}

/// Object-level rules relate several fields; the field-level ones stay in their row.
fn collect_rules(rules: &mut Vec<(String, String, String)>, path: &str, schema: &Value) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // Immutability is marked in the field's own row.
        if rule["rule"] == "self == oldSelf" {
            continue;
        }
        let reported = match rule["fieldPath"].as_str() {
            Some(field) => format!("{path}{field}"),
            None => path.to_owned(),
        };
        rules.push((
            reported,
            rule["rule"].as_str().unwrap_or_default().to_owned(),
            rule["message"].as_str().unwrap_or_default().to_owned(),
        ));
    }
}

fn type_name(schema: &Value) -> String {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "int or string".into();
    }
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_name(&schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some() => {
            format!("map[string]{}", type_name(&schema["additionalProperties"]))
        }
        Some(t) => t.to_owned(),
        None => "any".into(),
    }
}

fn constraints(schema: &Value, required: bool) -> Vec<String> {
    let mut c = Vec::new();
    if required {
        c.push("required".to_owned());
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        c.push(format!("one of {}", values.join(", ")));
    }
    let number = |key: &str| schema[key].as_f64().map(|n| n.to_string());
    let exclusive = |key: &str| schema[key].as_bool() == Some(true);
    match (number("minimum"), number("maximum")) {
        (Some(lo), Some(hi)) => c.push(format!(
            "{}{lo}, {hi}{}",
            if exclusive("exclusiveMinimum") {
                "("
            } else {
                "["
            },
            if exclusive("exclusiveMaximum") {
                ")"
            } else {
                "]"
            }
        )),
        (Some(lo), None) => c.push(format!("≥ {lo}")),
        (None, Some(hi)) => c.push(format!("≤ {hi}")),
        (None, None) => {}
    }
    for (what, min, max) in [
        ("length", "minLength", "maxLength"),
        ("items", "minItems", "maxItems"),
    ] {
        match (schema[min].as_u64(), schema[max].as_u64()) {
            (Some(lo), Some(hi)) if lo == hi => c.push(format!("{what} {lo}")),
            (Some(lo), Some(hi)) => c.push(format!("{what} {lo}–{hi}")),
            (Some(lo), None) => c.push(format!("{what} ≥ {lo}")),
            (None, Some(hi)) => c.push(format!("{what} ≤ {hi}")),
            (None, None) => {}
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        c.push(pattern_name(pattern));
    }
    if let Some(pattern) = schema["additionalProperties"]["pattern"].as_str() {
        c.push(format!("values: {}", pattern_name(pattern)));
    }
    if let Some(list) = schema["x-kubernetes-list-type"].as_str() {
        let keys = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| {
                let k: Vec<String> = k
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                format!(" keyed by {}", k.join(", "))
            })
            .unwrap_or_default();
        c.push(format!("list type {list}{keys}"));
    }
    // Rules on an object are listed under Cross-field rules; those on a leaf belong to it.
    if schema.get("properties").is_none() {
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if rule["rule"] == "self == oldSelf" {
                c.push("immutable".to_owned());
            } else {
                c.push(format!(
                    "CEL: {}",
                    rule["message"].as_str().unwrap_or_default()
                ));
            }
        }
    } else if schema["x-kubernetes-validations"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["rule"] == "self == oldSelf"))
    {
        c.push("immutable".to_owned());
    }
    c
}

/// The schema's patterns by what they mean; the regular expressions are in the CRD.
fn pattern_name(pattern: &str) -> String {
    use crate::v1alpha1::limits::*;
    let known = [
        (ABSOLUTE_PATH_PATTERN, "absolute path without `..`"),
        (DNS_LABEL_PATTERN, "DNS-1123 label"),
        (DNS_SUBDOMAIN_PATTERN, "DNS-1123 subdomain"),
        (DURATION_PATTERN, "Go duration (`90s`, `15m`, `1h30m`)"),
        (QUANTITY_PATTERN, "quantity (`500m`, `32`, `200Gi`)"),
        (HTTP_URL_PATTERN, "http(s) URL"),
        (LABEL_VALUE_PATTERN, "label value"),
    ];
    match known.iter().find(|(p, _)| *p == pattern) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("pattern `{pattern}`"),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    #[test]
    fn committed_crd_yaml_matches_the_generated_one() {
        assert!(
            repo_file("crds/contrastiverun.yaml") == crd_yaml(),
            "crds/contrastiverun.yaml is stale; run `{REGENERATE_YAML}`"
        );
    }

    #[test]
    fn committed_api_reference_matches_the_generated_one() {
        assert!(
            repo_file("docs/api.md") == markdown_reference(),
            "docs/api.md is stale; run `{REGENERATE_MARKDOWN}`"
        );
    }

    #[test]
    fn crd_yaml_reads_back_as_the_crd() {
        let text = crd_yaml();
        let parsed: Value = serde_saphyr::from_str(&text).expect("the CRD YAML parses");
        assert_eq!(parsed, value_of(&crd()));
    }

    #[test]
    fn yaml_writer_quotes_what_yaml_would_misread() {
        let value = serde_json::json!({
            "words": ["yes", "No", "null", "~", "true", "on"],
            "numbers": ["1", "0.5", "1e3", "0x1f", "-1", ".5"],
            "syntax": ["a: b", "a #b", "- a", "[a]", "{a}", "*a", "&a", "!a", "%a", "@a", "`a", "", " a", "a ", "\"a\"", "'a'"],
            "multiline": ["line one\nline two", "trailing\n", "  indented\nx", "tab\tin\nit", "a\n\nb"],
            "unicode": ["×", "µs", "a×b", "line\u{2028}sep", "nel\u{85}x"],
            "plain": ["a;b", "a:b", "a:", "a`b`", "a [b] {c}", "a#b", ".status.phase", ".5", ".Inf", "Yes"],
            "nested": [[1, [2]], {}, [], {"a": []}, null, 1.5],
            "$ref": "key needs quoting",
        });
        let parsed: Value = serde_saphyr::from_str(&to_yaml(&value)).expect("the YAML parses");
        assert_eq!(parsed, value);
    }

    #[test]
    fn the_crd_without_cel_keeps_everything_but_the_rules() {
        let full = serde_json::to_string(&crd()).expect("serialises");
        let stripped = serde_json::to_string(&crd_without_cel()).expect("serialises");
        assert!(full.contains("x-kubernetes-validations"));
        assert!(!stripped.contains("x-kubernetes-validations"));
        assert!(stripped.contains("\"pattern\"") && stripped.contains("\"default\""));
    }

    #[test]
    fn the_crd_names_and_columns_are_the_contract() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("contrastiveruns.kontrast.dev")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["crun".to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["kontrast".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Phase", ".status.phase"),
                ("Epoch", ".status.progress.epoch"),
                ("Restarts", ".status.restarts"),
                ("Loss", ".status.progress.loss"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn every_field_has_a_description() {
        fn check(path: &str, schema: &Value, missing: &mut Vec<String>) {
            if schema["description"].as_str().is_none_or(str::is_empty) {
                missing.push(path.to_owned());
            }
            for (name, child) in schema["properties"].as_object().into_iter().flatten() {
                check(&format!("{path}.{name}"), child, missing);
            }
            for (name, child) in schema["items"]["properties"]
                .as_object()
                .into_iter()
                .flatten()
            {
                check(&format!("{path}[].{name}"), child, missing);
            }
        }
        let crd = value_of(&crd());
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let mut missing = Vec::new();
        check("spec", &root["spec"], &mut missing);
        check("status", &root["status"], &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
