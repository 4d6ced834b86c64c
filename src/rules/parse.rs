//! Reading SpamAssassin `.cf` rule files into rule definitions.
//!
//! Only the rule language is read here; compiling patterns is [`super::compile`]'s job.
//! Every line is accounted for: a definition, a known directive Kala ignores (counted), or a
//! warning with file:line. `ifplugin` and `if` blocks are evaluated against what Kala
//! implements, as SpamAssassin evaluates them against the plugins it loaded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::expr::{self, ExprError};
use super::perl::{self, PerlPattern};
use super::snapshot::Snapshot;

/// The SpamAssassin version Kala answers to `if (version >= ...)`: the rules Kala runs are those
/// SpamAssassin 4.0.1 would run.
pub const SA_VERSION: f64 = 4.000001;

/// The plugins SpamAssassin 4.0.1 loads by default (Debian's `/etc/spamassassin/*.pre`).
/// `ifplugin`/`plugin()` blocks are read for these, as SpamAssassin reads them, so that every
/// rule it would have is accounted for: Kala runs those whose syntax it implements and reports
/// each `eval:` function it lacks. Blocks for other plugins are skipped, as SpamAssassin skips
/// them.
pub const DEFAULT_PLUGINS: &[&str] = &[
    "Mail::SpamAssassin::Plugin::AskDNS",
    "Mail::SpamAssassin::Plugin::AutoLearnThreshold",
    "Mail::SpamAssassin::Plugin::Bayes",
    "Mail::SpamAssassin::Plugin::BodyEval",
    "Mail::SpamAssassin::Plugin::Check",
    "Mail::SpamAssassin::Plugin::DKIM",
    "Mail::SpamAssassin::Plugin::DMARC",
    "Mail::SpamAssassin::Plugin::DNSEval",
    "Mail::SpamAssassin::Plugin::FreeMail",
    "Mail::SpamAssassin::Plugin::HTMLEval",
    "Mail::SpamAssassin::Plugin::HTTPSMismatch",
    "Mail::SpamAssassin::Plugin::HashBL",
    "Mail::SpamAssassin::Plugin::HeaderEval",
    "Mail::SpamAssassin::Plugin::ImageInfo",
    "Mail::SpamAssassin::Plugin::MIMEEval",
    "Mail::SpamAssassin::Plugin::MIMEHeader",
    "Mail::SpamAssassin::Plugin::Pyzor",
    "Mail::SpamAssassin::Plugin::Razor2",
    "Mail::SpamAssassin::Plugin::RelayEval",
    "Mail::SpamAssassin::Plugin::ReplaceTags",
    "Mail::SpamAssassin::Plugin::Rule2XSBody",
    "Mail::SpamAssassin::Plugin::SPF",
    "Mail::SpamAssassin::Plugin::SpamCop",
    "Mail::SpamAssassin::Plugin::URIDNSBL",
    "Mail::SpamAssassin::Plugin::URIDetail",
    "Mail::SpamAssassin::Plugin::URIEval",
    "Mail::SpamAssassin::Plugin::VBounce",
    "Mail::SpamAssassin::Plugin::WLBLEval",
    "Mail::SpamAssassin::Plugin::WelcomeListSubject",
];

fn plugin_loaded(name: &str) -> bool {
    DEFAULT_PLUGINS.contains(&name)
}

/// A problem or note tied to a place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Which text a pattern rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    Header,
    Body,
    RawBody,
    Uri,
    Full,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Header => "header",
            View::Body => "body",
            View::RawBody => "rawbody",
            View::Uri => "uri",
            View::Full => "full",
        }
    }
}

/// What a header rule reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// One header by name (all its instances).
    Named(String),
    /// Every header, as `Name: value` lines.
    All,
    /// To and Cc together.
    ToCc,
    /// The envelope sender.
    EnvelopeFrom,
    /// Message-Id and its Resent-/X- variants.
    MessageId,
    /// One header in any MIME part (`mimeheader` rules): each part's value is tested alone.
    Mime(String),
    /// `X-Spam-Relays-Trusted` and the others: SpamAssassin's text of the relays on that side
    /// of the trust boundary, parsed from the Received headers.
    Relays(crate::received::Trust),
    /// `ALL-TRUSTED` and the others: every header those relays added, as `ALL` shows it.
    AllBy(crate::received::Trust),
}

