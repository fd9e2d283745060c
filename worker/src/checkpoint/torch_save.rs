//! Reading `torch.save` files: the zip container PyTorch writes since 1.6 (`<name>/data.pkl`,
//! one `<name>/data/<key>` record per storage, `<name>/byteorder`), decoded by [`super::pickle`]
//! and flattened into dotted names — `state_dict.module.encoder_q.conv1.weight`, `epoch`, `arch`.
//! What `kontrast import` reads PyTorch MoCo checkpoints with; no Python code runs.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::pickle::{self, TensorRef, Value};

/// Deflate expands at most 1032-fold; no record may declare more per compressed byte.
const MAX_EXPANSION: u64 = 1032;

/// A `torch.save` file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TorchSaveError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The leaves of a `torch.save` file that matter for importing, by flattened name.
#[derive(Debug, Default)]
pub struct TorchSave {
    /// Tensors, contiguous, on the CPU.
    pub tensors: BTreeMap<String, Tensor>,
    /// Integers (`epoch`).
    pub ints: BTreeMap<String, i64>,
    /// Strings (`arch`).
    pub strings: BTreeMap<String, String>,
}

/// Reads the `torch.save` file at `path`.
pub fn read(path: &Path) -> Result<TorchSave, TorchSaveError> {
    let fail = |reason: String| TorchSaveError {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        fail(format!(
            "not a torch.save zip container ({e}); files from PyTorch before 1.6 must be \
             re-saved with a current PyTorch"
        ))
    })?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .map(str::to_string)
        .ok_or_else(|| fail("the container has no data.pkl".into()))?;
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let mut record = |name: &str| -> Result<Vec<u8>, TorchSaveError> {
        let entry = zip
            .by_name(name)
            .map_err(|e| fail(format!("record {name}: {e}")))?;
        let declared = entry.size();
        // PyTorch stores records uncompressed. A compressed one may not claim more than deflate
        // can expand to, nor deliver more than it claims: a few hostile bytes must not inflate
        // into gigabytes.
        if declared > entry.compressed_size().saturating_mul(MAX_EXPANSION) {
            return Err(fail(format!(
                "record {name} declares {declared} bytes from {} compressed bytes",
                entry.compressed_size()
            )));
        }
        // The header's size is only a hint: a hostile one must not reserve more memory up front
        // than the file has bytes.
        let reserve = declared.min(file_len).min(1 << 26);
        let mut bytes = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        entry
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("record {name}: {e}")))?;
        if bytes.len() as u64 > declared {
            return Err(fail(format!(
                "record {name} holds more than the {declared} bytes its header declares"
            )));
        }
        Ok(bytes)
    };
    // Absent in files of old writers, which were all little-endian.
    if let Ok(order) = record(&format!("{root}byteorder"))
        && order != b"little"
    {
        return Err(fail(format!(
            "byte order {:?} is not supported",
            String::from_utf8_lossy(&order)
        )));
    }
    let decoded = pickle::decode(&record(&pkl)?).map_err(|e| fail(e.to_string()))?;

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = TorchSave::default();
    let leaves = decoded.leaves().map_err(|e| fail(e.to_string()))?;
    for (name, leaf) in leaves {
        match leaf {
            Value::Tensor(t) => {
                if !storages.contains_key(&t.key) {
                    let bytes = record(&format!("{root}data/{}", t.key))?;
                    let storage =
                        storage_tensor(&bytes, t).map_err(|r| fail(format!("{name}: {r}")))?;
                    storages.insert(t.key.clone(), storage);
                }
                let tensor =
                    view(&storages[&t.key], t).map_err(|r| fail(format!("{name}: {r}")))?;
                out.tensors.insert(name, tensor);
            }
            Value::Int(v) => {
                out.ints.insert(name, *v);
            }
            Value::Str(s) => {
                out.strings.insert(name, s.clone());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The storage record as a flat tensor of its element type.
fn storage_tensor(bytes: &[u8], t: &TensorRef) -> Result<Tensor, String> {
    let element = t.kind.elt_size_in_bytes();
    let numel = usize::try_from(t.storage_numel).map_err(|_| "negative storage size")?;
    if numel.checked_mul(element) != Some(bytes.len()) {
        return Err(format!(
            "storage {} holds {} bytes, not {numel} × {element}",
            t.key,
            bytes.len()
        ));
    }
    Tensor::f_from_data_size(bytes, &[t.storage_numel], t.kind).map_err(|e| e.to_string())
}

/// The tensor `t` describes, checked to lie inside its storage, copied out contiguous.
fn view(storage: &Tensor, t: &TensorRef) -> Result<Tensor, String> {
    let numel = storage.numel() as i64;
    let mut last = t.offset;
    for (&n, &s) in t.size.iter().zip(&t.stride) {
        if n < 0 || s < 0 {
            return Err("negative size or stride".into());
        }
        if n == 0 {
            last = -1;
            break;
        }
        last = (n - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or("size × stride overflows")?;
    }
    if t.offset < 0 || (last >= numel && last >= 0) {
        return Err(format!(
            "shape {:?} with strides {:?} at offset {} exceeds its storage of {numel} elements",
            t.size, t.stride, t.offset
        ));
    }
    // A view with more elements than its storage repeats them (a stride of 0, overlapping
    // strides); copied out contiguous, a few bytes of file could ask for terabytes.
    let elements = t.size.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    if elements.is_none_or(|n| n > numel) {
        return Err(format!(
            "shape {:?} with strides {:?} repeats the elements of its storage of {numel}; \
             a saved parameter or buffer never does",
            t.size, t.stride
        ));
    }
    storage
        .f_as_strided(&t.size, &t.stride, Some(t.offset))
        .and_then(|v| v.f_contiguous())
        .map_err(|e| e.to_string())
}
