//! Widening a rule's regex into a cheap superset for the multi-pattern prefilter.
//!
//! The prefilter only chooses candidates; each candidate's own regex then decides. So a
//! prefilter pattern may match more than its rule, never less. Widening keeps the lazy DFA
//! of a set of 32 patterns small: counted repetitions of broad classes (`[^.!?]{0,25}`,
//! `(?:\w+\W+){12}`) and Unicode word boundaries are what make its states explode (and its
//! cache thrash), so they go; and a Unicode class keeps only its ASCII members, standing for
//! the rest with "any non-ASCII character".
//!
//! Most rules need a word or two to match at all. [`required_literals`] finds them, so such
//! rules sit behind one Aho-Corasick automaton instead of a set of regexes: a literal scan of
//! the text is far cheaper than a DFA over hundreds of patterns.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::{RegexSet, RegexSetBuilder};
use regex_syntax::hir::{
    Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look, Repetition,
};

use super::REGEX_SIZE_LIMIT;

/// Patterns per prefilter set. The rules left for sets are the ones without a literal to
/// anchor on (fuzzy spellings, big Unicode classes). Each set scans the whole text, so fewer
/// sets scan fewer bytes; but a set's lazy DFA has more states to build the more patterns it
/// holds. Measured on SpamAssassin's 107 body set patterns over the training bodies, warmed
/// on one half and timed on the other: 101 µs per message in sets of 4, 50 in sets of 8, 28
/// in sets of 16, 76 in sets of 32 (its cache thrashed). Whole scans moved from 1.34 to 1.25
/// ms per message from 4 to 16. (Before the widening above, sets of 4 had been the best.)
const PREFILTER_CHUNK: usize = 16;
/// Literal automata with at most this many literals are built as a DFA. A DFA scans several
/// times faster than the default NFA (6 against 20 µs per message over the training
/// corpus's rawbody, whose 134 literals take 0.3 MiB as a DFA); the body's 2,300 literals
/// take 11 MiB as a DFA, and in a full scan that was no faster.
const DFA_LITERALS: usize = 1000;
/// A text read by this few rules gets no prefilter: running them costs about what the
/// prefilter would.
const FEW_RULES: usize = 2;
/// Lazy-DFA cache limit per prefilter set; each scan running at once holds its own caches.
const SET_CACHE: usize = 8 << 20;

/// The rules reading one text (a view's lines, a header's values), behind the prefilters that
/// choose which of them may match it: one Aho-Corasick automaton for the rules that need a
/// literal, small `RegexSet`s of widened patterns for the others.
#[derive(Default)]
pub struct Prefilter {
    /// The automaton, and each of its patterns' owners.
    literals: Option<(AhoCorasick, Vec<Vec<Owner>>)>,
    /// Each set with the rule of each of its patterns.
    sets: Vec<(RegexSet, Vec<usize>)>,
    /// Rules with no linear superset to prefilter on: candidates on every text.
    always: Vec<usize>,
}

/// A rule needing a literal, and how many of its literals a line must hold.
type Owner = (usize, u32);

/// A rule that may match, and the lines it may match on (`None`: any of them).
pub struct Candidate {
    pub rule: usize,
    pub lines: Option<Vec<u32>>,
}

impl Candidate {
    /// Those of `lines` (the text the candidates were chosen on) this rule may match on.
    pub fn on<'c, S: Borrow<str>>(&'c self, lines: &'c [S]) -> impl Iterator<Item = &'c str> + 'c {
        let (all, some) = match &self.lines {
            None => (Some(lines.iter().map(Borrow::borrow)), None),
            Some(on) => (None, Some(on.iter().map(|&l| lines[l as usize].borrow()))),
        };
        all.into_iter().flatten().chain(some.into_iter().flatten())
    }
}