/// Header modifiers: `Name:raw`, `Name:addr`, `Name:name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderPart {
    #[default]
    Decoded,
    Raw,
    Addr,
    DisplayName,
    /// `:addr:raw`: the address, read from the undecoded value.
    RawAddr,
    /// `:name:raw`: the display name, undecoded (MIME encoded-words left as they are).
    RawDisplayName,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// `header NAME Header =~ /re/` (or `!~`).
    Header {
        source: HeaderSource,
        part: HeaderPart,
        negate: bool,
        if_unset: Option<String>,
        pattern: PerlPattern,
    },
    /// `header NAME exists:Header`.
    Exists(String),
    /// `body`, `rawbody`, `uri`, `full` with a pattern.
    Pattern { view: View, pattern: PerlPattern },
    /// `meta NAME expression`.
    Meta(String),
    /// `... NAME eval:function(args)`: a native check in SpamAssassin.
    Eval { view: View, call: String },
    /// A header rule on something Kala does not compute (e.g. `X-Spam-Status`).
    Unsupported(String),
}

/// `tflags` Kala acts on; the others are kept for display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tflags {
    pub nice: bool,
    pub net: bool,
    pub learn: bool,
    pub multiple: bool,
    pub maxhits: Option<u32>,
    pub noautolearn: bool,
    /// Kala's own flag: the rule runs and its hits are logged and counted, but it scores
    /// nothing and metas do not see it, so a new rule can be watched before it counts.
    pub shadow: bool,
    pub all: Vec<String>,
}

/// One rule as defined, with everything said about it anywhere in the files.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    pub name: String,
    pub kind: RuleKind,
    pub file: PathBuf,
    pub line: usize,
    /// The defining line as written (for the rules pages).
    pub source: String,
}

/// A rule test: a fixture message and the symbols it must and must not produce
/// (`test_message FIXTURE NAME !OTHER`, in a rule file or in a `tests/*.cf` file).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub file: PathBuf,
    pub line: usize,
    pub fixture: PathBuf,
    pub message: Vec<u8>,
    pub hits: Vec<String>,
    pub misses: Vec<String>,
}

/// Everything read from a set of rule files.
#[derive(Debug, Default)]
pub struct RuleFiles {
    /// Definitions by name; a later definition replaces an earlier one, as in SpamAssassin.
    pub rules: BTreeMap<String, RuleDef>,
    /// `score NAME a [b c d]`.
    pub scores: HashMap<String, Vec<f64>>,
    /// `describe` per rule per language (`""` is the default language).
    pub descriptions: HashMap<String, BTreeMap<String, String>>,
    pub tflags: HashMap<String, Tflags>,
    pub priorities: HashMap<String, i32>,
    pub required_score: Option<f64>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Directives Kala reads but does not act on, with how often they appeared.
    pub ignored: BTreeMap<String, usize>,
    /// Rules named by `replace_rules`, and the tag definitions.
    replace: ReplaceTags,
    pub files_read: usize,
    pub tests: Vec<TestCase>,
    /// Every file read (rules, includes, tests, fixtures) with its bytes: what a version of
    /// the rule set is made of.
    pub read: Snapshot,
    reader: Reader,
}

/// Where rule files come from: the disk, or a snapshot kept from an earlier activation.
#[derive(Debug, Default)]
enum Reader {
    #[default]
    Disk,
    Replay(std::sync::Arc<Snapshot>),
}

impl Reader {
    fn is_dir(&self, path: &Path) -> bool {
        match self {
            Reader::Disk => path.is_dir(),
            Reader::Replay(snapshot) => snapshot.files.keys().any(|f| f.parent() == Some(path)),
        }
    }

    /// The `*.cf` files directly in `dir`, sorted by name.
    fn cf_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = match self {
            Reader::Disk => std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect(),
            Reader::Replay(snapshot) => snapshot
                .files
                .keys()
                .filter(|f| f.parent() == Some(dir))
                .cloned()
                .collect(),
        };
        files.retain(|p| p.extension().is_some_and(|e| e == "cf"));
        files.sort();
        Ok(files)
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self {
            Reader::Disk => std::fs::read(path),
            Reader::Replay(snapshot) => snapshot.files.get(path).cloned().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "not in this version")
            }),
        }
    }
}

#[derive(Debug, Default)]
struct ReplaceTags {
    start: Option<String>,
    end: Option<String>,
    tags: HashMap<String, String>,
    pre: HashMap<String, String>,
    inter: HashMap<String, String>,
    post: HashMap<String, String>,
    rules: Vec<String>,
}

