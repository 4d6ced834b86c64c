//! One message's scan: each rule's result, found when something first needs it.
//!
//! Reported rules always run. A `__` sub-rule runs only when a meta reading it needs its value,
//! so `A && B` never runs `A` once `B` is known to be 0 (the prefilter found no line `B` may
//! match). A text (a view, a header) is built and prefiltered when the first rule reading it
//! runs. Results are the same as running everything: meta expressions have no side effects.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};

use super::parse::HeaderSource;
use super::prefilter::Candidate;
use super::views::Views;
use super::{Matcher, RuleSet, TextSource, count_matches, find};

/// A rule that is not a candidate on its text.
const NOT_CANDIDATE: u32 = u32::MAX;
/// A count not found yet.
const UNKNOWN: u32 = u32::MAX;

pub(super) struct Scan<'s, 'v> {
    set: &'s RuleSet,
    views: &'v Views<'v>,
    /// Each of the set's texts, once built.
    texts: Vec<OnceCell<TextScan<'v>>>,
    /// Each rule's place in its text's candidates, once that text is built.
    slot: Vec<Cell<u32>>,
    /// Each rule's hit count, or [`UNKNOWN`].
    counts: Vec<Cell<u32>>,
    /// What reported rules matched first, for explanations (few rules hit: kept sparse).
    matched: RefCell<Vec<(usize, String)>>,
}

/// A text's lines and the rules that may match them.
struct TextScan<'v> {
    lines: Vec<Cow<'v, str>>,
    candidates: Vec<Candidate>,
}

impl<'s, 'v> Scan<'s, 'v> {
    pub(super) fn new(set: &'s RuleSet, views: &'v Views<'v>) -> Scan<'s, 'v> {
        let rules = set.rules.len();
        Scan {
            set,
            views,
            texts: (0..set.texts.len()).map(|_| OnceCell::new()).collect(),
            slot: vec![Cell::new(NOT_CANDIDATE); rules],
            counts: vec![Cell::new(UNKNOWN); rules],
            matched: RefCell::new(Vec::new()),
        }
    }

    /// How often rule `index` hit, running it (and what it reads) if not done yet.
    pub(super) fn count(&self, index: usize) -> u32 {
        let count = self.counts[index].get();
        if count != UNKNOWN {
            return count;
        }
        let count = self.run(index);
        self.counts[index].set(count);
        count
    }

    /// The text reported rule `index` matched first, if it hit.
    pub(super) fn matched(&self, index: usize) -> Option<String> {
        let mut matched = self.matched.borrow_mut();
        let at = matched.iter().position(|(i, _)| *i == index)?;
        Some(matched.swap_remove(at).1)
    }

    fn keep_match(&self, index: usize, text: String) {
        if !self.set.rules[index].silent {
            self.matched.borrow_mut().push((index, text));
        }
    }

    fn run(&self, index: usize) -> u32 {
        let rule = &self.set.rules[index];
        if !rule.needed {
            return 0;
        }
        match &rule.matcher {
            Matcher::Exists(name) => u32::from(self.views.has_header(name)),
            Matcher::Meta(expr) => {
                let value = expr.eval_lazy(&|i| f64::from(self.count_for_metas(i)), &|i| {
                    self.known_for_metas(i).map(f64::from)
                });
                u32::from(value != 0.0)
            }
            Matcher::Regex(_) | Matcher::LineAnchored(_) | Matcher::Fancy(..) => {
                self.run_pattern(index)
            }
            Matcher::Unsupported(_) => 0,
        }
    }

    /// A rule's value inside metas: shadow rules (`tflags NAME shadow`) count for nothing
    /// there.
    fn count_for_metas(&self, index: usize) -> u32 {
        if self.is_shadow(index) {
            0
        } else {
            self.count(index)
        }
    }