impl Prefilter {
    /// `rules`: each rule's index and a Rust regex matching a superset of what it matches (or
    /// `None` when it has none). `what` names the text in warnings.
    pub fn build(what: &str, rules: &[(usize, Option<&str>)]) -> Prefilter {
        let mut prefilter = Prefilter::default();
        if rules.len() <= FEW_RULES {
            prefilter.always = rules.iter().map(|(rule, _)| *rule).collect();
            return prefilter;
        }
        let mut by_literal: BTreeMap<Vec<u8>, Vec<Owner>> = BTreeMap::new();
        let mut widened: Vec<(usize, String)> = Vec::new();
        for &(rule, pattern) in rules {
            let Some(pattern) = pattern else {
                prefilter.always.push(rule);
                continue;
            };
            let Some(hir) = parse(pattern) else {
                prefilter.always.push(rule);
                continue;
            };
            if let Some(needed) = literals_of(&hir) {
                for literal in needed.set {
                    by_literal
                        .entry(literal)
                        .or_default()
                        .push((rule, needed.times));
                }
            } else {
                let widened_pattern = widen_hir(hir).to_string();
                if matches_plain_text(&widened_pattern) {
                    // It would match on nearly every text, and a set goes on reporting such a
                    // pattern at every position: it scanned 200 times slower than alone.
                    prefilter.always.push(rule);
                } else {
                    widened.push((rule, widened_pattern));
                }
            }
        }
        if !by_literal.is_empty() {
            let (needles, owners): (Vec<Vec<u8>>, Vec<Vec<Owner>>) = by_literal.into_iter().unzip();
            match AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind((needles.len() <= DFA_LITERALS).then_some(AhoCorasickKind::DFA))
                .build(&needles)
            {
                Ok(automaton) => prefilter.literals = Some((automaton, owners)),
                Err(e) => {
                    tracing::warn!(what, error = %e, "literal prefilter did not build; its rules run on every text");
                    prefilter
                        .always
                        .extend(owners.into_iter().flatten().map(|(rule, _)| rule));
                    prefilter.always.sort_unstable();
                    prefilter.always.dedup();
                }
            }
        }
        for chunk in widened.chunks(PREFILTER_CHUNK) {
            match RegexSetBuilder::new(chunk.iter().map(|(_, p)| p.as_str()))
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(SET_CACHE)
                .build()
            {
                Ok(set) => prefilter
                    .sets
                    .push((set, chunk.iter().map(|(i, _)| *i).collect())),
                Err(e) => {
                    tracing::warn!(what, error = %e, "prefilter set did not build; its rules run on every text");
                    prefilter.always.extend(chunk.iter().map(|(i, _)| *i));
                }
            }
        }
        prefilter
    }

    /// The rules that may match one of `lines` (each rule once).
    pub fn candidates<S: Borrow<str>>(&self, lines: &[S]) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = self
            .always
            .iter()
            .map(|&rule| Candidate { rule, lines: None })
            .collect();
        let joined: Cow<'_, str> = match lines {
            [one] => Cow::Borrowed(one.borrow()),
            _ => Cow::Owned(lines.join("\n")),
        };
        if let Some((automaton, owners)) = &self.literals {
            let folded = fold_for_literals(&joined);
            // Offsets of each line's start in the folded text. Folding shortens the characters
            // it replaces, so when it changed anything, lines are measured folded.
            let folded_len = |line: &str| match &folded {
                Cow::Borrowed(_) => line.len(),
                Cow::Owned(_) => fold_for_literals(line).len(),
            };
            let starts: Vec<usize> = std::iter::once(0)
                .chain(lines.iter().scan(0, |offset, line| {
                    *offset += folded_len(line.borrow()) + 1;
                    Some(*offset)
                }))
                .collect();
            // (rule, line, literals needed) for each literal found; sorted, they group by rule
            // in line order.
            let mut found_on: Vec<(usize, u32, u32)> = Vec::new();
            for found in automaton.find_overlapping_iter(folded.as_ref()) {
                // A rule's match lies within one line, so its literal starts on that line.
                let line = (starts.partition_point(|&s| s <= found.start()) - 1) as u32;
                found_on.extend(
                    owners[found.pattern().as_usize()]
                        .iter()
                        .map(|&(rule, times)| (rule, line, times)),
                );
            }
            // Equal entries sit together: their number is how many literals the line has.
            found_on.sort_unstable();
            for run in found_on.chunk_by(|a, b| a == b) {
                let (rule, line, times) = run[0];
                if (run.len() as u32) < times {
                    continue;
                }
                match candidates.last_mut() {
                    Some(Candidate {
                        rule: last,
                        lines: Some(on),
                    }) if *last == rule => on.push(line),
                    _ => candidates.push(Candidate {
                        rule,
                        lines: Some(vec![line]),
                    }),
                }
            }
        }
        for (set, rules) in &self.sets {
            candidates.extend(set.matches(&joined).into_iter().map(|i| Candidate {
                rule: rules[i],
                lines: None,
            }));
        }
        candidates
    }
}

