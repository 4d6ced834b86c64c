//! Large lists of known-bad items (URL hosts, sender domains, attachment SHA-256 hashes),
//! read from plain files in the feeds directory: `NAME.hosts`, `NAME.domains`,
//! `NAME.sha256`, one item per line, `#` comments.
//!
//! A feed costs little memory however long it is: a bloom filter (0.1 % false positives,
//! about 1.8 MB per million items) answers "surely not" for almost every lookup, and its
//! rare "maybe" is confirmed exactly against a sorted copy of the file on disk, through a
//! sparse index (one key per [`INDEX_EVERY`] lines) that finds the block to read. Files are
//! watched and reloaded when they change; a feed that fails to load keeps its last version.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bloomfilter::Bloom;

/// The false-positive rate of every feed's bloom filter. A false positive only costs one
/// block read from the sorted copy, so 0.1 % keeps disk reads rare at 14.4 bits per item.
pub const FALSE_POSITIVE_RATE: f64 = 0.001;

/// One index key per this many lines of the sorted copy: a confirmation reads at most this
/// many lines (a few KiB).
pub const INDEX_EVERY: usize = 128;

/// What a feed's items are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// Hosts of the links in a message (a listed domain covers its subdomains).
    Hosts,
    /// The sender's domain, envelope and `From:` (subdomains covered too).
    Domains,
    /// Attachments' SHA-256, in hex.
    Sha256,
}

impl FeedKind {
    fn of(path: &Path) -> Option<FeedKind> {
        match path.extension()?.to_str()? {
            "hosts" => Some(FeedKind::Hosts),
            "domains" => Some(FeedKind::Domains),
            "sha256" => Some(FeedKind::Sha256),
            _ => None,
        }
    }

    /// An item as the feed stores it, or `None` for a line that is no item.
    fn normalise(self, line: &str) -> Option<String> {
        let item = line.split('#').next()?.trim().trim_end_matches('.');
        if item.is_empty() || item.contains(char::is_whitespace) {
            return None;
        }
        let item = item.to_ascii_lowercase();
        match self {
            FeedKind::Sha256 => {
                (item.len() == 64 && item.bytes().all(|b| b.is_ascii_hexdigit())).then_some(item)
            }
            FeedKind::Hosts | FeedKind::Domains => Some(item),
        }
    }
}

/// One loaded feed file.
pub struct Feed {
    pub name: String,
    pub kind: FeedKind,
    pub items: usize,
    bloom: Bloom<str>,
    /// The sorted, de-duplicated items, one per line.
    sorted: PathBuf,
    /// Every [`INDEX_EVERY`]th item of `sorted` and its byte offset.
    index: Vec<(String, u64)>,
    source_modified: Option<SystemTime>,
}

impl Feed {
    /// Reads `source`, writes its sorted copy into `cache_dir`, and builds the filter.
    pub fn load(source: &Path, cache_dir: &Path) -> anyhow::Result<Feed> {
        let kind = FeedKind::of(source).with_context(|| {
            format!(
                "{}: not a .hosts, .domains or .sha256 file",
                source.display()
            )
        })?;
        let name = source
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("feed")
            .to_string();
        let file =
            File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        let source_modified = file.metadata().and_then(|m| m.modified()).ok();
        let mut items = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Some(item) = kind.normalise(&line?) {
                items.push(item);
            }
        }
        items.sort_unstable();
        items.dedup();

