//! Test support: the two checks an apiserver makes, run client-side against the generated CRD.
//! [`schema_errors`] covers the OpenAPI keywords this CRD uses (a 1.20 apiserver enforces them);
//! [`cel_errors`] evaluates the `x-kubernetes-validations` with kube's `cel` feature (what 1.28+
//! adds). Paths are written like the apiserver's: `spec.evaluations[0].name`.

use std::sync::OnceLock;

use kube::core::cel::Validator;
use serde_json::{Value, json};

use crate::crd;

/// The CRD's `openAPIV3Schema`.
pub(crate) fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_json::to_value(crd::crd()).expect("the CRD serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    })
}

/// A whole `ContrastiveRun` object around `spec`.
pub(crate) fn object(spec: &Value) -> Value {
    json!({
        "apiVersion": "kontrast.dev/v1alpha1",
        "kind": "ContrastiveRun",
        "metadata": {"name": "test", "namespace": "default"},
        "spec": spec,
    })
}

/// `(path, message)` of every CEL rule `object` breaks (`old`: the stored object, for updates).
pub(crate) fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    match Validator::new().validate(schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| (e.field_path.clone(), e.message.clone()))
            .collect(),
    }
}

/// `(path, message)` of every OpenAPI constraint `value` breaks.
pub(crate) fn schema_errors(value: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    check(schema(), value, "", &mut errors);
    errors
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<(String, String)>) {
    let mut fail = |message: String| errors.push((path.to_owned(), message));
    if value.is_null() {
        return; // pruned by the apiserver, read as unset by serde
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let type_ok = match (int_or_string, schema["type"].as_str()) {
        (true, _) => value.is_string() || value.is_i64() || value.is_u64(),
        (false, Some("object")) => value.is_object(),
        (false, Some("array")) => value.is_array(),
        (false, Some("string")) => value.is_string(),
        (false, Some("boolean")) => value.is_boolean(),
        (false, Some("integer")) => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        (false, Some("number")) => value.is_number(),
        (false, _) => true,
    };
    if !type_ok {
        fail(format!("must be of type {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        fail(format!("must be one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            let exclusive = schema["exclusiveMinimum"] == true;
            if n < min || (exclusive && n == min) {
                fail(format!(
                    "must be greater than{} {min}",
                    if exclusive { "" } else { " or equal to" }
                ));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            let exclusive = schema["exclusiveMaximum"] == true;
            if n > max || (exclusive && n == max) {
                fail(format!(
                    "must be less than{} {max}",
                    if exclusive { "" } else { " or equal to" }
                ));
            }
        }
    }
    if let (Some(n), Some(step)) = (value.as_f64(), schema["multipleOf"].as_f64())
        && (n / step).fract() != 0.0
    {
        fail(format!("must be a multiple of {step}"));
    }
    if let Some(s) = value.as_str() {
        let length = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| length < min) {
            fail(format!(
                "must be at least {} characters",
                schema["minLength"]
            ));
        }
        if schema["maxLength"].as_u64().is_some_and(|max| length > max) {
            fail(format!(
                "must be at most {} characters",
                schema["maxLength"]
            ));
        }
        if let Some(pattern) = schema["pattern"].as_str()
            && !regex::Regex::new(pattern)
                .expect("schema patterns compile")
                .is_match(s)
        {
            fail(format!("must match {pattern}"));
        }
    }
    if let Some(items) = value.as_array() {
        let count = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|min| count < min) {
            fail(format!("must have at least {} items", schema["minItems"]));
        }
        if schema["maxItems"].as_u64().is_some_and(|max| count > max) {
            fail(format!("must have at most {} items", schema["maxItems"]));
        }
        for (i, item) in items.iter().enumerate() {
            check(&schema["items"], item, &format!("{path}[{i}]"), errors);
        }
    }
    if let Some(map) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !map.contains_key(name) {
                errors.push((join(path, name), "is required".into()));
            }
        }
        let properties = schema["properties"].as_object();
        let extra = schema.get("additionalProperties");
        for (name, child) in map {
            match (properties.and_then(|p| p.get(name)), extra) {
                (Some(child_schema), _) => check(child_schema, child, &join(path, name), errors),
                (None, Some(extra)) => check(extra, child, &join(path, name), errors),
                // An object without declared fields (metadata) takes anything, and the apiserver
                // owns the root's type and object metadata.
                (None, None) if properties.is_none() => {}
                (None, None)
                    if path.is_empty()
                        && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) => {}
                (None, None) => errors.push((join(path, name), "is not a declared field".into())),
            }
        }
    }
}

/// `base` with the JSON merge patch `patch` applied (RFC 7386).
pub(crate) fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (key, value) in patch {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let merged_value = merged(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), merged_value);
                }
            }
            Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}
