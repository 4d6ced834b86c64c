//! The rule language: SpamAssassin `.cf` files, parsed ([`parse`]), translated to Rust regexes
//! ([`perl`]), compiled into an immutable [`RuleSet`], and evaluated against a message's
//! [`views`].
//!
//! The patterns reading one text (a view, a header) sit behind one [`prefilter::Prefilter`]: a
//! literal automaton and a few small `RegexSet`s, so each text is scanned about once; only
//! the candidate rules then run their own match (per line, as SpamAssassin does). Metas run
//! after the reported patterns, and `__` sub-rules only when a meta needs them (`scan.rs`).

pub mod expr;
pub mod line_anchored;
pub mod parse;
pub mod perl;
pub mod prefilter;
mod scan;
pub mod snapshot;
pub mod test_cases;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use regex::{Regex, RegexBuilder};

use self::expr::{Expr, ExprError};
use self::line_anchored::LineAnchored;
use self::parse::{
    Diagnostic, HeaderPart, HeaderSource, RuleFiles, RuleKind, TestCase, Tflags, View,
};
use self::perl::{Engine, PerlPattern};
use self::prefilter::Prefilter;
use self::snapshot::Snapshot;
use self::views::Views;
use crate::envelope::Envelope;
use crate::message::Message;

/// Backtracking steps one fancy-regex match may take before it is abandoned (and counted).
/// PCRE2 matches are bounded by its own match limit (10 million steps by default).
const BACKTRACK_LIMIT: usize = 200_000;
/// Compiled size limits for `regex`: SpamAssassin's big rule sets need more than the default.
pub(crate) const REGEX_SIZE_LIMIT: usize = 64 << 20;
/// Lazy-DFA cache limit per rule regex; each scan running at once (`scan.workers`) holds its
/// own caches.
const RULE_CACHE: usize = 16 << 20;
/// Longest matched text kept for `--explain`.
const MATCH_EXCERPT: usize = 80;

/// Times a fancy-regex match hit its backtracking limit (process-wide).
pub static BACKTRACK_LIMIT_HITS: AtomicU64 = AtomicU64::new(0);

/// How a rule matches.
enum Matcher {
    Regex(Regex),
    /// Every match starts at a line start: searched from each one (see [`line_anchored`]).
    LineAnchored(Box<LineAnchored>),
    /// The pattern, and a linear-time superset of it (lookaround and backreferences relaxed)
    /// that must match first: most texts are ruled out without backtracking.
    Fancy(Box<Backtracking>, Option<Gate>),
    Exists(String),
    Meta(Expr),
    /// Not run; the reason is shown by `kala rules check`.
    Unsupported(String),
}

/// An engine for what `regex` cannot express (backreferences, lookaround).
///
/// PCRE2 with its JIT first: it is Perl's own dialect, and on SpamAssassin's backreference
/// rules over all headers it ran 85 to 95 times faster than fancy-regex (same hits, 600
/// training headers). fancy-regex takes the few patterns PCRE2 refuses.
enum Backtracking {
    Pcre(pcre2::bytes::Regex),
    Fancy(fancy_regex::Regex),
}

/// A linear-time superset of a backtracking rule, run first where it pays.
///
/// Most gates rule out nearly every text (a lookahead rule needs its words first). Some pass
/// nearly every one: the backreference rules over all headers need only a From and a To line
/// to pass, and then the gate's scan of the whole header block is spent for nothing (it cost
/// more than the backtracking match itself). So each gate counts how often it lets text
/// through, and one that passed more than a tenth of its first texts is no longer run (on
/// SpamAssassin's rules a gate that rules out less than that costs more than it saves). Hits
/// do not change either way: the gate only decides whether the backtracking engine looks.
struct Gate {
    regex: Regex,
    tried: AtomicU32,
    passed: AtomicU32,
}

/// Regex-crate patterns at least this long run line by line when they are anchored at line
/// starts. On SpamAssassin's rules, the 371-byte `HEADER_SPAM` ran 4 times faster that way
/// and the 5,225-byte `__FILL_THIS_FORM_PARTIAL` 4.4 times; the 21-byte `__HAS_HREF` ran 20 %
/// slower, over rawbody chunks of many short lines.
const LINE_ANCHORED_MIN_LEN: usize = 200;

/// Texts a gate is judged on.
const GATE_TRIAL: u32 = 200;

impl Gate {
    fn new(regex: Regex) -> Gate {
        Gate {
            regex,
            tried: AtomicU32::new(0),
            passed: AtomicU32::new(0),
        }
    }

    /// False when `text` cannot match the rule. True when it may, or when this gate has shown
    /// it rules out too little to be worth running.
    fn may_match(&self, text: &str) -> bool {
        let tried = self.tried.load(Ordering::Relaxed);
        if tried >= GATE_TRIAL && self.passed.load(Ordering::Relaxed) * 10 > tried {
            return true;
        }
        let passes = self.regex.is_match(text);
        if tried < GATE_TRIAL {
            self.tried.fetch_add(1, Ordering::Relaxed);
            if passes {
                self.passed.fetch_add(1, Ordering::Relaxed);
            }
        }
        passes
    }
}

/// What a header rule reads and how it counts.
struct HeaderTest {
    /// Index into [`RuleSet::header_keys`]: rules reading the same header share its value.
    key: usize,
    negate: bool,
    /// What the pattern finds when the header is unset: it then reads the rule's
    /// `[if-unset: ...]` text, or the empty string. The same for every message, so it is
    /// found once, when the rule is compiled (a third of the header rules read a header most
    /// messages lack).
    unset_match: Option<String>,
}

