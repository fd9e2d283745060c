//! Helpers shared by the integration tests: the Python reference, `.npy` files, fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kontrast_data::RgbImage;

/// The project virtualenv's interpreter.
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make setup` to create the project virtualenv",
        p.display()
    );
    p
}

/// Runs `tests/reference/augment_reference.py` with `args`.
pub fn reference(args: &[&str]) {
    run_reference("augment_reference.py", args);
}

/// Runs the reference script `name` (in `tests/reference/`) with `args`, failing the test with
/// its stderr when it fails.
fn run_reference(name: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference")
        .join(name);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{name} failed ({:?}):\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the sample photos and malformed files into `dir` (see the script's `fixtures`).
pub fn fixtures(dir: &Path) {
    reference(&["fixtures", dir.to_str().expect("utf-8 temp path")]);
}

fn parse_npy(bytes: &[u8]) -> (String, Vec<usize>, &[u8]) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).expect("ascii header");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("descr")
        .to_string();
    assert!(
        header.contains("'fortran_order': False"),
        "C order expected"
    );
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let shape = shape_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("dim"))
        .collect();
    (descr, shape, &bytes[start + hlen..])
}

/// Reads a `uint8` array.
pub fn read_npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (descr, shape, body) = parse_npy(&bytes);
    assert!(
        descr == "|u1" || descr == "<u1",
        "uint8 expected, got {descr}"
    );
    (shape, body.to_vec())
}

/// Reads a `float64` array.
pub fn read_npy_f64(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (descr, shape, body) = parse_npy(&bytes);
    assert_eq!(descr, "<f8");
    (
        shape,
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

/// Reads an `H × W × 3` image.
pub fn read_image(path: &Path) -> RgbImage {
    let (shape, data) = read_npy_u8(path);
    assert_eq!(shape.len(), 3, "{}: HWC expected", path.display());
    RgbImage::from_raw(shape[1], shape[0], data).expect("size matches")
}

/// Writes an `H × W × 3` `uint8` image.
pub fn write_image(path: &Path, img: &RgbImage) {
    write_npy_u8(path, &[img.height, img.width, 3], &img.data);
}

/// Largest absolute difference and fraction of differing bytes.
pub fn diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!((a.width, a.height), (b.width, b.height), "sizes differ");
    let mut max = 0u8;
    let mut n = 0usize;
    for (x, y) in a.data.iter().zip(&b.data) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        n += (d != 0) as usize;
    }
    (max, n as f64 / a.data.len() as f64)
}

/// The first `n` Fashion-MNIST training images as RGB (channel replication).
pub fn fashion_mnist_images(n: usize) -> Vec<RgbImage> {
    let ds = kontrast_data::Dataset::open(
        kontrast_data::DatasetFormat::FashionMnist,
        &fashion_mnist_dir(),
    )
    .expect("Fashion-MNIST is installed (Debian package dataset-fashion-mnist)");
    (0..n)
        .map(|i| ds.load(i).expect("IDX images always decode"))
        .collect()
}

/// Fashion-MNIST's directory: `KONTRAST_FASHION_MNIST`, else where Debian's
/// `dataset-fashion-mnist` package installs it.
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os("KONTRAST_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

/// Writes a `uint8` array of `shape`.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| format!("{d}, ")).collect();
    let header = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({}), }}",
        dims.concat().trim_end()
    );
    let mut h = header.into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    std::fs::write(path, out).expect("write npy");
}

/// Runs `tests/reference/augment_segment.py` with `args`.
pub fn segment_reference(args: &[&str]) {
    run_reference("augment_segment.py", args);
}