    /// A rule's value inside metas if it is known without running a pattern: found already,
    /// or settled because the prefilter did not make it a candidate.
    fn known_for_metas(&self, index: usize) -> Option<u32> {
        if self.is_shadow(index) {
            return Some(0);
        }
        let count = self.counts[index].get();
        if count != UNKNOWN {
            return Some(count);
        }
        let rule = &self.set.rules[index];
        if !rule.needed {
            return Some(0);
        }
        match &rule.matcher {
            Matcher::Meta(expr) => {
                let known = expr
                    .known(&|i| self.known_for_metas(i).map(f64::from))
                    .map(|value| u32::from(value != 0.0));
                // Settled is settled: it is the meta's value, and other metas ask again.
                if let Some(count) = known {
                    self.counts[index].set(count);
                }
                known
            }
            Matcher::Regex(_) | Matcher::LineAnchored(_) | Matcher::Fancy(..) => {
                // Building the text costs one prefilter pass, which most texts get anyway;
                // it can save running this rule's sibling in an `&&`.
                self.text(rule.text?);
                (self.slot[index].get() == NOT_CANDIDATE).then(|| self.count(index))
            }
            Matcher::Exists(_) | Matcher::Unsupported(_) => None,
        }
    }

    fn is_shadow(&self, index: usize) -> bool {
        let rule = &self.set.rules[index];
        rule.tflags.shadow && !matches!(rule.matcher, Matcher::Meta(_))
    }

    /// Runs a pattern rule on the lines of its text the prefilter chose.
    fn run_pattern(&self, index: usize) -> u32 {
        let rule = &self.set.rules[index];
        let Some(text_index) = rule.text else {
            return 0;
        };
        let text = self.text(text_index);
        let candidate = match self.slot[index].get() {
            NOT_CANDIDATE => None,
            slot => Some(&text.candidates[slot as usize]),
        };
        let lines = || {
            candidate
                .into_iter()
                .flat_map(|c| c.on(&text.lines))
                .filter(|line| line.len() >= rule.min_len)
        };
        let keep = !rule.silent;
        if let Some(test) = &rule.header {
            let found = if text.lines.is_empty() {
                test.unset_match.clone()
            } else {
                lines().find_map(|line| find(&rule.matcher, line, keep))
            };
            return match (found, test.negate) {
                (Some(m), false) => {
                    self.keep_match(index, m);
                    1
                }
                (None, true) => 1,
                _ => 0,
            };
        }
        let limit = if rule.tflags.multiple {
            rule.tflags.maxhits.unwrap_or(u32::MAX)
        } else {
            1
        };
        let mut first = None;
        let mut count = 0u32;
        for line in lines() {
            if count >= limit {
                break;
            }
            if rule.tflags.multiple {
                // Every match counts, several in one line too (up to `maxhits`).
                let (found, matched) = count_matches(&rule.matcher, line, limit - count);
                first = first.or(matched);
                count += found;
            } else if let Some(m) = find(&rule.matcher, line, keep) {
                first = first.or(Some(m));
                count += 1;
            }
        }
        if let Some(first) = first {
            self.keep_match(index, first);
        }
        count
    }

    /// Text `index` of the set, built and prefiltered on first use.
    fn text(&self, index: usize) -> &TextScan<'v> {
        self.texts[index].get_or_init(|| {
            let text = &self.set.texts[index];
            let lines: Vec<Cow<'v, str>> = match text.source {
                TextSource::View(view) => self
                    .views
                    .lines(view)
                    .into_iter()
                    .map(Cow::Borrowed)
                    .collect(),
                TextSource::Header(key) => {
                    let (source, part) = &self.set.header_keys[key];
                    // A MIME header has one value per part, each tested on its own (anchors
                    // mean the start of that value); others have one value, or none.
                    let values = match source {
                        HeaderSource::Mime(name) => self.views.mime_header(name, *part),
                        _ => self.views.header(source, *part).into_iter().collect(),
                    };
                    values.into_iter().map(Cow::Owned).collect()
                }
            };
            let candidates = if lines.is_empty() {
                Vec::new()
            } else {
                text.prefilter.candidates(&lines)
            };
            for (slot, candidate) in candidates.iter().enumerate() {
                self.slot[candidate.rule].set(slot as u32);
            }
            TextScan { lines, candidates }
        })
    }
}
