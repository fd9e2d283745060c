//! PASCAL VOC image classification labels: the 20 per-class lists `ImageSets/Main/<class>_<split>.txt`
//! (lines `<id> <1|-1|0>`: present, absent, present only as "difficult" objects) and the images
//! `JPEGImages/<id>.jpg` they name, as the VOC07 linear-SVM protocol reads them.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::Dataset;
use crate::{DataError, Result};

/// The 20 VOC classes in the devkit's (alphabetical) order: the columns of [`VocSplit::labels`].
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// One row of the label matrix: per class 1 (present), -1 (absent) or 0 (difficult only).
pub type VocLabels = [i8; VOC_CLASSES.len()];

/// The images and labels of one split (`trainval`, `test`, …) of a VOC root (the directory holding
/// `JPEGImages/`, `ImageSets/Main/` and `Annotations/`).
#[derive(Debug, Clone)]
pub struct VocSplit {
    root: PathBuf,
    ids: Vec<String>,
    labels: Vec<VocLabels>,
}

fn voc_error(path: PathBuf, reason: String) -> DataError {
    DataError::Voc { path, reason }
}

/// The path of `relative` (forward slashes) under `root`, for messages.
fn under(root: &Path, relative: &str) -> PathBuf {
    relative
        .split('/')
        .fold(root.to_path_buf(), |p, c| p.join(c))
}

/// An id must name a file directly inside `JPEGImages/` (the lists are input, not trusted).
fn plain_id(id: &str) -> bool {
    let mut components = Path::new(id).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !id.contains(['/', '\\'])
}

/// The `(id, label)` lines of one class list, in file order.
fn read_list(path: &Path) -> Result<Vec<(String, i8)>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            voc_error(
                path.into(),
                "missing (every one of the 20 classes needs its ImageSets/Main/<class>_<split>.txt)"
                    .into(),
            )
        } else {
            DataError::Unreadable {
                path: path.into(),
                source,
            }
        }
    })?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let malformed = |what: &str| {
            voc_error(
                path.into(),
                format!(
                    "line {}: {what} (expected `<id> <1|-1|0>`): {line:?}",
                    n + 1
                ),
            )
        };
        let [id, label] = fields[..] else {
            return Err(malformed("not two fields"));
        };
        let label = match label {
            "1" => 1,
            "-1" => -1,
            "0" => 0,
            _ => return Err(malformed("the label is not 1, -1 or 0")),
        };
        if !plain_id(id) {
            return Err(malformed("the id is not a plain file name"));
        }
        entries.push((id.to_string(), label));
    }
    Ok(entries)
}

impl VocSplit {
    /// Reads the 20 class lists of `split` under `root` and checks that every listed image
    /// exists. Rows follow the first class's list (as the reference code orders them); every
    /// other list must name exactly the same images.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        super::require_dir(root)?;
        let list_path = |class: &str| under(root, &format!("ImageSets/Main/{class}_{split}.txt"));
        let first = list_path(VOC_CLASSES[0]);
        let mut ids = Vec::new();
        let mut rows: HashMap<String, usize> = HashMap::new();
        let mut labels: Vec<VocLabels> = Vec::new();
        for (c, class) in VOC_CLASSES.iter().enumerate() {
            let path = list_path(class);
            let entries = read_list(&path)?;
            let mut seen = vec![false; ids.len()];
            for (id, label) in entries {
                let row = if c == 0 {
                    if rows.contains_key(&id) {
                        return Err(voc_error(path, format!("lists image {id} twice")));
                    }
                    rows.insert(id.clone(), ids.len());
                    ids.push(id);
                    labels.push([0; VOC_CLASSES.len()]);
                    seen.push(true);
                    ids.len() - 1
                } else {
                    let Some(&row) = rows.get(&id) else {
                        return Err(voc_error(
                            path,
                            format!("lists image {id}, which {} does not", first.display()),
                        ));
                    };
                    if std::mem::replace(&mut seen[row], true) {
                        return Err(voc_error(path, format!("lists image {id} twice")));
                    }
                    row
                };
                labels[row][c] = label;
            }
            if ids.is_empty() {
                return Err(voc_error(path, "lists no images".into()));
            }
            if let Some(row) = seen.iter().position(|s| !s) {
                return Err(voc_error(
                    path,
                    format!("lacks image {} listed in {}", ids[row], first.display()),
                ));
            }
        }
        let opened = Self {
            root: root.into(),
            ids,
            labels,
        };
        let missing: Vec<PathBuf> = (0..opened.len())
            .map(|i| opened.image(i))
            .filter(|p| !p.is_file())
            .collect();
        if let Some(path) = missing.first() {
            return Err(voc_error(
                path.clone(),
                format!(
                    "missing: {} of the {} images listed for {split} are not in {}",
                    missing.len(),
                    opened.len(),
                    root.join("JPEGImages").display()
                ),
            ));
        }
        tracing::info!(root = %root.display(), split, images = opened.len(), "VOC split opened");
        Ok(opened)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the split has no images (never true for an opened split).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Image ids, in row order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The label matrix: one row per image (row order of [`ids`](Self::ids)), one column per
    /// class of [`VOC_CLASSES`], values 1, -1 or 0 (difficult).
    pub fn labels(&self) -> &[VocLabels] {
        &self.labels
    }