        let mut bloom = Bloom::new_for_fp_rate(items.len().max(1), FALSE_POSITIVE_RATE)
            .map_err(|e| anyhow::anyhow!("bloom filter: {e}"))?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("cannot create {}", cache_dir.display()))?;
        // A new file per load: lookups still running on the previous version keep reading
        // its own copy, which goes when that version is dropped.
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sorted = cache_dir.join(format!(
            "{name}.{}.{}-{generation}.sorted",
            extension(kind),
            std::process::id()
        ));
        let partial = sorted.with_extension("partial");
        let mut out = BufWriter::new(File::create(&partial)?);
        let mut index = Vec::with_capacity(items.len() / INDEX_EVERY + 1);
        let mut offset = 0u64;
        for (i, item) in items.iter().enumerate() {
            bloom.set(item.as_str());
            if i % INDEX_EVERY == 0 {
                index.push((item.clone(), offset));
            }
            out.write_all(item.as_bytes())?;
            out.write_all(b"\n")?;
            offset += item.len() as u64 + 1;
        }
        out.flush()?;
        drop(out);
        std::fs::rename(&partial, &sorted)?;
        Ok(Feed {
            name,
            kind,
            items: items.len(),
            bloom,
            sorted,
            index,
            source_modified,
        })
    }

    /// Bytes of memory the feed holds (filter and index), for the benchmark and the log.
    pub fn memory(&self) -> usize {
        self.bloom.as_slice().len()
            + self
                .index
                .iter()
                .map(|(k, _)| k.len() + std::mem::size_of::<(String, u64)>())
                .sum::<usize>()
    }

    /// The filter's answer alone: false means surely absent, true means "maybe" (for the
    /// benchmark's false-positive count).
    pub fn maybe_contains(&self, item: &str) -> bool {
        self.bloom.check(item)
    }

    /// Whether `item` (already normalised) is in the feed: the filter first, then the block
    /// of the sorted copy where it would be.
    pub fn contains(&self, item: &str) -> bool {
        if !self.bloom.check(item) {
            return false;
        }
        self.confirm(item).unwrap_or_else(|e| {
            tracing::warn!(feed = %self.name, error = %e, "feed confirmation failed");
            false
        })
    }

    fn confirm(&self, item: &str) -> anyhow::Result<bool> {
        let block = match self.index.binary_search_by(|(k, _)| k.as_str().cmp(item)) {
            Ok(_) => return Ok(true),
            Err(0) => return Ok(false),
            Err(next) => next - 1,
        };
        let start = self.index[block].1;
        let mut file = File::open(&self.sorted)?;
        file.seek(SeekFrom::Start(start))?;
        let mut text = String::new();
        match self.index.get(block + 1) {
            Some((_, end)) => {
                file.take(end - start).read_to_string(&mut text)?;
            }
            None => {
                file.read_to_string(&mut text)?;
            }
        }
        Ok(text.lines().any(|line| line == item))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sorted);
    }
}

fn extension(kind: FeedKind) -> &'static str {
    match kind {
        FeedKind::Hosts => "hosts",
        FeedKind::Domains => "domains",
        FeedKind::Sha256 => "sha256",
    }
}

/// Every feed of the feeds directory, swapped whole when a file changes.
pub struct Feeds {
    dir: PathBuf,
    cache_dir: PathBuf,
    current: ArcSwap<Vec<Arc<Feed>>>,
}

