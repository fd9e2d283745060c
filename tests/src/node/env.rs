//! A container's environment, resolved the way kubelet resolves it: literal values with `$(VAR)`
//! expansion, `fieldRef` (downward API), `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`
//! and `envFrom`.
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};

/// ConfigMaps and Secrets of the pod's namespace that its containers refer to.
#[derive(Debug, Default, Clone)]
pub struct Refs {
    /// ConfigMaps by name.
    pub config_maps: HashMap<String, ConfigMap>,
    /// Secrets by name.
    pub secrets: HashMap<String, Secret>,
}

/// Node facts the downward API exposes.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node name.
    pub node_name: String,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
    /// Allocatable CPU cores (resource-limit default).
    pub cpu: f64,
    /// Allocatable memory bytes (resource-limit default).
    pub memory: f64,
}

/// Why an environment could not be built (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

fn config_map_value(refs: &Refs, name: &str, key: &str) -> Option<String> {
    let cm = refs.config_maps.get(name)?;
    cm.data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
}

fn secret_value(refs: &Refs, name: &str, key: &str) -> Option<String> {
    let s = refs.secrets.get(name)?;
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// Parses a Kubernetes quantity (`500m`, `2`, `1Gi`, `100M`) to a number.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let m = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(n * m)
}

fn field_value(pod: &Pod, path: &str, ip: Ipv4Addr, node: &NodeFacts) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    let get = |m: &Option<BTreeMap<String, String>>, k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k).cloned())
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => node.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => node.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                get(&meta.labels, &k)
            } else if let Some(k) = map_key("metadata.annotations['") {
                get(&meta.annotations, &k)
            } else {
                return Err(EnvError(format!("unsupported fieldRef fieldPath {path:?}")));
            }
        }
    })
}

fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: &NodeFacts,
) -> Result<String, EnvError> {
    let res = container.resources.as_ref();
    let (kind, which) = resource
        .split_once('.')
        .ok_or_else(|| EnvError(format!("unsupported resourceFieldRef {resource:?}")))?;
    let table = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => {
            return Err(EnvError(format!(
                "unsupported resourceFieldRef {resource:?}"
            )));
        }
    };
    let value = match table.and_then(|t| t.get(which)) {
        Some(q) => parse_quantity(&q.0)
            .ok_or_else(|| EnvError(format!("unparsable quantity {:?} for {resource}", q.0)))?,
        None if which == "cpu" => node.cpu,
        None if which == "memory" => node.memory,
        None => 0.0,
    };
    let div = divisor
        .map(|d| parse_quantity(d).filter(|v| *v > 0.0))
        .unwrap_or(Some(1.0))
        .ok_or_else(|| EnvError(format!("bad divisor for {resource}")))?;
    Ok(format!("{}", (value / div).ceil() as i64))
}

fn source_value(
    pod: &Pod,
    c: &Container,
    src: &EnvVarSource,
    ip: Ipv4Addr,
    node: &NodeFacts,
    refs: &Refs,
) -> Result<Option<String>, EnvError> {
    if let Some(f) = &src.field_ref {
        return field_value(pod, &f.field_path, ip, node).map(Some);
    }
    if let Some(r) = &src.resource_field_ref {
        return resource_value(
            c,
            &r.resource,
            r.divisor.as_ref().map(|d| d.0.as_str()),
            node,
        )
        .map(Some);
    }
    if let Some(k) = &src.config_map_key_ref {
        return match config_map_value(refs, &k.name, &k.key) {
            Some(v) => Ok(Some(v)),
            None if k.optional == Some(true) => Ok(None),
            None => Err(EnvError(format!(
                "configmap {:?} key {:?} not found",
                k.name, k.key
            ))),
        };
    }
    if let Some(k) = &src.secret_key_ref {
        return match secret_value(refs, &k.name, &k.key) {
            Some(v) => Ok(Some(v)),
            None if k.optional == Some(true) => Ok(None),
            None => Err(EnvError(format!(
                "secret {:?} key {:?} not found",
                k.name, k.key
            ))),
        };
    }
    Err(EnvError("env valueFrom names no source".into()))
}

