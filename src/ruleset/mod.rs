//! The live rule set's lifecycle: build a candidate from the rule files, validate and test
//! it off the hot path, activate it (one atomic swap: messages in flight finish on the set
//! they started with), record it as a version, roll back to an earlier one, and reload when
//! the files change or an admin asks.
//!
//! A candidate with a parse or compile error never becomes active, nor one whose rule tests
//! fail unless forced (audited). The refused candidate's problems (file:line: reason) stay
//! in [`Status`] for the UI and are returned to the CLI.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub mod dryrun;
pub mod update;

use crate::checks::SpamRules;
use crate::config::RulesSettings;
use crate::rules::RuleSet;
use crate::rules::snapshot::Snapshot;
use crate::rules::test_cases::{self, TestReport};
use crate::store::Store;
use crate::store::rules::{RuleVersion, today};

/// A rule set built from files and tested, not active yet.
pub struct Candidate {
    pub set: RuleSet,
    pub hash: String,
    pub tests: TestReport,
}

impl Candidate {
    /// Reads, compiles and tests the files under `sources` (CPU-bound: run it off the
    /// async runtime).
    pub fn build(sources: &[PathBuf]) -> Candidate {
        Candidate::tested(RuleSet::load(sources))
    }

    /// Rebuilds an earlier version from its files.
    pub fn from_snapshot(sources: &[PathBuf], snapshot: Snapshot) -> Candidate {
        Candidate::tested(RuleSet::from_snapshot(sources, snapshot))
    }

    fn tested(set: RuleSet) -> Candidate {
        let tests = test_cases::run(&set);
        Candidate {
            hash: set.snapshot.hash(),
            set,
            tests,
        }
    }

    /// What keeps it from activating: every parse and compile error, and (unless forced)
    /// every failing rule test. Empty: it may go live.
    pub fn problems(&self, force: bool) -> Vec<String> {
        problems(&self.set, &self.tests, force)
    }
}

fn problems(set: &RuleSet, tests: &TestReport, force: bool) -> Vec<String> {
    let mut problems: Vec<String> = set.errors.iter().map(|e| e.to_string()).collect();
    // An empty set from configured sources would silently stop filtering.
    if set.is_empty() && problems.is_empty() && set.files_read > 0 {
        problems.push("no rules at all: is rules.dirs right?".into());
    }
    if !force {
        problems.extend(tests.failures().map(|f| format!("rule test {f}")));
    }
    problems
}

/// A refused activation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Refusal {
    pub at: i64,
    pub actor: String,
    pub hash: String,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "the rule set was not activated ({} problem(s)); the previous set stays active:",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// What an activation did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub enum Activation {
    /// A new version is live.
    Activated(RuleVersion),
    /// The files are those of the active version already.
    Unchanged(RuleVersion),
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Activation::Activated(v) => write!(
                f,
                "activated version {} ({}, {} rules)",
                v.id,
                v.short_hash(),
                v.rules
            ),
            Activation::Unchanged(v) => write!(
                f,
                "unchanged: version {} ({}) is already active",
                v.id,
                v.short_hash()
            ),
        }
    }
}

/// What the UI shows: the active version and the last refusal (cleared by the next
/// activation).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub active: Option<RuleVersion>,
    pub refused: Option<Refusal>,
}

/// What a reload also reads again besides the rule files: the config file's `[policy]`
/// (scores and thresholds) and `[lists]`, and the feeds directory.
pub struct LiveConfig {
    pub file: PathBuf,
    pub policy: Arc<arc_swap::ArcSwap<crate::verdict::Policy>>,
    pub lists: Arc<crate::checks::SenderLists>,
    pub feeds: Option<Arc<crate::feeds::Feeds>>,
}

/// Owns the live set's changes. One change at a time; scanning never waits on it.
pub struct RuleSets {
    live: Arc<SpamRules>,
    settings: RulesSettings,
    store: Store,
    /// Held for a whole change, so two reloads never interleave.
    changing: tokio::sync::Mutex<()>,
    status: Mutex<Status>,
    config: Mutex<Option<Arc<LiveConfig>>>,
}