/// Directives SpamAssassin's rule files use that are not rules and that Kala does not act on
/// (yet): counted, not warned about one by one.
const KNOWN_IGNORED: &[&str] = &[
    "loadplugin",
    "tryplugin",
    "report",
    "unsafe_report",
    "add_header",
    "remove_header",
    "clear_headers",
    "report_safe",
    "report_contact",
    "report_charset",
    "clear_report_template",
    "clear_unsafe_report_template",
    "test",
    "lang",
    "util_rb_tld",
    "util_rb_2tld",
    "util_rb_3tld",
    "redirector_pattern",
    "urirhssub",
    "urirhsbl",
    "uridnsbl",
    "uridnssub",
    "uridnsbl_skip_domain",
    "whitelist_from",
    "whitelist_from_rcvd",
    "def_whitelist_from_rcvd",
    "whitelist_auth",
    "def_whitelist_auth",
    "welcomelist_from",
    "welcomelist_from_rcvd",
    "def_welcomelist_from_rcvd",
    "welcomelist_auth",
    "def_welcomelist_auth",
    "blacklist_from",
    "blocklist_from",
    "whitelist_to",
    "more_spam_to",
    "all_spam_to",
    "freemail_domains",
    "freemail_whitelist",
    "freemail_welcomelist",
    "enlist_uri_host",
    "delist_uri_host",
    "enlist_addrlist",
    "dns_available",
    "skip_rbl_checks",
    "use_bayes",
    "bayes_auto_learn",
    "ok_locales",
    "ok_languages",
    "normalize_charset",
    "body_part_scan_size",
    "rawbody_part_scan_size",
    "shortcircuit",
    "shortcircuit_spam_score",
    "shortcircuit_ham_score",
    "reuse",
    "bayes_ignore_header",
    "bayes_ignore_from",
    "bayes_ignore_to",
    "trusted_networks",
    "internal_networks",
    "msa_networks",
    "envelope_sender_header",
    "util_rb_tld",
    "hashcash_accept",
    "hashcash_doublespend_path",
    "check_rbl_accreditor",
    "dkim_minimum_key_bits",
    "adsp_override",
    "whitelist_from_dkim",
    "def_whitelist_from_dkim",
    "welcomelist_from_dkim",
    "def_welcomelist_from_dkim",
    "whitelist_from_spf",
    "def_whitelist_from_spf",
    "welcomelist_from_spf",
    "def_welcomelist_from_spf",
    "uri_block_cc",
    "uri_block_cidr",
    "uri_block_cont",
    "uri_country_db_path",
    "urirhsbl_skip_domain",
    "parse_dkim_uris",
    "uri_local_cidr",
    "url_shortener",
    "url_shortener_get",
    "clear_url_shortener",
    "hashbl_acl",
    "hashbl_ignore",
    "dns_query_restriction",
    "dns_block_rule",
    "bayes_learn_to_journal",
    "ascii_text_illegal",
    "allow_user_rules",
    "rbl_timeout",
    "util_rb_tld",
    "subjprefix",
    "bayes_token_sources",
    "nonspam_learn_threshold",
    "required_hits",
    "autolearn_force",
    "bayes_auto_learn_threshold_nonspam",
    "bayes_auto_learn_threshold_spam",
    "txrep_factor",
    "use_txrep",
    "use_auto_whitelist",
    "auto_welcomelist_factor",
    "auto_whitelist_factor",
    "check_bayes",
    "redirector_pattern",
    "tflags_default",
    "header_utf8",
    "dns_server",
    "default_dns_lookup_timeout",
    "clear_originating_ip_headers",
    "originating_ip_headers",
    "dns_local_ports_avoid",
    "dns_local_ports_permit",
    "dns_options",
    "rbl_headers",
    "freemail_import_welcomelist_auth",
    "freemail_import_whitelist_auth",
    "dkim_timeout",
    "uri_block_cc",
];

impl RuleFiles {
    /// Reads every `*.cf` file (sorted by name) of each directory, in order, as SpamAssassin
    /// reads its rule directories. A file path may be given instead of a directory.
    pub fn read_paths(paths: &[PathBuf]) -> RuleFiles {
        RuleFiles::read_with(paths, Reader::Disk)
    }

    /// Reads the files of an earlier version (the paths it was read from), without the disk.
    pub fn replay(paths: &[PathBuf], snapshot: std::sync::Arc<Snapshot>) -> RuleFiles {
        RuleFiles::read_with(paths, Reader::Replay(snapshot))
    }

    /// Each directory's `tests/*.cf` files are read too, for their `test_message` lines only.
    fn read_with(paths: &[PathBuf], reader: Reader) -> RuleFiles {
        let mut files = RuleFiles {
            reader,
            ..RuleFiles::default()
        };
        for path in paths {
            if files.reader.is_dir(path) {
                let entries = match files.reader.cf_files(path) {
                    Ok(entries) => entries,
                    Err(e) => {
                        files.error(path, 0, format!("cannot read the rule directory: {e}"));
                        continue;
                    }
                };
                for file in entries {
                    files.read_file(&file, 0);
                }
                let tests = path.join("tests");
                if files.reader.is_dir(&tests) {
                    for file in files.reader.cf_files(&tests).unwrap_or_default() {
                        files.read_test_file(&file);
                    }
                }
            } else {
                files.read_file(path, 0);
            }
        }
        files.apply_replace_tags();
        files
    }