struct Rule {
    name: String,
    view: Option<View>,
    /// The fewest bytes any match of its pattern spans: a shorter line cannot match, and the
    /// body's lines are short (18 bytes on average over the training corpus).
    min_len: usize,
    matcher: Matcher,
    header: Option<HeaderTest>,
    score: f64,
    descriptions: BTreeMap<String, String>,
    tflags: Tflags,
    /// Runs (for metas) but is never reported: `__` sub-rules.
    silent: bool,
    /// Scored 0: never runs and counts as not hit, also inside metas (as in SpamAssassin).
    disabled: bool,
    /// Some reported rule depends on it (it is one, or a meta reaching it needs it). A `__`
    /// sub-rule no enabled meta reads can change no result, so it is not run: 630 of
    /// SpamAssassin's 1,700 sub-rules feed only zero-scored or unsupported metas.
    needed: bool,
    /// Index into [`RuleSet::texts`]: the text a pattern rule reads.
    text: Option<usize>,
    file: PathBuf,
    line: usize,
    /// The defining line as written.
    source: String,
}

/// One text pattern rules read (a view's lines, a header's values), with the prefilter of
/// the rules reading it.
struct Text {
    source: TextSource,
    prefilter: Prefilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TextSource {
    View(View),
    /// Index into [`RuleSet::header_keys`].
    Header(usize),
}

/// What `kala rules check` reports per rule type.
#[derive(Debug, Default, Clone)]
pub struct TypeStats {
    pub regex: usize,
    pub fancy: usize,
    pub meta: usize,
    pub other: usize,
    /// Reasons rules of this type are not run: how many, and a few example names.
    pub unsupported: BTreeMap<String, (usize, Vec<String>)>,
}

/// A compiled, immutable rule set.
pub struct RuleSet {
    rules: Vec<Rule>,
    by_name: HashMap<String, usize>,
    /// Each text some needed rule reads, with its prefilter: views first, then headers.
    texts: Vec<Text>,
    /// Each header (and modifier) some rule reads, once: a message's value of it is built
    /// once per scan, however many rules read it.
    header_keys: Vec<(HeaderSource, HeaderPart)>,
    /// The reported rules that run, patterns (by text) before metas: a scan runs these, and
    /// the sub-rules their metas ask for.
    reported: Vec<usize>,
    pub stats: BTreeMap<&'static str, TypeStats>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub ignored: BTreeMap<String, usize>,
    pub files_read: usize,
    pub required_score: Option<f64>,
    /// The `test_message` cases the files carry.
    pub tests: Vec<TestCase>,
    /// The files this set was built from.
    pub snapshot: std::sync::Arc<Snapshot>,
}

/// What the rules pages show about one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleInfo {
    pub name: String,
    /// `header`, `body`, `rawbody`, `uri`, `full` or `meta`.
    pub kind: &'static str,
    pub score: f64,
    pub description: String,
    pub file: String,
    pub line: usize,
    pub definition: String,
    pub shadow: bool,
    /// Why the rule does not run, if it does not.
    pub unsupported: Option<String>,
}

/// One rule that fired on a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub name: String,
    pub score: f64,
    pub count: u32,
    pub description: String,
    /// The text that matched (first match), for explanations.
    pub matched: Option<String>,
    /// A shadow rule's hit: `score` is 0 and this is what it would have scored.
    pub shadow: Option<f64>,
}

impl RuleSet {
    /// Reads and compiles the rule files under `paths`. Problems are in `errors`/`warnings`;
    /// a rule that cannot be compiled is left out, never the whole set.
    pub fn load(paths: &[PathBuf]) -> RuleSet {
        RuleSet::compile(RuleFiles::read_paths(paths))
    }

    /// Rebuilds a set from the files of an earlier version.
    pub fn from_snapshot(paths: &[PathBuf], snapshot: Snapshot) -> RuleSet {
        RuleSet::compile(RuleFiles::replay(paths, std::sync::Arc::new(snapshot)))
    }