/// Expands `$(NAME)` references against `vars`; `$$` escapes a `$`; unknown references stay.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                if let Some(v) = vars.get(name) {
                    out.push_str(v);
                    i += end + 3;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The environment of container `c`: `base` first, then `envFrom`, then `env` in order, each
/// value expanded against what came before it.
pub fn resolve(
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
    node: &NodeFacts,
    refs: &Refs,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, vars: &mut HashMap<String, String>| {
            if vars.insert(k.clone(), v).is_none() {
                order.push(k);
            }
        };
    for (k, v) in base {
        set(k, v, &mut order, &mut vars);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match refs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(format!("{prefix}{k}"), v.clone(), &mut order, &mut vars);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match refs.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                            &mut order,
                            &mut vars,
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(src)) => source_value(pod, c, src, ip, node, refs)?,
            (Some(v), None) => Some(expand(v, &vars)),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(e.name.clone(), v, &mut order, &mut vars);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// The keys of ConfigMaps and Secrets the containers' env and the pod's volumes refer to.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for e in c.env.iter().flatten() {
            if let Some(src) = &e.value_from {
                if let Some(k) = &src.config_map_key_ref {
                    cms.push(k.name.clone());
                }
                if let Some(k) = &src.secret_key_ref {
                    secrets.push(k.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(s) = &v.secret
            && let Some(n) = &s.secret_name
        {
            secrets.push(n.clone());
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeFacts {
        NodeFacts {
            node_name: "n".into(),
            host_ip: Ipv4Addr::new(127, 9, 0, 1),
            cpu: 16.0,
            memory: 1e9,
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"kontrast.dev/node-rank": "1"}},
            "spec": {"containers": [{
                "name": "c",
                "resources": {"limits": {"cpu": "1500m"}},
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['kontrast.dev/node-rank']"}}},
                    {"name": "ADDR", "value": "$(POD_IP):29500 $$(POD_IP) $(NOPE)"},
                    {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1M"}}},
                ]
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn field_refs_config_maps_resources_and_expansion_resolve_like_kubelet() {
        let p = pod();
        let mut refs = Refs::default();
        refs.config_maps.insert(
            "cm".into(),
            serde_json::from_value(serde_json::json!({"data": {"k": "v"}})).unwrap(),
        );
        let env = resolve(
            &p,
            &p.spec.as_ref().unwrap().containers[0],
            Ipv4Addr::new(127, 9, 1, 7),
            &node(),
            &refs,
            vec![("HOME".into(), "/root".into())],
        )
        .unwrap();
        let m: HashMap<_, _> = env.iter().cloned().collect();
        assert_eq!(env[0].0, "HOME");
        assert_eq!(m["POD_IP"], "127.9.1.7");
        assert_eq!(m["RANK"], "1");
        assert_eq!(m["ADDR"], "127.9.1.7:29500 $(POD_IP) $(NOPE)");
        assert_eq!(m["CFG"], "v");
        assert_eq!(m["CPUS"], "2");
        assert_eq!(m["MEM"], "1000");
    }

    #[test]
    fn a_missing_config_map_key_is_a_config_error_naming_it() {
        let p = pod();
        let err = resolve(
            &p,
            &p.spec.as_ref().unwrap().containers[0],
            Ipv4Addr::LOCALHOST,
            &node(),
            &Refs::default(),
            vec![],
        )
        .unwrap_err();
        assert!(err.0.contains("\"cm\""), "{err}");
    }

    #[test]
    fn quantities_parse_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("3"), Some(3.0));
        assert_eq!(parse_quantity("3x"), None);
    }

    #[test]
    fn referenced_objects_are_collected_from_env_and_volumes() {
        let (cms, secrets) = referenced(&pod());
        assert_eq!(cms, vec!["cm"]);
        assert!(secrets.is_empty());
    }
}