    fn read_test_file(&mut self, path: &Path) {
        let bytes = match self.reader.read(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.error(path, 0, format!("cannot read: {e}")),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.read.files.insert(path.to_path_buf(), bytes);
        for (index, raw_line) in text.lines().enumerate() {
            let line = strip_comment(raw_line);
            let (keyword, rest) = split_word(line.trim());
            match keyword {
                "" => {}
                "test_message" => self.test_message(rest, path, index + 1),
                other => self.error(
                    path,
                    index + 1,
                    format!("only `test_message` lines belong in a tests file, not `{other}`"),
                ),
            }
        }
    }

    /// `test_message FIXTURE NAME... !NAME...`, the fixture relative to the file.
    fn test_message(&mut self, rest: &str, file: &Path, line: usize) {
        let mut words = rest.split_whitespace();
        let Some(fixture) = words.next() else {
            return self.error(file, line, "`test_message` needs a fixture file".into());
        };
        let fixture = file.parent().unwrap_or(Path::new(".")).join(fixture);
        let (mut hits, mut misses) = (Vec::new(), Vec::new());
        for word in words {
            match word.strip_prefix('!') {
                Some(name) => misses.push(name.to_string()),
                None => hits.push(word.to_string()),
            }
        }
        if hits.is_empty() && misses.is_empty() {
            return self.error(
                file,
                line,
                "`test_message` needs the symbols expected (NAME) or not expected (!NAME)".into(),
            );
        }
        let message = match self.reader.read(&fixture) {
            Ok(bytes) => bytes,
            Err(e) => {
                return self.error(
                    file,
                    line,
                    format!("cannot read the fixture {}: {e}", fixture.display()),
                );
            }
        };
        self.read.files.insert(fixture.clone(), message.clone());
        self.tests.push(TestCase {
            file: file.to_path_buf(),
            line,
            fixture,
            message,
            hits,
            misses,
        });
    }

    /// Parses rule text as if it came from `file` (for tests and `kala rules check -`).
    pub fn read_text(text: &str, file: &Path) -> RuleFiles {
        let mut files = RuleFiles::default();
        files.read_str(text, file, 0);
        files.apply_replace_tags();
        files
    }

    fn error(&mut self, file: &Path, line: usize, message: String) {
        self.errors.push(Diagnostic {
            file: file.to_path_buf(),
            line,
            message,
        });
    }

    fn warn(&mut self, file: &Path, line: usize, message: String) {
        self.warnings.push(Diagnostic {
            file: file.to_path_buf(),
            line,
            message,
        });
    }

    fn read_file(&mut self, path: &Path, depth: usize) {
        if depth > 8 {
            self.error(path, 0, "include nesting deeper than 8".into());
            return;
        }
        match self.reader.read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.read.files.insert(path.to_path_buf(), bytes);
                self.read_str(&text, path, depth);
            }
            Err(e) => self.error(path, 0, format!("cannot read: {e}")),
        }
    }

    fn read_str(&mut self, text: &str, file: &Path, depth: usize) {
        self.files_read += 1;
        // The stack of conditional blocks: is each one active?
        let mut blocks: Vec<bool> = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            let number = index + 1;
            let line = strip_comment(raw_line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (keyword, rest) = split_word(line);
            let keyword = keyword.to_ascii_lowercase();
            let active = blocks.iter().all(|b| *b);
            match keyword.as_str() {
                "ifplugin" => {
                    blocks.push(active && plugin_loaded(rest.trim()));
                    continue;
                }
                "if" => {
                    let value = match eval_if(rest) {
                        Ok(v) => v,
                        Err(e) => {
                            if active {
                                self.warn(
                                    file,
                                    number,
                                    format!(
                                        "cannot evaluate `if {rest}` ({e}); treating it as false"
                                    ),
                                );
                            }
                            false
                        }
                    };
                    blocks.push(active && value);
                    continue;
                }
                "else" => {
                    match blocks.pop() {
                        Some(was) => {
                            let outer = blocks.iter().all(|b| *b);
                            blocks.push(outer && !was);
                        }
                        None => self.error(file, number, "`else` without `if`".into()),
                    }
                    continue;
                }
                "endif" => {
                    if blocks.pop().is_none() {
                        self.error(file, number, "`endif` without `if`".into());
                    }
                    continue;
                }
                _ => {}
            }
            if !active {
                continue;
            }
            self.directive(&keyword, rest, file, number, depth);
        }
        if !blocks.is_empty() {
            self.error(
                file,
                text.lines().count(),
                format!("{} `if`/`ifplugin` block(s) never closed", blocks.len()),
            );
        }
    }

    fn directive(&mut self, keyword: &str, rest: &str, file: &Path, line: usize, depth: usize) {
        let (name, value) = split_word(rest);
        let define = |files: &mut RuleFiles, kind: RuleKind| {
            files.rules.insert(
                name.to_string(),
                RuleDef {
                    name: name.to_string(),
                    kind,
                    file: file.to_path_buf(),
                    line,
                    source: format!("{keyword} {rest}"),
                },
            );
        };
        match keyword {
            "header" | "body" | "rawbody" | "uri" | "full" | "meta" => {
                if name.is_empty() || value.is_empty() {
                    self.error(
                        file,
                        line,
                        format!("`{keyword}` needs a rule name and a definition"),
                    );
                    return;
                }
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.error(file, line, format!("`{name}` is not a valid rule name"));
                    return;
                }
                let view = match keyword {
                    "header" => View::Header,
                    "body" => View::Body,
                    "rawbody" => View::RawBody,
                    "uri" => View::Uri,
                    _ => View::Full,
                };
                if keyword == "meta" {
                    define(self, RuleKind::Meta(value.to_string()));
                    return;
                }
                if let Some(call) = value.strip_prefix("eval:") {
                    define(
                        self,
                        RuleKind::Eval {
                            view,
                            call: call.trim().to_string(),
                        },
                    );
                    return;
                }
                if view == View::Header {
                    match parse_header_rule(value) {
                        Ok(kind) => define(self, kind),
                        Err(e) => self.error(file, line, format!("rule {name}: {e}")),
                    }
                    return;
                }
                match perl::split_delimited(value) {
                    Ok(pattern) => define(self, RuleKind::Pattern { view, pattern }),
                    Err(e) => self.error(file, line, format!("rule {name}: {e}")),
                }
            }
            "score" => {
                let values: Result<Vec<f64>, _> = value
                    .split_whitespace()
                    .map(|v| {
                        v.trim_start_matches('(')
                            .trim_end_matches(')')
                            .parse::<f64>()
                    })
                    .collect();
                match values {
                    Ok(v) if v.len() == 1 || v.len() == 4 => {
                        self.scores.insert(name.to_string(), v);
                    }
                    _ => self.error(
                        file,
                        line,
                        format!("`score {name}` needs one or four numbers, got `{value}`"),
                    ),
                }
            }
            "describe" => {
                self.descriptions
                    .entry(name.to_string())
                    .or_default()
                    .insert(String::new(), value.to_string());
            }
            "lang" => {
                // `lang xx describe NAME text`: kept for translated descriptions.
                let (directive, rest) = split_word(value);
                if directive.eq_ignore_ascii_case("describe") {
                    let (rule, text) = split_word(rest);
                    self.descriptions
                        .entry(rule.to_string())
                        .or_default()
                        .insert(name.to_string(), text.to_string());
                } else {
                    *self.ignored.entry(format!("lang {directive}")).or_default() += 1;
                }
            }
            "tflags" => {
                let mut flags = Tflags::default();
                for flag in value.split_whitespace() {
                    flags.all.push(flag.to_string());
                    match flag {
                        "nice" => flags.nice = true,
                        "net" => flags.net = true,
                        "learn" => flags.learn = true,
                        "multiple" => flags.multiple = true,
                        "noautolearn" => flags.noautolearn = true,
                        "shadow" => flags.shadow = true,
                        f if f.starts_with("maxhits=") => flags.maxhits = f[8..].parse().ok(),
                        _ => {}
                    }
                }
                self.tflags.insert(name.to_string(), flags);
            }
            "priority" => match value.trim().parse() {
                Ok(p) => {
                    self.priorities.insert(name.to_string(), p);
                }
                Err(_) => self.error(
                    file,
                    line,
                    format!("`priority {name}` needs a whole number"),
                ),
            },
            "required_score" | "required_hits" => match rest.trim().parse() {
                Ok(v) => self.required_score = Some(v),
                Err(_) => self.error(file, line, format!("`{keyword}` needs a number")),
            },
            "test_message" => self.test_message(rest, file, line),
            "include" => {
                let target = file.parent().unwrap_or(Path::new(".")).join(rest.trim());
                self.read_file(&target, depth + 1);
            }
            // Plugin directives that define rules Kala cannot run yet: defined as unsupported, so
            // metas that use them say why instead of naming an undefined rule.
            "mimeheader" => match parse_header_rule(value) {
                Ok(RuleKind::Header {
                    source: HeaderSource::Named(header),
                    part,
                    negate,
                    if_unset,
                    pattern,
                }) => define(
                    self,
                    RuleKind::Header {
                        source: HeaderSource::Mime(header),
                        part,
                        negate,
                        if_unset,
                        pattern,
                    },
                ),
                Ok(_) => define(
                    self,
                    RuleKind::Unsupported("`mimeheader` needs a plain header name".into()),
                ),
                Err(e) => self.error(file, line, format!("rule {name}: {e}")),
            },
            "uri_detail" | "askdns" => {
                let why = match keyword {
                    "askdns" => "eval:askdns DNS lookups are not run by rule files".to_string(),
                    k => format!("`{k}` rules are not implemented yet"),
                };
                define(self, RuleKind::Unsupported(why));
            }
            "replace_start" => self.replace.start = Some(rest.trim().to_string()),
            "replace_end" => self.replace.end = Some(rest.trim().to_string()),
            "replace_tag" => {
                self.replace
                    .tags
                    .insert(name.to_string(), value.to_string());
            }
            "replace_pre" => {
                self.replace.pre.insert(name.to_string(), value.to_string());
            }
            "replace_inter" => {
                self.replace
                    .inter
                    .insert(name.to_string(), value.to_string());
            }
            "replace_post" => {
                self.replace
                    .post
                    .insert(name.to_string(), value.to_string());
            }
            "replace_rules" => self
                .replace
                .rules
                .extend(rest.split_whitespace().map(str::to_string)),
            k if KNOWN_IGNORED.contains(&k) => *self.ignored.entry(k.to_string()).or_default() += 1,
            k => self.warn(file, line, format!("unknown directive `{k}` ignored")),
        }
    }

    /// SpamAssassin's ReplaceTags plugin: in rules named by `replace_rules`, `<TAG>` becomes the
    /// tag's pattern; `<pre X>`, `<inter X>` and `<post X>` in a rule put X's pattern before
    /// each tag, between tags, and after each tag.
    fn apply_replace_tags(&mut self) {
        if self.replace.rules.is_empty() {
            return;
        }
        let start = self.replace.start.clone().unwrap_or_else(|| "<".into());
        let end = self.replace.end.clone().unwrap_or_else(|| ">".into());
        let names = std::mem::take(&mut self.replace.rules);
        for name in names {
            let Some(rule) = self.rules.get_mut(&name) else {
                continue;
            };
            let pattern = match &mut rule.kind {
                RuleKind::Pattern { pattern, .. } | RuleKind::Header { pattern, .. } => pattern,
                _ => continue,
            };
            pattern.source = expand_tags(&pattern.source, &start, &end, &self.replace);
        }
    }
}

