//! Pod volumes from the run's `DataVolume`s.
//!
//! The Pod Security Standard level the worker and evaluation pods need follows from these alone
//! (everything else about them meets "restricted", see `pod::pod_security`):
//! - `persistentVolumeClaim` only: **restricted**. Any storage works this way, NFS and node
//!   directories included, through a PersistentVolume behind the claim.
//! - an inline `nfs` volume: **baseline** (restricted allows no inline network volumes).
//! - a `hostPath` volume: **privileged** (baseline forbids host paths too); meant for
//!   single-node and test clusters.
use kontrast_api::v1alpha1::{DataVolume, EvaluationDataset, VolumeSource};
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

/// The read-only pod volume named `name` for an evaluation dataset's volume and its mount at the
/// dataset's mount path; `None` when the dataset lives in the image.
pub fn evaluation_dataset(name: &str, dataset: &EvaluationDataset) -> Option<(Value, Value)> {
    let v = volume(name, dataset.volume.as_ref()?, true)?;
    let mount = json!({"name": name, "mountPath": dataset.mount_path(), "readOnly": true});
    Some((v, mount))
}
