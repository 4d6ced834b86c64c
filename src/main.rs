//! The `kala` command: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod commands;

use kala::checks::Pipeline;
use kala::config::{LogFormat, Settings};
use kala::envelope::Envelope;

#[derive(Parser)]
#[command(
    name = "kala",
    version,
    about = "Kala: an inline mail gateway in front of Exchange"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults when no config is given).
    Serve {
        /// Configuration file (TOML); see kala.example.toml.
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Scan a message file with the same checks as the gateway and print the verdict.
    Scan {
        /// The message (RFC 5322, as received); `-` reads standard input.
        file: PathBuf,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
        /// Envelope sender to assume.
        #[arg(long, default_value = "")]
        sender: String,
        /// Also show each rule's description, where it is defined, and the text it matched.
        #[arg(long)]
        explain: bool,
    },
    /// Teach the Bayes classifier: message files, directories, Maildirs or mbox files.
    Learn {
        #[arg(long, conflicts_with = "ham", required_unless_present_any = ["ham", "reset"])]
        spam: bool,
        #[arg(long)]
        ham: bool,
        /// Forget the whole model first (tokens, totals and which messages were learned), so
        /// that mail already taught can be taught again, e.g. after an upgrade changed the
        /// tokens. Every gateway sharing the model starts over with it.
        #[arg(long)]
        reset: bool,
        #[arg(required_unless_present = "reset")]
        paths: Vec<PathBuf>,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Measure the filter: train Bayes on labelled mail, score other mail with the offline
    /// pipeline (rules and Bayes; DNS and clamd off), print caught and flagged rates.
    /// Without test sets, cross-validates within the training sets.
    Eval {
        #[arg(long, num_args = 1.., required = true)]
        train_ham: Vec<PathBuf>,
        #[arg(long, num_args = 1.., required = true)]
        train_spam: Vec<PathBuf>,
        #[arg(long, num_args = 1.., requires = "test_spam")]
        test_ham: Vec<PathBuf>,
        #[arg(long, num_args = 1.., requires = "test_ham")]
        test_spam: Vec<PathBuf>,
        /// Folds of the cross-validation used when no test sets are given.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
        /// Print every scored message as JSON lines instead.
        #[arg(long)]
        json: bool,
    },
    /// Rule file tools.
    Rules {
        #[arg(long, short, env = "KALA_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: commands::rules::RulesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Where did a message go? Searches every message's path (tracking.retention, 30 days).
    Track {
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: commands::track::TrackArgs,
    },
    /// Write a consistent archive of the store (taken while mail flows), the config, the rule
    /// directories, the TLS certificate and rule updates, with checksums.
    Backup {
        /// The archive file, or a directory for a dated one.
        dest: PathBuf,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Restore an archive into the configured (fresh) data directory.
    Restore {
        archive: PathBuf,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running gateway whether it can take mail: downstream, clamd, store, rules.
    /// Exits 0 when ready, 1 when not or when no gateway runs on this data_dir.
    Status {
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Accounts of the review UI and the API.
    User {
        #[arg(long, short, env = "KALA_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Review held messages on the server: the same store and actions as the web UI.
    Quarantine {
        #[arg(long, short, env = "KALA_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is asked for (twice) on a terminal, or read from the
    /// first line of standard input: `kala user add --role admin ana < password-file`.
    Add {
        name: String,
        /// admin (everything), reviewer (quarantine actions) or auditor (read-only).
        #[arg(long)]
        role: kala::web::auth::Role,
    },
    /// List accounts and their roles.
    List,
    /// Create an API token for a user (printed once; only its digest is stored).
    Token {
        name: String,
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List held messages, newest first.
    List {
        #[command(flatten)]
        filter: SearchArgs,
        /// Print JSON (one object with `total` and `messages`).
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, every symbol with its score and description.
    Show {
        id: String,
        /// Print the raw message instead (as it would be relayed).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[arg(long)]
        json: bool,
    },
    /// Release messages to the downstream (Exchange); each one's reply is printed.
    Release {
        /// Message ids; or none with --matching to release a whole search result.
        ids: Vec<String>,
        #[command(flatten)]
        search: MatchingArgs,
    },
    /// Delete messages (their bodies go at once; the record stays until it expires).
    Delete {
        ids: Vec<String>,
        #[command(flatten)]
        search: MatchingArgs,
    },
    /// Record a reviewer's judgement, for the Bayes learner.
    Mark {
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        #[arg(long)]
        ham: bool,
        ids: Vec<String>,
        #[command(flatten)]
        search: MatchingArgs,
    },
    /// Remove messages whose retention has ended (the gateway also does this hourly).
    Purge,
}

/// Narrowing a list; every option is optional.
#[derive(clap::Args, Clone)]
struct SearchArgs {
    /// spam, virus, banned or policy.
    #[arg(long)]
    category: Option<kala::quarantine::Category>,
    /// held (default), released, deleted or all.
    #[arg(long, default_value = "held")]
    state: String,
    /// Part of the envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// Part of an envelope recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// Words that must all appear in the subject.
    #[arg(long)]
    subject: Option<String>,
    /// A symbol the verdict must contain, e.g. VIRUS.
    #[arg(long)]
    symbol: Option<String>,
    #[arg(long)]
    min_score: Option<f64>,
    #[arg(long)]
    max_score: Option<f64>,
    /// Only messages received within this long, e.g. 24h or 7d.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// newest, oldest, score or lowest.
    #[arg(long, default_value = "newest")]
    sort: kala::quarantine::Sort,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u32,
}

/// Acting on a whole search result instead of listed ids.
#[derive(clap::Args, Clone)]
struct MatchingArgs {
    /// Act on every message matching the search options (all pages).
    #[arg(long)]
    matching: bool,
    #[command(flatten)]
    filter: SearchArgs,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print what it sets up.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kala::install_crypto_provider();
    if !matches!(cli.command, Command::Serve { .. }) {
        // `kala rules check | head` should stop quietly, as other command-line tools do,
        // not panic on the closed pipe. The gateway keeps Rust's default (EPIPE errors).
        // SAFETY: no other thread exists yet; this only resets a signal disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Scan {
            file,
            config,
            json,
            sender,
            explain,
        } => scan(&file, config.as_deref(), json, &sender, explain),
        Command::Learn {
            spam,
            ham,
            reset,
            paths,
            config,
        } => learn(&paths, spam, ham, reset, config.as_deref()),
        Command::Eval {
            train_ham,
            train_spam,
            test_ham,
            test_spam,
            folds,
            config,
            json,
        } => eval(
            [train_ham, train_spam, test_ham, test_spam],
            folds,
            config.as_deref(),
            json,
        ),
        Command::Rules { config, command } => commands::rules::run(config.as_deref(), command),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Settings::load(&file)
            .map(|s| println!("ok: {s}"))
            .map_err(Into::into),
        Command::Quarantine { config, command } => quarantine(config.as_deref(), command),
        Command::User { config, command } => user(config.as_deref(), command),
        Command::Status { config } => status(config.as_deref()),
        Command::Backup { dest, config } => load_settings(config.as_deref()).and_then(|settings| {
            let summary = runtime()?.block_on(kala::backup::backup(&settings, &dest))?;
            println!(
                "wrote {} ({} members, {} bytes) and its .sha256",
                summary.archive.display(),
                summary.members,
                summary.bytes
            );
            Ok(())
        }),
        Command::Restore { archive, config } => load_settings(config.as_deref()).and_then(|settings| {
            for line in kala::backup::restore(&archive, &settings.data_dir)? {
                println!("{line}");
            }
            println!("restored; copy the config and rules back where they were if this is a new machine");
            Ok(())
        }),
        Command::Track { config, args } => commands::track::run(config.as_deref(), args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kala: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    Ok(match config {
        Some(path) => Settings::load(path)?,
        None => Settings::embedded_defaults(),
    })
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KALA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    // Colours only for a person at a terminal, never into log files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// glibc gives each thread that allocates its own heap arena and keeps what is freed there:
/// with parsing and scanning on changing blocking threads, that is tens of MiB of RSS held
/// for nothing (measured with `cargo bench --bench proxy`: 86 -> 69 MiB peak). Two arenas are
/// plenty for two scan slots per core. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets an allocator
        // parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let settings = load_settings(config)?;
    init_logging(&settings);
    if config.is_none() {
        tracing::info!("no --config given: running on embedded defaults (see kala.example.toml)");
    }
    tracing::info!("{settings}");
    runtime()?.block_on(async move {
        // Handlers first: a SIGTERM right after the "listening" line must not kill us unclean.
        let stop = stop_signal()?;
        let server = kala::smtp::start(settings).await?;
        for addr in &server.local_addrs {
            tracing::info!(%addr, "listening for SMTP");
        }
        let web = if server.shared.settings.web.enabled {
            let web = kala::web::start(server.shared.clone()).await?;
            tracing::info!(addr = %web.local_addr, "review UI listening (http)");
            let accounts = kala::web::auth::Accounts::new(server.shared.quarantine.store().clone());
            if accounts.list().await?.is_empty() {
                tracing::warn!(
                    "no UI accounts yet: create the first with `kala user add --role admin NAME`"
                );
            }
            Some(web)
        } else {
            None
        };
        stop.await?;
        tracing::info!("shutting down: no new transactions, waiting for those in flight");
        if let Some(web) = web {
            web.stop();
        }
        let left = server.shutdown().await;
        if left > 0 {
            tracing::warn!(
                sessions = left,
                "grace period over; closing sessions still open (their senders will retry)"
            );
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed when this is called.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        Ok(())
    })
}

fn scan(
    file: &Path,
    config: Option<&Path>,
    json: bool,
    sender: &str,
    explain: bool,
) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    runtime()?.block_on(async move {
        let mut raw = Vec::new();
        if file == Path::new("-") {
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw)?;
        } else {
            raw = tokio::fs::read(file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
        }
        // An mbox "From " line (as in the public corpora) is not part of the message.
        if raw.starts_with(b"From ")
            && let Some(end) = raw.iter().position(|&b| b == b'\n')
        {
            raw.drain(..=end);
        }
        let mut pipeline = Pipeline::new(&settings);
        if let Some(model) = bayes_if_stored(&settings).await? {
            pipeline.add_check(std::sync::Arc::new(kala::checks::Bayes::new(model)));
        }
        let envelope = Envelope::offline(sender, Vec::new());
        let total = raw.len();
        raw.truncate(pipeline.max_scan_size());
        let message = pipeline.parse(raw, total).await;
        let verdict = pipeline.scan(&envelope, &message, Vec::new()).await;
        if json {
            println!("{}", serde_json::to_string_pretty(&verdict)?);
        } else {
            println!(
                "{}: action {}, score {:.2}",
                file.display(),
                verdict.action,
                verdict.score
            );
            if let Some(symbol) = &verdict.forced_by {
                println!("  (action forced by {symbol})");
            }
            let rules = pipeline.rules().current();
            for s in &verdict.symbols {
                if explain {
                    println!("  {:<28} {:>6.2}  {}", s.name, s.score, s.description);
                    if let Some(place) = rules.location(&s.name) {
                        println!("  {:<28}         rule at {place}", "");
                    }
                    if let Some(detail) = &s.detail {
                        println!("  {:<28}         matched: {detail:?}", "");
                    }
                } else {
                    println!("  {:<28} {:>6.2}  {}", s.name, s.score, s.description);
                }
            }
        }
        Ok(())
    })
}

/// The Bayes model, for `kala scan`, unless disabled or there is no store yet (a scan
/// creates no database).
async fn bayes_if_stored(
    settings: &Settings,
) -> anyhow::Result<Option<std::sync::Arc<kala::bayes::Model>>> {
    let url = &settings.store.url;
    let no_database_yet = kala::store::sqlite_file(url).is_some_and(|file| !file.exists());
    if !settings.bayes.enabled || no_database_yet {
        return Ok(None);
    }
    let store = kala::store::Store::open(url).await?;
    Ok(Some(kala::bayes::open_model(settings, &store).await?))
}

fn learn(
    paths: &[PathBuf],
    spam: bool,
    ham: bool,
    reset: bool,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    use kala::store::bayes::Learned;
    let settings = load_settings(config)?;
    anyhow::ensure!(
        paths.is_empty() || spam || ham,
        "say what the messages are: --spam or --ham"
    );
    let mails = kala::mailbox::read(paths)?;
    anyhow::ensure!(
        paths.is_empty() || !mails.is_empty(),
        "no messages found under the given paths"
    );
    runtime()?.block_on(async move {
        let store = kala::store::Store::open(&settings.store.url).await?;
        let model = kala::bayes::open_model(&settings, &store).await?;
        if reset {
            let forgotten = model.store.reset().await?;
            println!("the model was reset: {forgotten} tokens and every learned message forgotten");
        }
        if mails.is_empty() {
            return Ok(());
        }
        let (mut new, mut relearned, mut known) = (0, 0, 0);
        // One transaction per batch: one fsync per hundred messages, not per message.
        for batch in mails.chunks(100) {
            let lessons: Vec<_> = batch
                .iter()
                .map(|mail| {
                    let message = kala::message::Message::parse(&mail.raw, mail.raw.len());
                    kala::bayes::lesson(&message, spam)
                })
                .collect();
            for outcome in model.learn(&lessons).await? {
                match outcome {
                    Learned::New => new += 1,
                    Learned::Relearned => relearned += 1,
                    Learned::AlreadyKnown => known += 1,
                }
            }
        }
        let totals = model.store.totals().await?;
        let kind = if spam { "spam" } else { "ham" };
        println!(
            "{} messages as {kind}: {new} learned, {relearned} moved from the other class, {known} already known",
            mails.len()
        );
        println!(
            "the model has learned {} spam and {} ham (it scores from {} of each)",
            totals.spam, totals.ham, settings.bayes.classifier.min_learned
        );
        if let Some(warning) = model.tokenizer_warning().await? {
            eprintln!("note: {warning}");
        }
        Ok(())
    })
}

fn eval(
    [train_ham, train_spam, test_ham, test_spam]: [Vec<PathBuf>; 4],
    folds: usize,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    use kala::eval::Corpus;
    let settings = load_settings(config)?;
    let train = Corpus {
        ham: kala::mailbox::read(&train_ham)?,
        spam: kala::mailbox::read(&train_spam)?,
    };
    let test = Corpus {
        ham: kala::mailbox::read(&test_ham)?,
        spam: kala::mailbox::read(&test_spam)?,
    };
    // One thread scans the messages one at a time (see `kala::eval`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let report = if test.ham.is_empty() && test.spam.is_empty() {
            println!("no test sets: {folds}-fold cross-validation within the training sets");
            kala::eval::cross_validate(&settings, &train, folds).await?
        } else {
            kala::eval::evaluate(&settings, &train, &test).await?
        };
        if json {
            for scored in &report.scored {
                println!("{}", serde_json::to_string(scored)?);
            }
        } else {
            report.print(kala::eval::CURVE);
        }
        Ok(())
    })
}

fn quarantine(config: Option<&Path>, command: QuarantineCommand) -> anyhow::Result<()> {
    use kala::quarantine::{Mark, Quarantine};
    let settings = load_settings(config)?;
    runtime()?.block_on(async move {
        let store = kala::store::Store::open(&settings.store.url).await?;
        let mut quarantine = Quarantine::new(store.clone(), settings.quarantine.retention);
        if settings.bayes.enabled {
            quarantine = quarantine.with_bayes(kala::bayes::open_model(&settings, &store).await?);
        }
        match command {
            QuarantineCommand::List { filter, json } => {
                let page = quarantine.list(&filter.to_filter()?).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&page)?);
                } else {
                    print_list(&page);
                }
            }
            QuarantineCommand::Show { id, raw, json } => {
                if raw {
                    let bytes = quarantine
                        .raw(&id)
                        .await?
                        .with_context(|| format!("no stored message has the id {id}"))?;
                    use std::io::Write as _;
                    std::io::stdout().write_all(&bytes)?;
                    return Ok(());
                }
                let held = quarantine
                    .get(&id)
                    .await?
                    .with_context(|| format!("no quarantined message has the id {id}"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&held)?);
                } else {
                    print_held(&held);
                }
            }
            QuarantineCommand::Release { ids, search } => {
                let ids = selected(&quarantine, ids, &search).await?;
                let downstream = kala::smtp::relay::Downstream::new(&settings.downstream)?;
                let mut failed = 0;
                for id in &ids {
                    match quarantine.release(id, &downstream).await {
                        Ok(r) if r.delivered => println!("{id}: released: {}", r.reply),
                        Ok(r) => {
                            failed += 1;
                            println!("{id}: NOT released, still held: {}", r.reply);
                        }
                        Err(e) => {
                            failed += 1;
                            println!("{id}: NOT released: {e:#}");
                        }
                    }
                }
                if failed > 0 {
                    anyhow::bail!("{failed} of {} messages were not released", ids.len());
                }
            }
            QuarantineCommand::Delete { ids, search } => {
                let ids = selected(&quarantine, ids, &search).await?;
                for id in &ids {
                    if quarantine.delete(id).await? {
                        println!("{id}: deleted");
                    } else {
                        println!("{id}: nothing held under this id");
                    }
                }
            }
            QuarantineCommand::Mark {
                spam,
                ham: _,
                ids,
                search,
            } => {
                let mark = if spam { Mark::Spam } else { Mark::Ham };
                for id in selected(&quarantine, ids, &search).await? {
                    if quarantine.mark(&id, mark).await? {
                        println!("{id}: marked {}", mark.as_str());
                    } else {
                        println!("{id}: no such message");
                    }
                }
            }
            QuarantineCommand::Purge => {
                let purged = quarantine.purge_expired(kala::store::now()).await?;
                println!("{purged} expired messages purged");
            }
        }
        Ok(())
    })
}

impl SearchArgs {
    fn to_filter(&self) -> anyhow::Result<kala::quarantine::Filter> {
        use kala::quarantine::State;
        let state = match self.state.as_str() {
            "held" => Some(State::Held),
            "released" => Some(State::Released),
            "deleted" => Some(State::Deleted),
            "all" => None,
            other => anyhow::bail!("--state {other}: use held, released, deleted or all"),
        };
        Ok(kala::quarantine::Filter {
            state,
            category: self.category,
            since: self
                .since
                .map(|d| kala::store::now().saturating_sub(d.as_secs()) as i64),
            until: None,
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            subject: self.subject.clone(),
            min_score: self.min_score,
            max_score: self.max_score,
            symbol: self.symbol.clone(),
            sort: self.sort,
            limit: self.limit,
            offset: self.offset,
        })
    }
}

/// The ids an action applies to: those given, or every message matching the search.
async fn selected(
    quarantine: &kala::quarantine::Quarantine,
    ids: Vec<String>,
    search: &MatchingArgs,
) -> anyhow::Result<Vec<String>> {
    match (ids.is_empty(), search.matching) {
        (false, false) => Ok(ids),
        (true, true) => quarantine.matching_ids(&search.filter.to_filter()?).await,
        (false, true) => anyhow::bail!("give message ids or --matching, not both"),
        (true, false) => {
            anyhow::bail!("give message ids, or --matching with search options for a bulk action")
        }
    }
}

fn when(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn print_list(page: &kala::quarantine::Page) {
    println!(
        "{:<20} {:<20} {:<7} {:>6}  {:<30} SUBJECT",
        "ID", "RECEIVED (UTC)", "CATEGORY", "SCORE", "SENDER"
    );
    for m in &page.messages {
        println!(
            "{:<20} {:<20} {:<8} {:>6.2}  {:<30} {}",
            m.id,
            when(m.received_at),
            m.category.as_str(),
            m.score,
            if m.sender.is_empty() { "<>" } else { &m.sender },
            m.subject
        );
    }
    println!("{} shown of {} matching", page.messages.len(), page.total);
}

fn print_held(held: &kala::quarantine::Held) {
    let m = &held.summary;
    println!("id:          {}", m.id);
    println!("state:       {}", m.state.as_str());
    println!("category:    {}", m.category.as_str());
    println!("received:    {} from {}", when(m.received_at), m.client_ip);
    println!("sender:      <{}>", m.sender);
    println!("recipients:  {}", m.recipients.join(", "));
    println!("From:        {}", held.from);
    println!("Subject:     {}", m.subject);
    println!("Message-ID:  {}", held.message_id);
    println!("size:        {} bytes", m.size);
    println!("expires:     {}", when(held.expires_at));
    if !m.mark.is_empty() {
        println!("marked:      {}", m.mark);
    }
    if !held.downstream_reply.is_empty() {
        println!("downstream:  {}", held.downstream_reply);
    }
    println!(
        "verdict:     {} (score {:.2}{})",
        held.verdict.action,
        held.verdict.score,
        held.verdict
            .forced_by
            .as_deref()
            .map(|s| format!(", forced by {s}"))
            .unwrap_or_default()
    );
    for symbol in &held.verdict.symbols {
        println!(
            "  {:>7.2}  {:<32} {}{}",
            symbol.score,
            symbol.name,
            symbol.description,
            symbol
                .detail
                .as_deref()
                .map(|d| format!(" [{d}]"))
                .unwrap_or_default()
        );
    }
}

fn status(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let answer = runtime()?.block_on(kala::control::request(
        &settings.data_dir,
        &kala::control::Request::Status,
    ))?;
    let Some(answer) = answer else {
        anyhow::bail!(
            "no gateway is running on {} (its control socket does not answer)",
            settings.data_dir.display()
        );
    };
    let readiness: kala::health::Readiness = serde_json::from_str(&answer.text)?;
    for probe in &readiness.probes {
        println!(
            "{:<4} {:<11} {:>5} ms  {}",
            if probe.ok { "ok" } else { "FAIL" },
            probe.name,
            probe.millis,
            probe.detail
        );
    }
    anyhow::ensure!(readiness.ready, "not ready (see FAIL above)");
    println!("ready");
    Ok(())
}

fn user(config: Option<&Path>, command: UserCommand) -> anyhow::Result<()> {
    use kala::web::auth::Accounts;
    let settings = load_settings(config)?;
    runtime()?.block_on(async move {
        let store = kala::store::Store::open(&settings.store.url).await?;
        let accounts = Accounts::new(store.clone());
        let actor = format!(
            "cli:{}",
            std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "unknown".into())
        );
        match command {
            UserCommand::Add { name, role } => {
                let password = read_password()?;
                accounts.add(&name, &password, role).await?;
                store
                    .audit(&actor, "", "user-add", &name, role.as_str())
                    .await?;
                println!("user {name} created with role {}", role.as_str());
            }
            UserCommand::List => {
                for user in accounts.list().await? {
                    println!("{:<24} {}", user.name, user.role.as_str());
                }
            }
            UserCommand::Token { name, label } => {
                let token = accounts.add_token(&name, &label).await?;
                store.audit(&actor, "", "token-add", &name, &label).await?;
                println!("{token}");
            }
        }
        Ok(())
    })
}

/// The new password: asked twice without echo on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> anyhow::Result<String> {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let echo = EchoOff::new();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        drop(echo);
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask("Password: ")?;
    if ask("Again: ")? != first {
        anyhow::bail!("the two passwords differ; nothing was created");
    }
    Ok(first)
}

/// Terminal echo off while it lives (a password prompt).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios they fill in.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}
