//! The project's Python MoCo reference (`tests/reference/moco_reference.py`, torch from the
//! project's virtualenv) as the parity and precision tests drive it, and the error measure they
//! compare with.
// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kontrast_api::config::Arch;
use kontrast_worker::model::MocoSpec;
use kontrast_worker::train::sgd::SgdConfig;
use serde_json::{Value, json};
use tch::{Kind, Tensor};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/moco_reference.py")
}

/// The reference's name of a backbone (torchvision's constructor).
fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet50 => "resnet50",
    }
}

/// The Revisiting model the parity and precision tests compare: ResNet-18 with the CIFAR stem,
/// a 16-d head, a 32-key queue and the kNN loss (k 5, weight 0.4).
pub fn resnet18_revisiting() -> MocoSpec {
    MocoSpec {
        arch: Arch::Resnet18,
        cifar_stem: true,
        width: 64,
        dim: 16,
        queue_size: 32,
        mlp: true,
        momentum: 0.9,
        temperature: 0.2,
        knn: Some((5, 0.4)),
        shuffle_keys: true,
    }
}

/// The reference's `config.json`: the model of `spec` trained for `steps` SGD steps at `lr` in
/// `dtype` (`float32` or `float64`).
pub fn config(spec: &MocoSpec, sgd: SgdConfig, lr: f64, steps: usize, dtype: &str) -> Value {
    json!({
        "arch": arch_name(spec.arch),
        "cifar_stem": spec.cifar_stem,
        "dim": spec.dim,
        "queue_size": spec.queue_size,
        "mlp": spec.mlp,
        "momentum": spec.momentum,
        "temperature": spec.temperature,
        "knn": spec.knn.map(|(k, w)| json!({"top_k": k, "weight": w})),
        "lr": lr,
        "sgd_momentum": sgd.momentum,
        "weight_decay": sgd.weight_decay,
        "steps": steps,
        "dtype": dtype,
    })
}

/// Runs the reference in `dir`, which holds `init.safetensors` (the starting weights),
/// `batches.safetensors` (`step<N>.query|key|small`) and `config.json`; returns every tensor it
/// wrote (losses, gradients, updated weights, queues).
pub fn run(dir: &Path) -> BTreeMap<String, Tensor> {
    let status = Command::new(python())
        .arg(script())
        .args([
            "--init",
            "init.safetensors",
            "--batches",
            "batches.safetensors",
        ])
        .args(["--config", "config.json", "--out", "reference.safetensors"])
        .current_dir(dir)
        .status()
        .expect("run the Python reference (`make setup` installs the venv)");
    assert!(status.success(), "the reference failed: {status}");
    Tensor::read_safetensors(dir.join("reference.safetensors"))
        .expect("read the reference's output")
        .into_iter()
        .collect()
}

/// ‖ours − reference‖∞ / ‖reference‖∞, in float64.
pub fn relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    let ours = ours.to_kind(Kind::Double);
    let reference = reference.to_kind(Kind::Double);
    let scale = reference.abs().max().double_value(&[]).max(1e-30);
    (ours - reference).abs().max().double_value(&[]) / scale
}

/// Writes a PyTorch MoCo checkpoint of `spec` the way the reference training code saves one
/// (`tests/reference/moco_checkpoint.py`) to `dir/out`, and the state dict it holds, unprefixed,
/// to `dir/expected.safetensors`; `extra` are the script's other flags (`--bare`, `--epoch N`).
pub fn write_checkpoint(dir: &Path, spec: &MocoSpec, out: &str, extra: &[&str]) -> PathBuf {
    let sgd = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    std::fs::write(
        dir.join("checkpoint-config.json"),
        config(spec, sgd, 0.03, 1, "float32").to_string(),
    )
    .expect("write the checkpoint script's config");
    let status = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/moco_checkpoint.py"))
        .args(["--config", "checkpoint-config.json", "--out", out])
        .args(["--expected", "expected.safetensors"])
        .args(extra)
        .current_dir(dir)
        .status()
        .expect("run the checkpoint script (`make setup` installs the venv)");
    assert!(status.success(), "the checkpoint script failed: {status}");
    dir.join(out)
}