/// Ordinary mail text. A prefilter pattern matching it is no filter at all.
const PLAIN_TEXT: &str = "Hi Ann,\nThanks for the notes from Monday's meeting. I will send the \
    report by 10:30 tomorrow; call me at +1 555 0100 if anything changes.\n\nBest regards,\nMark";

fn matches_plain_text(pattern: &str) -> bool {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .is_ok_and(|re| re.is_match(PLAIN_TEXT))
}

/// Counted repetitions spanning more than this many copies are made open-ended.
const MAX_COUNTED: u32 = 3;
/// Unicode classes with at most this many ranges (`[čc]`, a case-folded letter) stay exact.
const SMALL_CLASS: usize = 16;

/// `pattern` (Rust regex syntax) widened for a prefilter run over all lines of a view joined
/// by `\n`: text anchors become line anchors, Unicode word boundaries are dropped, long
/// counted repetitions become open-ended. `None` when the pattern does not parse.
pub fn widen(pattern: &str) -> Option<String> {
    Some(widen_hir(parse(pattern)?).to_string())
}

/// `pattern` without its Unicode word boundaries: a superset the lazy DFA can run on any
/// text. With them it gives up at the first non-ASCII byte and the slow PikeVM takes over,
/// which made a gate meant to be cheap the costliest part of some rules.
pub fn without_unicode_boundaries(pattern: &str) -> Option<String> {
    Some(rebuild(parse(pattern)?, false).to_string())
}

/// The fewest bytes a match of `pattern` (Rust regex syntax) spans; 0 when unknown.
pub fn minimum_len(pattern: &str) -> usize {
    parse(pattern)
        .and_then(|hir| hir.properties().minimum_len())
        .unwrap_or(0)
}

fn parse(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()
}

fn widen_hir(hir: Hir) -> Hir {
    rebuild(hir, true)
}

/// `hir` with Unicode word boundaries dropped and, when `widen`, the other widenings.
fn rebuild(hir: Hir, widen: bool) -> Hir {
    match hir.into_kind() {
        HirKind::Look(look) => match look {
            Look::Start if widen => Hir::look(Look::StartLF),
            Look::End if widen => Hir::look(Look::EndLF),
            // ASCII boundaries stay: the DFA handles them. Unicode ones make it give up on
            // the first non-ASCII byte.
            Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode => Hir::empty(),
            other => Hir::look(other),
        },
        HirKind::Repetition(rep) => {
            let sub = rebuild(*rep.sub, widen);
            let span = rep.max.unwrap_or(u32::MAX).saturating_sub(rep.min);
            let (min, max) = if !widen {
                (rep.min, rep.max)
            } else if rep.min > MAX_COUNTED || (rep.max.is_some() && span > MAX_COUNTED) {
                (rep.min.min(1), None)
            } else {
                (rep.min, rep.max)
            };
            // `Hir`'s printer writes a repetition of a repetition as `x{1,3}?`, which reads
            // back as a lazy `{1,3}`: a group keeps the outer one.
            let sub = match sub.kind() {
                HirKind::Repetition(_) => Hir::capture(Capture {
                    index: 0,
                    name: None,
                    sub: Box::new(sub),
                }),
                _ => sub,
            };
            Hir::repetition(Repetition {
                min,
                max,
                greedy: rep.greedy,
                sub: Box::new(sub),
            })
        }
        HirKind::Capture(cap) => rebuild(*cap.sub, widen),
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(|h| rebuild(h, widen)).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.into_iter().map(|h| rebuild(h, widen)).collect())
        }
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0),
        HirKind::Class(class) if widen => Hir::class(widen_class(class)),
        HirKind::Class(class) => Hir::class(class),
    }
}

