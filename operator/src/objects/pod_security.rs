//! The Kubernetes "restricted" Pod Security Standard as a check over a pod spec (JSON), so that
//! the tests of every pod the product makes — worker pods, evaluation Jobs, the chart's operator
//! Deployment — hold them to one definition.
use serde_json::{Value, json};

/// The volume types the "restricted" Pod Security Standard allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// What the "restricted" Pod Security Standard (the checks of its latest version) forbids in
/// the pod spec `pod`, one line each. Volumes of other types are reported as
/// `volume NAME: TYPE`, so tests can tell them from everything else.
pub fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let psc = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == json!(true) {
            v.push(format!("{host} is true"));
        }
    }
    for vol in pod["volumes"].as_array().into_iter().flatten() {
        let Some(obj) = vol.as_object() else {
            v.push(format!("volume {vol} is not an object"));
            continue;
        };
        for kind in obj.keys().filter(|k| *k != "name") {
            if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
                v.push(format!(
                    "volume {}: {kind}",
                    vol["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    // Baseline's pod-level checks, which restricted includes: no unsafe sysctls, SELinux
    // users/roles, Windows host processes or non-default AppArmor (all simply unset here).
    for field in [
        "sysctls",
        "seLinuxOptions",
        "windowsOptions",
        "appArmorProfile",
    ] {
        if psc.get(field).is_some() {
            v.push(format!("pod securityContext sets {field}"));
        }
    }
    if psc["runAsUser"] == json!(0) {
        v.push("pod runAsUser is 0".into());
    }
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect();
    if containers.is_empty() {
        v.push("no containers".into());
    }
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let either = |field: &str| {
            if sc.get(field).is_some() {
                &sc[field]
            } else {
                &psc[field]
            }
        };
        if sc["privileged"] == json!(true) {
            v.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != json!(false) {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either("runAsNonRoot") != &json!(true) {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        if sc["runAsUser"] == json!(0) {
            v.push(format!("{name}: runAsUser is 0"));
        }
        let seccomp = either("seccompProfile")["type"].as_str().unwrap_or("");
        if !["RuntimeDefault", "Localhost"].contains(&seccomp) {
            v.push(format!("{name}: seccompProfile is {seccomp:?}"));
        }
        let drop = &sc["capabilities"]["drop"];
        if !drop.as_array().is_some_and(|d| d.contains(&json!("ALL"))) {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
        for field in [
            "procMount",
            "seLinuxOptions",
            "windowsOptions",
            "appArmorProfile",
        ] {
            if sc.get(field).is_some() {
                v.push(format!("{name}: securityContext sets {field}"));
            }
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port.get("hostPort").is_some() {
                v.push(format!("{name}: hostPort"));
            }
        }
    }
    v
}
