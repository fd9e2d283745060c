//! MNIST-style IDX files (Fashion-MNIST), optionally gzip-compressed, held in memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Split;
use crate::{DataError, Result};

/// Decoded images (`n × height × width` grey bytes) and labels.
#[derive(Debug)]
pub(crate) struct IdxImages {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

impl IdxImages {
    pub fn open(dir: &Path, split: Split) -> Result<Self> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_maybe_gz(&images_path)?;
        let labels = read_maybe_gz(&labels_path)?;
        let bad = |path: &Path, reason: String| DataError::Idx {
            path: path.into(),
            reason,
        };

        let (dims, body) = parse_header(&images, 0x0803, 3).map_err(|r| bad(&images_path, r))?;
        let (n, height, width) = (dims[0], dims[1], dims[2]);
        if height == 0 || width == 0 {
            return Err(bad(
                &images_path,
                format!("declares images of {height}×{width} pixels"),
            ));
        }
        // The header is input: its product may not even fit a usize.
        let size = n.checked_mul(height).and_then(|p| p.checked_mul(width));
        let Some(size) = size.filter(|&s| s <= body.len()) else {
            return Err(bad(
                &images_path,
                format!(
                    "holds {} bytes of pixels, {n}×{height}×{width} declared",
                    body.len()
                ),
            ));
        };
        let (ldims, lbody) = parse_header(&labels, 0x0801, 1).map_err(|r| bad(&labels_path, r))?;
        if ldims[0] != n || lbody.len() < n {
            return Err(bad(
                &labels_path,
                format!("declares {} labels for {n} images", ldims[0]),
            ));
        }
        if n == 0 {
            return Err(DataError::Empty {
                path: images_path,
                expected: "at least one image",
            });
        }
        Ok(Self {
            width,
            height,
            pixels: body[..size].to_vec(),
            labels: lbody[..n].iter().map(|&l| l as u32).collect(),
        })
    }

    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.width * self.height;
        let start = i.checked_mul(size)?;
        self.pixels.get(start..start.checked_add(size)?)
    }
}

/// `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Empty {
        path: dir.into(),
        expected: "Fashion-MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz])",
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| DataError::Unreadable {
        path: path.into(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Idx {
                path: path.into(),
                reason: format!("gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the magic number and returns the dimensions and the payload.
fn parse_header(
    bytes: &[u8],
    magic: u32,
    ndims: usize,
) -> std::result::Result<(Vec<usize>, &[u8]), String> {
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(format!(
            "{} bytes is shorter than the {header_len}-byte header",
            bytes.len()
        ));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if word(0) != magic {
        return Err(format!(
            "magic number {:#010x}, expected {magic:#010x}",
            word(0)
        ));
    }
    let dims = (0..ndims).map(|d| word(4 + 4 * d) as usize).collect();
    Ok((dims, &bytes[header_len..]))
}
