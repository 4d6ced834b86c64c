//! Configuration: the TOML file as raw serde structs, then validated into [`Settings`].
//!
//! Every key is optional; [`Settings::embedded_defaults`] is what `kala serve` runs on without a
//! file. Errors name the file and the key (`smtp.max_recipients`) so an admin knows what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::verdict::{Action, Policy};

/// A configuration problem, always naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Raw structs: exactly the shape of the file. Unknown keys are errors, never ignored.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    smtp: RawSmtp,
    downstream: RawDownstream,
    scan: RawScan,
    policy: RawPolicy,
    rules: RawRules,
    log: RawLog,
    antivirus: RawAntivirus,
    attachments: RawAttachments,
    store: RawStore,
    quarantine: RawQuarantine,
    web: RawWeb,
    dns: RawDns,
    dnsbl: RawDnsbl,
    uribl: RawUribl,
    lists: RawLists,
    feeds: RawFeeds,
    auth: RawAuth,
    greylist: RawGreylist,
    ratelimit: RawRateLimit,
    state: RawState,
    bayes: RawBayes,
    tracking: RawTracking,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTracking {
    enabled: Option<bool>,
    #[serde(with = "humantime_serde::option")]
    retention: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBayes {
    enabled: Option<bool>,
    backend: Option<String>,
    min_learned: Option<u64>,
    #[serde(with = "humantime_serde::option")]
    expire_after: Option<Duration>,
    autolearn: Option<bool>,
    autolearn_spam: Option<f64>,
    autolearn_ham: Option<f64>,
    strength: Option<f64>,
    assumed: Option<f64>,
    min_distance: Option<f64>,
    max_tokens: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGreylist {
    enabled: Option<bool>,
    #[serde(with = "humantime_serde::option")]
    delay: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    retry_window: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pass_ttl: Option<Duration>,
    auto_allow: Option<bool>,
    skip_spf_pass: Option<bool>,
    skip_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRateLimit {
    client: Option<RawRate>,
    sender: Option<RawRate>,
    skip_networks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    messages: u64,
    #[serde(with = "humantime_serde")]
    per: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawState {
    redis: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDns {
    servers: Option<Vec<String>>,
    #[serde(with = "humantime_serde::option")]
    timeout: Option<Duration>,
    cache_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDnsbl {
    reject_at: Option<f64>,
    skip_networks: Option<Vec<String>>,
    lists: Vec<RawDnsblList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsblList {
    name: String,
    zone: String,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFeeds {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    #[serde(with = "humantime_serde::option")]
    reload_every: Option<Duration>,
    score: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLists {
    allow: Vec<String>,
    block: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUribl {
    max_domains: Option<usize>,
    lists: Vec<RawDnsblList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    enabled: Option<bool>,
    dmarc_reject_action: Option<Action>,
    dmarc_quarantine_action: Option<Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeb {
    enabled: Option<bool>,
    listen: Option<String>,
    tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQuarantine {
    retention: RawRetention,
    #[serde(with = "humantime_serde::option")]
    purge_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    #[serde(with = "humantime_serde::option")]
    spam: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    virus: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    banned: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    policy: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAttachments {
    banned_extensions: Option<Vec<String>>,
    max_archive_depth: Option<usize>,
    max_archive_entries: Option<usize>,
    max_expanded_size: Option<ByteSize>,
    max_ratio: Option<u64>,
    max_parts: Option<usize>,
    encrypted: Option<EncryptedAction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAntivirus {
    enabled: Option<bool>,
    clamd: Option<String>,
    #[serde(with = "humantime_serde::option")]
    timeout: Option<Duration>,
    max_stream_size: Option<ByteSize>,
    fail_open: Option<bool>,
    action: Option<VirusAction>,
    too_large: Option<TooLargeAction>,
    #[serde(with = "humantime_serde::option")]
    max_database_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRules {
    dirs: Option<Vec<PathBuf>>,
    language: Option<String>,
    keep_versions: Option<usize>,
    watch: Option<bool>,
    #[serde(with = "humantime_serde::option")]
    watch_every: Option<Duration>,
    update_from: Option<String>,
    update_key: Option<String>,
    sample_relayed: Option<usize>,
    #[serde(with = "humantime_serde::option")]
    sample_retention: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSmtp {
    listen: Option<Vec<String>>,
    hostname: Option<String>,
    max_message_size: Option<ByteSize>,
    max_recipients: Option<usize>,
    max_line_length: Option<usize>,
    max_header_size: Option<ByteSize>,
    memory_spool_size: Option<ByteSize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_errors: Option<usize>,
    #[serde(with = "humantime_serde::option")]
    command_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    data_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    shutdown_grace: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    greet_delay: Option<Duration>,
    pregreet_reject: Option<bool>,
    helo_reject: Option<Vec<String>>,
    reverse_dns: Option<bool>,
    tls: RawSmtpTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSmtpTls {
    enabled: Option<bool>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDownstream {
    address: Option<String>,
    helo_name: Option<String>,
    tls: Option<DownstreamTls>,
    ca_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    #[serde(with = "humantime_serde::option")]
    connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    command_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    data_timeout: Option<Duration>,
    pool_size: Option<usize>,
    max_messages_per_connection: Option<usize>,
    #[serde(with = "humantime_serde::option")]
    pool_idle_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawScan {
    max_scan_size: Option<ByteSize>,
    #[serde(with = "humantime_serde::option")]
    check_timeout: Option<Duration>,
    workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    tag_score: Option<f64>,
    quarantine_score: Option<f64>,
    reject_score: Option<f64>,
    subject_prefix: Option<String>,
    scores: BTreeMap<String, f64>,
    force_actions: BTreeMap<String, Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
    message_details: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validated settings: what the rest of Kala reads.

/// How Kala talks TLS to the downstream (Exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownstreamTls {
    /// Plain SMTP only.
    Off,
    /// STARTTLS when the downstream offers it; the certificate is not verified (like most MTAs).
    Opportunistic,
    /// STARTTLS is required and the certificate is verified (`ca_file` or the system roots).
    Required,
}

/// What a detected virus does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirusAction {
    Quarantine,
    Reject,
}

/// What a part too large for the scanner does to the message: it is never passed silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLargeAction {
    Tempfail,
    Quarantine,
    /// Relay, marked with `AV_TOO_LARGE` and `X-Kala-Virus: unchecked`.
    Tag,
}

/// What an encrypted archive (which no scanner can look into) does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptedAction {
    /// Only its score (`ARCHIVE_ENCRYPTED`).
    Tag,
    Quarantine,
    Reject,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything Kala needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the file came from (`embedded defaults` without one); used in messages.
    pub source: String,
    /// The file, when there is one: reloads read its `[policy]` and `[lists]` again.
    pub file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub smtp: SmtpSettings,
    pub downstream: DownstreamSettings,
    pub scan: ScanSettings,
    pub policy: Policy,
    pub rules: RulesSettings,
    pub log: LogSettings,
    pub antivirus: AntivirusSettings,
    pub attachments: AttachmentSettings,
    pub store: StoreSettings,
    pub quarantine: QuarantineSettings,
    pub web: WebSettings,
    pub dns: DnsSettings,
    pub dnsbl: DnsblSettings,
    pub uribl: UriblSettings,
    /// The admin's global allow and block lists (beside the reviewers' lists in the store).
    pub lists: ListsSettings,
    pub feeds: FeedsSettings,
    pub auth: AuthSettings,
    pub greylist: GreylistSettings,
    pub ratelimit: RateLimitSettings,
    /// Where greylisting and rate counters live when several nodes share them.
    pub state: StateSettings,
    pub bayes: BayesSettings,
    pub tracking: TrackingSettings,
}

/// Where the Bayes model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BayesBackend {
    /// The store (`store.url`): SQLite by default, or PostgreSQL.
    Store,
    /// `state.redis`, shared by several gateways.
    Redis,
}

#[derive(Debug, Clone)]
pub struct BayesSettings {
    pub enabled: bool,
    pub backend: BayesBackend,
    /// Tokens no lesson touched for this long are forgotten.
    pub expire_after: Duration,
    /// Learn from confident verdicts on their own (never from ones with virus symbols).
    pub autolearn: bool,
    /// A score (Bayes symbols left out) at or above this is learned as spam.
    pub autolearn_spam: f64,
    /// A score (Bayes symbols left out) at or below this is learned as ham.
    pub autolearn_ham: f64,
    /// The classifier's constants, `min_learned` (no verdict before this many spam and this
    /// many ham were learned) among them; see [`crate::bayes::Classifier`].
    pub classifier: crate::bayes::Classifier,
}

impl Default for BayesSettings {
    fn default() -> BayesSettings {
        BayesSettings {
            enabled: true,
            backend: BayesBackend::Store,
            expire_after: Duration::from_secs(180 * 86_400),
            autolearn: false,
            autolearn_spam: 12.0,
            autolearn_ham: -2.0,
            classifier: crate::bayes::Classifier::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GreylistSettings {
    pub enabled: bool,
    /// A retry is accepted this long after the first attempt.
    pub delay: Duration,
    /// A first attempt not retried within this is forgotten.
    pub retry_window: Duration,
    /// How long a triplet (and an auto-allowed client network) stays accepted.
    pub pass_ttl: Duration,
    /// A client network that retried once is accepted for any sender and recipient.
    pub auto_allow: bool,
    /// A sender whose SPF passes for the client is not greylisted.
    pub skip_spf_pass: bool,
    pub skip_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub messages: u64,
    pub per: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    /// Messages (MAIL commands) per client address.
    pub client: Option<Rate>,
    /// Messages per envelope sender.
    pub sender: Option<Rate>,
    pub skip_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Default)]
pub struct StateSettings {
    /// `redis://HOST:PORT/DB`: greylisting and rate counters shared by several gateways.
    /// Without it, greylisting lives in the store and rate counters in memory.
    pub redis: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Resolvers to ask (`host:port`); empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// The bound on one lookup.
    pub timeout: Duration,
    /// Answers kept (for their TTL) by the resolver's cache.
    pub cache_size: u64,
}

/// DNS blocklists queried with the client's address at connect.
#[derive(Debug, Clone, Default)]
pub struct DnsblSettings {
    pub lists: Vec<DnsblList>,
    /// Refuse the connection (554) when the listed weights add up to this; `None`: symbols only.
    pub reject_at: Option<f64>,
    /// Clients never looked up (internal networks).
    pub skip_networks: Vec<ipnet::IpNet>,
}

/// Feed files of known-bad hosts, domains and attachment hashes (see [`crate::feeds`]).
#[derive(Debug, Clone)]
pub struct FeedsSettings {
    pub enabled: bool,
    /// `NAME.hosts`, `NAME.domains` and `NAME.sha256` files; `feeds` in the data directory
    /// unless set.
    pub dir: PathBuf,
    /// How often the directory is checked for changed files.
    pub reload_every: Duration,
    /// The score of a hit (`KALA_FEED_<NAME>`; `[policy.scores]` overrides it per feed).
    pub score: f64,
}

/// Entries: `ana@example.org`, `@example.org` (subdomains too), or a client network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListsSettings {
    pub allow: Vec<String>,
    pub block: Vec<String>,
}

/// Domain blocklists (URIBL, DBL) asked with the registrable domains of a message's links
/// and of its sender.
#[derive(Debug, Clone, Default)]
pub struct UriblSettings {
    pub lists: Vec<DnsblList>,
    /// Distinct domains looked up per message; the rest are skipped (and said so).
    pub max_domains: usize,
}

#[derive(Debug, Clone)]
pub struct DnsblList {
    /// The symbol a listing emits, `RBL_<NAME>`.
    pub symbol: String,
    pub zone: String,
    /// Weight of each answer address.
    pub weights: BTreeMap<std::net::Ipv4Addr, f64>,
    /// Weight of any other answer in 127.0.0.0/8 (`"*"`), if listed.
    pub other_weight: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// SPF, DKIM, DMARC and ARC checks (need DNS), with an `Authentication-Results` header.
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct WebSettings {
    pub enabled: bool,
    /// The review UI's address; loopback by default.
    pub listen: SocketAddr,
    /// HTTPS with the SMTP certificate (`smtp.tls`, or the self-signed pair in `data_dir`).
    pub tls: bool,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH` (default: `kala.db` in the data directory) or `postgres://...`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct QuarantineSettings {
    pub retention: crate::quarantine::Retention,
    /// How often expired messages are purged.
    pub purge_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct AttachmentSettings {
    pub policy: crate::attachments::AttachmentPolicy,
    pub max_parts: usize,
}

#[derive(Debug, Clone)]
pub struct AntivirusSettings {
    pub enabled: bool,
    pub clamd: crate::antivirus::Endpoint,
    /// Bound on each clamd call.
    pub timeout: Duration,
    pub max_stream_size: usize,
    /// Relay (marked) rather than tempfail when clamd cannot answer: an admin's explicit choice.
    pub fail_open: bool,
    /// A database older than this is warned about at start and at each health check.
    pub max_database_age: Duration,
}

/// Message tracking: every message's path, kept for the helpdesk's searches.
#[derive(Debug, Clone)]
pub struct TrackingSettings {
    pub enabled: bool,
    /// How long a message's record is kept (its body is never kept here).
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct RulesSettings {
    /// Rule directories (or files), read in order; later definitions win.
    pub dirs: Vec<PathBuf>,
    /// Language of rule descriptions in headers and logs (`en`, `sq`, `sr`).
    pub language: String,
    /// Where `kala rules update` unpacks verified bundles (`DATA_DIR/rule-updates`); read
    /// before `dirs`, so local rules override the update's.
    pub update_dir: PathBuf,
    /// Activated versions kept for rollback.
    pub keep_versions: usize,
    /// Reload when a rule file changes (checked every `watch_every`).
    pub watch: bool,
    pub watch_every: Duration,
    /// A directory or an http(s) URL holding `kala-rules.zip` and its `.minisig`.
    pub update_from: Option<String>,
    /// The minisign public key (the `RW...` line) bundles must be signed with.
    pub update_key: Option<String>,
    /// Relayed messages kept for `kala rules try` (0: none, the default, for privacy).
    pub sample_relayed: usize,
    pub sample_retention: Duration,
}

impl RulesSettings {
    /// What the rule set is read from: the update directory when there is one, then `dirs`.
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut sources = Vec::with_capacity(self.dirs.len() + 1);
        if self.update_dir.is_dir() {
            sources.push(self.update_dir.clone());
        }
        sources.extend(self.dirs.iter().cloned());
        sources
    }
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_header_size: usize,
    pub memory_spool_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long the greeting waits; a client that talks in that time is a pregreeter.
    pub greet_delay: Duration,
    /// Refuse a pregreeting client (554) instead of only scoring it.
    pub pregreet_reject: bool,
    /// HELO shapes refused at once (`forged`, `bare_ip`, `not_fqdn`, `localhost`); the others
    /// only score.
    pub helo_reject: Vec<String>,
    /// Look up each internet client's host name (PTR, forward-confirmed) for the Received line
    /// and the rules that read it. Clients on loopback and private networks are not looked up.
    pub reverse_dns: bool,
    pub tls: SmtpTlsSettings,
}

#[derive(Debug, Clone)]
pub struct SmtpTlsSettings {
    pub enabled: bool,
    /// Certificate and key files; `None` means a self-signed pair kept in the data dir.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct DownstreamSettings {
    /// `host:port`, resolved at each connect so a DNS change needs no restart.
    pub address: String,
    pub helo_name: String,
    pub tls: DownstreamTls,
    pub ca_file: Option<PathBuf>,
    pub tls_server_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub pool_size: usize,
    pub max_messages_per_connection: usize,
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub max_scan_size: usize,
    pub check_timeout: Duration,
    /// Scan threads. 0 means none: scans run on the calling thread, which only an offline
    /// batch may do (`kala eval`); in the config file 0 means one per core.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// Subject and Message-ID in each message's log line. Off by default: logs travel
    /// further than the quarantine does. Bodies and full headers are never logged.
    pub message_details: bool,
}

impl Settings {
    /// The settings `kala serve` uses when no file is given.
    pub fn embedded_defaults() -> Settings {
        Self::from_raw(RawConfig::default(), "embedded defaults")
            .expect("the embedded defaults are valid")
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        let mut settings = Self::parse(&text, &file)?;
        settings.file = Some(path.to_path_buf());
        Ok(settings)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Settings, ConfigError> {
        let fail = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| fail("(syntax)".into(), e.to_string().trim().to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            fail(key, e.into_inner().to_string().trim().to_string())
        })?;
        Self::from_raw(raw, file)
    }

    fn from_raw(raw: RawConfig, file: &str) -> Result<Settings, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };

        let listen = raw
            .smtp
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:2525".into()])
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>().map_err(|_| {
                    fail(
                        "smtp.listen",
                        format!("`{s}` is not an address like 0.0.0.0:25"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(fail("smtp.listen", "needs at least one address".into()));
        }
        let hostname = match raw.smtp.hostname.filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into()),
        };
        let positive = |key: &str, value: usize| {
            if value == 0 {
                Err(fail(key, "must be greater than zero".into()))
            } else {
                Ok(value)
            }
        };
        let size =
            |v: Option<ByteSize>, default: u64| v.map(|b| b.as_u64()).unwrap_or(default) as usize;

        let max_line_length = positive(
            "smtp.max_line_length",
            raw.smtp.max_line_length.unwrap_or(2048),
        )?;
        if max_line_length < 512 {
            // RFC 5321 §4.5.3.1.4: a command line of 512 octets must be accepted.
            return Err(fail(
                "smtp.max_line_length",
                "must be at least 512 (RFC 5321)".into(),
            ));
        }
        let cert_and_key = match (raw.smtp.tls.cert_file, raw.smtp.tls.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(fail(
                    "smtp.tls.key_file",
                    "is required with smtp.tls.cert_file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(fail(
                    "smtp.tls.cert_file",
                    "is required with smtp.tls.key_file".into(),
                ));
            }
        };
        let smtp = SmtpSettings {
            listen,
            hostname: hostname.clone(),
            max_message_size: positive(
                "smtp.max_message_size",
                size(raw.smtp.max_message_size, 50 * 1024 * 1024),
            )?,
            max_recipients: positive(
                "smtp.max_recipients",
                raw.smtp.max_recipients.unwrap_or(100),
            )?,
            max_line_length,
            max_header_size: positive(
                "smtp.max_header_size",
                size(raw.smtp.max_header_size, 256 * 1024),
            )?,
            memory_spool_size: size(raw.smtp.memory_spool_size, 1024 * 1024),
            max_connections: positive(
                "smtp.max_connections",
                raw.smtp.max_connections.unwrap_or(1000),
            )?,
            max_connections_per_ip: positive(
                "smtp.max_connections_per_ip",
                raw.smtp.max_connections_per_ip.unwrap_or(20),
            )?,
            max_errors: positive("smtp.max_errors", raw.smtp.max_errors.unwrap_or(10))?,
            command_timeout: raw.smtp.command_timeout.unwrap_or(Duration::from_secs(300)),
            data_timeout: raw.smtp.data_timeout.unwrap_or(Duration::from_secs(180)),
            shutdown_grace: raw.smtp.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            greet_delay: raw.smtp.greet_delay.unwrap_or(Duration::ZERO),
            pregreet_reject: raw.smtp.pregreet_reject.unwrap_or(false),
            helo_reject: match raw.smtp.helo_reject {
                None => Vec::new(),
                Some(kinds) => {
                    for kind in &kinds {
                        if !crate::checks::HELO_SHAPES.contains(&kind.as_str()) {
                            return Err(fail(
                                "smtp.helo_reject",
                                format!(
                                    "`{kind}` is not one of {}",
                                    crate::checks::HELO_SHAPES.join(", ")
                                ),
                            ));
                        }
                    }
                    kinds
                }
            },
            reverse_dns: raw.smtp.reverse_dns.unwrap_or(true),
            tls: SmtpTlsSettings {
                enabled: raw.smtp.tls.enabled.unwrap_or(true),
                cert_and_key,
            },
        };

        let address = raw
            .downstream
            .address
            .unwrap_or_else(|| "127.0.0.1:25".into());
        let server_name = match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            _ => {
                return Err(fail(
                    "downstream.address",
                    format!("`{address}` is not host:port, e.g. exchange.example.org:25"),
                ));
            }
        };
        let tls = raw.downstream.tls.unwrap_or(DownstreamTls::Opportunistic);
        if raw.downstream.ca_file.is_some() && tls != DownstreamTls::Required {
            return Err(fail(
                "downstream.ca_file",
                "is only used with downstream.tls = \"required\"".into(),
            ));
        }
        let downstream = DownstreamSettings {
            address,
            helo_name: raw.downstream.helo_name.unwrap_or_else(|| hostname.clone()),
            tls,
            ca_file: raw.downstream.ca_file,
            tls_server_name: raw.downstream.tls_server_name.unwrap_or(server_name),
            connect_timeout: raw
                .downstream
                .connect_timeout
                .unwrap_or(Duration::from_secs(10)),
            command_timeout: raw
                .downstream
                .command_timeout
                .unwrap_or(Duration::from_secs(60)),
            data_timeout: raw
                .downstream
                .data_timeout
                .unwrap_or(Duration::from_secs(300)),
            pool_size: raw.downstream.pool_size.unwrap_or(16),
            max_messages_per_connection: positive(
                "downstream.max_messages_per_connection",
                raw.downstream.max_messages_per_connection.unwrap_or(100),
            )?,
            pool_idle_timeout: raw
                .downstream
                .pool_idle_timeout
                .unwrap_or(Duration::from_secs(30)),
        };

        let workers = match raw.scan.workers.unwrap_or(0) {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let scan = ScanSettings {
            max_scan_size: positive(
                "scan.max_scan_size",
                size(raw.scan.max_scan_size, 20 * 1024 * 1024),
            )?,
            check_timeout: raw.scan.check_timeout.unwrap_or(Duration::from_secs(10)),
            workers,
        };

        let tag = raw.policy.tag_score.unwrap_or(5.0);
        let quarantine = raw.policy.quarantine_score.unwrap_or(10.0);
        let reject = raw.policy.reject_score.unwrap_or(20.0);
        if quarantine < tag {
            return Err(fail(
                "policy.quarantine_score",
                format!("{quarantine} is below policy.tag_score ({tag})"),
            ));
        }
        if reject < quarantine {
            return Err(fail(
                "policy.reject_score",
                format!("{reject} is below policy.quarantine_score ({quarantine})"),
            ));
        }
        for name in raw
            .policy
            .scores
            .keys()
            .chain(raw.policy.force_actions.keys())
        {
            if !crate::verdict::is_symbol_name(name) {
                return Err(fail(
                    "policy",
                    format!("`{name}` is not a symbol name (upper case letters, digits and _)"),
                ));
            }
        }
        let mut force_actions = raw.policy.force_actions;
        // A message the parser cannot read is held for a person rather than passed or lost.
        force_actions
            .entry("MESSAGE_UNPARSEABLE".into())
            .or_insert(Action::Quarantine);

        let av = raw.antivirus;
        let clamd_text = av
            .clamd
            .unwrap_or_else(|| "/var/run/clamav/clamd.ctl".into());
        let clamd = crate::antivirus::Endpoint::parse(&clamd_text).ok_or_else(|| {
            fail(
                "antivirus.clamd",
                format!(
                    "`{clamd_text}` is neither a socket path (/run/clamav/clamd.ctl) nor host:port"
                ),
            )
        })?;
        let av_timeout = av.timeout.unwrap_or(Duration::from_secs(8));
        if av_timeout >= scan.check_timeout {
            return Err(fail(
                "antivirus.timeout",
                format!(
                    "{} must be shorter than scan.check_timeout ({}); raise that too",
                    humantime_serde::re::humantime::format_duration(av_timeout),
                    humantime_serde::re::humantime::format_duration(scan.check_timeout)
                ),
            ));
        }
        let antivirus = AntivirusSettings {
            enabled: av.enabled.unwrap_or(true),
            clamd,
            timeout: av_timeout,
            max_stream_size: positive(
                "antivirus.max_stream_size",
                size(av.max_stream_size, 25 * 1024 * 1024),
            )?,
            fail_open: av.fail_open.unwrap_or(false),
            max_database_age: av
                .max_database_age
                .unwrap_or(Duration::from_secs(3 * 86_400)),
        };
        // The antivirus outcomes as forced actions, unless the admin forced them otherwise.
        let virus_action = match av.action.unwrap_or(VirusAction::Quarantine) {
            VirusAction::Quarantine => Action::Quarantine,
            VirusAction::Reject => Action::Reject,
        };
        force_actions.entry("VIRUS".into()).or_insert(virus_action);
        if !antivirus.fail_open {
            force_actions
                .entry("AV_UNCHECKED".into())
                .or_insert(Action::Tempfail);
        }
        let too_large = match av.too_large.unwrap_or(TooLargeAction::Quarantine) {
            TooLargeAction::Tempfail => Action::Tempfail,
            TooLargeAction::Quarantine => Action::Quarantine,
            TooLargeAction::Tag => Action::Tag,
        };
        force_actions
            .entry("AV_TOO_LARGE".into())
            .or_insert(too_large);

        // An attachment symbol that alone reaches the quarantine score holds the message
        // whatever else it scores: a negative score (the Bayes ham bands, a nice rule) must
        // never let a banned file through.
        for (name, score, _) in crate::attachments::SYMBOLS {
            let score = raw.policy.scores.get(*name).copied().unwrap_or(*score);
            if score >= quarantine {
                force_actions
                    .entry((*name).to_string())
                    .or_insert(Action::Quarantine);
            }
        }
        let raw_attachments = raw.attachments;
        let defaults = crate::attachments::AttachmentPolicy::default();
        let banned_extensions = match raw_attachments.banned_extensions {
            Some(list) => list
                .into_iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            None => defaults.banned_extensions,
        };
        let limits = crate::attachments::Limits {
            max_depth: raw_attachments
                .max_archive_depth
                .unwrap_or(defaults.limits.max_depth),
            max_entries: positive(
                "attachments.max_archive_entries",
                raw_attachments
                    .max_archive_entries
                    .unwrap_or(defaults.limits.max_entries),
            )?,
            max_expanded_bytes: positive(
                "attachments.max_expanded_size",
                size(
                    raw_attachments.max_expanded_size,
                    defaults.limits.max_expanded_bytes,
                ),
            )? as u64,
            max_ratio: raw_attachments
                .max_ratio
                .unwrap_or(defaults.limits.max_ratio)
                .max(1),
        };
        let attachments = AttachmentSettings {
            policy: crate::attachments::AttachmentPolicy {
                banned_extensions,
                limits,
            },
            max_parts: positive(
                "attachments.max_parts",
                raw_attachments.max_parts.unwrap_or(500),
            )?,
        };
        match raw_attachments
            .encrypted
            .unwrap_or(EncryptedAction::Quarantine)
        {
            EncryptedAction::Tag => {}
            EncryptedAction::Quarantine => {
                force_actions
                    .entry("ARCHIVE_ENCRYPTED".into())
                    .or_insert(Action::Quarantine);
            }
            EncryptedAction::Reject => {
                force_actions
                    .entry("ARCHIVE_ENCRYPTED".into())
                    .or_insert(Action::Reject);
            }
        }
        let (dns, dnsbl, auth) =
            reputation_from_raw(raw.dns, raw.dnsbl, raw.auth, &mut force_actions, &fail)?;
        let uribl = UriblSettings {
            lists: blocklists(raw.uribl.lists, "uribl", "URIBL_", &fail)?,
            max_domains: raw.uribl.max_domains.unwrap_or(20),
        };
        let list_entries = |raw: Vec<String>, key: &str| -> Result<Vec<String>, ConfigError> {
            raw.into_iter()
                .map(|e| {
                    let e = e.trim().to_lowercase();
                    if let Some(network) = crate::store::lists::network_entry(&e) {
                        Ok(network.to_string())
                    } else if e.contains('@') && e != "@" {
                        Ok(e)
                    } else {
                        Err(fail(
                            key,
                            format!("`{e}` is neither an address, @domain nor a network"),
                        ))
                    }
                })
                .collect()
        };
        let lists = ListsSettings {
            allow: list_entries(raw.lists.allow, "lists.allow")?,
            block: list_entries(raw.lists.block, "lists.block")?,
        };
        let data_dir_for_feeds = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./var"));
        let feeds = FeedsSettings {
            enabled: raw.feeds.enabled.unwrap_or(true),
            dir: raw
                .feeds
                .dir
                .unwrap_or_else(|| data_dir_for_feeds.join("feeds")),
            reload_every: raw.feeds.reload_every.unwrap_or(Duration::from_secs(30)),
            score: raw.feeds.score.unwrap_or(6.0),
        };
        if feeds.reload_every < Duration::from_secs(1) {
            return Err(fail("feeds.reload_every", "must be at least 1s".into()));
        }
        let (greylist, ratelimit, state) =
            behaviour_from_raw(raw.greylist, raw.ratelimit, raw.state, &fail)?;
        let bayes = bayes_from_raw(raw.bayes, &state, &fail)?;
        let policy = Policy {
            tag_score: tag,
            quarantine_score: quarantine,
            reject_score: reject,
            subject_prefix: raw.policy.subject_prefix.unwrap_or_else(|| "[SPAM]".into()),
            scores: raw.policy.scores,
            force_actions,
        };

        let language = raw.rules.language.unwrap_or_else(|| "en".into());
        if !["en", "sq", "sr"].contains(&language.as_str()) {
            return Err(fail(
                "rules.language",
                format!("`{language}` is not one of en, sq, sr"),
            ));
        }
        if let Some(key) = &raw.rules.update_key
            && minisign::PublicKey::from_base64(key.trim()).is_err()
        {
            return Err(fail(
                "rules.update_key",
                "is not a minisign public key (the `RW...` line of the .pub file)".into(),
            ));
        }
        if raw.rules.update_from.is_some() && raw.rules.update_key.is_none() {
            return Err(fail(
                "rules.update_key",
                "is needed with rules.update_from: bundles are only taken signed".into(),
            ));
        }
        let watch_every = raw.rules.watch_every.unwrap_or(Duration::from_secs(2));
        if watch_every < Duration::from_millis(100) {
            return Err(fail("rules.watch_every", "must be at least 100ms".into()));
        }
        let rules_data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./var"));
        let rules = RulesSettings {
            dirs: raw
                .rules
                .dirs
                .unwrap_or_else(|| vec![PathBuf::from("rules")]),
            language,
            update_dir: rules_data_dir.join("rule-updates"),
            keep_versions: raw.rules.keep_versions.unwrap_or(20).max(1),
            watch: raw.rules.watch.unwrap_or(true),
            watch_every,
            update_from: raw.rules.update_from,
            update_key: raw.rules.update_key,
            sample_relayed: raw.rules.sample_relayed.unwrap_or(0),
            sample_retention: raw
                .rules
                .sample_retention
                .unwrap_or(Duration::from_secs(7 * 86_400)),
        };

        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(fail(
                "log.level",
                format!("`{level}` is not a level such as info or debug"),
            ));
        }
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("./var"));
        let store = StoreSettings {
            url: match raw.store.url {
                Some(url) if url.starts_with("sqlite:") || url.starts_with("postgres") => url,
                Some(url) => {
                    return Err(fail(
                        "store.url",
                        format!(
                            "`{}` is neither sqlite://PATH nor postgres://USER:PASSWORD@HOST/DATABASE",
                            crate::store::redact(&url)
                        ),
                    ));
                }
                None => crate::store::Store::sqlite_url(&data_dir),
            },
        };
        let defaults = crate::quarantine::Retention::default();
        let retention = crate::quarantine::Retention {
            spam: raw.quarantine.retention.spam.unwrap_or(defaults.spam),
            virus: raw.quarantine.retention.virus.unwrap_or(defaults.virus),
            banned: raw.quarantine.retention.banned.unwrap_or(defaults.banned),
            policy: raw.quarantine.retention.policy.unwrap_or(defaults.policy),
        };
        let purge_interval = raw
            .quarantine
            .purge_interval
            .unwrap_or(Duration::from_secs(3600));
        if purge_interval < Duration::from_secs(1) {
            return Err(fail(
                "quarantine.purge_interval",
                "must be at least 1s".into(),
            ));
        }
        let web_listen = raw.web.listen.unwrap_or_else(|| "127.0.0.1:8025".into());
        let web = WebSettings {
            enabled: raw.web.enabled.unwrap_or(true),
            tls: raw.web.tls.unwrap_or(false),
            listen: web_listen.parse().map_err(|_| {
                fail(
                    "web.listen",
                    format!("`{web_listen}` is not an address such as 127.0.0.1:8025"),
                )
            })?,
        };
        let tracking = TrackingSettings {
            enabled: raw.tracking.enabled.unwrap_or(true),
            retention: raw
                .tracking
                .retention
                .unwrap_or(Duration::from_secs(30 * 86_400)),
        };
        if tracking.retention < Duration::from_secs(3600) {
            return Err(fail("tracking.retention", "must be at least 1h".into()));
        }
        Ok(Settings {
            source: file.to_string(),
            file: None,
            tracking,
            dns,
            dnsbl,
            uribl,
            lists,
            feeds,
            auth,
            greylist,
            ratelimit,
            state,
            bayes,
            data_dir,
            web,
            store,
            quarantine: QuarantineSettings {
                retention,
                purge_interval,
            },
            smtp,
            downstream,
            scan,
            policy,
            rules,
            log: LogSettings {
                message_details: raw.log.message_details.unwrap_or(false),
                format: raw.log.format.unwrap_or(LogFormat::Text),
                level,
            },
            antivirus,
            attachments,
        })
    }
}

impl fmt::Display for Settings {
    /// The one-paragraph summary `kala serve` logs at start and `kala config check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listen: Vec<String> = self.smtp.listen.iter().map(|a| a.to_string()).collect();
        write!(
            f,
            "config: {}; SMTP on {}; data in {}; store {}; downstream {} (TLS {:?}); thresholds tag {} / quarantine {} / reject {}",
            self.source,
            listen.join(", "),
            self.data_dir.display(),
            crate::store::redact(&self.store.url),
            self.downstream.address,
            self.downstream.tls,
            self.policy.tag_score,
            self.policy.quarantine_score,
            self.policy.reject_score,
        )
    }
}

/// The `[dns]`, `[dnsbl]` and `[auth]` sections, validated. DMARC policies become forced
/// actions unless `[policy.force_actions]` says otherwise.
fn reputation_from_raw(
    raw_dns: RawDns,
    raw_dnsbl: RawDnsbl,
    raw_auth: RawAuth,
    force_actions: &mut BTreeMap<String, Action>,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(DnsSettings, DnsblSettings, AuthSettings), ConfigError> {
    let servers = raw_dns
        .servers
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    fail(
                        "dns.servers",
                        format!("`{s}` is not an address like 127.0.0.1 or 127.0.0.1:53"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = raw_dns.timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err(fail("dns.timeout", "must be greater than zero".into()));
    }
    let dns = DnsSettings {
        servers,
        timeout,
        cache_size: raw_dns.cache_size.unwrap_or(8192),
    };

    let lists = blocklists(raw_dnsbl.lists, "dnsbl", "RBL_", fail)?;
    let skip_networks = networks(raw_dnsbl.skip_networks, "dnsbl.skip_networks", fail)?;
    if let Some(at) = raw_dnsbl.reject_at
        && at <= 0.0
    {
        return Err(fail("dnsbl.reject_at", "must be greater than zero".into()));
    }
    let dnsbl = DnsblSettings {
        lists,
        reject_at: raw_dnsbl.reject_at,
        skip_networks,
    };

    force_actions
        .entry("DMARC_REJECT_POLICY".into())
        .or_insert(raw_auth.dmarc_reject_action.unwrap_or(Action::Reject));
    force_actions
        .entry("DMARC_QUARANTINE_POLICY".into())
        .or_insert(
            raw_auth
                .dmarc_quarantine_action
                .unwrap_or(Action::Quarantine),
        );
    let auth = AuthSettings {
        enabled: raw_auth.enabled.unwrap_or(true),
    };
    Ok((dns, dnsbl, auth))
}

/// DNS blocklists as `[dnsbl]` and `[uribl]` list them; symbols are `PREFIX` + name.
fn blocklists(
    raw: Vec<RawDnsblList>,
    section: &str,
    prefix: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<DnsblList>, ConfigError> {
    let mut lists = Vec::new();
    for (i, list) in raw.into_iter().enumerate() {
        let key = format!("{section}.lists[{i}]");
        if !crate::verdict::is_symbol_name(&list.name) {
            return Err(fail(
                &format!("{key}.name"),
                format!(
                    "`{}` must be upper case letters, digits and _, e.g. SPAMHAUS_ZEN",
                    list.name
                ),
            ));
        }
        if list.zone.trim_matches('.').is_empty() || list.zone.contains(char::is_whitespace) {
            return Err(fail(
                &format!("{key}.zone"),
                format!("`{}` is not a DNS zone", list.zone),
            ));
        }
        let mut weights = BTreeMap::new();
        let mut other_weight = None;
        for (answer, weight) in list.weights {
            if answer == "*" {
                other_weight = Some(weight);
                continue;
            }
            match answer.parse::<std::net::Ipv4Addr>() {
                Ok(ip) if ip.octets()[0] == 127 => {
                    weights.insert(ip, weight);
                }
                _ => {
                    return Err(fail(
                        &format!("{key}.weights"),
                        format!("`{answer}` is neither an answer in 127.0.0.0/8 nor \"*\""),
                    ));
                }
            }
        }
        if weights.is_empty() && other_weight.is_none() {
            other_weight = Some(1.0);
        }
        lists.push(DnsblList {
            symbol: format!("{prefix}{}", list.name),
            zone: list.zone.trim_end_matches('.').to_ascii_lowercase(),
            weights,
            other_weight,
        });
    }
    Ok(lists)
}

/// A list of networks (`10.0.0.0/8`, or a single address); internal ranges when not set.
fn networks(
    raw: Option<Vec<String>>,
    key: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.unwrap_or_else(|| {
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ]
        .map(String::from)
        .to_vec()
    })
    .iter()
    .map(|n| {
        n.parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| fail(key, format!("`{n}` is not a network like 10.0.0.0/8")))
    })
    .collect()
}

/// The `[bayes]` section, validated.
fn bayes_from_raw(
    raw: RawBayes,
    state: &StateSettings,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<BayesSettings, ConfigError> {
    let defaults = BayesSettings::default();
    let backend = match raw.backend.as_deref() {
        None | Some("store") => BayesBackend::Store,
        Some("redis") if state.redis.is_some() => BayesBackend::Redis,
        Some("redis") => {
            return Err(fail(
                "bayes.backend",
                "`redis` needs state.redis, the Redis URL the gateways share".into(),
            ));
        }
        Some(other) => {
            return Err(fail(
                "bayes.backend",
                format!("`{other}`: use `store` (the default) or `redis`"),
            ));
        }
    };
    let c = defaults.classifier;
    let classifier = crate::bayes::Classifier {
        strength: raw.strength.unwrap_or(c.strength),
        assumed: raw.assumed.unwrap_or(c.assumed),
        min_distance: raw.min_distance.unwrap_or(c.min_distance),
        max_tokens: raw.max_tokens.unwrap_or(c.max_tokens),
        min_learned: raw.min_learned.unwrap_or(c.min_learned),
    };
    let strength_ok = classifier.strength.is_finite() && classifier.strength > 0.0;
    if !strength_ok || !(0.0..=1.0).contains(&classifier.assumed) {
        return Err(fail(
            "bayes.strength",
            "strength must be above 0 and assumed within 0..1".into(),
        ));
    }
    if !(0.0..1.0).contains(&classifier.min_distance) || classifier.max_tokens == 0 {
        return Err(fail(
            "bayes.min_distance",
            "min_distance must be within 0..1 and max_tokens above 0".into(),
        ));
    }
    let settings = BayesSettings {
        classifier,
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        backend,
        expire_after: raw.expire_after.unwrap_or(defaults.expire_after),
        autolearn: raw.autolearn.unwrap_or(defaults.autolearn),
        autolearn_spam: raw.autolearn_spam.unwrap_or(defaults.autolearn_spam),
        autolearn_ham: raw.autolearn_ham.unwrap_or(defaults.autolearn_ham),
    };
    if settings.expire_after < Duration::from_secs(86_400) {
        return Err(fail(
            "bayes.expire_after",
            "must be at least 1d, or the model forgets faster than it learns".into(),
        ));
    }
    if settings.autolearn_ham >= settings.autolearn_spam {
        return Err(fail(
            "bayes.autolearn_ham",
            format!(
                "{} must be below bayes.autolearn_spam ({})",
                settings.autolearn_ham, settings.autolearn_spam
            ),
        ));
    }
    Ok(settings)
}

/// The `[greylist]`, `[ratelimit]` and `[state]` sections, validated.
fn behaviour_from_raw(
    raw_grey: RawGreylist,
    raw_rate: RawRateLimit,
    raw_state: RawState,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(GreylistSettings, RateLimitSettings, StateSettings), ConfigError> {
    let greylist = GreylistSettings {
        enabled: raw_grey.enabled.unwrap_or(false),
        delay: raw_grey.delay.unwrap_or(Duration::from_secs(300)),
        retry_window: raw_grey
            .retry_window
            .unwrap_or(Duration::from_secs(4 * 3600)),
        pass_ttl: raw_grey
            .pass_ttl
            .unwrap_or(Duration::from_secs(36 * 86_400)),
        auto_allow: raw_grey.auto_allow.unwrap_or(true),
        skip_spf_pass: raw_grey.skip_spf_pass.unwrap_or(true),
        skip_networks: networks(raw_grey.skip_networks, "greylist.skip_networks", fail)?,
    };
    if greylist.retry_window <= greylist.delay {
        return Err(fail(
            "greylist.retry_window",
            "must be longer than greylist.delay, or no retry could ever pass".into(),
        ));
    }
    let rate = |raw: Option<RawRate>, key: &str| -> Result<Option<Rate>, ConfigError> {
        match raw {
            None => Ok(None),
            Some(r) if r.messages == 0 || r.per < Duration::from_secs(1) => Err(fail(
                key,
                "needs messages > 0 and per of at least 1s, e.g. { messages = 100, per = \"1m\" }"
                    .into(),
            )),
            Some(r) => Ok(Some(Rate {
                messages: r.messages,
                per: r.per,
            })),
        }
    };
    let ratelimit = RateLimitSettings {
        client: rate(raw_rate.client, "ratelimit.client")?,
        sender: rate(raw_rate.sender, "ratelimit.sender")?,
        skip_networks: networks(raw_rate.skip_networks, "ratelimit.skip_networks", fail)?,
    };
    let redis = raw_state.redis.filter(|r| !r.is_empty());
    if let Some(url) = &redis
        && !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://"))
    {
        return Err(fail(
            "state.redis",
            format!(
                "`{}` is not a redis://HOST:PORT/DB URL",
                crate::store::redact(url)
            ),
        ));
    }
    Ok((greylist, ratelimit, StateSettings { redis }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_match_the_readme() {
        let s = Settings::embedded_defaults();
        assert_eq!(s.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(s.data_dir, PathBuf::from("./var"));
        assert_eq!(s.downstream.address, "127.0.0.1:25");
        assert_eq!(s.smtp.max_recipients, 100);
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../kala.example.toml");
        let s = Settings::parse(text, "kala.example.toml").expect("example parses");
        assert_eq!(s.smtp.max_recipients, 100);
        assert_eq!(s.downstream.tls, DownstreamTls::Opportunistic);
    }

    #[test]
    fn shipped_container_config_parses() {
        let s = Settings::parse(include_str!("../docker/kala.toml"), "docker/kala.toml")
            .expect("parses");
        assert_eq!(s.downstream.address, "sink:25");
        assert_eq!(s.state.redis.as_deref(), Some("redis://redis:6379"));
        assert_eq!(s.rules.dirs, [PathBuf::from("/usr/share/kala/rules")]);
    }

    #[test]
    fn packaged_config_parses() {
        let s = Settings::parse(include_str!("../debian/kala.toml"), "debian/kala.toml")
            .expect("parses");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/kala"));
        assert!(!s.log.message_details, "privacy by default");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = Settings::parse("[smtp]\nmax_recipents = 5\n", "/etc/kala.toml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/kala.toml: smtp.max_recipents: "),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("max_recipents"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Settings::parse("[smtp]\nmax_recipients = \"lots\"\n", "k.toml").unwrap_err();
        assert_eq!(err.key, "smtp.max_recipients", "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = Settings::parse("[downstream]\naddress = \"exchange\"\n", "k.toml").unwrap_err();
        assert_eq!(err.key, "downstream.address");
        let err = Settings::parse(
            "[policy]\ntag_score = 9.0\nquarantine_score = 4.0\n",
            "k.toml",
        )
        .unwrap_err();
        assert_eq!(err.key, "policy.quarantine_score");
        let err = Settings::parse("[smtp]\nlisten = [\"nowhere\"]\n", "k.toml").unwrap_err();
        assert_eq!(err.key, "smtp.listen");
    }

    #[test]
    fn sizes_and_durations_read_like_an_admin_writes_them() {
        let s = Settings::parse(
            "[smtp]\nmax_message_size = \"10 MiB\"\ncommand_timeout = \"2m\"\n",
            "k.toml",
        )
        .unwrap();
        assert_eq!(s.smtp.max_message_size, 10 * 1024 * 1024);
        assert_eq!(s.smtp.command_timeout, Duration::from_secs(120));
    }
}
