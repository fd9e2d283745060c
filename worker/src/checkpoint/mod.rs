//! Checkpoints: atomic, checksummed, newest-valid resume.
//!
//! A checkpoint of epoch N is two files in the run's checkpoint directory:
//!
//! - `epoch-NNNN.safetensors`: every tensor the trainer hands over (both encoders, queues,
//!   optimiser buffers, libtorch RNG state, …), on the CPU, by name.
//! - `epoch-NNNN.json`: the [`Manifest`]: format version, epoch, step, config hash, the
//!   caller's free-form metadata, and the SHA-256 and byte size of the tensors file.
//!
//! **Why safetensors and a JSON manifest** rather than tch's own `save_multi` (a TorchScript
//! pickle archive): safetensors is a plain header + raw little-endian buffers, so a checkpoint
//! opens in Python (`safetensors.torch.load_file`), PyTorch and other tools without this binary;
//! it runs no code when loaded (no pickle); and it can be memory-mapped. Its only gap,
//! integrity, is what the manifest adds: a torn or bit-flipped tensors file fails its checksum
//! and is skipped, never loaded half-way.
//!
//! **Atomicity.** Each file is written as `*.tmp` in the same directory, fsynced, renamed into
//! place, and the directory fsynced. The manifest goes last: it is the commit point, so a crash
//! at any moment leaves either the previous checkpoints only or a complete new one. Leftover
//! temporary files and tensors files without a manifest are deleted by the next save.
//!
//! **Retention.** After a successful save the newest `keep` checkpoints up to the one just
//! written stay; older ones are deleted. Checkpoints of *later* epochs than the one just
//! written are deleted too: they belong to an abandoned history (a run started over in the
//! same directory) and must never be resumed from.
//!
//! Only one process (rank 0) writes a directory; every rank may read it.
pub mod pickle;
pub mod torch_save;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, TchError, Tensor};

