//! Pod volumes as host directories, and each container's bind mounts.
//!
//! `configMap` and `secret` volumes are materialised as files (keys or `items`, `defaultMode`);
//! `emptyDir` is a per-pod directory; `persistentVolumeClaim` a per-claim directory that outlives
//! pods; `hostPath` is the real path when it lies under one of the node's allowed prefixes and
//! otherwise a directory under the state directory. Other volume types are refused with a clear
//! reason rather than silently ignored.
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::env::Refs;
use super::paths;

/// A bind mount of `source` at `target` inside the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path.
    pub source: PathBuf,
    /// Path the container sees.
    pub target: PathBuf,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// Why the pod's volumes could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// A volume type this node cannot provide.
    #[error(
        "volume {name:?}: type {kind} is not supported by the local node (supported: configMap, secret, emptyDir, hostPath, persistentVolumeClaim)"
    )]
    Unsupported {
        /// Volume name.
        name: String,
        /// Its type.
        kind: String,
    },
    /// A referenced ConfigMap/Secret or key is missing (retried, like kubelet).
    #[error("volume {name:?}: {message}")]
    Missing {
        /// Volume name.
        name: String,
        /// What is missing.
        message: String,
    },
    /// A container mounts a volume the pod does not declare.
    #[error("container {container:?} mounts undeclared volume {name:?}")]
    Undeclared {
        /// Container name.
        container: String,
        /// Volume name.
        name: String,
    },
    /// A file operation failed.
    #[error("volume {name:?}: {message}")]
    Io {
        /// Volume name.
        name: String,
        /// What failed.
        message: String,
    },
}

impl VolumeError {
    /// Whether retrying later can help (a missing object may still be created).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

/// Node settings that decide where volumes live.
#[derive(Debug, Clone)]
pub struct VolumeHost {
    /// The node's state directory.
    pub state_dir: PathBuf,
    /// Host prefixes a `hostPath` may use directly.
    pub host_path_allow: Vec<PathBuf>,
}

fn io(name: &str, what: &str, p: &Path, e: std::io::Error) -> VolumeError {
    VolumeError::Io {
        name: name.to_string(),
        message: format!("{what} {}: {e}", p.display()),
    }
}

fn write_files(
    name: &str,
    dir: &Path,
    files: Vec<(String, Vec<u8>, i32)>,
) -> Result<(), VolumeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(name, "clearing", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io(name, "creating", dir, e))?;
    for (rel, bytes, mode) in files {
        let rel = Path::new(&rel);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(VolumeError::Io {
                name: name.into(),
                message: format!("item path {} escapes the volume", rel.display()),
            });
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(name, "creating", parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io(name, "writing", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32 & 0o777))
            .map_err(|e| io(name, "chmod", &path, e))?;
    }
    Ok(())
}

fn select(
    name: &str,
    object: &str,
    data: HashMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
) -> Result<Vec<(String, Vec<u8>, i32)>, VolumeError> {
    match items {
        None => Ok(data
            .into_iter()
            .map(|(k, v)| (k, v, default_mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|it| match data.get(&it.key) {
                Some(v) => Ok((it.path.clone(), v.clone(), it.mode.unwrap_or(default_mode))),
                None => Err(VolumeError::Missing {
                    name: name.into(),
                    message: format!("{object} has no key {:?}", it.key),
                }),
            })
            .collect(),
    }
}

/// Creates every volume of `pod` and returns volume name → host directory.
pub fn materialise(
    pod: &Pod,
    pod_dir: &Path,
    host: &VolumeHost,
    refs: &Refs,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let name = v.name.as_str();
        let dir = pod_dir.join("volumes").join(name);
        let path = if let Some(cm) = &v.config_map {
            match refs.config_maps.get(&cm.name) {
                Some(obj) => {
                    let mut data: HashMap<String, Vec<u8>> = obj
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect();
                    data.extend(
                        obj.binary_data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.0.clone())),
                    );
                    let files = select(
                        name,
                        &format!("configmap {:?}", cm.name),
                        data,
                        cm.items.as_ref(),
                        cm.default_mode.unwrap_or(0o644),
                    )?;
                    write_files(name, &dir, files)?;
                }
                None if cm.optional == Some(true) => write_files(name, &dir, vec![])?,
                None => {
                    return Err(VolumeError::Missing {
                        name: name.into(),
                        message: format!("configmap {:?} not found", cm.name),
                    });
                }
            }
            dir
        } else if let Some(sec) = &v.secret {
            let sname = sec.secret_name.clone().unwrap_or_default();
            match refs.secrets.get(&sname) {
                Some(obj) => {
                    let data = obj
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect();
                    let files = select(
                        name,
                        &format!("secret {sname:?}"),
                        data,
                        sec.items.as_ref(),
                        sec.default_mode.unwrap_or(0o644),
                    )?;
                    write_files(name, &dir, files)?;
                }
                None if sec.optional == Some(true) => write_files(name, &dir, vec![])?,
                None => {
                    return Err(VolumeError::Missing {
                        name: name.into(),
                        message: format!("secret {sname:?} not found"),
                    });
                }
            }
            dir
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| io(name, "creating", &dir, e))?;
            dir
        } else if let Some(pvc) = &v.persistent_volume_claim {
            let d = paths::claim_dir(&host.state_dir, ns, &pvc.claim_name);
            std::fs::create_dir_all(&d).map_err(|e| io(name, "creating", &d, e))?;
            d
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            let allowed = p.is_absolute()
                && !p
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                && host.host_path_allow.iter().any(|a| p.starts_with(a));
            if allowed {
                if !p.exists() {
                    return Err(VolumeError::Missing {
                        name: name.into(),
                        message: format!("hostPath {} does not exist", p.display()),
                    });
                }
                p
            } else {
                let d = paths::host_path_dir(&host.state_dir, &p);
                let is_file = matches!(hp.type_.as_deref(), Some("File") | Some("FileOrCreate"));
                if is_file {
                    if let Some(parent) = d.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| io(name, "creating", parent, e))?;
                    }
                    if !d.exists() {
                        std::fs::write(&d, b"").map_err(|e| io(name, "creating", &d, e))?;
                    }
                } else {
                    std::fs::create_dir_all(&d).map_err(|e| io(name, "creating", &d, e))?;
                }
                d
            }
        } else {
            let value = serde_json::to_value(v).unwrap_or_default();
            let kind = value
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                .unwrap_or_else(|| "unknown".into());
            return Err(VolumeError::Unsupported {
                name: name.into(),
                kind,
            });
        };
        out.insert(name.to_string(), path);
    }
    Ok(out)
}

