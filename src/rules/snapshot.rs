//! The bytes a rule set was built from: every rule file, include, tests file and fixture,
//! by the path it was read at. A version of the rule set is its snapshot; the hash names it,
//! and the snapshot is what a rollback rebuilds from and writes back.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

/// Files by path, in path order (so the hash does not depend on reading order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

/// Biggest zipped snapshot or bundle read back (a rule set is a few megabytes at most).
const MAX_UNZIPPED: u64 = 64 << 20;

impl Snapshot {
    /// SHA-256 over every path and its bytes, hex: the same files give the same version.
    pub fn hash(&self) -> String {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (path, bytes) in &self.files {
            let name = path.to_string_lossy();
            digest.update(&(name.len() as u64).to_le_bytes());
            digest.update(name.as_bytes());
            digest.update(&(bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        }
        hex::encode(digest.finish().as_ref())
    }

    pub fn total_bytes(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    /// A zip archive of the files (deflated), for the store and for bundles.
    pub fn to_zip(&self) -> anyhow::Result<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            // A fixed time: the same files make the same archive bytes.
            .last_modified_time(zip::DateTime::default());
        for (path, bytes) in &self.files {
            zip.start_file(path.to_string_lossy(), options)?;
            zip.write_all(bytes)?;
        }
        Ok(zip.finish()?.into_inner())
    }

    /// Reads an archive written by [`Snapshot::to_zip`] (or a bundle), bounded in size.
    pub fn from_zip(bytes: &[u8]) -> anyhow::Result<Snapshot> {
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(bytes)).context("not a zip archive")?;
        let mut snapshot = Snapshot::default();
        let mut total = 0u64;
        for index in 0..archive.len() {
            let mut entry = archive.by_index(index)?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name()?.to_string();
            let mut bytes = Vec::new();
            let limit = MAX_UNZIPPED.saturating_sub(total) + 1;
            (&mut entry).take(limit).read_to_end(&mut bytes)?;
            total += bytes.len() as u64;
            anyhow::ensure!(
                total <= MAX_UNZIPPED,
                "the archive unpacks to more than {} MiB",
                MAX_UNZIPPED >> 20
            );
            snapshot.files.insert(PathBuf::from(name), bytes);
        }
        Ok(snapshot)
    }

    /// Makes the rule directories hold exactly this snapshot's files again: its files are
    /// written back (through a temporary file and a rename, so a reader never sees half a
    /// file), and rule, tests and fixture files it does not have are removed from `dirs`.
    pub fn restore(&self, dirs: &[PathBuf]) -> anyhow::Result<()> {
        for (path, bytes) in &self.files {
            if std::fs::read(path).ok().as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            write_replacing(path, bytes)?;
        }
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for folder in [dir.clone(), dir.join("tests")] {
                let Ok(entries) = std::fs::read_dir(&folder) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let rule_file = path
                        .extension()
                        .is_some_and(|e| e == "cf" || (folder != *dir && e == "eml"));
                    if rule_file && path.is_file() && !self.files.contains_key(&path) {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The files under `base`, named relative to it (for a bundle).
    pub fn relative_to(&self, base: &Path) -> Snapshot {
        Snapshot {
            files: self
                .files
                .iter()
                .filter_map(|(path, bytes)| {
                    Some((path.strip_prefix(base).ok()?.to_path_buf(), bytes.clone()))
                })
                .collect(),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// A bundle member's name is safe to unpack: relative, no `..`, and only rule files
/// (`NAME.cf`) or tests (`tests/NAME.cf`, `tests/NAME.eml`).
pub fn safe_member(name: &Path) -> bool {
    let parts: Vec<_> = name.components().collect();
    let plain = parts.iter().all(|c| matches!(c, Component::Normal(_)));
    let extension = name.extension().and_then(|e| e.to_str());
    plain
        && match parts.len() {
            1 => extension == Some("cf"),
            2 => parts[0].as_os_str() == "tests" && matches!(extension, Some("cf") | Some("eml")),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        s.files.insert("r/a.cf".into(), b"body A /a/\n".to_vec());
        s.files
            .insert("r/tests/t.cf".into(), b"test_message m.eml A\n".to_vec());
        s
    }

    #[test]
    fn zip_round_trips_and_the_hash_names_the_content() {
        let s = sample();
        let back = Snapshot::from_zip(&s.to_zip().unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            s.to_zip().unwrap(),
            s.to_zip().unwrap(),
            "same files, same bytes"
        );
        let mut other = s.clone();
        other
            .files
            .insert("r/a.cf".into(), b"body A /b/\n".to_vec());
        assert_ne!(other.hash(), s.hash());
    }

    #[test]
    fn only_plain_rule_and_test_names_unpack() {
        assert!(safe_member(Path::new("10_x.cf")));
        assert!(safe_member(Path::new("tests/spam.eml")));
        assert!(!safe_member(Path::new("../etc/x.cf")));
        assert!(!safe_member(Path::new("/etc/x.cf")));
        assert!(!safe_member(Path::new("a/b/c.cf")));
        assert!(!safe_member(Path::new("run.sh")));
    }

    #[test]
    fn restore_writes_back_and_removes_what_the_version_lacked() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r");
        std::fs::create_dir_all(rules.join("tests")).unwrap();
        let mut s = Snapshot::default();
        s.files.insert(rules.join("a.cf"), b"old\n".to_vec());
        std::fs::write(rules.join("a.cf"), "new\n").unwrap();
        std::fs::write(rules.join("added.cf"), "x\n").unwrap();
        std::fs::write(rules.join("README.md"), "kept\n").unwrap();
        s.restore(std::slice::from_ref(&rules)).unwrap();
        assert_eq!(std::fs::read(rules.join("a.cf")).unwrap(), b"old\n");
        assert!(!rules.join("added.cf").exists());
        assert!(rules.join("README.md").exists());
    }
}
