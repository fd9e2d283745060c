//! Pod volumes from the run's `DataVolume`s.
use kontrast_api::v1alpha1::{DataVolume, VolumeSource};
use serde_json::{Value, json};

/// The pod volume named `name` for `v`, read-only when `read_only`.
pub fn volume(name: &str, v: &DataVolume, read_only: bool) -> Option<Value> {
    Some(match v.source()? {
        VolumeSource::PersistentVolumeClaim(p) => {
            json!({"name": name, "persistentVolumeClaim": {"claimName": p.claim_name, "readOnly": read_only || p.read_only == Some(true)}})
        }
        VolumeSource::HostPath(h) => {
            json!({"name": name, "hostPath": {"path": h.path, "type": "Directory"}})
        }
        VolumeSource::Nfs(n) => {
            json!({"name": name, "nfs": {"server": n.server, "path": n.path, "readOnly": read_only || n.read_only == Some(true)}})
        }
    })
}