/// A large class with non-ASCII members becomes its ASCII members plus every non-ASCII
/// character. Unicode classes (`\w`, `\p{L}`) are hundreds of ranges, each adding automaton
/// states; "any non-ASCII character" is a handful. Small ones stay exact, so that a rule
/// written for `č` is not a candidate on every line with any accented letter.
fn widen_class(class: Class) -> Class {
    let Class::Unicode(unicode) = class else {
        return class;
    };
    let ranges = unicode.ranges();
    if ranges.len() <= SMALL_CLASS || ranges.last().is_none_or(|r| r.end() <= '\x7f') {
        return Class::Unicode(unicode);
    }
    let mut widened: Vec<ClassUnicodeRange> = ranges
        .iter()
        .filter(|r| r.start() <= '\x7f')
        .map(|r| ClassUnicodeRange::new(r.start(), r.end().min('\x7f')))
        .collect();
    widened.push(ClassUnicodeRange::new('\u{80}', char::MAX));
    Class::Unicode(ClassUnicode::new(widened))
}

/// Literals shorter than this make a poor prefilter (`a`, `to`): such a rule stays in the sets.
const MIN_LITERAL: usize = 3;
/// A rule needing one of more literals than this (a huge alternation) keeps them all anyway:
/// the automaton grows with their bytes, not with the rule count.
const MAX_LITERALS: usize = 20_000;

/// Literals one of which occurs in every text `pattern` (Rust regex syntax) matches, compared
/// ignoring ASCII case, with `K` and `ſ` (which Unicode case folding puts with `k` and `s`)
/// read as their ASCII letters: [`fold_for_literals`] maps the text the same way. `None` when
/// the pattern needs no literal of at least [`MIN_LITERAL`] bytes.
pub fn required_literals(pattern: &str) -> Option<Needed> {
    literals_of(&parse(pattern)?)
}

fn literals_of(hir: &Hir) -> Option<Needed> {
    let needed = required(hir)?;
    let shortest = needed.set.iter().map(Vec::len).min()?;
    (shortest >= MIN_LITERAL && needed.set.len() <= MAX_LITERALS).then_some(needed)
}

/// `text` as [`required_literals`] compares it: unchanged unless it holds the two non-ASCII
/// characters that case-fold to ASCII letters.
pub fn fold_for_literals(text: &str) -> Cow<'_, str> {
    // Most texts are ASCII, which is checked far faster than searching for two characters.
    if !text.is_ascii() && text.contains(['\u{212A}', '\u{17F}']) {
        text.replace('\u{212A}', "k").replace('\u{17F}', "s").into()
    } else {
        text.into()
    }
}

/// What every match of a pattern contains: `times` occurrences of literals from `set`
/// (counted at distinct positions; overlapping ones may both count).
#[derive(Debug, Clone, PartialEq)]
pub struct Needed {
    pub set: Vec<Vec<u8>>,
    pub times: u32,
}

impl Needed {
    fn once(set: Vec<Vec<u8>>) -> Needed {
        Needed { set, times: 1 }
    }
}