impl RuleSets {
    pub fn new(live: Arc<SpamRules>, settings: RulesSettings, store: Store) -> RuleSets {
        RuleSets {
            live,
            settings,
            store,
            changing: tokio::sync::Mutex::new(()),
            status: Mutex::new(Status::default()),
            config: Mutex::new(None),
        }
    }

    /// Makes reloads read the config file's scores, thresholds and lists (and the feeds)
    /// again too.
    pub fn follow_config(&self, config: LiveConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
    }

    fn live_config(&self) -> Option<Arc<LiveConfig>> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the config file again and swaps in its `[policy]` and `[lists]` if they
    /// changed; reloads the feeds. A config that does not validate changes nothing and is
    /// the refusal (it names the file and the key). Other settings need a restart.
    async fn reload_config(&self, actor: &str) -> Result<(), Refusal> {
        let Some(config) = self.live_config() else {
            return Ok(());
        };
        let file = config.file.clone();
        let feeds = config.feeds.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            if let Some(feeds) = feeds {
                feeds.reload();
            }
            crate::config::Settings::load(&file)
        })
        .await
        .map_err(|e| self.internal(actor, e.into()))?;
        let settings = match loaded {
            Ok(settings) => settings,
            Err(error) => {
                let refusal = Refusal {
                    at: crate::store::now() as i64,
                    actor: actor.to_string(),
                    hash: String::new(),
                    problems: vec![error.to_string()],
                };
                tracing::error!(%error, "config not reloaded; the rules were not reloaded either");
                self.lock_status().refused = Some(refusal.clone());
                return Err(refusal);
            }
        };
        let mut changed = Vec::new();
        if **config.policy.load() != settings.policy {
            config.policy.store(Arc::new(settings.policy));
            changed.push("policy");
        }
        if *config.lists.config() != settings.lists {
            config.lists.replace_config(settings.lists);
            changed.push("lists");
        }
        if !changed.is_empty() {
            let what = changed.join(", ");
            tracing::info!(file = %config.file.display(), changed = %what, "config reloaded");
            let target = config.file.display().to_string();
            if let Err(e) = self
                .store
                .audit(actor, "", "config-reload", &target, &what)
                .await
            {
                tracing::warn!(error = %e, "could not audit the config reload");
            }
        }
        Ok(())
    }

    pub fn live(&self) -> &Arc<SpamRules> {
        &self.live
    }

    pub fn settings(&self) -> &RulesSettings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn status(&self) -> Status {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At start-up the set loaded from the files is checked like any reload. If it is
    /// broken and an earlier version exists, that version runs instead (the files stay as
    /// they are, and the refusal is shown); with no earlier version the usable part of the
    /// broken set runs, since something beats nothing.
    pub async fn start(&self) -> anyhow::Result<()> {
        let _change = self.changing.lock().await;
        // The set the pipeline loaded from the files: tested here, not compiled again.
        let set = self.live.current();
        let (hash, tests) = {
            let set = set.clone();
            tokio::task::spawn_blocking(move || (set.snapshot.hash(), test_cases::run(&set)))
                .await?
        };
        let latest = self.store.rule_versions(1).await?.into_iter().next();
        let problems = problems(&set, &tests, false);
        if problems.is_empty() {
            let version = match latest.filter(|v| v.hash == hash) {
                Some(latest) => latest,
                None => self.record(&set, &hash, "startup", "").await?,
            };
            tracing::info!(
                version = version.id,
                hash = version.short_hash(),
                rules = version.rules,
                "rule set active"
            );
            self.lock_status().active = Some(version);
            return Ok(());
        }
        let refusal = self.refuse(&hash, "startup", problems).await;
        let Some(latest) = latest else {
            tracing::error!(
                "no earlier rule set version to fall back to: running the rules that compiled"
            );
            return Ok(());
        };
        let (_, zip) = self
            .store
            .rule_version(latest.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("version {} vanished", latest.id))?;
        let sources = self.settings.sources();
        let earlier = tokio::task::spawn_blocking(move || {
            Snapshot::from_zip(&zip).map(|s| Candidate::from_snapshot(&sources, s))
        })
        .await??;
        if earlier.set.errors.is_empty() {
            tracing::error!(
                version = latest.id,
                "the rule files are broken: running the last active version instead"
            );
            self.live.replace(earlier.set);
            let mut status = self.lock_status();
            status.active = Some(latest);
            status.refused = Some(refusal);
        }
        Ok(())
    }

    /// Takes the newest recorded version as the active one, activating nothing: for the
    /// command line working without a running gateway.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let latest = self.store.rule_versions(1).await?.into_iter().next();
        self.lock_status().active = latest;
        Ok(())
    }

    /// Builds a candidate from the rule files and activates it if it is sound.
    pub async fn reload(&self, actor: &str, force: bool) -> Result<Activation, Refusal> {
        let _change = self.changing.lock().await;
        self.reload_config(actor).await?;
        let sources = self.settings.sources();
        let candidate = tokio::task::spawn_blocking(move || Candidate::build(&sources))
            .await
            .map_err(|e| self.internal(actor, e.into()))?;
        self.activate(candidate, actor, force, "").await
    }

    /// Activates a candidate built elsewhere (a verified update bundle), under the same
    /// checks as a reload.
    pub async fn activate_candidate(
        &self,
        candidate: Candidate,
        actor: &str,
        force: bool,
        note: &str,
    ) -> Result<Activation, Refusal> {
        let _change = self.changing.lock().await;
        self.activate(candidate, actor, force, note).await
    }

    async fn activate(
        &self,
        candidate: Candidate,
        actor: &str,
        force: bool,
        note: &str,
    ) -> Result<Activation, Refusal> {
        let problems = candidate.problems(force);
        if !problems.is_empty() {
            return Err(self.refuse(&candidate.hash, actor, problems).await);
        }
        let active = self.lock_status().active.clone();
        if let Some(active) = active.filter(|v| v.hash == candidate.hash) {
            crate::metrics::metrics().rule_change("unchanged");
            self.lock_status().refused = None;
            return Ok(Activation::Unchanged(active));
        }
        let forced_past: Vec<String> = candidate.tests.failures().map(|f| f.to_string()).collect();
        let mut note = note.to_string();
        if !forced_past.is_empty() {
            note = format!(
                "{note} forced past failing tests: {}",
                forced_past.join("; ")
            )
            .trim()
            .to_string();
        }
        let version = self
            .record(&candidate.set, &candidate.hash, actor, &note)
            .await
            .map_err(|e| self.internal(actor, e))?;
        self.live.replace(candidate.set);
        crate::metrics::metrics().rule_change("activated");
        tracing::info!(
            version = version.id,
            hash = version.short_hash(),
            rules = version.rules,
            actor,
            "rule set activated"
        );
        let mut status = self.lock_status();
        status.active = Some(version.clone());
        status.refused = None;
        Ok(Activation::Activated(version))
    }

    /// Rolls back to `version` (default: the newest version with other files than the active
    /// one): its files are written back to the rule directories and it becomes active again,
    /// as a new version entry noting the rollback.
    pub async fn rollback(&self, version: Option<i64>, actor: &str) -> Result<Activation, Refusal> {
        let _change = self.changing.lock().await;
        let target = self
            .rollback_target(version)
            .await
            .map_err(|e| self.internal(actor, e))?;
        let (old, zip) = target;
        let sources = self.settings.sources();
        let dirs = sources.clone();
        let candidate = tokio::task::spawn_blocking(move || -> anyhow::Result<Candidate> {
            let snapshot = Snapshot::from_zip(&zip)?;
            let candidate = Candidate::from_snapshot(&sources, snapshot.clone());
            if candidate.set.errors.is_empty() {
                // Files first: the watcher then finds the files of the active set.
                snapshot.restore(&dirs)?;
            }
            Ok(candidate)
        })
        .await
        .map_err(|e| self.internal(actor, e.into()))?
        .map_err(|e| self.internal(actor, e))?;
        // An emergency action: tests that failed then were forced then; do not block now.
        let note = format!("rollback to version {} ({})", old.id, old.short_hash());
        let result = self.activate(candidate, actor, true, &note).await;
        if result.is_ok() {
            let _ = self
                .store
                .audit(actor, "", "rules-rollback", &old.hash, &note)
                .await;
        }
        result
    }

    async fn rollback_target(&self, id: Option<i64>) -> anyhow::Result<(RuleVersion, Vec<u8>)> {
        let id = match id {
            Some(id) => id,
            None => {
                let active = self.lock_status().active.clone();
                let versions = self.store.rule_versions(1000).await?;
                let active_hash = active.map(|v| v.hash).unwrap_or_default();
                versions
                    .iter()
                    .find(|v| v.hash != active_hash)
                    .map(|v| v.id)
                    .ok_or_else(|| anyhow::anyhow!("there is no earlier version to roll back to"))?
            }
        };
        self.store.rule_version(id).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "there is no version {id} (only the newest {} are kept)",
                self.settings.keep_versions
            )
        })
    }

    async fn record(
        &self,
        set: &RuleSet,
        hash: &str,
        actor: &str,
        note: &str,
    ) -> anyhow::Result<RuleVersion> {
        let zip = set.snapshot.to_zip()?;
        let mut version = RuleVersion {
            id: 0,
            hash: hash.to_string(),
            activated_at: crate::store::now() as i64,
            actor: actor.to_string(),
            note: note.to_string(),
            rules: set.reported_len() as i64,
        };
        version.id = self
            .store
            .add_rule_version(&version, &zip, self.settings.keep_versions)
            .await?;
        let detail = format!("version {} {} {}", version.id, version.short_hash(), note);
        self.store
            .audit(actor, "", "rules-activate", &version.hash, detail.trim())
            .await?;
        Ok(version)
    }

    async fn refuse(&self, hash: &str, actor: &str, problems: Vec<String>) -> Refusal {
        let refusal = Refusal {
            at: crate::store::now() as i64,
            actor: actor.to_string(),
            hash: hash.to_string(),
            problems,
        };
        crate::metrics::metrics().rule_change("refused");
        for problem in &refusal.problems {
            tracing::error!(actor, %problem, "rule set refused");
        }
        let detail = refusal.problems.join("\n");
        if let Err(e) = self
            .store
            .audit(actor, "", "rules-refused", &refusal.hash, &detail)
            .await
        {
            tracing::warn!(error = %e, "could not audit the refused rule set");
        }
        self.lock_status().refused = Some(refusal.clone());
        refusal
    }

    fn internal(&self, actor: &str, error: anyhow::Error) -> Refusal {
        let refusal = Refusal {
            at: crate::store::now() as i64,
            actor: actor.to_string(),
            hash: String::new(),
            problems: vec![format!("{error:#}")],
        };
        tracing::error!(error = %format!("{error:#}"), "rule set change failed");
        self.lock_status().refused = Some(refusal.clone());
        refusal
    }

    /// Adds the hits counted since the last flush to the store.
    pub async fn flush_hits(&self) -> anyhow::Result<()> {
        let hits = self.live.take_hits();
        if hits.is_empty() {
            return Ok(());
        }
        self.store.add_rule_hits(today(), &hits).await
    }

    /// The background work of a running gateway: reload on SIGHUP and (when `rules.watch`)
    /// on file changes, and flush hit counts every minute. The tasks run until aborted.
    pub fn spawn_background(self: &Arc<Self>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut tasks = Vec::new();
        let sets = self.clone();
        tasks.push(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the rules");
                let _ = sets.reload("sighup", false).await;
            }
        }));
        if self.settings.watch {
            let sets = self.clone();
            tasks.push(tokio::spawn(async move { sets.watch().await }));
        }
        let sets = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = sets.flush_hits().await {
                    tracing::warn!(error = %e, "rule hit counts not saved");
                }
            }
        }));
        Ok(tasks)
    }

    /// Polls the rule files' names, sizes and times; a change that has held still for one
    /// period (an editor or a copy has finished writing) triggers a reload. Polling rather
    /// than inotify: it works the same on NFS and through editors that replace files.
    async fn watch(self: Arc<Self>) {
        let every = self.settings.watch_every;
        let fingerprint = |sets: &RuleSets| {
            let mut dirs = sets.settings.sources();
            if let Some(config) = sets.live_config() {
                dirs.push(config.file.clone());
            }
            async move {
                tokio::task::spawn_blocking(move || fingerprint(&dirs))
                    .await
                    .unwrap_or_default()
            }
        };
        let mut seen = fingerprint(&self).await;
        let mut pending: Option<u64> = None;
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&self).await;
            match pending {
                Some(changed) if changed == now => {
                    pending = None;
                    seen = now;
                    let _ = self.reload("watch", false).await;
                }
                _ if now != seen => pending = Some(now),
                _ => pending = None,
            }
        }
    }
}