fn expand_tags(source: &str, start: &str, end: &str, tags: &ReplaceTags) -> String {
    let mut text = source.to_string();
    let (mut pre, mut inter, mut post) = (String::new(), String::new(), String::new());
    for (kind, table, slot) in [
        ("pre", &tags.pre, &mut pre),
        ("inter", &tags.inter, &mut inter),
        ("post", &tags.post, &mut post),
    ] {
        for (tag, value) in table {
            let token = format!("{start}{kind} {tag}{end}");
            if text.contains(&token) {
                text = text.replace(&token, "");
                slot.push_str(value);
            }
        }
    }
    // Tags may refer to other tags: a few rounds settle it.
    for _ in 0..4 {
        let mut changed = false;
        let mut out = String::with_capacity(text.len() * 2);
        let mut rest = text.as_str();
        let mut previous_was_tag = false;
        while let Some(at) = rest.find(start) {
            let after = &rest[at + start.len()..];
            let Some(close) = after.find(end) else { break };
            let tag = &after[..close];
            match tags.tags.get(tag) {
                Some(value) => {
                    out.push_str(&rest[..at]);
                    if previous_was_tag && at == 0 {
                        out.push_str(&inter);
                    }
                    out.push_str(&pre);
                    out.push_str(value);
                    out.push_str(&post);
                    rest = &after[close + end.len()..];
                    previous_was_tag = true;
                    changed = true;
                }
                None => {
                    out.push_str(&rest[..at + start.len()]);
                    rest = after;
                    previous_was_tag = false;
                }
            }
        }
        out.push_str(rest);
        text = out;
        if !changed {
            break;
        }
        // Only the outermost round inserts pre/inter/post.
        pre.clear();
        inter.clear();
        post.clear();
    }
    text
}

