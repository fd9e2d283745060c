//! A directory of images without labels (e.g. COCO `train2017`).

use std::path::{Path, PathBuf};

use crate::{DataError, Result};

/// Every JPEG/PNG under `root`, sorted by path.
pub(super) fn scan(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    super::walk_images(root, &mut files)?;
    if files.is_empty() {
        return Err(DataError::Empty {
            path: root.into(),
            expected: "*.jpg, *.jpeg or *.png files",
        });
    }
    Ok(files)
}
