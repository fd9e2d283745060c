//! Where the node keeps things under its state directory.
use std::path::{Path, PathBuf};

/// A path component from a Kubernetes name (names are DNS labels/subdomains, so this only guards
/// against surprises such as `..`).
fn component(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .replace("..", "__")
}

/// Logs, volumes and files of pod `namespace/name`.
pub fn pod_dir(node_state: &Path, namespace: &str, name: &str) -> PathBuf {
    node_state
        .join("pods")
        .join(format!("{}_{}", component(namespace), component(name)))
}

/// The directory behind `persistentVolumeClaim: {claimName}` in `namespace`: a claim's data
/// outlives its pods, like a real volume.
pub fn claim_dir(node_state: &Path, namespace: &str, claim: &str) -> PathBuf {
    node_state
        .join("volumes/claims")
        .join(component(namespace))
        .join(component(claim))
}

/// The directory behind a `hostPath` volume that is not on the node's allow-list.
pub fn host_path_dir(node_state: &Path, host_path: &Path) -> PathBuf {
    let mut out = node_state.join("volumes/host");
    for c in host_path.components() {
        if let std::path::Component::Normal(part) = c {
            out.push(component(&part.to_string_lossy()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_cannot_escape_the_state_directory() {
        let d = host_path_dir(Path::new("/s"), Path::new("/data/../../etc"));
        assert_eq!(d, PathBuf::from("/s/volumes/host/data/etc"));
    }

    #[test]
    fn pod_directories_are_per_namespace_and_name() {
        assert_eq!(
            pod_dir(Path::new("/s"), "ns", "p"),
            PathBuf::from("/s/pods/ns_p")
        );
    }
}
