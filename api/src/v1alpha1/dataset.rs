//! Datasets and the volumes that hold them.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::rules;
use crate::config::DatasetFormat;

/// The pre-training images.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::dataset_inside_mount())]
#[x_kube(validation = rules::annotations_only_for_flat())]
pub struct DatasetSpec {
    /// On-disk layout: `imagefolder` (a sub-directory per class; labels unused), `flat` (a
    /// directory of images searched recursively, e.g. COCO train2017) or `fashionMnist` (the IDX
    /// files of Fashion-MNIST).
    pub format: DatasetFormat,
    /// Absolute path of the dataset inside the worker containers, without `..` components.
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub path: String,
    /// Only for `flat`: a COCO-style annotation file (e.g.
    /// `/data/coco/annotations/instances_train2017.json`) whose `images[].file_name` entries,
    /// relative to `path`, are the images to train on. Omitted: every image under `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub annotations: Option<String>,
    /// Volume holding the dataset, mounted read-only unless it says otherwise. Omit it when the
    /// image already contains the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DataVolume>,
}

/// A volume: exactly one of `persistentVolumeClaim`, `hostPath` or `nfs`.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rules::exactly_one_volume_source(),
    validation = rules::host_path_plain(),
    validation = rules::host_path_not_system()
)]
pub struct DataVolume {
    /// Absolute path the volume is mounted at. Defaults to the `path` of the dataset it holds
    /// (`/checkpoints` for the checkpoint volume); that path must be the mount path or lie below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub mount_path: Option<String>,
    /// A PersistentVolumeClaim in the run's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcVolume>,
    /// A directory on the node (single-node clusters and tests; every node needs the same data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
    /// An NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsVolume>,
}

/// A PersistentVolumeClaim source.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcVolume {
    /// Name of the claim, in the run's namespace.
    #[schemars(length(min = 1, max = MAX_DNS_SUBDOMAIN_LENGTH), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub claim_name: String,
    /// Mount read-only. Unset: read-only for datasets, read-write for checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A host directory source.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolume {
    /// Absolute path of the directory on the node, written plainly (no `//` or `.` components).
    /// It may not be `/` nor be, contain or lie inside a system directory of the node (`/etc`,
    /// `/proc`, `/sys`, `/dev`, `/run`, `/var/run`, `/var/lib/kubelet`, the container runtimes'
    /// state, …): a run has no business there, and the checkpoint volume is mounted writable.
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub path: String,
}

/// An NFS source.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NfsVolume {
    /// Host name or IP address of the NFS server.
    #[schemars(length(min = 1, max = MAX_DNS_SUBDOMAIN_LENGTH))]
    pub server: String,
    /// Absolute path of the export on the server.
    #[schemars(length(min = 1, max = MAX_PATH_LENGTH), pattern(ABSOLUTE_PATH_PATTERN))]
    pub path: String,
    /// Mount read-only. Unset: read-only for datasets, read-write for checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// The one source a [`DataVolume`] names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VolumeSource<'a> {
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim(&'a PvcVolume),
    /// A host directory.
    HostPath(&'a HostPathVolume),
    /// An NFS export.
    Nfs(&'a NfsVolume),
}

impl DataVolume {
    /// The source, when exactly one is set (always so after `resolve` succeeded).
    pub fn source(&self) -> Option<VolumeSource<'_>> {
        match (&self.persistent_volume_claim, &self.host_path, &self.nfs) {
            (Some(pvc), None, None) => Some(VolumeSource::PersistentVolumeClaim(pvc)),
            (None, Some(host), None) => Some(VolumeSource::HostPath(host)),
            (None, None, Some(nfs)) => Some(VolumeSource::Nfs(nfs)),
            _ => None,
        }
    }

    /// Number of sources set.
    pub(crate) fn source_count(&self) -> usize {
        [
            self.persistent_volume_claim.is_some(),
            self.host_path.is_some(),
            self.nfs.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// `readOnly` as the user wrote it (host paths have none).
    pub fn read_only(&self) -> Option<bool> {
        match self.source()? {
            VolumeSource::PersistentVolumeClaim(pvc) => pvc.read_only,
            VolumeSource::Nfs(nfs) => nfs.read_only,
            VolumeSource::HostPath(_) => None,
        }
    }

    /// Where to mount the volume: `mountPath`, else `default`.
    pub fn mount_path_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.mount_path.as_deref().unwrap_or(default)
    }
}

impl DatasetSpec {
    /// Where to mount the dataset's volume.
    pub fn mount_path(&self) -> &str {
        match &self.volume {
            Some(volume) => volume.mount_path_or(&self.path),
            None => &self.path,
        }
    }
}

/// True when `path` is `mount` or lies below it.
pub(crate) fn lies_within(path: &str, mount: &str) -> bool {
    let mount = mount.trim_end_matches('/');
    path == mount
        || mount.is_empty()
        || path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
}