fn parse_header_rule(value: &str) -> Result<RuleKind, String> {
    if let Some(name) = value.strip_prefix("exists:") {
        return Ok(RuleKind::Exists(name.trim().to_string()));
    }
    // `Header =~ /re/flags [if-unset: X]`
    let (value, if_unset) = match value.rfind("[if-unset:") {
        Some(at) if value.trim_end().ends_with(']') => {
            let inner = value[at + "[if-unset:".len()..].trim_end();
            (
                &value[..at],
                Some(inner[..inner.len() - 1].trim().to_string()),
            )
        }
        _ => (value, None),
    };
    let (target, rest) = split_word(value);
    let rest = rest.trim_start();
    let (negate, pattern) = if let Some(p) = rest.strip_prefix("=~") {
        (false, p)
    } else if let Some(p) = rest.strip_prefix("!~") {
        (true, p)
    } else {
        return Err(format!("expected `=~` or `!~` after `{target}`"));
    };
    let pattern = perl::split_delimited(pattern).map_err(|e| e.to_string())?;
    let (name, modifier) = match target.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (target, None),
    };
    let mut modifiers: Vec<String> = modifier
        .map(|m| m.split(':').map(|m| m.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    modifiers.sort();
    let modifiers: Vec<&str> = modifiers.iter().map(String::as_str).collect();
    let part = match modifiers[..] {
        [] => HeaderPart::Decoded,
        ["raw"] => HeaderPart::Raw,
        ["addr"] => HeaderPart::Addr,
        ["name"] => HeaderPart::DisplayName,
        ["addr", "raw"] => HeaderPart::RawAddr,
        ["name", "raw"] => HeaderPart::RawDisplayName,
        _ => {
            return Err(format!(
                "unknown header modifier `:{}`",
                modifier.unwrap_or_default()
            ));
        }
    };
    let source = match name {
        "ALL" => HeaderSource::All,
        "ToCc" => HeaderSource::ToCc,
        "EnvelopeFrom" => HeaderSource::EnvelopeFrom,
        "MESSAGEID" => HeaderSource::MessageId,
        // SpamAssassin's spelling: `ALL-*` exactly, `X-Spam-Relays-*` in any case.
        "ALL-TRUSTED" => HeaderSource::AllBy(crate::received::Trust::Trusted),
        "ALL-UNTRUSTED" => HeaderSource::AllBy(crate::received::Trust::Untrusted),
        "ALL-INTERNAL" => HeaderSource::AllBy(crate::received::Trust::Internal),
        "ALL-EXTERNAL" => HeaderSource::AllBy(crate::received::Trust::External),
        n if n.eq_ignore_ascii_case("X-Spam-Relays-Trusted") => {
            HeaderSource::Relays(crate::received::Trust::Trusted)
        }
        n if n.eq_ignore_ascii_case("X-Spam-Relays-Untrusted") => {
            HeaderSource::Relays(crate::received::Trust::Untrusted)
        }
        n if n.eq_ignore_ascii_case("X-Spam-Relays-Internal") => {
            HeaderSource::Relays(crate::received::Trust::Internal)
        }
        n if n.eq_ignore_ascii_case("X-Spam-Relays-External") => {
            HeaderSource::Relays(crate::received::Trust::External)
        }
        n if n.starts_with("ALL-") || n.starts_with("X-Spam-Relays-") || n == "X-Spam-Status" => {
            return Ok(RuleKind::Unsupported(format!(
                "pseudo-header `{n}` is not computed by Kala"
            )));
        }
        n => HeaderSource::Named(n.to_string()),
    };
    Ok(RuleKind::Header {
        source,
        part,
        negate,
        if_unset,
        pattern,
    })
}

/// Evaluates an `if` line's expression: `version`, `perl_version`, `plugin(X)`, `can(X)`,
/// `has(X)` and the usual operators.
fn eval_if(text: &str) -> Result<bool, ExprError> {
    let mut rewritten = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        let before = &rest[..open];
        let word_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &before[word_start..];
        if matches!(word, "plugin" | "can" | "has") {
            let close = rest[open..]
                .find(')')
                .ok_or_else(|| ExprError("missing `)`".into()))?
                + open;
            let arg = rest[open + 1..close].trim();
            let value = match word {
                "plugin" => plugin_loaded(arg),
                _ => feature_available(arg),
            };
            rewritten.push_str(&before[..word_start]);
            rewritten.push_str(if value { " 1 " } else { " 0 " });
            rest = &rest[close + 1..];
        } else {
            rewritten.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
        }
    }
    rewritten.push_str(rest);
    let names = ["version", "perl_version"];
    let expr = expr::parse(&rewritten, &mut |name| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ExprError(format!("unknown name `{name}`")))
    })?;
    Ok(expr.eval(&|i| [SA_VERSION, 5.036][i]) != 0.0)
}