/// Some: every match holds what it says (possibly an empty literal, which
/// [`required_literals`] then rejects as too short). None: no literal is needed.
///
/// The count matters for repeated groups: SpamAssassin's `(?:<FF_ALL>...){5}` needs five
/// form-field words on one line, and lines with fewer are not worth its large regex.
fn required(hir: &Hir) -> Option<Needed> {
    if let Some(exact) = exact(hir) {
        return Some(Needed::once(vec![exact]));
    }
    match hir.kind() {
        HirKind::Capture(cap) => required(&cap.sub),
        HirKind::Repetition(rep) if rep.min >= 1 => required(&rep.sub).map(|n| Needed {
            times: n.times.saturating_mul(rep.min).min(MAX_TIMES),
            set: n.set,
        }),
        HirKind::Alternation(subs) => {
            // Each branch needs its own count; the alternation, the fewest of them.
            let mut times = MAX_TIMES;
            let set = union_of(subs.iter().map(|sub| {
                required(sub).map(|needed| {
                    times = times.min(needed.times);
                    needed.set
                })
            }))?;
            Some(Needed { set, times })
        }
        HirKind::Concat(subs) => {
            // Runs of pieces with few spellings (`mai?l`: `mail`, `mal`) become one set of
            // literals; any other piece may offer its own set. The best candidate is the one
            // whose shortest literal is longest.
            let mut best: Option<Needed> = None;
            let mut consider = |needed: Needed| {
                if quality(&needed) > best.as_ref().map_or((0, 0, 0), quality) {
                    best = Some(needed);
                }
            };
            let mut run: Vec<Vec<u8>> = vec![Vec::new()];
            for sub in subs {
                if let Some(spellings) = spellings(sub)
                    && run.len() * spellings.len() <= MAX_SPELLINGS
                {
                    run = cross(&run, &spellings);
                    continue;
                }
                // `x+` (or `x{2,}`) of an exact piece: its first copies end the run before it,
                // its last copy starts the next one (`of+ice` needs both `of` and `fice`).
                if let HirKind::Repetition(rep) = sub.kind()
                    && rep.min >= 1
                    && let Some(piece) = exact(&rep.sub)
                    && !piece.is_empty()
                {
                    consider(Needed::once(cross(&run, &[piece.repeat(rep.min as usize)])));
                    run = vec![piece];
                    continue;
                }
                // The run also joins whatever every match of the next piece starts with:
                // `n(?:ame|ome)` (how the parser factors `name|nome`) needs `nam` or `nom`.
                if let Some(starts) = leading(sub)
                    && run.len() * starts.len() <= MAX_LITERALS
                {
                    consider(Needed::once(cross(&run, &starts)));
                }
                consider(Needed::once(std::mem::replace(&mut run, vec![Vec::new()])));
                if let Some(needed) = required(sub) {
                    consider(needed);
                }
            }
            consider(Needed::once(run));
            best
        }
        _ => None,
    }
}

/// Counting past this buys nothing.
const MAX_TIMES: u32 = 1_000;

/// A run of pieces spelled at most this many ways is kept as one set of literals.
const MAX_SPELLINGS: usize = 64;

