//! torchvision's `ImageFolder` layout: one sub-folder per class, sorted by name.

use std::path::{Path, PathBuf};

use crate::{DataError, Result};

/// Files, their labels and the class names.
pub(super) fn scan(root: &Path) -> Result<(Vec<PathBuf>, Vec<u32>, Vec<String>)> {
    let entries = std::fs::read_dir(root).map_err(|source| DataError::Unreadable {
        path: root.into(),
        source,
    })?;
    let mut class_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    let (mut files, mut labels, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    for dir in class_dirs {
        let label = classes.len() as u32;
        let mut in_class = Vec::new();
        super::walk_images(&dir, &mut in_class)?;
        // torchvision drops classes without images only by raising; an empty class keeps its
        // index here so labels stay aligned with folder names.
        labels.extend(std::iter::repeat_n(label, in_class.len()));
        files.extend(in_class);
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    if files.is_empty() {
        return Err(DataError::Empty {
            path: root.into(),
            expected: "class sub-folders holding *.jpg, *.jpeg or *.png",
        });
    }
    Ok((files, labels, classes))
}