/// `can(Mail::SpamAssassin::Conf::feature_x)` is true (SpamAssassin 4.0.1 has them);
/// a plugin's method only when Kala implements that plugin.
fn feature_available(name: &str) -> bool {
    if name.starts_with("Mail::SpamAssassin::Conf::") {
        return true;
    }
    DEFAULT_PLUGINS
        .iter()
        .any(|p| name.starts_with(&format!("{p}::")))
}

/// Drops a `#` comment (an escaped `\#` stays, as `#`).
fn strip_comment(line: &str) -> std::borrow::Cow<'_, str> {
    let bytes = line.as_bytes();
    let mut cut = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            cut = i;
            break;
        }
    }
    let kept = &line[..cut];
    if kept.contains("\\#") {
        std::borrow::Cow::Owned(kept.replace("\\#", "#"))
    } else {
        std::borrow::Cow::Borrowed(kept)
    }
}

/// The first whitespace-separated word and the rest (trimmed at the start).
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> RuleFiles {
        RuleFiles::read_text(text, Path::new("test.cf"))
    }

    #[test]
    fn reads_every_rule_type_and_its_metadata() {
        let files = read(
            "# comment\nheader  SUBJ_FREE  Subject =~ /free/i  # trailing\nheader FROM_ADDR From:addr =~ /\\@example\\.org$/\nheader HAS_X exists:X-Foo\nheader NO_MSGID MESSAGEID !~ /./ [if-unset: none]\nbody B /money/\nrawbody R /<script/i\nuri U m{^https?://bit\\.ly/}\nfull F /\\#hash/\nmeta M (SUBJ_FREE && B) || U\nscore SUBJ_FREE 1.5\nscore B 0 1 2 3\ndescribe B Talks about money\nlang sq describe B Flet për para\ntflags M multiple maxhits=3 nice\npriority M 500\nbody E eval:check_stuff('x')\nrequired_score 6\n",
        );
        assert!(files.errors.is_empty(), "{:?}", files.errors);
        assert!(files.warnings.is_empty(), "{:?}", files.warnings);
        assert_eq!(files.rules.len(), 10);
        assert!(
            matches!(&files.rules["SUBJ_FREE"].kind, RuleKind::Header { source: HeaderSource::Named(n), negate: false, .. } if n == "Subject")
        );
        assert!(matches!(
            &files.rules["FROM_ADDR"].kind,
            RuleKind::Header {
                part: HeaderPart::Addr,
                ..
            }
        ));
        assert_eq!(files.rules["HAS_X"].kind, RuleKind::Exists("X-Foo".into()));
        assert!(
            matches!(&files.rules["F"].kind, RuleKind::Pattern { pattern, .. } if pattern.source == "#hash")
        );
        assert_eq!(files.scores["B"], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(files.descriptions["B"]["sq"], "Flet për para");
        assert_eq!(files.tflags["M"].maxhits, Some(3));
        assert_eq!(files.priorities["M"], 500);
        assert!(matches!(&files.rules["E"].kind, RuleKind::Eval { .. }));
        assert_eq!(files.required_score, Some(6.0));
        assert_eq!(files.rules["B"].line, 6);
    }

    #[test]
    fn header_modifiers_combine_with_raw() {
        let files = read(
            "header A From:name:raw =~ /x/\nheader B From:raw:addr =~ /x/\nheader C From:bogus =~ /x/\n",
        );
        let part = |name: &str| match &files.rules[name].kind {
            RuleKind::Header { part, .. } => *part,
            other => panic!("{other:?}"),
        };
        assert_eq!(part("A"), HeaderPart::RawDisplayName);
        assert_eq!(part("B"), HeaderPart::RawAddr);
        assert_eq!(files.errors.len(), 1, "{:?}", files.errors);
        assert!(files.errors[0].to_string().contains("`:bogus`"));
    }

    #[test]
    fn conditionals_follow_what_kala_implements() {
        let files = read(
            "ifplugin Mail::SpamAssassin::Plugin::Nope\nbody A /a/\nelse\nbody B /b/\nendif\nif (version >= 3.004000)\nbody C /c/\nendif\nif !plugin(Mail::SpamAssassin::Plugin::Nope)\nbody D /d/\nendif\nif can(Mail::SpamAssassin::Conf::feature_bug6558_free)\nbody E /e/\nendif\nifplugin Mail::SpamAssassin::Plugin::FreeMail\nheader F eval:check_freemail_from()\nendif\nif (version < 3.0)\nbody G /g/\nendif\n",
        );
        let names: Vec<&str> = files.rules.keys().map(String::as_str).collect();
        assert_eq!(names, ["B", "C", "D", "E", "F"]);
    }

    #[test]
    fn problems_name_file_and_line() {
        let files = read("body\nscore X abc\nfrobnicate X 1\nheader H Subject ~= /x/\nendif\n");
        let errors: Vec<String> = files.errors.iter().map(|d| d.to_string()).collect();
        assert!(
            errors.iter().any(|e| e.starts_with("test.cf:1: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("test.cf:2: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("test.cf:4: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("test.cf:5: ")),
            "{errors:?}"
        );
        assert_eq!(
            files.warnings[0].to_string(),
            "test.cf:3: unknown directive `frobnicate` ignored"
        );
    }

    #[test]
    fn replace_tags_expand() {
        let files = read(
            "replace_tag A (?:a|4)\nreplace_tag B b\nreplace_inter W [\\s.]?\nbody R /<inter W><A><B><A>/i\nreplace_rules R\n",
        );
        let RuleKind::Pattern { pattern, .. } = &files.rules["R"].kind else {
            panic!()
        };
        assert_eq!(pattern.source, "(?:a|4)[\\s.]?b[\\s.]?(?:a|4)");
    }
}