/// A digest of every file's path, size and modification time under the rule sources (and
/// their `tests/` folders); a source that is a file counts alone.
fn fingerprint(sources: &[PathBuf]) -> u64 {
    let stamp = |path: PathBuf| {
        let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        Some((path, meta.len(), modified))
    };
    let mut entries = Vec::new();
    for source in sources {
        if !source.is_dir() {
            entries.extend(stamp(source.clone()));
            continue;
        }
        for dir in [source.clone(), source.join("tests")] {
            if let Ok(read) = std::fs::read_dir(&dir) {
                entries.extend(read.flatten().filter_map(|entry| stamp(entry.path())));
            }
        }
    }
    entries.sort();
    let mut text = String::new();
    for (path, len, modified) in entries {
        text.push_str(&format!(
            "{}\0{len}\0{}\n",
            path.display(),
            modified.as_nanos()
        ));
    }
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Hits per rule over a period, and the active rules that never fired in it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HitStats {
    /// Most hits first.
    pub hits: Vec<(String, i64)>,
    pub never_fired: Vec<String>,
}

/// What the rules pages and `kala rules stats` show (counts not yet flushed are added).
pub async fn stats(sets: &RuleSets, days: i64) -> anyhow::Result<HitStats> {
    sets.flush_hits().await?;
    let mut hits = sets.store.rule_hit_totals(today() - days + 1).await?;
    hits.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let fired: std::collections::HashSet<&str> = hits.iter().map(|(n, _)| n.as_str()).collect();
    let never_fired = sets
        .live
        .current()
        .rules_info("")
        .into_iter()
        .filter(|r| r.unsupported.is_none() && !fired.contains(r.name.as_str()))
        .map(|r| r.name)
        .collect();
    Ok(HitStats { hits, never_fired })
}

/// A unified diff of the files of two versions (default: the newest and the one before).
pub async fn diff_versions(
    store: &Store,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<String> {
    let versions = store.rule_versions(1000).await?;
    let to = match to {
        Some(id) => id,
        None => versions
            .first()
            .map(|v| v.id)
            .ok_or_else(|| anyhow::anyhow!("no versions recorded yet"))?,
    };
    let from = match from {
        Some(id) => id,
        None => versions
            .iter()
            .find(|v| v.id < to)
            .map(|v| v.id)
            .ok_or_else(|| anyhow::anyhow!("no version before {to}"))?,
    };
    let load = |id: i64| async move {
        let (_, zip) = store
            .rule_version(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("there is no version {id}"))?;
        Snapshot::from_zip(&zip)
    };
    Ok(diff(&load(from).await?, &load(to).await?, from, to))
}

/// A unified diff, file by file, of two snapshots.
pub fn diff(old: &Snapshot, new: &Snapshot, from: i64, to: i64) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&PathBuf> =
        old.files.keys().chain(new.files.keys()).collect();
    for name in names {
        let a = old
            .files
            .get(name)
            .map(|b| String::from_utf8_lossy(b))
            .unwrap_or_default();
        let b = new
            .files
            .get(name)
            .map(|b| String::from_utf8_lossy(b))
            .unwrap_or_default();
        if a == b {
            continue;
        }
        let shown = name.display().to_string();
        out.push_str(
            &similar::TextDiff::from_lines(a.as_ref(), b.as_ref())
                .unified_diff()
                .header(
                    &format!("{shown} (version {from})"),
                    &format!("{shown} (version {to})"),
                )
                .to_string(),
        );
    }
    if out.is_empty() {
        out.push_str("the two versions have the same files\n");
    }
    out
}
