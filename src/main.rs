//! The `kala` command: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

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
    /// Rule file tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Parse and compile rule files; print what runs, what does not and why. Exits non-zero
    /// on errors. Without arguments, checks the configured rules.dirs.
    Check {
        dirs: Vec<PathBuf>,
        #[arg(long, short, env = "KALA_CONFIG")]
        config: Option<PathBuf>,
        /// Print every warning, not just the first 20.
        #[arg(long)]
        all_warnings: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print what it sets up.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kala::install_crypto_provider();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Scan {
            file,
            config,
            json,
            sender,
            explain,
        } => scan(&file, config.as_deref(), json, &sender, explain),
        Command::Rules {
            command:
                RulesCommand::Check {
                    dirs,
                    config,
                    all_warnings,
                },
        } => rules_check(dirs, config.as_deref(), all_warnings),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Settings::load(&file)
            .map(|s| println!("ok: {s}"))
            .map_err(Into::into),
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
        stop.await?;
        tracing::info!("shutting down: no new transactions, waiting for those in flight");
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
        let pipeline = Pipeline::new(&settings);
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

fn rules_check(
    dirs: Vec<PathBuf>,
    config: Option<&Path>,
    all_warnings: bool,
) -> anyhow::Result<()> {
    let dirs = if dirs.is_empty() {
        load_settings(config)?.rules.dirs
    } else {
        dirs
    };
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
    if !set.errors.is_empty() {
        for e in &set.errors {
            eprintln!("error: {e}");
        }
        anyhow::bail!("{} errors in the rule files", set.errors.len());
    }
    Ok(())
}
