//! Backup and restore: one zip archive holding a consistent copy of the store (quarantined
//! messages, accounts, lists, rule versions, Bayes, tracking) taken while mail flows, the
//! config file, the rule directories, the TLS certificate and installed rule updates, with
//! a SHA-256 per member in its manifest and one for the whole archive beside it
//! (`ARCHIVE.sha256`, `sha256sum -c` format).
//!
//! The SQLite store is copied with `VACUUM INTO`, which reads one transaction's view: mail
//! keeps flowing, and the copy holds every message committed before it began. A PostgreSQL
//! store is backed up with `pg_dump`, as any PostgreSQL database.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::rules::snapshot::write_replacing;
use crate::store::Store;

/// What the archive holds and where each part came from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub kala_version: String,
    pub created_at: u64,
    /// The config file's path when the backup was taken.
    pub config: Option<PathBuf>,
    /// Each rule directory's path, by its number in the archive (`rules/N/...`).
    pub rule_dirs: Vec<PathBuf>,
    /// SHA-256 (hex) of every member.
    pub files: BTreeMap<String, String>,
}

pub struct Summary {
    pub archive: PathBuf,
    pub members: usize,
    pub bytes: u64,
}

/// Writes the archive to `dest` (a file name, or a directory to put a dated one in). Members
/// are streamed from disk, so a store of many gigabytes needs no memory to match.
pub async fn backup(settings: &Settings, dest: &Path) -> anyhow::Result<Summary> {
    let db = crate::store::sqlite_file(&settings.store.url).ok_or_else(|| {
        anyhow::anyhow!(
            "the store is PostgreSQL: back it up with pg_dump; `kala backup` copies the SQLite store"
        )
    })?;
    anyhow::ensure!(db.exists(), "there is no store at {} yet", db.display());
    let archive = if dest.is_dir() {
        dest.join(format!("kala-backup-{}.zip", crate::store::now()))
    } else {
        dest.to_path_buf()
    };
    let work = tempfile::tempdir_in(archive.parent().unwrap_or(Path::new(".")))
        .context("cannot write beside the archive")?;
    let copy = work.path().join("kala.db");
    let store = Store::open(&settings.store.url).await?;
    // One read transaction's view of the whole database, while writers go on.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        copy.display().to_string().replace('\'', "''")
    )))
    .execute(store.pool())
    .await
    .context("copying the store (VACUUM INTO)")?;

    let mut members: Vec<(String, PathBuf)> = vec![("store/kala.db".into(), copy)];
    if let Some(file) = &settings.file {
        members.push(("config/kala.toml".into(), file.clone()));
    }
    for (index, dir) in settings.rules.dirs.iter().enumerate() {
        add_tree(&mut members, dir, &format!("rules/{index}"), 1);
    }
    add_tree(&mut members, &settings.data_dir.join("tls"), "tls", 0);
    add_tree(&mut members, &settings.rules.update_dir, "rule-updates", 1);

    let settings = settings.clone();
    let archive_path = archive.clone();
    tokio::task::spawn_blocking(move || write_archive(&settings, &members, &archive_path, work))
        .await?
}

fn write_archive(
    settings: &Settings,
    members: &[(String, PathBuf)],
    archive: &Path,
    work: tempfile::TempDir,
) -> anyhow::Result<Summary> {
    let partial = work.path().join("archive.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&partial)?);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut files = BTreeMap::new();
    for (name, path) in members {
        zip.start_file(name.as_str(), options)?;
        let mut source =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        files.insert(name.clone(), copy_hashing(&mut source, &mut zip)?);
    }
    let manifest = Manifest {
        kala_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::store::now(),
        config: settings.file.clone(),
        rule_dirs: settings.rules.dirs.clone(),
        files,
    };
    zip.start_file("MANIFEST.json", options)?;
    zip.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    zip.finish()?.sync_all()?;
    let digest = copy_hashing(&mut std::fs::File::open(&partial)?, &mut std::io::sink())?;
    std::fs::rename(&partial, archive)
        .or_else(|_| std::fs::copy(&partial, archive).map(|_| ()))
        .with_context(|| format!("cannot write {}", archive.display()))?;
    let name = archive.file_name().unwrap_or_default().to_string_lossy();
    write_replacing(
        &archive.with_extension("zip.sha256"),
        format!("{digest}  {name}\n").as_bytes(),
    )?;
    Ok(Summary {
        archive: archive.to_path_buf(),
        members: members.len(),
        bytes: std::fs::metadata(archive)?.len(),
    })
}

/// Copies everything from `from` to `to`; returns the SHA-256 (hex) of what went through.
fn copy_hashing(
    from: &mut impl std::io::Read,
    to: &mut impl std::io::Write,
) -> anyhow::Result<String> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
        to.write_all(&buffer[..n])?;
    }
    Ok(hex::encode(digest.finish().as_ref()))
}

