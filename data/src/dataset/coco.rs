//! The image list of a COCO-style annotation file (`images[].file_name`), for a `flat` data set
//! that should use exactly the images an annotation file names (e.g. `instances_train2017.json`)
//! rather than every image under its directory.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::{DataError, Result};

/// The only part of the file pre-training needs; every other key is skipped while parsing.
#[derive(Deserialize)]
struct Annotations {
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    file_name: String,
}

/// The files `annotations` lists, resolved under `root`, in the file's order.
///
/// A name that is absolute or climbs out of `root` is rejected (the list is input, not trusted);
/// a listed file that does not exist is an error naming it, since a wrong `root` would otherwise
/// surface only as a run in which every image is skipped as unreadable.
pub(super) fn scan(root: &Path, annotations: &Path) -> Result<Vec<PathBuf>> {
    let malformed = |reason: String| DataError::Annotations {
        path: annotations.into(),
        reason,
    };
    let file = std::fs::File::open(annotations).map_err(|source| DataError::Unreadable {
        path: annotations.into(),
        source,
    })?;
    let parsed: Annotations = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| malformed(format!("not a COCO annotation file: {e}")))?;
    if parsed.images.is_empty() {
        return Err(malformed("its `images` list is empty".into()));
    }
    let mut files = Vec::with_capacity(parsed.images.len());
    let mut missing = Vec::new();
    for (i, entry) in parsed.images.into_iter().enumerate() {
        let relative = Path::new(&entry.file_name);
        let confined = !entry.file_name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !confined {
            return Err(malformed(format!(
                "images[{i}].file_name {:?} must be a relative path inside the data set directory",
                entry.file_name
            )));
        }
        let path = root.join(relative);
        if !path.is_file() {
            missing.push(path.clone());
        }
        files.push(path);
    }
    if let Some(first) = missing.first() {
        return Err(malformed(format!(
            "{} of the {} listed images are missing under {} (first: {})",
            missing.len(),
            files.len(),
            root.display(),
            first.display()
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn lists_the_named_images_in_file_order_and_ignores_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "b.jpg", "x");
        write(dir.path(), "a.jpg", "x");
        write(dir.path(), "unlisted.jpg", "x");
        let json = write(
            dir.path(),
            "ann.json",
            r#"{"info": {"year": 2017}, "images": [{"id": 2, "file_name": "b.jpg", "width": 4},
                {"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 7, "bbox": [1, 2, 3, 4]}]}"#,
        );
        let files = scan(dir.path(), &json).expect("scan");
        assert_eq!(
            files,
            vec![dir.path().join("b.jpg"), dir.path().join("a.jpg")]
        );
    }

    #[test]
    fn rejects_names_that_leave_the_directory_and_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, needle) in [
            (r#""../secret.jpg""#, "images[0].file_name"),
            (r#""/etc/passwd""#, "images[0].file_name"),
            (r#""""#, "images[0].file_name"),
            (r#""gone.jpg""#, "1 of the 1 listed images are missing"),
        ] {
            let json = write(
                dir.path(),
                "ann.json",
                &format!(r#"{{"images": [{{"file_name": {name}}}]}}"#),
            );
            let err = scan(dir.path(), &json).expect_err(name).to_string();
            assert!(err.contains(needle), "{name}: {err}");
            assert!(err.contains("ann.json"), "{err}");
        }
    }

    #[test]
    fn malformed_or_empty_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for text in [
            "",
            "{",
            r#"{"images": []}"#,
            r#"{"images": [{"id": 1}]}"#,
            "[1, 2]",
        ] {
            let json = write(dir.path(), "bad.json", text);
            let err = scan(dir.path(), &json).expect_err(text).to_string();
            assert!(err.contains("bad.json"), "{text}: {err}");
        }
        let err = scan(dir.path(), &dir.path().join("absent.json"))
            .expect_err("absent")
            .to_string();
        assert!(err.contains("absent.json"), "{err}");
    }
}
