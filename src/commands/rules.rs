//! `kala rules ...`: check, test, reload, versions, diff, rollback, stats, try, and signed
//! updates (keygen, sign, update).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use kala::config::Settings;
use kala::control::{self, Request};
use kala::ruleset::{Candidate, RuleSets, update};
use kala::store::Store;

use crate::{load_settings, runtime};

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Parse and compile rule files; print what runs, what does not and why. Exits non-zero
    /// on errors. Without arguments, checks the configured rule sources.
    Check {
        dirs: Vec<PathBuf>,
        /// Print every warning, not just the first 20.
        #[arg(long)]
        all_warnings: bool,
    },
    /// Run the rule tests (`test_message` lines in rule files and in each `tests/*.cf`):
    /// print missing and unexpected symbols; exit non-zero if any fails.
    Test { dirs: Vec<PathBuf> },
    /// Validate and test the rule files, then make the running gateway load them. A set
    /// with errors is never activated; --force activates one whose tests fail (audited).
    Reload {
        #[arg(long)]
        force: bool,
    },
    /// List the activated versions, newest first.
    Versions {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show what changed between two versions (default: the active one and the one before).
    Diff { from: Option<i64>, to: Option<i64> },
    /// Restore a version (default: the one before the active set): its files are written
    /// back and it becomes active.
    Rollback { version: Option<i64> },
    /// Hits per rule over the last days, and the rules that never fired.
    Stats {
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Dry run: score recent held (and sampled relayed) mail with the rules in DIR and show
    /// which verdicts would change.
    Try {
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// Make a key pair for signing rule bundles (minisign format) in DIR.
    Keygen { dir: PathBuf },
    /// Bundle and sign the rule files of DIR into OUT (kala-rules.zip and its .minisig).
    Sign {
        dir: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch the signed bundle (rules.update_from, or --from), verify, test and activate it.
    Update {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        force: bool,
    },
}

pub fn run(config: Option<&Path>, command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Check { dirs, all_warnings } => check(dirs, config, all_warnings),
        RulesCommand::Test { dirs } => test(dirs, config),
        RulesCommand::Keygen { dir } => {
            let key = update::keygen(&dir)?;
            println!(
                "wrote {} (keep it secret) and {}\nput this in the gateway's config:\n\n[rules]\nupdate_key = \"{key}\"",
                dir.join(update::SECRET_KEY).display(),
                dir.join(update::PUBLIC_KEY).display()
            );
            Ok(())
        }
        RulesCommand::Sign { dir, key, out } => {
            let (path, files) = update::sign(&dir, &key, &out)?;
            println!(
                "signed {} ({files} files) -> {}",
                dir.display(),
                path.display()
            );
            Ok(())
        }
        command => runtime()?.block_on(with_store(config, command)),
    }
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

fn sources(dirs: Vec<PathBuf>, config: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    Ok(if dirs.is_empty() {
        load_settings(config)?.rules.sources()
    } else {
        dirs
    })
}

fn test(dirs: Vec<PathBuf>, config: Option<&Path>) -> anyhow::Result<()> {
    let candidate = Candidate::build(&sources(dirs, config)?);
    for error in &candidate.set.errors {
        eprintln!("error: {error}");
    }
    for result in &candidate.tests.results {
        println!("{result}");
    }
    let failed = candidate.tests.failures().count();
    println!(
        "{} tests, {} passed, {failed} failed",
        candidate.tests.results.len(),
        candidate.tests.results.len() - failed
    );
    anyhow::ensure!(
        failed == 0 && candidate.set.errors.is_empty(),
        "{failed} rule test(s) failed, {} error(s)",
        candidate.set.errors.len()
    );
    Ok(())
}

/// The commands that read the store or reach the running gateway.
async fn with_store(config: Option<&Path>, command: RulesCommand) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let store = Store::open(&settings.store.url).await?;
    let local = || {
        let live = std::sync::Arc::new(kala::checks::SpamRules::load(&settings.rules));
        RuleSets::new(live, settings.rules.clone(), store.clone())
    };
    match command {
        RulesCommand::Reload { force } => {
            let actor = actor();
            change(&settings, &store, Request::Reload { actor, force }).await
        }
        RulesCommand::Rollback { version } => {
            let actor = actor();
            change(&settings, &store, Request::Rollback { actor, version }).await
        }
        RulesCommand::Versions { limit } => {
            for v in store.rule_versions(limit).await? {
                println!(
                    "{:>4}  {}  {}  {:>5} rules  {:<16} {}",
                    v.id,
                    v.short_hash(),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(v.activated_at as u64)
                    ),
                    v.rules,
                    v.actor,
                    v.note
                );
            }
            Ok(())
        }
        RulesCommand::Diff { from, to } => {
            let diff = kala::ruleset::diff_versions(&store, from, to).await?;
            print!("{diff}");
            Ok(())
        }
        RulesCommand::Stats { days } => {
            // The running gateway counts in memory and saves every minute: save now.
            if let Some(answer) = control::request(&settings.data_dir, &Request::Flush).await? {
                anyhow::ensure!(
                    answer.ok,
                    "the gateway could not save its counts: {}",
                    answer.text
                );
            }
            let sets = local();
            let stats = kala::ruleset::stats(&sets, days).await?;
            println!("hits in the last {days} days:");
            for (name, hits) in &stats.hits {
                println!("  {hits:>8}  {name}");
            }
            println!(
                "\n{} rules never fired in {days} days:",
                stats.never_fired.len()
            );
            for name in &stats.never_fired {
                println!("  {name}");
            }
            Ok(())
        }
        RulesCommand::Try { dir, limit } => {
            let active = kala::rules::RuleSet::load(&settings.rules.sources());
            let candidate = Candidate::build(&[dir]);
            for problem in candidate.problems(false) {
                eprintln!("warning: {problem}");
            }
            let messages = kala::ruleset::dryrun::gather(&store, limit).await?;
            let policy = settings.policy.clone();
            let run = tokio::task::spawn_blocking(move || {
                kala::ruleset::dryrun::compare(&active, &candidate.set, &policy, &messages)
            })
            .await?;
            print!("{run}");
            Ok(())
        }
        RulesCommand::Update { from, force } => {
            let source = from
                .or_else(|| settings.rules.update_from.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("no source: set rules.update_from or pass --from")
                })?;
            let key = settings.rules.update_key.clone().ok_or_else(|| {
                anyhow::anyhow!("rules.update_key is not set: bundles are only taken signed")
            })?;
            let (zip, signature) = update::fetch(&source).await?;
            let bundle = match update::verify(&zip, &signature, &key) {
                Ok(bundle) => bundle,
                Err(e) => {
                    store
                        .audit(
                            &actor(),
                            "",
                            "rules-update-refused",
                            &source,
                            &format!("{e:#}"),
                        )
                        .await?;
                    return Err(e);
                }
            };
            let update_dir = settings.rules.update_dir.clone();
            let dirs = settings.rules.dirs.clone();
            let files = bundle.files.len();
            tokio::task::spawn_blocking(move || {
                update::install(&bundle, &update_dir, &dirs, force)
            })
            .await??;
            println!("verified and installed {files} files from {source}");
            store
                .audit(
                    &actor(),
                    "",
                    "rules-update",
                    &source,
                    &format!("{files} files"),
                )
                .await?;
            let actor = format!("{} (update)", actor());
            change(&settings, &store, Request::Reload { actor, force }).await
        }
        RulesCommand::Check { .. } | RulesCommand::Test { .. } => unreachable!(),
        RulesCommand::Keygen { .. } | RulesCommand::Sign { .. } => unreachable!(),
    }
}

