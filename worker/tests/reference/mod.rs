//! The project's Python MoCo reference (`tests/reference/moco_reference.py`, torch from the
//! project's virtualenv) as the parity and precision tests drive it, and the error measure they
//! compare with.
// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kontrast_api::config::Arch;
use tch::{Kind, Tensor};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/moco_reference.py")
}

/// The reference's name of a backbone (torchvision's constructor).
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet50 => "resnet50",
    }
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
