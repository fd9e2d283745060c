//! What the side-by-side benchmarks share: medians, the project's Python, and running a
//! reference script from `tests/reference/` that writes its results as JSON.
// Each bench binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use serde_json::Value;

/// The median (the mean of the middle two for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `explicit`, else the repository's `.venv` (the project's virtualenv with torch).
pub fn python(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        Path::to_path_buf,
    )
}

/// `tests/reference/<name>`.
pub fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference")
        .join(name)
}

/// Runs reference script `script` with `python` and `args` (in `dir` when given) and reads the
/// JSON it wrote to `out`.
pub fn run_reference<I, S>(
    python: &Path,
    script: &str,
    args: I,
    dir: Option<&Path>,
    out: &Path,
) -> anyhow::Result<Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let script = reference_script(script);
    let mut cmd = Command::new(python);
    cmd.arg(&script).args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let status = cmd.status().with_context(|| {
        format!(
            "run {} (scripts/setup-python.sh creates the venv)",
            python.display()
        )
    })?;
    ensure!(status.success(), "{} failed: {status}", script.display());
    let path = dir.map_or_else(|| out.to_path_buf(), |d| d.join(out));
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}