/// Sends a change to the running gateway and prints its answer. With no gateway running the
/// change is made here (files, versions, audit) and takes effect when it starts.
async fn change(settings: &Settings, store: &Store, request: Request) -> anyhow::Result<()> {
    if let Some(answer) = control::request(&settings.data_dir, &request).await? {
        return answered(answer);
    }
    let live = std::sync::Arc::new(kala::checks::SpamRules::load(&settings.rules));
    let sets = RuleSets::new(live, settings.rules.clone(), store.clone());
    sets.resume().await?;
    let result = match request {
        Request::Reload { actor, force } => sets.reload(&actor, force).await,
        Request::Rollback { actor, version } => sets.rollback(version, &actor).await,
        Request::Flush | Request::Status => return Ok(()),
    };
    match result {
        Ok(activation) => {
            println!(
                "{activation}; no gateway is running on {}: it uses this version when it starts",
                settings.data_dir.display()
            );
            Ok(())
        }
        Err(refusal) => anyhow::bail!("{refusal}"),
    }
}

fn answered(answer: control::Answer) -> anyhow::Result<()> {
    if answer.ok {
        println!("{}", answer.text);
        Ok(())
    } else {
        anyhow::bail!("{}", answer.text.trim_end())
    }
}

fn check(dirs: Vec<PathBuf>, config: Option<&Path>, all_warnings: bool) -> anyhow::Result<()> {
    let dirs = sources(dirs, config)?;
    let started = std::time::Instant::now();
    let set = kala::rules::RuleSet::load(&dirs);
    let elapsed = started.elapsed();
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    println!(
        "{} rule files read from {}; {} rules; compiled in {:.2} s",
        set.files_read,
        shown.join(", "),
        set.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "\n{:<9} {:>7} {:>7} {:>7} {:>7} {:>12}",
        "type", "regex", "fancy", "meta", "exists", "not running"
    );
    for (kind, stats) in &set.stats {
        let unsupported: usize = stats.unsupported.values().map(|(n, _)| n).sum();
        println!(
            "{kind:<9} {:>7} {:>7} {:>7} {:>7} {:>12}",
            stats.regex, stats.fancy, stats.meta, stats.other, unsupported
        );
    }
    println!(
        "\n(regex: Rust regex in the prefilter; fancy: PCRE2 with its JIT, or fancy-regex, each with a match limit)"
    );
    let mut reasons: Vec<(String, usize, Vec<String>)> = Vec::new();
    for (kind, stats) in &set.stats {
        for (why, (count, examples)) in &stats.unsupported {
            reasons.push((format!("{kind}: {why}"), *count, examples.clone()));
        }
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    if !reasons.is_empty() {
        println!("\nNot running, by reason:");
        for (why, count, examples) in reasons.iter().take(40) {
            println!("  {count:>5}  {why}  (e.g. {})", examples.join(", "));
        }
        if reasons.len() > 40 {
            println!("  ... and {} more reasons", reasons.len() - 40);
        }
    }
    let (supported, eligible) = set.coverage();
    if eligible > 0 {
        println!(
            "\nRules not needing an eval: function Kala lacks: {supported} of {eligible} run ({:.1} %)",
            100.0 * supported as f64 / eligible as f64
        );
    }
    let unread = set.unread_subrules();
    if unread > 0 {
        println!(
            "Sub-rules (`__`) skipped at scan time because no enabled rule reads them: {unread}"
        );
    }
    if !set.ignored.is_empty() {
        let ignored: Vec<String> = set
            .ignored
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        println!("\nDirectives read but not acted on: {}", ignored.join(", "));
    }
    if !set.warnings.is_empty() {
        println!("\n{} warnings:", set.warnings.len());
        for w in set
            .warnings
            .iter()
            .take(if all_warnings { usize::MAX } else { 20 })
        {
            println!("  warning: {w}");
        }
    }
    let report = kala::rules::test_cases::run(&set);
    if !report.results.is_empty() {
        println!(
            "\nRule tests: {} of {} pass (details: kala rules test)",
            report.results.iter().filter(|r| r.passed()).count(),
            report.results.len()
        );
    }
    if !set.errors.is_empty() {
        for e in &set.errors {
            eprintln!("error: {e}");
        }
        anyhow::bail!("{} errors in the rule files", set.errors.len());
    }
    Ok(())
}