    /// Parses and compiles rule text (for tests).
    pub fn from_text(text: &str) -> RuleSet {
        RuleSet::compile(RuleFiles::read_text(
            text,
            std::path::Path::new("inline.cf"),
        ))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Rules that are reported when they fire (not `__` sub-rules): what admins count.
    pub fn reported_len(&self) -> usize {
        self.rules.iter().filter(|r| !r.silent).count()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Names of rules that run (their matcher is supported).
    pub fn supported_names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(|r| !matches!(r.matcher, Matcher::Unsupported(_)))
            .map(|r| r.name.as_str())
    }

    /// The description of a rule in `lang` (falling back to the default text).
    pub fn description(&self, name: &str, lang: &str) -> Option<&str> {
        let rule = &self.rules[*self.by_name.get(name)?];
        rule.descriptions
            .get(lang)
            .or_else(|| rule.descriptions.get(""))
            .map(String::as_str)
    }

    fn compile(files: RuleFiles) -> RuleSet {
        let RuleFiles {
            rules: defs,
            scores,
            descriptions,
            tflags,
            errors,
            warnings,
            ignored,
            files_read,
            required_score,
            tests,
            read,
            ..
        } = files;
        let mut set = RuleSet {
            rules: Vec::with_capacity(defs.len()),
            by_name: HashMap::with_capacity(defs.len()),
            texts: Vec::new(),
            header_keys: Vec::new(),
            reported: Vec::new(),
            stats: BTreeMap::new(),
            errors,
            warnings,
            ignored,
            files_read,
            required_score,
            tests,
            snapshot: std::sync::Arc::new(read),
        };
        let names: Vec<String> = defs.keys().cloned().collect();
        for (index, name) in names.iter().enumerate() {
            set.by_name.insert(name.clone(), index);
        }
        let mut meta_sources = Vec::new();
        for def in defs.into_values() {
            let flags = tflags.get(&def.name).cloned().unwrap_or_default();
            let score = pick_score(&def.name, scores.get(&def.name), &flags);
            let silent = def.name.starts_with("__");
            let disabled = !silent && score == 0.0;
            let mut view = None;
            let mut header = None;
            let matcher = match def.kind {
                RuleKind::Pattern { view: v, pattern } => {
                    view = Some(v);
                    compile_pattern(&pattern)
                }
                RuleKind::Header {
                    source,
                    part,
                    negate,
                    if_unset,
                    pattern,
                } => {
                    view = Some(View::Header);
                    let matcher = compile_pattern(&pattern);
                    // A MIME header that no part has is never tested (as in SpamAssassin).
                    let unset_match = match source {
                        HeaderSource::Mime(_) => None,
                        _ => find(&matcher, if_unset.as_deref().unwrap_or(""), true),
                    };
                    header = Some(HeaderTest {
                        key: set.header_key(source, part),
                        negate,
                        unset_match,
                    });
                    matcher
                }
                RuleKind::Exists(name) => {
                    view = Some(View::Header);
                    Matcher::Exists(name)
                }
                RuleKind::Meta(text) => {
                    meta_sources.push((set.rules.len(), text));
                    Matcher::Unsupported("not compiled yet".into())
                }
                RuleKind::Eval { view: v, call } => {
                    view = Some(v);
                    let function = call.split('(').next().unwrap_or("").trim();
                    Matcher::Unsupported(format!("eval:{function} has no native check in Kala"))
                }
                RuleKind::Unsupported(why) => {
                    view = Some(View::Header);
                    Matcher::Unsupported(why)
                }
            };
            if let Matcher::Unsupported(why) = &matcher
                && why.starts_with("pattern: ")
            {
                set.errors.push(Diagnostic {
                    file: def.file.clone(),
                    line: def.line,
                    message: format!("rule {}: {}", def.name, why),
                });
            }
            let min_len = match &matcher {
                Matcher::Regex(re) => prefilter::minimum_len(re.as_str()),
                Matcher::LineAnchored(re) => prefilter::minimum_len(re.superset()),
                // The gate matches a superset, so it needs no more text than the rule does.
                Matcher::Fancy(_, Some(gate)) => prefilter::minimum_len(gate.regex.as_str()),
                _ => 0,
            };
            set.rules.push(Rule {
                name: def.name.clone(),
                view,
                min_len,
                matcher,
                header,
                score,
                descriptions: descriptions.get(&def.name).cloned().unwrap_or_default(),
                tflags: flags,
                silent,
                disabled,
                needed: false,
                text: None,
                file: def.file,
                line: def.line,
                source: def.source,
            });
        }
        set.compile_metas(meta_sources);
        set.mark_needed();
        set.build_prefilters();
        set.count_stats();
        set
    }

    fn header_key(&mut self, source: HeaderSource, part: HeaderPart) -> usize {
        let source = match source {
            HeaderSource::Named(name) => HeaderSource::Named(name.to_ascii_lowercase()),
            HeaderSource::Mime(name) => HeaderSource::Mime(name.to_ascii_lowercase()),
            other => other,
        };
        let key = (source, part);
        match self.header_keys.iter().position(|k| *k == key) {
            Some(index) => index,
            None => {
                self.header_keys.push(key);
                self.header_keys.len() - 1
            }
        }
    }

    fn compile_metas(&mut self, sources: Vec<(usize, String)>) {
        let mut parsed: HashMap<usize, Result<Expr, ExprError>> = HashMap::new();
        for (index, text) in &sources {
            let by_name = &self.by_name;
            let mut missing = Vec::new();
            let result = expr::parse(text, &mut |name| match by_name.get(name) {
                Some(i) => Ok(*i),
                None => {
                    missing.push(name.to_string());
                    Err(ExprError(format!("`{name}` is not a defined rule")))
                }
            });
            parsed.insert(*index, result);
        }
        // Resolve in dependency order; a meta needing an unsupported rule is unsupported too.
        let mut state: HashMap<usize, u8> = HashMap::new(); // 1 = visiting, 2 = done
        let meta_indices: Vec<usize> = sources.iter().map(|(i, _)| *i).collect();
        for index in meta_indices {
            self.resolve_meta(index, &mut parsed, &mut state);
        }
    }

    fn resolve_meta(
        &mut self,
        index: usize,
        parsed: &mut HashMap<usize, Result<Expr, ExprError>>,
        state: &mut HashMap<usize, u8>,
    ) {
        match state.get(&index) {
            Some(2) => return,
            Some(1) => {
                self.rules[index].matcher =
                    Matcher::Unsupported("meta depends on itself (a cycle)".into());
                return;
            }
            _ => {}
        }
        state.insert(index, 1);
        let matcher = match parsed.remove(&index) {
            Some(Err(e)) => Matcher::Unsupported(format!("meta: {e}")),
            Some(Ok(expr)) => {
                let mut deps = Vec::new();
                expr.names(&mut deps);
                let mut problem = None;
                for dep in deps {
                    if parsed.contains_key(&dep) {
                        self.resolve_meta(dep, parsed, state);
                    }
                    if let Matcher::Unsupported(why) = &self.rules[dep].matcher {
                        problem = Some(format!("needs {} ({})", self.rules[dep].name, why));
                        break;
                    }
                }
                match problem {
                    Some(why) => Matcher::Unsupported(why),
                    None => Matcher::Meta(expr),
                }
            }
            None => return,
        };
        self.rules[index].matcher = matcher;
        state.insert(index, 2);
    }

    /// Marks the reported rules that run, and every rule their metas read, as needed.
    fn mark_needed(&mut self) {
        let mut stack: Vec<usize> = (0..self.rules.len())
            .filter(|&i| {
                let rule = &self.rules[i];
                !rule.silent && !rule.disabled && !matches!(rule.matcher, Matcher::Unsupported(_))
            })
            .collect();
        while let Some(index) = stack.pop() {
            let rule = &mut self.rules[index];
            if rule.needed || rule.disabled {
                continue;
            }
            rule.needed = true;
            if let Matcher::Meta(expr) = &rule.matcher {
                let mut deps = Vec::new();
                expr.names(&mut deps);
                stack.extend(deps);
            }
        }
    }

    fn build_prefilters(&mut self) {
        // Each text with its rules and the linear pattern standing for each in its prefilter.
        let mut by_text: BTreeMap<TextSource, Vec<(usize, Option<&str>)>> = BTreeMap::new();
        let mut texts_of = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(view) = rule.view else { continue };
            if !rule.needed {
                continue;
            }
            let linear = match &rule.matcher {
                Matcher::Regex(re) => Some(re.as_str()),
                Matcher::LineAnchored(re) => Some(re.superset()),
                // Its pattern without lookaround and backreferences matches a superset: that
                // goes into the prefilter, so the backtracking engine runs only on candidates.
                Matcher::Fancy(_, gate) => gate.as_ref().map(|g| g.regex.as_str()),
                Matcher::Exists(_) | Matcher::Meta(_) | Matcher::Unsupported(_) => continue,
            };
            let source = match &rule.header {
                Some(test) => TextSource::Header(test.key),
                None => TextSource::View(view),
            };
            by_text.entry(source).or_default().push((index, linear));
            texts_of.push((index, source));
        }
        let sources: Vec<TextSource> = by_text.keys().copied().collect();
        let texts = by_text
            .into_iter()
            .map(|(source, rules)| {
                let what = match source {
                    TextSource::View(view) => view.name(),
                    TextSource::Header(_) => "header",
                };
                Text {
                    source,
                    prefilter: Prefilter::build(what, &rules),
                }
            })
            .collect();
        for (index, source) in texts_of {
            self.rules[index].text = sources.binary_search(&source).ok();
        }
        self.texts = texts;
        // Reported patterns first, text by text, then exists tests and metas: by the time a
        // meta runs, most of what it reads is known, and `A && B` with B known to be 0 never
        // asks for A.
        let mut reported: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].needed && !self.rules[i].silent)
            .collect();
        reported.sort_by_key(|&i| (self.rules[i].text.is_none(), self.rules[i].text));
        self.reported = reported;
    }

    fn count_stats(&mut self) {
        for rule in &self.rules {
            let kind = match (&rule.matcher, rule.view) {
                (Matcher::Meta(_), _) => "meta",
                (_, Some(v)) => v.name(),
                (_, None) => "meta",
            };
            let stats = self.stats.entry(kind).or_default();
            match &rule.matcher {
                Matcher::Regex(_) | Matcher::LineAnchored(_) => stats.regex += 1,
                Matcher::Fancy(..) => stats.fancy += 1,
                Matcher::Meta(_) => stats.meta += 1,
                Matcher::Exists(_) => stats.other += 1,
                Matcher::Unsupported(why) => {
                    let reason = if why.starts_with("needs ") {
                        "needs an unsupported rule".to_string()
                    } else {
                        why.clone()
                    };
                    let (count, examples) = stats.unsupported.entry(reason).or_default();
                    *count += 1;
                    if examples.len() < 3 {
                        examples.push(rule.name.clone());
                    }
                }
            }
        }
    }

    /// Evaluates every rule against one message. Returns the rules that fired and are
    /// reported (not `__` sub-rules, not zero-scored ones), highest score first.
    pub fn evaluate(&self, message: &Message, envelope: &Envelope) -> Vec<Hit> {
        let views = Views::new(message, envelope);
        let scan = scan::Scan::new(self, &views);
        let mut hits: Vec<Hit> = self
            .reported
            .iter()
            .filter_map(|&i| {
                let count = scan.count(i);
                if count == 0 {
                    return None;
                }
                let rule = &self.rules[i];
                let score = if rule.tflags.multiple {
                    rule.score * f64::from(count)
                } else {
                    rule.score
                };
                let shadow = rule.tflags.shadow.then_some(score);
                Some(Hit {
                    name: rule.name.clone(),
                    score: if shadow.is_some() { 0.0 } else { score },
                    count,
                    description: rule.descriptions.get("").cloned().unwrap_or_default(),
                    matched: scan.matched(i),
                    shadow,
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.name.cmp(&b.name))
        });
        hits
    }

    /// Rules that run, out of those that could (the ones not needing an `eval:` function Kala
    /// lacks, directly or through a meta): what `kala rules check` reports as coverage.
    pub fn coverage(&self) -> (usize, usize) {
        let mut eligible = 0;
        let mut supported = 0;
        for rule in &self.rules {
            match &rule.matcher {
                Matcher::Unsupported(why) if why.contains("eval:") => {}
                Matcher::Unsupported(_) => eligible += 1,
                _ => {
                    eligible += 1;
                    supported += 1;
                }
            }
        }
        (supported, eligible)
    }

    /// Supported `__` sub-rules that no enabled rule reads: compiled but never run.
    pub fn unread_subrules(&self) -> usize {
        self.rules
            .iter()
            .filter(|r| r.silent && !r.needed && !matches!(r.matcher, Matcher::Unsupported(_)))
            .count()
    }

    /// Every reported rule (not `__` sub-rules), for the rules pages, in name order.
    pub fn rules_info(&self, lang: &str) -> Vec<RuleInfo> {
        let mut all: Vec<RuleInfo> = self
            .rules
            .iter()
            .filter(|r| !r.silent)
            .map(|r| self.info(r, lang))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn rule_info(&self, name: &str, lang: &str) -> Option<RuleInfo> {
        Some(self.info(&self.rules[*self.by_name.get(name)?], lang))
    }

    fn info(&self, rule: &Rule, lang: &str) -> RuleInfo {
        RuleInfo {
            name: rule.name.clone(),
            kind: match (&rule.matcher, rule.view) {
                (Matcher::Meta(_), _) | (_, None) => "meta",
                (_, Some(view)) => view.name(),
            },
            score: rule.score,
            description: self
                .description(&rule.name, lang)
                .unwrap_or_default()
                .to_string(),
            file: rule.file.display().to_string(),
            line: rule.line,
            definition: rule.source.clone(),
            shadow: rule.tflags.shadow,
            unsupported: match &rule.matcher {
                Matcher::Unsupported(why) => Some(why.clone()),
                _ => None,
            },
        }
    }

    /// `file:line` of a rule, for explanations.
    pub fn location(&self, name: &str) -> Option<String> {
        let rule = &self.rules[*self.by_name.get(name)?];
        Some(format!("{}:{}", rule.file.display(), rule.line))
    }
}

/// SpamAssassin's default scores: 1 (or -1 for `nice`), 0 for `__` sub-rules, 0.01 for `T_`
/// test rules. With four scores, Kala uses set 0 (no Bayes, no network tests).
fn pick_score(name: &str, scores: Option<&Vec<f64>>, flags: &Tflags) -> f64 {
    match scores {
        Some(values) => values[0],
        None if name.starts_with("__") => 0.0,
        None if name.starts_with("T_") => 0.01,
        None if flags.nice => -1.0,
        None => 1.0,
    }
}

fn compile_pattern(pattern: &PerlPattern) -> Matcher {
    // SpamAssassin 4 fills `%{NAME}` at scan time with what another rule captured as
    // `(?<NAME>...)`. Read literally it would never match, so say so instead.
    if let Some(start) = pattern.source.find("%{")
        && let Some(len) = pattern.source[start + 2..].find('}')
        && pattern.source[start + 2..start + 2 + len]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Matcher::Unsupported("captured tags (%{NAME}) are not implemented".into());
    }
    let translated = match perl::translate(pattern) {
        Ok(t) => t,
        Err(e) => return Matcher::Unsupported(format!("regex: {e}")),
    };
    if translated.engine == Engine::Regex {
        match RegexBuilder::new(&translated.pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(RULE_CACHE)
            .build()
        {
            Ok(re) if re.as_str().len() < LINE_ANCHORED_MIN_LEN => return Matcher::Regex(re),
            Ok(re) => {
                return match LineAnchored::from_regex(re.as_str()) {
                    Some(anchored) => Matcher::LineAnchored(Box::new(anchored)),
                    None => Matcher::Regex(re),
                };
            }
            Err(regex::Error::CompiledTooBig(_)) => {
                return Matcher::Unsupported("regex: too big to compile".into());
            }
            // Rust's parser refuses some things Perl takes; fancy-regex may still read it.
            Err(_) => {}
        }
    }
    if let Some(anchored) = LineAnchored::from_atomic_prefix(&translated.pattern) {
        return Matcher::LineAnchored(Box::new(anchored));
    }
    let relaxed = || {
        // Only a gate before the backtracking engine: a superset is all it must be.
        let gate = perl::relax(&translated.pattern)
            .and_then(|p| prefilter::without_unicode_boundaries(&p));
        gate.and_then(|p| {
            RegexBuilder::new(&p)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(RULE_CACHE)
                .build()
                .ok()
        })
    };
    let pcre_pattern = translated
        .pattern
        .replace(r"(?-u:\b)", r"\b")
        .replace(r"(?-u:\B)", r"\B");
    if let Ok(re) = pcre2::bytes::RegexBuilder::new()
        .utf(true)
        // Unicode classes only where the translation left Unicode `\w`/`\b` (non-ASCII
        // patterns); ASCII ones spell their classes out.
        .ucp(!pcre_pattern.is_ascii())
        .jit_if_available(true)
        .build(&pcre_pattern)
    {
        return Matcher::Fancy(Box::new(Backtracking::Pcre(re)), relaxed().map(Gate::new));
    }
    match fancy_regex::RegexBuilder::new(&translated.pattern)
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
    {
        Ok(re) => Matcher::Fancy(Box::new(Backtracking::Fancy(re)), relaxed().map(Gate::new)),
        Err(e) => Matcher::Unsupported(format!("pattern: /{}/: {e}", pattern.source)),
    }
}

/// The text `matcher` matches in `text` (an excerpt), if it matches. Without `keep` the
/// match is not located (empty excerpt): `__` sub-rules are never shown, and locating a
/// match costs a second scan.
fn find(matcher: &Matcher, text: &str, keep: bool) -> Option<String> {
    match matcher {
        // is_match first: cheaper than locating the match, and most lines do not match.
        Matcher::Regex(re) if !keep => re.is_match(text).then(String::new),
        Matcher::Regex(re) => re
            .is_match(text)
            .then(|| re.find(text).map(|m| excerpt(m.as_str())))
            .flatten(),
        Matcher::LineAnchored(re) => re.find(text).map(|(start, end)| match keep {
            true => excerpt(&text[start..end]),
            false => String::new(),
        }),
        Matcher::Fancy(_, Some(gate)) if !gate.may_match(text) => None,
        Matcher::Fancy(re, _) => {
            let found = match re.as_ref() {
                Backtracking::Pcre(re) => re
                    .find(text.as_bytes())
                    .map(|m| m.map(|m| excerpt(&String::from_utf8_lossy(m.as_bytes()))))
                    .map_err(|e| e.to_string()),
                Backtracking::Fancy(re) => re
                    .find(text)
                    .map(|m| m.map(|m| excerpt(m.as_str())))
                    .map_err(|e| e.to_string()),
            };
            found.unwrap_or_else(|e| {
                backtrack_limit_hit(re, &e);
                None
            })
        }
        _ => None,
    }
}

/// How many non-overlapping matches of `matcher` are in `text` (at most `limit`), and an
/// excerpt of the first. Only the first is kept: `multiple` rules such as SpamAssassin's
/// `__E_LIKE_LETTER` count hundreds of matches per line.
fn count_matches(matcher: &Matcher, text: &str, limit: u32) -> (u32, Option<String>) {
    fn tally<'t>(mut found: impl Iterator<Item = &'t [u8]>) -> (u32, Option<String>) {
        let Some(first) = found.next() else {
            return (0, None);
        };
        let count = 1 + found.count() as u32;
        (count, Some(excerpt(&String::from_utf8_lossy(first))))
    }
    let limit = limit as usize;
    match matcher {
        Matcher::Regex(re) => tally(
            re.find_iter(text)
                .take(limit)
                .map(|m| m.as_str().as_bytes()),
        ),
        Matcher::LineAnchored(re) => tally(
            re.find_iter(text)
                .take(limit)
                .map(|(s, e)| &text.as_bytes()[s..e]),
        ),
        Matcher::Fancy(_, Some(gate)) if !gate.may_match(text) => (0, None),
        Matcher::Fancy(re, _) => {
            let counted = match re.as_ref() {
                Backtracking::Pcre(re) => re
                    .find_iter(text.as_bytes())
                    .take(limit)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|found| tally(found.iter().map(|m| m.as_bytes())))
                    .map_err(|e| e.to_string()),
                Backtracking::Fancy(re) => re
                    .find_iter(text)
                    .take(limit)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|found| tally(found.iter().map(|m| m.as_str().as_bytes())))
                    .map_err(|e| e.to_string()),
            };
            counted.unwrap_or_else(|e| {
                backtrack_limit_hit(re, &e);
                (0, None)
            })
        }
        _ => {
            let found = find(matcher, text, true);
            (u32::from(found.is_some()), found)
        }
    }
}