/// Every way of writing a string of `prefixes` followed by one of `suffixes`.
fn cross(prefixes: &[Vec<u8>], suffixes: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = prefixes
        .iter()
        .flat_map(|p| suffixes.iter().map(move |s| [p.as_slice(), s].concat()))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Every string `hir` matches (ASCII case ignored), when there are at most
/// [`MAX_SPELLINGS`]: `colou?r`, `(?:e-)?mail`.
fn spellings(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    if let Some(exact) = exact(hir) {
        return Some(vec![exact]);
    }
    let all = match hir.kind() {
        HirKind::Capture(cap) => spellings(&cap.sub)?,
        HirKind::Repetition(rep) if rep.min == 0 && rep.max == Some(1) => {
            let mut all = spellings(&rep.sub)?;
            all.push(Vec::new());
            all
        }
        HirKind::Alternation(subs) => {
            let mut all = Vec::new();
            for sub in subs {
                all.extend(spellings(sub)?);
                if all.len() > MAX_SPELLINGS {
                    return None;
                }
            }
            all
        }
        HirKind::Concat(subs) => {
            let mut all = vec![Vec::new()];
            for sub in subs {
                let next = spellings(sub)?;
                if all.len() * next.len() > MAX_SPELLINGS {
                    return None;
                }
                all = cross(&all, &next);
            }
            all
        }
        _ => return None,
    };
    (all.len() <= MAX_SPELLINGS).then_some(all)
}

/// Strings one of which every match of `hir` starts with (ASCII case ignored); `None` when
/// there is no such bounded set.
fn leading(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    if let Some(exact) = exact(hir) {
        return Some(vec![exact]);
    }
    match hir.kind() {
        HirKind::Capture(cap) => leading(&cap.sub),
        HirKind::Repetition(rep) if rep.min >= 1 => leading(&rep.sub),
        HirKind::Alternation(subs) => union_of(subs.iter().map(leading)),
        HirKind::Concat(subs) => {
            let mut prefix: Vec<u8> = Vec::new();
            for sub in subs {
                match exact(sub) {
                    Some(piece) => prefix.extend(piece),
                    None => {
                        let starts = leading(sub).unwrap_or_else(|| vec![Vec::new()]);
                        return Some(cross(&[prefix], &starts));
                    }
                }
            }
            Some(vec![prefix])
        }
        _ => None,
    }
}

/// Every branch's set, merged: what an alternation of them needs. `None` when a branch has no
/// set or the union grows past [`MAX_LITERALS`].
fn union_of(sets: impl IntoIterator<Item = Option<Vec<Vec<u8>>>>) -> Option<Vec<Vec<u8>>> {
    let mut union: Vec<Vec<u8>> = Vec::new();
    for set in sets {
        union.extend(set?);
        if union.len() > MAX_LITERALS {
            return None;
        }
    }
    union.sort();
    union.dedup();
    Some(union)
}

/// Shortest literal first, then fewer literals, then more of them needed.
fn quality(needed: &Needed) -> (usize, usize, u32) {
    let shortest = needed.set.iter().map(Vec::len).min().unwrap_or(0);
    (shortest, usize::MAX - needed.set.len(), needed.times)
}

/// The one string `hir` matches (ASCII case ignored), if it matches exactly one. Zero-width
/// assertions count as the empty string: `\bfoo\b` needs `foo`.
fn exact(hir: &Hir) -> Option<Vec<u8>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(Vec::new()),
        HirKind::Literal(lit) => Some(lit.0.to_vec()),
        HirKind::Class(class) => one_letter(class).map(|b| vec![b]),
        HirKind::Capture(cap) => exact(&cap.sub),
        HirKind::Repetition(rep) if Some(rep.min) == rep.max && rep.min <= 16 => {
            exact(&rep.sub).map(|piece| piece.repeat(rep.min as usize))
        }
        HirKind::Concat(subs) => {
            let mut all = Vec::new();
            for sub in subs {
                all.extend(exact(sub)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// The ASCII letter a class stands for when it holds only that letter's case variants (what
/// `(?i)x` becomes).
fn one_letter(class: &Class) -> Option<u8> {
    let mut letter: Option<u8> = None;
    let mut see = |c: char| -> Option<()> {
        let folded = match c {
            '\u{212A}' => b'k',
            '\u{17F}' => b's',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
            _ => return None,
        };
        match letter {
            Some(l) if l != folded => None,
            _ => {
                letter = Some(folded);
                Some(())
            }
        }
    };
    match class {
        Class::Unicode(u) => {
            for range in u.ranges() {
                if (range.end() as u32) - (range.start() as u32) > 2 {
                    return None;
                }
                let mut c = range.start();
                loop {
                    see(c)?;
                    if c == range.end() {
                        break;
                    }
                    c = char::from_u32(c as u32 + 1)?;
                }
            }
        }
        Class::Bytes(b) => {
            for range in b.ranges() {
                for byte in range.start()..=range.end() {
                    see(byte as char)?;
                }
            }
        }
    }
    letter
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn matches(pattern: &str, text: &str) -> bool {
        Regex::new(&widen(pattern).unwrap()).unwrap().is_match(text)
    }

    #[test]
    fn widened_patterns_match_a_superset() {
        for (pattern, text) in [
            (r"(?i)\bfoo[^.]{0,25}bar\b", "xx FOO something BAR"),
            (
                r"(?:\w+\W+){12}",
                "one two three four five six seven eight nine ten 11 12 ",
            ),
            (r"\A\s*hello\z", "first line\n  hello\nlast"),
            (r"\?[^#\s]{400,}", &format!("?{}", "a".repeat(400))),
            (r"(?-u:\b)money(?-u:\b)", "some money now"),
            (r"(a)(b)", "ab"),
            (r"(?:\d{1,3})?Million", "1 Million"),
            (r"(?:x{2})*y", "xxxxy"),
            (r"(?i)\bnov\w* ra[čc]una", "NOVOG RAČUNA"),
            (r"[\p{L}]<!--", "ë<!--"),
            (r"[^\p{L}]x", "1x"),
        ] {
            assert!(matches(pattern, text), "{pattern} / {:?}", widen(pattern));
        }
    }

    fn literals(pattern: &str) -> Option<Vec<String>> {
        required_literals(pattern).map(|needed| {
            needed
                .set
                .into_iter()
                .map(|l| String::from_utf8(l).unwrap().to_lowercase())
                .collect()
        })
    }

    #[test]
    fn required_literals_are_what_every_match_contains() {
        assert_eq!(literals(r"(?i)\bviagra\b"), Some(vec!["viagra".into()]));
        assert_eq!(
            literals(r"(?i)(?:free|cheap)\s+(?:pills)"),
            Some(vec!["pills".into()]),
            "the best of the pieces"
        );
        assert_eq!(
            literals(r"(?i)\b(?:lottery|prize)\s\w+"),
            Some(vec!["lottery".into(), "prize".into()])
        );
        assert_eq!(literals(r"click (here)"), Some(vec!["click here".into()]));
        assert_eq!(
            literals(r"(?i)unsubscribe"),
            Some(vec!["unsubscribe".into()])
        );
        assert_eq!(literals(r"(?i)to\s+\w+"), None, "too short");
        assert_eq!(literals(r"(?i)(?:money)?\d+"), None, "optional");
        assert_eq!(literals(r"foo|\d+"), None, "one branch needs nothing");
        assert_eq!(literals(r"[^a]{3}"), None);
        assert_eq!(
            literals(r"(?i)of+ice"),
            Some(vec!["fice".into()]),
            "a repeated letter joins both neighbours"
        );
        assert_eq!(
            literals(r"(?i)(?:cel+|tel+e?)\s"),
            Some(vec!["cel".into(), "tel".into()])
        );
        assert_eq!(
            literals(r"(?i)e-?mai?l\sid"),
            Some(vec![
                "e-mail".into(),
                "e-mal".into(),
                "email".into(),
                "emal".into()
            ]),
            "few spellings make one set"
        );
        assert_eq!(
            literals(r"(?i)(?:name|nome)s?"),
            Some(vec![
                "name".into(),
                "names".into(),
                "nome".into(),
                "nomes".into()
            ])
        );
    }

    #[test]
    fn repeated_groups_need_their_literal_as_often() {
        let times = |p: &str| required_literals(p).map(|n| n.times);
        assert_eq!(times(r"(?i)(?:(?:name|phone)[:\s]+\w+\s*){3}"), Some(3));
        assert_eq!(
            times(r"(?:x(?:name|phone)y?){2}(?:z(?:name|phone)){3}"),
            Some(3)
        );
        assert_eq!(times(r"(?:name|(?:phone){2})"), Some(1));
        assert_eq!(times(r"(?:name\d){0,5}"), None);
        // A line with two form-field words is no candidate for a rule that needs three.
        let rules = [(0, Some(r"(?i)(?:(?:name|phone|address)\W+){3}"))];
        let prefilter = Prefilter::build("test", &[rules[0], (1, Some("zzzq")), (2, Some("qqqz"))]);
        let lines = ["Name: Ann, Phone: 555", "name phone address", "nothing"];
        let found: Vec<(usize, Option<Vec<u32>>)> = prefilter
            .candidates(&lines)
            .into_iter()
            .map(|c| (c.rule, c.lines))
            .collect();
        assert_eq!(found, vec![(0, Some(vec![1]))]);
    }

    #[test]
    fn minimum_length_in_bytes() {
        assert_eq!(minimum_len(r"(?:[a-z]{8,}[\s.]+){6}"), 54);
        assert_eq!(minimum_len(r"^(?:ab|c)d?$"), 1);
        assert_eq!(minimum_len(r"ë"), 2);
        assert_eq!(minimum_len(r"x*"), 0);
        assert_eq!(minimum_len(r"(unclosed"), 0);
    }

    #[test]
    fn literal_folding_matches_unicode_case_folding() {
        // `(?i)k` also matches the Kelvin sign; the folded text has a plain `k` there.
        assert_eq!(literals(r"(?i)kiss"), Some(vec!["kiss".into()]));
        assert_eq!(fold_for_literals("\u{212A}i\u{17F}s"), "kiss");
        assert_eq!(literals(r"(?i)ëmail"), Some(vec!["mail".into()]));
    }

    #[test]
    fn unicode_boundaries_go_the_rest_stays() {
        let p = without_unicode_boundaries(r"\A\bdéjà\b x{0,25}").unwrap();
        assert!(!p.contains(r"\b"), "{p}");
        assert!(p.contains("25") && p.contains(r"\A"), "{p}");
        assert!(Regex::new(&p).unwrap().is_match("déjà xx"));
    }

    /// The prefilter may over-report, never miss: every (rule, line) where the rule's own regex
    /// matches must be among the candidates.
    #[test]
    fn candidates_cover_every_line_a_rule_matches() {
        let patterns = [
            r"(?i)\bviagra\b",
            r"(?i)(?:free|cheap)\s+pills",
            r"(?i)\b(?:lottery|prize)\s\w+",
            r"(?i)kiss",
            r"^\s*hello\z",
            r"[0-9]{3,}",
            r"(?i)ré\w+",
            r"(?i)unsubscribe",
        ];
        let rules: Vec<(usize, Option<&str>)> = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (i, Some(*p)))
            .collect();
        let prefilter = Prefilter::build("test", &rules);
        assert!(prefilter.literals.is_some() && !prefilter.sets.is_empty());
        proptest::proptest!(|(words in proptest::collection::vec(
            proptest::sample::select(vec![
                "VIAGRA", "viagra", "cheap", "free", "pills", "Lottery", "prize", "win", "\u{212A}iss",
                "hello", "  ", "1234", "réveil", "RÉSUMÉ", "Unsubscribe", "x", "\n", "ë",
            ]),
            0..24,
        ))| {
            let text = words.join(" ");
            let lines: Vec<&str> = text.split('\n').collect();
            let found = prefilter.candidates(&lines);
            for (rule, pattern) in patterns.iter().enumerate() {
                let re = Regex::new(pattern).unwrap();
                for (at, line) in lines.iter().enumerate() {
                    if re.is_match(line) {
                        let covered = found.iter().any(|c| {
                            c.rule == rule
                                && c.lines.as_ref().is_none_or(|on| on.contains(&(at as u32)))
                        });
                        proptest::prop_assert!(covered, "rule {pattern} on line {line:?}");
                    }
                }
            }
        });
    }

    #[test]
    fn widening_drops_what_explodes_the_dfa() {
        let w = widen(r"x{0,25}\by{2}").unwrap();
        assert!(!w.contains("25"), "{w}");
        assert!(w.contains("{2}"), "small counts stay: {w}");
        let w = widen(r"(?i)ž\w").unwrap();
        assert!(w.len() < 60, "Unicode classes shrink: {w}");
        let w = widen(r"(?-u:\b)a").unwrap();
        assert!(w.contains(r"\b"), "ASCII boundaries stay: {w}");
    }
}
