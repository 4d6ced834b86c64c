//! Widening a rule's regex into a cheap superset for the multi-pattern prefilter.
//!
//! The prefilter only chooses candidates; each candidate's own regex then decides. So a
//! prefilter pattern may match more than its rule, never less. Widening keeps the lazy DFA
//! of a set of 32 patterns small: counted repetitions of broad classes (`[^.!?]{0,25}`,
//! `(?:\w+\W+){12}`) and Unicode word boundaries are what make its states explode (and its
//! cache thrash), so they go; and a Unicode class keeps only its ASCII members, standing for
//! the rest with "any non-ASCII character".

use regex_syntax::hir::{
    Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look, Repetition,
};

/// Counted repetitions spanning more than this many copies are made open-ended.
const MAX_COUNTED: u32 = 3;
/// Unicode classes with at most this many ranges (`[čc]`, a case-folded letter) stay exact.
const SMALL_CLASS: usize = 16;

/// `pattern` (Rust regex syntax) widened for a prefilter run over all lines of a view joined
/// by `\n`: text anchors become line anchors, Unicode word boundaries are dropped, long
/// counted repetitions become open-ended. `None` when the pattern does not parse.
pub fn widen(pattern: &str) -> Option<String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    Some(widen_hir(hir).to_string())
}

fn widen_hir(hir: Hir) -> Hir {
    match hir.into_kind() {
        HirKind::Look(look) => match look {
            Look::Start => Hir::look(Look::StartLF),
            Look::End => Hir::look(Look::EndLF),
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
            let sub = widen_hir(*rep.sub);
            let span = rep.max.unwrap_or(u32::MAX).saturating_sub(rep.min);
            let (min, max) = if rep.min > MAX_COUNTED || (rep.max.is_some() && span > MAX_COUNTED) {
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
        HirKind::Capture(cap) => widen_hir(*cap.sub),
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(widen_hir).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(widen_hir).collect()),
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0),
        HirKind::Class(class) => Hir::class(widen_class(class)),
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