/// The bind mounts of container `c` given the pod's volume directories.
pub fn mounts_for(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, VolumeError> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes
                .get(&m.name)
                .ok_or_else(|| VolumeError::Undeclared {
                    container: c.name.clone(),
                    name: m.name.clone(),
                })?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if Path::new(sub).is_relative() && !sub.split('/').any(|p| p == "..") => {
                    let p = base.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p).map_err(|e| io(&m.name, "creating", &p, e))?;
                    }
                    p
                }
                Some(sub) => {
                    return Err(VolumeError::Io {
                        name: m.name.clone(),
                        message: format!("subPath {sub:?} must be relative without '..'"),
                    });
                }
                None => base.clone(),
            };
            Ok(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("kontrast-volumes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn config_map_keys_become_files_and_host_paths_stay_inside_the_state_dir() {
        let root = tmp("cm");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/k", "readOnly": true}]}],
                     "volumes": [{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "h", "hostPath": {"path": "/data/x"}},
                                 {"name": "d", "persistentVolumeClaim": {"claimName": "runs"}}]}
        }))
        .unwrap();
        let mut refs = Refs::default();
        refs.config_maps.insert(
            "cm".into(),
            serde_json::from_value(serde_json::json!({"data": {"config.json": "{}"}})).unwrap(),
        );
        let host = VolumeHost {
            state_dir: root.join("state"),
            host_path_allow: vec![],
        };
        let vols = materialise(&pod, &root.join("pod"), &host, &refs).unwrap();
        assert_eq!(
            std::fs::read_to_string(vols["cfg"].join("config.json")).unwrap(),
            "{}"
        );
        assert!(vols["h"].starts_with(root.join("state")));
        assert_eq!(vols["d"], root.join("state/volumes/claims/ns/runs"));
        let m = mounts_for(&pod.spec.as_ref().unwrap().containers[0], &vols).unwrap();
        assert_eq!(
            m,
            vec![Mount {
                source: vols["cfg"].clone(),
                target: "/etc/k".into(),
                read_only: true
            }]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unsupported_volume_types_and_missing_config_maps_are_named() {
        let root = tmp("bad");
        let host = VolumeHost {
            state_dir: root.clone(),
            host_path_allow: vec![],
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [], "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}
        }))
        .unwrap();
        let e = materialise(&pod, &root, &host, &Refs::default()).unwrap_err();
        assert!(e.to_string().contains("nfs") && !e.is_transient(), "{e}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [], "volumes": [{"name": "c", "configMap": {"name": "absent"}}]}
        }))
        .unwrap();
        let e = materialise(&pod, &root, &host, &Refs::default()).unwrap_err();
        assert!(e.to_string().contains("absent") && e.is_transient(), "{e}");
        let _ = std::fs::remove_dir_all(root);
    }
}