/// Counts and logs a backtracking match that gave up.
fn backtrack_limit_hit(re: &Backtracking, error: &str) {
    BACKTRACK_LIMIT_HITS.fetch_add(1, Ordering::Relaxed);
    let pattern = match re {
        Backtracking::Pcre(re) => re.as_str(),
        Backtracking::Fancy(re) => re.as_str(),
    };
    tracing::warn!(
        pattern,
        error,
        "regex backtracking limit reached; rule treated as not matching"
    );
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(MATCH_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rules: &str, raw: &[u8]) -> Vec<String> {
        let set = RuleSet::from_text(rules);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let message = Message::parse(raw, raw.len());
        let envelope = Envelope::offline("sender@example.org", vec![]);
        set.evaluate(&message, &envelope)
            .into_iter()
            .map(|h| h.name)
            .collect()
    }

    const MAIL: &[u8] = b"From: \"Bank\" <alert@bank.example>\r\nTo: a@b.example\r\nSubject: URGENT account\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nContent-Type: text/html\r\n\r\n<p>Verify your <b>password</b> now</p><p><a href=\"http://192.0.2.7/login\">here</a></p>\r\n";

    #[test]
    fn backreferences_and_lookaround_run_on_the_backtracking_engine() {
        let rules = "body REPEATED_WORD /\\b(\\w+) \\1\\b/\nbody NOT_AFTER_NO /(?<!no )money/\nheader SUBJ_IN_FROM ALL =~ /^From: (\\w+)\\b.*^Subject:[^\\n]*\\1/ism\n";
        let raw = b"From: Bank <alert@bank.example>\r\nSubject: your bank money\r\n\r\nwe need need money now\r\n";
        let mut got = hits(rules, raw);
        got.sort();
        assert_eq!(got, ["NOT_AFTER_NO", "REPEATED_WORD", "SUBJ_IN_FROM"]);
        let set = RuleSet::from_text(rules);
        assert_eq!(
            set.stats["body"].fancy, 2,
            "both body rules need backtracking"
        );
    }

    #[test]
    fn an_atomic_group_after_a_line_anchor_runs_in_linear_time() {
        // SpamAssassin's `__FILL_THIS_FORM_PARTIAL_RAW` has this shape; the group takes every
        // blank, so `\s*name` cannot match by giving one back.
        let rules = "rawbody FIELDS /^(?>\\s{0,9})(?:name|city)\\s*:/im\ntflags FIELDS multiple\nrawbody GIVE_BACK /^(?>\\s{0,9})\\s+name/im\n";
        let raw = b"Subject: s\r\n\r\nName:\r\n   City :\r\nx name:\r\n  name  :\r\n";
        let set = RuleSet::from_text(rules);
        assert_eq!(set.stats["rawbody"].regex, 2);
        assert_eq!(set.stats["rawbody"].fancy, 0);
        let message = Message::parse(raw, raw.len());
        let envelope = Envelope::offline("", vec![]);
        let hits = set.evaluate(&message, &envelope);
        let counts: Vec<(&str, u32)> = hits.iter().map(|h| (h.name.as_str(), h.count)).collect();
        assert_eq!(counts, [("FIELDS", 3)]);
    }

    #[test]
    fn mimeheader_tests_each_part_on_its_own() {
        let raw = b"From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XX\r\nContent-Type: application/zip; name=\"x.zip\"\r\n\r\nUEsDBA==\r\n--XX--\r\n";
        let rules = "mimeheader ZIP_PART Content-Type =~ /^application\\/zip/i\nmimeheader PDF_PART Content-Type =~ /pdf/\nmimeheader TOP_MULTI Content-Type =~ /^multipart\\/mixed/\nmimeheader MIXED_ANCHOR Content-Type =~ /^text\\/plain.*zip/s\n";
        let mut got = hits(rules, raw);
        got.sort();
        assert_eq!(got, ["TOP_MULTI", "ZIP_PART"]);
    }

    #[test]
    fn each_view_and_meta() {
        let rules = "header TOCC exists:ToCc\nheader SUBJ_URGENT Subject =~ /urgent/i\nheader FROM_NAME From:name =~ /^Bank$/\nheader NO_CC Cc =~ /./\nheader NOT_CC Cc !~ /./\nheader HAS_DATE exists:Date\nbody PASSWORD /verify your password/i\nbody SUBJECT_IS_BODY /^URGENT account$/\nrawbody RAW_B /<b>password<\\/b>/\nuri IP_URL m{^https?://\\d+\\.\\d+\\.\\d+\\.\\d+/}\nfull FULL_HTML /^Content-Type: text\\/html/m\nmeta __BOTH SUBJ_URGENT && PASSWORD\nmeta PHISH __BOTH && IP_URL\nscore PHISH 3\n";
        let mut got = hits(rules, MAIL);
        got.sort();
        assert_eq!(
            got,
            [
                "FROM_NAME",
                "FULL_HTML",
                "HAS_DATE",
                "IP_URL",
                "NOT_CC",
                "PASSWORD",
                "PHISH",
                "RAW_B",
                "SUBJECT_IS_BODY",
                "SUBJ_URGENT",
                "TOCC"
            ]
        );
    }

    #[test]
    fn sub_rules_run_only_when_a_reported_rule_needs_them() {
        let rules = "body __READ /password/\nbody __UNREAD /password/\nmeta __UNREAD_META __UNREAD\nmeta OFF __UNREAD_META\nscore OFF 0\nheader __NO_CC Cc !~ /./\nmeta ON __READ && __NO_CC\nbody __LOOK /verify(?= your)/i\nbody __ABSENT /zzqqzz/\nmeta NEVER __LOOK && __ABSENT\nmeta BOTH __LOOK && __READ\n";
        let set = RuleSet::from_text(rules);
        assert_eq!(set.unread_subrules(), 2, "__UNREAD and __UNREAD_META");
        let mut got = hits(rules, MAIL);
        got.sort();
        assert_eq!(got, ["BOTH", "ON"]);
        // `__LOOK` runs on the backtracking engine behind a gate, which counts its texts: it
        // ran for BOTH, and not for NEVER, whose `__ABSENT` had no candidate line.
        let message = Message::parse(MAIL, MAIL.len());
        let envelope = Envelope::offline("", vec![]);
        let tried = |set: &RuleSet| match &set.rules[set.by_name["__LOOK"]].matcher {
            Matcher::Fancy(_, Some(gate)) => gate.tried.load(Ordering::Relaxed),
            _ => panic!("__LOOK should run on the backtracking engine with a gate"),
        };
        let only_never = RuleSet::from_text(&rules.replace("meta BOTH", "meta __BOTH"));
        only_never.evaluate(&message, &envelope);
        assert_eq!(tried(&only_never), 0, "nothing needed __LOOK");
        set.evaluate(&message, &envelope);
        assert!(tried(&set) > 0, "BOTH needed __LOOK");
    }

    #[test]
    fn body_rules_match_per_paragraph_not_across() {
        let raw = b"Subject: x\r\n\r\nfirst paragraph\r\n\r\nsecond paragraph\r\n";
        assert_eq!(
            hits("body ACROSS /first paragraph second/\n", raw),
            Vec::<String>::new()
        );
        assert_eq!(hits("body START /^second/\n", raw), ["START"]);
    }

    #[test]
    fn multiple_counts_hits_up_to_maxhits() {
        let set = RuleSet::from_text(
            "body MONEY /\\$\\d+/\ntflags MONEY multiple maxhits=3\nscore MONEY 0.5\n",
        );
        let raw = b"Subject: x\r\n\r\n$1 $2 $3 $4 $5\r\n";
        let message = Message::parse(raw, raw.len());
        let hit = &set.evaluate(&message, &Envelope::offline("", vec![]))[0];
        assert_eq!((hit.count, hit.score), (3, 1.5));
        assert_eq!(
            hit.matched.as_deref(),
            Some("$1"),
            "the first match explains the hit"
        );
    }

    #[test]
    fn multiple_counts_every_match_of_a_backtracking_rule_too() {
        // A lookahead puts the rule on the backtracking engine; each match in the one
        // paragraph counts, as in SpamAssassin.
        let set = RuleSet::from_text(
            "body LEADS /\\d+ (?!fake)\\w+ leads/\ntflags LEADS multiple maxhits=5\nscore LEADS 1\n",
        );
        let raw = b"Subject: x\r\n\r\n5 hot leads, 7 fake leads, 9 new leads\r\n";
        let message = Message::parse(raw, raw.len());
        let hit = &set.evaluate(&message, &Envelope::offline("", vec![]))[0];
        assert_eq!(hit.count, 2);
    }

    #[test]
    fn unsupported_rules_and_metas_on_them_are_reported_not_run() {
        let set = RuleSet::from_text(
            "body E eval:check_foo()\nmeta M E && B\nbody B /x/\nmeta ZERO B\nscore ZERO 0\n",
        );
        let names: Vec<&str> = set.supported_names().collect();
        assert_eq!(names, ["B", "ZERO"]);
        let body = &set.stats["body"];
        assert_eq!(body.regex, 1);
        assert!(
            body.unsupported
                .keys()
                .any(|k| k.contains("eval:check_foo"))
        );
        assert!(
            set.stats["meta"]
                .unsupported
                .contains_key("needs an unsupported rule")
        );
    }

    #[test]
    fn broken_regex_is_an_error_with_file_and_line() {
        let set = RuleSet::from_text("body OK /fine/\nbody BAD /(unclosed/\n");
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert!(
            set.errors[0]
                .to_string()
                .starts_with("inline.cf:2: rule BAD: "),
            "{}",
            set.errors[0]
        );
        assert_eq!(set.supported_names().collect::<Vec<_>>(), ["OK"]);
    }

    #[test]
    fn pathological_regex_on_a_large_message_finishes() {
        let set = RuleSet::from_text("body EVIL /(a+)+\\1b/\nbody LINEAR /(a|aa)+c/\n");
        let mut raw = b"Subject: x\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        let message = Message::parse(&raw, raw.len());
        let started = std::time::Instant::now();
        let hits = set.evaluate(&message, &Envelope::offline("", vec![]));
        assert!(hits.is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn relay_pseudo_headers_read_the_received_chain() {
        // Corpus lines: a local hop (trusted), then a sender on a DSL line.
        let raw = b"Received: from localhost (localhost [127.0.0.1])\r\n\tby phobos.labs.netnoteinc.com (Postfix) with ESMTP id D03E543C36\r\n\tfor <zzzz@localhost>; Thu, 22 Aug 2002 07:36:16 -0400 (EDT)\r\nReceived: from proton.pathname.com (adsl-216-103-211-240.dsl.snfc21.pacbell.net [216.103.211.240]) by dogma.slashnull.org (8.11.6/8.11.6) with ESMTP id g7NAVFZ20272 for <zzzz@spamassassin.taint.org>; Fri, 23 Aug 2002 11:31:15 +0100\r\nSubject: x\r\n\r\nbody\r\n";
        // Two of SpamAssassin's own rules, and ones on the other pseudo-headers.
        let rules = r"header RDNS_DSL X-Spam-Relays-External =~ /^[^\]]+ rdns=\S+[\-\.](?:dial|modem|isdn|dov|\S?dsl|cable|wireless)[\-\.]/i
header RDNS_NONE X-Spam-Relays-External =~ /^[^\]]+ rdns= /
header LOCAL_TRUSTED X-Spam-Relays-Trusted =~ /^\[ ip=127\.0\.0\.1 rdns=localhost .* intl=1 /
header NO_AUTH x-spam-relays-untrusted =~ /^[^\]]+ auth= /
header BOTH_TRUSTED ALL-TRUSTED =~ /^Received: from localhost .*\nReceived: from proton/s
header ONE_EXTERNAL ALL-EXTERNAL =~ /\AReceived: from proton[^\n]*\nSubject: x\n\z/
header STATUS X-Spam-Status =~ /./
";
        let mut got = hits(rules, raw);
        got.sort();
        assert_eq!(
            got,
            [
                "BOTH_TRUSTED",
                "LOCAL_TRUSTED",
                "NO_AUTH",
                "ONE_EXTERNAL",
                "RDNS_DSL"
            ]
        );
        let set = RuleSet::from_text(rules);
        assert!(!set.supported_names().any(|n| n == "STATUS"));
        // No Received header: the relay text is set, but empty.
        let rules = "header EMPTY X-Spam-Relays-External =~ /^$/\nheader NOT_IP X-Spam-Relays-Untrusted !~ /ip=/\nheader NO_BLOCK ALL-UNTRUSTED =~ /./\n";
        let mut got = hits(rules, b"Subject: x\r\n\r\nbody\r\n");
        got.sort();
        assert_eq!(got, ["EMPTY", "NOT_IP"]);
    }
}