impl Feeds {
    /// Loads every feed file of `dir` (a missing directory is no feeds).
    pub fn open(dir: &Path, cache_dir: &Path) -> Feeds {
        // Sorted copies left by an earlier run.
        if let Ok(entries) = std::fs::read_dir(cache_dir) {
            for path in entries.flatten().map(|e| e.path()) {
                if path
                    .extension()
                    .is_some_and(|e| e == "sorted" || e == "partial")
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let feeds = Feeds {
            dir: dir.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            current: ArcSwap::from_pointee(Vec::new()),
        };
        feeds.reload();
        feeds
    }

    pub fn current(&self) -> Arc<Vec<Arc<Feed>>> {
        self.current.load_full()
    }

    /// Reloads the files that changed, were added or went away; keeps the last good version
    /// of a file that fails. Returns whether anything changed.
    pub fn reload(&self) -> bool {
        let old = self.current();
        let mut by_path: BTreeMap<PathBuf, Arc<Feed>> = BTreeMap::new();
        let mut changed = false;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        for path in entries {
            if FeedKind::of(&path).is_none() {
                continue;
            }
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let previous = old.iter().find(|f| {
                f.name == path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
                    && Some(f.kind) == FeedKind::of(&path)
            });
            if let Some(feed) = previous
                && feed.source_modified == modified
            {
                by_path.insert(path, feed.clone());
                continue;
            }
            match Feed::load(&path, &self.cache_dir) {
                Ok(feed) => {
                    tracing::info!(
                        feed = %feed.name,
                        items = feed.items,
                        memory_kib = feed.memory() / 1024,
                        "feed loaded"
                    );
                    by_path.insert(path, Arc::new(feed));
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = format!("{e:#}"), "feed not loaded; keeping its last version");
                    if let Some(feed) = previous {
                        by_path.insert(path, feed.clone());
                    }
                }
            }
        }
        if by_path.len() != old.len() {
            changed = true;
        }
        if changed {
            self.current
                .store(Arc::new(by_path.into_values().collect()));
        }
        changed
    }

    /// Checks the directory every `every` for changed files, for as long as `self` lives.
    pub fn watch(self: &Arc<Feeds>, every: Duration) {
        let feeds = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(feeds) = feeds.upgrade() else { break };
                // Sorting a million lines takes a while: off the async runtime.
                let _ = tokio::task::spawn_blocking(move || feeds.reload()).await;
            }
        });
    }
}

/// `host` and each parent domain, so a listed `evil.example` covers `www.evil.example`.
pub fn with_parents(host: &str) -> impl Iterator<Item = &str> {
    let host = host.trim_end_matches('.');
    std::iter::successors(Some(host), |h| h.split_once('.').map(|(_, rest)| rest))
        .filter(|h| h.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_of(name: &str, lines: &str) -> (tempfile::TempDir, Feed) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, lines).unwrap();
        let feed = Feed::load(&path, &dir.path().join("cache")).unwrap();
        (dir, feed)
    }

    #[test]
    fn items_are_found_exactly_across_index_blocks() {
        let mut text = String::from("# a comment\n\nEVIL.example.\n");
        for i in 0..5000 {
            text.push_str(&format!("host{i}.bad.example # listed {i}\n"));
        }
        let (_dir, feed) = feed_of("test.hosts", &text);
        assert_eq!(feed.items, 5001);
        assert!(feed.contains("evil.example"));
        for i in (0..5000).step_by(97) {
            assert!(feed.contains(&format!("host{i}.bad.example")), "{i}");
        }
        // Not listed, including names sorting before the first and after the last item.
        for absent in [
            "aaa.example",
            "zzz.example",
            "host5000.bad.example",
            "host1.bad.exampl",
        ] {
            assert!(!feed.contains(absent), "{absent}");
        }
    }

    #[test]
    fn hashes_must_be_sha256_hex() {
        let good = "a".repeat(64);
        let (_dir, feed) = feed_of(
            "malware.sha256",
            &format!("{good}\nnot-a-hash\n{}\n", "b".repeat(63)),
        );
        assert_eq!(feed.items, 1);
        assert!(feed.contains(&good));
    }

    #[test]
    fn parents_stop_before_the_top_level() {
        let all: Vec<&str> = with_parents("a.b.evil.example").collect();
        assert_eq!(all, ["a.b.evil.example", "b.evil.example", "evil.example"]);
    }

    #[test]
    fn a_changed_file_is_reloaded_and_the_old_copy_goes_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phish.hosts");
        std::fs::write(&path, "one.example\n").unwrap();
        let feeds = Feeds::open(dir.path(), &dir.path().join("cache"));
        assert!(feeds.current()[0].contains("one.example"));
        // A later modification time, as a real edit gives.
        std::fs::write(&path, "two.example\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(feeds.reload());
        assert!(feeds.current()[0].contains("two.example"));
        assert!(!feeds.current()[0].contains("one.example"));
        assert!(!feeds.reload(), "nothing changed");
        let copies = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert_eq!(copies, 1, "the first version's sorted copy was removed");
    }
}
