//! The image table: there is no container runtime, so an image name only decides which local
//! directory a container's programs are looked up in first. An entry `PATTERN=DIR` applies to
//! every image whose name contains `PATTERN` (e.g. `kontrast-worker=target/debug`); images not in
//! the table run the host's programs.
use std::path::PathBuf;

/// One `PATTERN=DIR` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Substring of the image reference.
    pub pattern: String,
    /// Directory searched first for the container's programs.
    pub dir: PathBuf,
}

/// All entries, first match wins.
#[derive(Debug, Clone, Default)]
pub struct ImageTable(Vec<ImageEntry>);

impl ImageTable {
    /// Parses `PATTERN=DIR` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| match e.split_once('=') {
                Some((p, d)) if !p.is_empty() && !d.is_empty() => Ok(ImageEntry {
                    pattern: p.into(),
                    dir: d.into(),
                }),
                _ => Err(format!("image entry {e:?} is not PATTERN=DIR")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The directory for `image`, if any entry matches.
    pub fn dir_for(&self, image: &str) -> Option<&PathBuf> {
        self.0
            .iter()
            .find(|e| image.contains(&e.pattern))
            .map(|e| &e.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_entry_decides_the_directory() {
        let t = ImageTable::parse(&["kontrast-worker=/w".into(), "kontrast=/o".into()]).unwrap();
        assert_eq!(
            t.dir_for("ghcr.io/x/kontrast-worker:0.1.0"),
            Some(&PathBuf::from("/w"))
        );
        assert_eq!(
            t.dir_for("ghcr.io/x/kontrast-operator:0.1.0"),
            Some(&PathBuf::from("/o"))
        );
        assert_eq!(t.dir_for("busybox"), None);
    }

    #[test]
    fn malformed_entries_are_rejected() {
        assert!(ImageTable::parse(&["nodir".into()]).is_err());
        assert!(ImageTable::parse(&["=x".into()]).is_err());
    }
}