    /// The image file of row `i` (`JPEGImages/<id>.jpg`).
    pub fn image(&self, i: usize) -> PathBuf {
        let id = self.ids.get(i).map_or("", String::as_str);
        self.root.join("JPEGImages").join(format!("{id}.jpg"))
    }

    /// The images as an unlabelled data set whose sample `i` is row `i`.
    pub fn dataset(&self) -> Result<Dataset> {
        Dataset::from_files(&self.root, (0..self.len()).map(|i| self.image(i)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VOC root with `images` listed (id, label of class c = `label(i, c)`) in every class list.
    fn root_with(images: &[&str], label: impl Fn(usize, usize) -> i8) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("ImageSets/Main");
        std::fs::create_dir_all(&main).expect("lists dir");
        std::fs::create_dir_all(dir.path().join("JPEGImages")).expect("images dir");
        for (c, class) in VOC_CLASSES.iter().enumerate() {
            let text: String = images
                .iter()
                .enumerate()
                // The devkit writes `%s %2d`: two spaces before a positive label.
                .map(|(i, id)| format!("{id} {:2}\n", label(i, c)))
                .collect();
            std::fs::write(main.join(format!("{class}_trainval.txt")), text).expect("list");
        }
        for id in images {
            std::fs::write(dir.path().join(format!("JPEGImages/{id}.jpg")), b"jpeg")
                .expect("image");
        }
        dir
    }

    fn label(i: usize, c: usize) -> i8 {
        [1, -1, 0][(i + c) % 3]
    }

    fn error(root: &Path) -> String {
        VocSplit::open(root, "trainval")
            .expect_err("the split is broken")
            .to_string()
    }

    #[test]
    fn reads_ids_in_list_order_and_the_label_matrix() {
        let dir = root_with(&["000009", "000005", "000007"], label);
        let split = VocSplit::open(dir.path(), "trainval").expect("open");
        assert_eq!(split.ids(), ["000009", "000005", "000007"]);
        for (i, row) in split.labels().iter().enumerate() {
            for (c, &l) in row.iter().enumerate() {
                assert_eq!(l, label(i, c), "row {i} class {c}");
            }
        }
        assert_eq!(split.image(1), dir.path().join("JPEGImages/000005.jpg"));
        let dataset = split.dataset().expect("data set");
        assert_eq!(dataset.len(), 3);
        assert_eq!(dataset.label(0), None);
        assert!(dataset.describe(2).ends_with("000007.jpg"));
    }

    #[test]
    fn a_missing_class_list_is_named() {
        let dir = root_with(&["000005"], label);
        std::fs::remove_file(dir.path().join("ImageSets/Main/sheep_trainval.txt")).expect("rm");
        let err = error(dir.path());
        assert!(err.contains("sheep_trainval.txt"), "{err}");
        assert!(err.contains("missing"), "{err}");
        let err = VocSplit::open(dir.path(), "test")
            .expect_err("no test lists")
            .to_string();
        assert!(err.contains("aeroplane_test.txt"), "{err}");
    }

    #[test]
    fn an_id_missing_from_one_class_list_is_named_with_that_list() {
        let dir = root_with(&["000005", "000007"], label);
        std::fs::write(
            dir.path().join("ImageSets/Main/cow_trainval.txt"),
            "000005 -1\n",
        )
        .expect("list");
        let err = error(dir.path());
        assert!(err.contains("cow_trainval.txt"), "{err}");
        assert!(err.contains("lacks image 000007"), "{err}");
        assert!(err.contains("aeroplane_trainval.txt"), "{err}");
    }

    #[test]
    fn an_id_only_in_a_later_list_or_listed_twice_is_an_error() {
        let dir = root_with(&["000005"], label);
        let cow = dir.path().join("ImageSets/Main/cow_trainval.txt");
        std::fs::write(&cow, "000005 -1\n000099 1\n").expect("list");
        let err = error(dir.path());
        assert!(
            err.contains("cow_trainval.txt") && err.contains("lists image 000099"),
            "{err}"
        );
        std::fs::write(&cow, "000005 -1\n000005 1\n").expect("list");
        let err = error(dir.path());
        assert!(err.contains("lists image 000005 twice"), "{err}");
    }

    #[test]
    fn a_missing_image_is_named() {
        let dir = root_with(&["000005", "000007"], label);
        std::fs::remove_file(dir.path().join("JPEGImages/000007.jpg")).expect("rm");
        let err = error(dir.path());
        assert!(err.contains("JPEGImages/000007.jpg"), "{err}");
        assert!(
            err.contains("1 of the 2 images listed for trainval"),
            "{err}"
        );
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        for (text, needle) in [
            (
                "000005 1\n000007 2\n",
                "line 2: the label is not 1, -1 or 0",
            ),
            ("000005\n", "line 1: not two fields"),
            ("000005 1 extra\n", "line 1: not two fields"),
            ("../000005 1\n", "line 1: the id is not a plain file name"),
            ("\n\n", "lists no images"),
        ] {
            let dir = root_with(&["000005"], label);
            std::fs::write(
                dir.path().join("ImageSets/Main/aeroplane_trainval.txt"),
                text,
            )
            .expect("list");
            let err = error(dir.path());
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("aeroplane_trainval.txt"), "{err}");
        }
    }

    #[test]
    fn a_missing_root_is_unreadable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = error(&dir.path().join("VOC2007"));
        assert!(err.contains("VOC2007"), "{err}");
    }
}