/// The manifest layout this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What failed with a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing", "renaming", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A tensor could not be brought to the CPU in a contiguous layout for saving.
    #[error("preparing tensor {name} for saving: {source}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// libtorch's reason.
        #[source]
        source: TchError,
    },
    /// The tensors file could not be written (e.g. an unsupported dtype).
    #[error("writing tensors to {path}: {source}")]
    Write {
        /// The temporary tensors file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: TchError,
    },
    /// Two tensors were given the same name.
    #[error("tensor name {0:?} appears twice in one checkpoint")]
    DuplicateName(String),
    /// Something could not be serialised to JSON.
    #[error("serialising {what}: {source}")]
    Json {
        /// What.
        what: &'static str,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint on disk is incomplete, corrupt or of an unknown format.
    #[error("checkpoint {path} is unusable: {reason}")]
    Corrupt {
        /// Its manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No checkpoint of this epoch exists.
    #[error("no checkpoint of epoch {epoch} in {dir}")]
    NotFound {
        /// The epoch asked for.
        epoch: u32,
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

impl CheckpointError {
    /// Whether the file system ran out of space or quota: a retry from the same checkpoint
    /// would fill it again at the same write.
    pub fn is_storage_full(&self) -> bool {
        match self {
            CheckpointError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            // libtorch's safetensors writer reports the OS error only as text.
            CheckpointError::Write { source, .. } => {
                let text = source.to_string();
                ["StorageFull", "QuotaExceeded", "code: 28,", "code: 122,"]
                    .iter()
                    .any(|m| text.contains(m))
            }
            _ => false,
        }
    }
}

/// What the caller stores besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Optimiser steps done when the checkpoint was taken.
    pub step: u64,
    /// Hash of the run configuration the state belongs to (see [`hash_json`]).
    pub config_hash: String,
    /// Anything else (host RNG state, data-loader position, …).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// The JSON manifest `epoch-NNNN.json`: the commit point and integrity record of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Epochs completed.
    pub epoch: u32,
    /// Optimiser steps done.
    pub step: u64,
    /// Hash of the run configuration.
    pub config_hash: String,
    /// File name of the tensors file, in the same directory.
    pub tensors_file: String,
    /// Lower-case hex SHA-256 of the tensors file.
    pub tensors_sha256: String,
    /// Size of the tensors file in bytes.
    pub tensors_bytes: u64,
    /// When it was written (seconds since the Unix epoch).
    pub created_unix_seconds: u64,
    /// The caller's metadata.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A checkpoint found on disk (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its epoch (from the file name).
    pub epoch: u32,
    /// Its manifest.
    pub manifest: PathBuf,
    /// Its tensors file.
    pub tensors: PathBuf,
}

/// A newer checkpoint passed over because it is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its epoch.
    pub epoch: u32,
    /// Its manifest.
    pub manifest: PathBuf,
    /// Why.
    pub reason: String,
}

/// A verified checkpoint, loaded.
#[derive(Debug)]
pub struct Loaded {
    /// Its manifest.
    pub manifest: Manifest,
    /// The manifest's path (what progress reports name).
    pub path: PathBuf,
    /// The tensors, on the CPU, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Newer checkpoints skipped because they were unusable, newest first.
    pub skipped: Vec<Skipped>,
}

/// The checkpoints of one run: a directory and a retention count.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

fn stem(epoch: u32) -> String {
    format!("epoch-{epoch:04}")
}

/// What a directory entry is, from its name.
enum Kind {
    Manifest(u32),
    Tensors(u32),
    Temporary,
    Other,
}

fn classify(name: &str) -> Kind {
    if name.ends_with(".tmp") && name.starts_with("epoch-") {
        return Kind::Temporary;
    }
    let epoch = |suffix: &str| {
        let digits = name.strip_prefix("epoch-")?.strip_suffix(suffix)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u32>().ok()
    };
    if let Some(e) = epoch(".json") {
        Kind::Manifest(e)
    } else if let Some(e) = epoch(".safetensors") {
        Kind::Tensors(e)
    } else {
        Kind::Other
    }
}

/// Flushes a directory's entries (renames, deletions) to disk.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Flushes `path` to disk and returns its SHA-256 (hex) and size.
fn sync_and_hash(path: &Path) -> Result<(String, u64), CheckpointError> {
    let mut file = File::open(path).map_err(io("opening", path))?;
    file.sync_all().map_err(io("syncing", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((format!("{:x}", hasher.finalize()), bytes))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, directory fsync.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io("renaming", &tmp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Lower-case hex SHA-256 of `value`'s JSON: a stable hash of a run configuration, to store in
/// [`Meta::config_hash`] and compare on resume.
pub fn hash_json<T: Serialize>(value: &T) -> Result<String, CheckpointError> {
    let bytes = serde_json::to_vec(value).map_err(|source| CheckpointError::Json {
        what: "the value to hash",
        source,
    })?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

impl CheckpointStore {
    /// The checkpoints in `dir` (created on the first save), keeping the newest `keep` (at least
    /// the one just written: 0 counts as 1).
    pub fn new(dir: impl Into<PathBuf>, keep: u32) -> Self {
        Self {
            dir: dir.into(),
            keep: usize::try_from(keep.max(1)).unwrap_or(usize::MAX),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Manifest path of `epoch`'s checkpoint.
    pub fn manifest_path(&self, epoch: u32) -> PathBuf {
        self.dir.join(format!("{}.json", stem(epoch)))
    }

    /// Tensors path of `epoch`'s checkpoint.
    pub fn tensors_path(&self, epoch: u32) -> PathBuf {
        self.dir.join(format!("{}.safetensors", stem(epoch)))
    }

    /// Writes and commits the checkpoint of `epoch`, then applies retention. Tensors may live on
    /// any device and in any layout; they are stored contiguous on the CPU. Returns the manifest
    /// path.
    pub fn save<S: AsRef<str>, T: AsRef<Tensor>>(
        &self,
        epoch: u32,
        tensors: &[(S, T)],
        meta: &Meta,
    ) -> Result<PathBuf, CheckpointError> {
        let mut names = HashSet::new();
        for (name, _) in tensors {
            if !names.insert(name.as_ref()) {
                return Err(CheckpointError::DuplicateName(name.as_ref().to_string()));
            }
        }
        let cpu = tensors
            .iter()
            .map(|(name, t)| {
                let name = name.as_ref();
                let t = t
                    .as_ref()
                    .f_detach()
                    .and_then(|t| t.f_to_device(Device::Cpu))
                    .and_then(|t| t.f_contiguous())
                    .map_err(|source| CheckpointError::Tensor {
                        name: name.to_string(),
                        source,
                    })?;
                Ok((name, t))
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;

        fs::create_dir_all(&self.dir).map_err(io("creating directory", &self.dir))?;
        let tensors_path = self.tensors_path(epoch);
        let tmp = tmp_path(&tensors_path);
        let written = (|| {
            Tensor::write_safetensors(&cpu, &tmp).map_err(|source| CheckpointError::Write {
                path: tmp.clone(),
                source,
            })?;
            let (sha256, bytes) = sync_and_hash(&tmp)?;
            fs::rename(&tmp, &tensors_path).map_err(io("renaming", &tmp))?;
            Ok((sha256, bytes))
        })();
        let (tensors_sha256, tensors_bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The tensors file must be durable before the manifest that vouches for it.
        sync_dir(&self.dir)?;

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            epoch,
            step: meta.step,
            config_hash: meta.config_hash.clone(),
            tensors_file: format!("{}.safetensors", stem(epoch)),
            tensors_sha256,
            tensors_bytes,
            created_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            extra: meta.extra.clone(),
        };
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|source| CheckpointError::Json {
                what: "the checkpoint manifest",
                source,
            })?;
        let manifest_path = self.manifest_path(epoch);
        write_atomically(&self.dir, &manifest_path, &json)?;
        tracing::info!(epoch, path = %manifest_path.display(), bytes = tensors_bytes, "checkpoint written");

        // The checkpoint is committed: a failing clean-up must not fail the save.
        if let Err(e) = self.prune(epoch) {
            tracing::warn!(error = %e, "pruning old checkpoints");
        }
        Ok(manifest_path)
    }

    /// Deletes what retention drops after `saved` was committed: older checkpoints beyond
    /// `keep`, later ones (an abandoned history), tensors without a manifest, temporary files.
    fn prune(&self, saved: u32) -> Result<(), CheckpointError> {
        let mut manifests = Vec::new();
        let mut tensors = Vec::new();
        let mut temporary = Vec::new();
        for name in self.file_names()? {
            match classify(&name) {
                Kind::Manifest(e) => manifests.push(e),
                Kind::Tensors(e) => tensors.push(e),
                Kind::Temporary => temporary.push(self.dir.join(name)),
                Kind::Other => {}
            }
        }
        manifests.sort_unstable_by(|a, b| b.cmp(a));
        let kept: HashSet<u32> = manifests
            .iter()
            .copied()
            .filter(|&e| e <= saved)
            .take(self.keep)
            .collect();
        let remove = |path: PathBuf| match fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove"),
        };
        for &e in manifests.iter().filter(|e| !kept.contains(e)) {
            if e > saved {
                tracing::info!(
                    epoch = e,
                    "removing a checkpoint later than the one just written (abandoned history)"
                );
            }
            // Manifest first: a crash in between leaves an orphan, never a dangling manifest.
            remove(self.manifest_path(e));
            remove(self.tensors_path(e));
        }
        for e in tensors.into_iter().filter(|e| !kept.contains(e)) {
            remove(self.tensors_path(e));
        }
        for path in temporary {
            remove(path);
        }
        sync_dir(&self.dir)
    }

    fn file_names(&self) -> Result<Vec<String>, CheckpointError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CheckpointError::Io {
                    action: "listing",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("listing", &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The checkpoints that have a manifest, oldest first, without verifying them. A missing
    /// directory has none.
    pub fn list(&self) -> Result<Vec<Entry>, CheckpointError> {
        let mut entries: Vec<Entry> = self
            .file_names()?
            .into_iter()
            .filter_map(|name| match classify(&name) {
                Kind::Manifest(epoch) => Some(Entry {
                    epoch,
                    manifest: self.manifest_path(epoch),
                    tensors: self.tensors_path(epoch),
                }),
                _ => None,
            })
            .collect();
        entries.sort_by_key(|e| e.epoch);
        Ok(entries)
    }

    /// Loads and verifies the checkpoint of `epoch`: [`CheckpointError::Corrupt`] when its
    /// manifest, size, checksum or contents are wrong.
    pub fn load(&self, epoch: u32) -> Result<Loaded, CheckpointError> {
        let path = self.manifest_path(epoch);
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::NotFound {
                    epoch,
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| corrupt(format!("unreadable manifest: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        if manifest.epoch != epoch {
            return Err(corrupt(format!(
                "the manifest says epoch {}",
                manifest.epoch
            )));
        }
        if manifest.tensors_file != format!("{}.safetensors", stem(epoch)) {
            return Err(corrupt(format!(
                "unexpected tensors file {:?}",
                manifest.tensors_file
            )));
        }
        let tensors_path = self.tensors_path(epoch);
        let bytes = match fs::read(&tensors_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(format!("{} is missing", manifest.tensors_file)));
            }
            Err(e) => return Err(io("reading", &tensors_path)(e)),
        };
        if bytes.len() as u64 != manifest.tensors_bytes {
            return Err(corrupt(format!(
                "{} has {} bytes, the manifest says {}",
                manifest.tensors_file,
                bytes.len(),
                manifest.tensors_bytes
            )));
        }
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        if sha256 != manifest.tensors_sha256 {
            return Err(corrupt(format!(
                "{} has SHA-256 {sha256}, the manifest says {}",
                manifest.tensors_file, manifest.tensors_sha256
            )));
        }
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("{}: {e:?}", manifest.tensors_file)))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let t = Tensor::try_from(view).map_err(|e| corrupt(format!("tensor {name}: {e}")))?;
            tensors.insert(name, t);
        }
        Ok(Loaded {
            manifest,
            path,
            tensors,
            skipped: Vec::new(),
        })
    }

    /// The newest checkpoint that verifies, or `None` when there is none. Unusable newer ones
    /// are skipped with a warning and listed in [`Loaded::skipped`]; I/O errors other than a
    /// missing file are returned, so a flaky volume is retried rather than resumed from an
    /// older epoch.
    pub fn latest(&self) -> Result<Option<Loaded>, CheckpointError> {
        let mut skipped = Vec::new();
        for entry in self.list()?.into_iter().rev() {
            match self.load(entry.epoch) {
                Ok(mut loaded) => {
                    if !skipped.is_empty() {
                        tracing::warn!(
                            epoch = entry.epoch,
                            skipped = skipped.len(),
                            "resuming from an older checkpoint"
                        );
                    }
                    loaded.skipped = skipped;
                    return Ok(Some(loaded));
                }
                Err(CheckpointError::Corrupt { path, reason }) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping unusable checkpoint");
                    skipped.push(Skipped {
                        epoch: entry.epoch,
                        manifest: path,
                        reason,
                    });
                }
                // Deleted between listing and reading: as if never listed.
                Err(CheckpointError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !skipped.is_empty() {
            tracing::warn!(
                skipped = skipped.len(),
                dir = %self.dir.display(),
                "no usable checkpoint"
            );
        }
        Ok(None)
    }
}