/// The files under `dir`, and those of its subfolders `depth` levels down (rule
/// directories have `tests/`).
fn add_tree(members: &mut Vec<(String, PathBuf)>, dir: &Path, prefix: &str, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_file() {
            members.push((format!("{prefix}/{name}"), path));
        } else if path.is_dir() && depth > 0 {
            add_tree(members, &path, &format!("{prefix}/{name}"), depth - 1);
        }
    }
}

/// Restores `archive` into `data_dir`, which must hold no store yet. The store, the TLS
/// certificate and installed rule updates go where the gateway reads them; the config file
/// and rule directories go to `DATA_DIR/restored/` (they lived outside the data directory:
/// the summary says where each came from, so nothing outside it is overwritten unasked).
pub fn restore(archive: &Path, data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let sums = archive.with_extension("zip.sha256");
    if let Ok(line) = std::fs::read_to_string(&sums) {
        let expected = line.split_whitespace().next().unwrap_or("");
        let mut file = std::fs::File::open(archive)
            .with_context(|| format!("cannot read {}", archive.display()))?;
        anyhow::ensure!(
            expected == copy_hashing(&mut file, &mut std::io::sink())?,
            "{} does not match {}: the archive is damaged",
            archive.display(),
            sums.display()
        );
    }
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot read {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file).context("not a zip archive")?;
    let manifest: Manifest = {
        let mut text = String::new();
        zip.by_name("MANIFEST.json")
            .context("the archive has no MANIFEST.json")?
            .read_to_string(&mut text)?;
        serde_json::from_str(&text).context("the archive's MANIFEST.json is unreadable")?
    };
    let db = data_dir.join("kala.db");
    anyhow::ensure!(
        !db.exists(),
        "{} already holds a store: restore into a fresh data directory",
        data_dir.display()
    );
    for (name, digest) in &manifest.files {
        anyhow::ensure!(
            !name.split('/').any(|part| part == ".." || part.is_empty()),
            "unsafe member name {name}"
        );
        let target = match name.split_once('/') {
            Some(("store", _)) => db.clone(),
            Some(("tls", rest)) => data_dir.join("tls").join(rest),
            Some(("rule-updates", rest)) => data_dir.join("rule-updates").join(rest),
            Some(("config", rest)) => data_dir.join("restored").join(rest),
            Some(("rules", rest)) => data_dir.join("restored/rules").join(rest),
            _ => anyhow::bail!("unknown member {name}"),
        };
        let parent = target.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(parent)?;
        let mut temp = tempfile::NamedTempFile::new_in(parent)?;
        let got = copy_hashing(&mut zip.by_name(name)?, temp.as_file_mut())?;
        anyhow::ensure!(
            got == *digest,
            "{name} does not match its checksum: the archive is damaged"
        );
        temp.as_file().sync_all()?;
        temp.persist(&target)?;
    }
    let mut report = vec![format!("store -> {}", db.display())];
    if let Some(config) = &manifest.config {
        report.push(format!(
            "config (was {}) -> {}",
            config.display(),
            data_dir.join("restored/kala.toml").display()
        ));
    }
    for (index, dir) in manifest.rule_dirs.iter().enumerate() {
        report.push(format!(
            "rules (was {}) -> {}",
            dir.display(),
            data_dir.join(format!("restored/rules/{index}")).display()
        ));
    }
    Ok(report)
}
