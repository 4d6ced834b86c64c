//! Perl regular expressions, as SpamAssassin rule files write them, made into Rust regexes.
//!
//! Most of Perl's syntax means the same in Rust's `regex`; this module rewrites the parts that
//! do not (`$` and `\Z`, `\h`, `\v`, `\e`, octal escapes, a literal `{` or `[`, `/x` whitespace,
//! `\Q..\E`, ...). What `regex` cannot express at all (backreferences, lookaround, atomic
//! groups) is marked for `fancy-regex`, which runs with a backtracking limit so no rule and no
//! message can make a scan hang.

use std::fmt;

/// A rule's pattern with its flags, as written: `/re/flags`, `m{re}flags`, `m!re!flags`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerlPattern {
    pub source: String,
    pub flags: String,
}

/// Which engine a translated pattern needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Rust's `regex`: linear time, goes into the multi-pattern prefilter.
    Regex,
    /// `fancy-regex` with a backtracking limit: backreferences, lookaround, atomic groups.
    Fancy,
}

/// A pattern ready for the Rust engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// Rust syntax, flags included as a leading `(?ims)` group.
    pub pattern: String,
    pub engine: Engine,
}

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `/re/flags` (or `m{re}flags`, `m!re!flags`, ...) into pattern and flags.
pub fn split_delimited(text: &str) -> Result<PerlPattern, PatternError> {
    let text = text.trim();
    let (open, rest) = if let Some(rest) = text.strip_prefix('m') {
        let open = rest
            .chars()
            .next()
            .ok_or_else(|| PatternError("empty pattern".into()))?;
        if open.is_alphanumeric() || open.is_whitespace() {
            return Err(PatternError(format!("`{text}` is not a /pattern/")));
        }
        (open, &rest[open.len_utf8()..])
    } else if let Some(rest) = text.strip_prefix('/') {
        ('/', rest)
    } else {
        return Err(PatternError(format!("`{text}` is not a /pattern/")));
    };
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        '<' => '>',
        c => c,
    };
    // Find the closing delimiter: not escaped, and for brackets, balanced.
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == open && open != close {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                let flags = rest[i + c.len_utf8()..].trim().to_string();
                if let Some(bad) = flags.chars().find(|f| !"imsxgoaulnpcer".contains(*f)) {
                    return Err(PatternError(format!("unknown regex flag `{bad}`")));
                }
                let mut source = rest[..i].to_string();
                if open == close && open != '/' {
                    // m!a\!b! means the pattern a!b.
                    source = source.replace(&format!("\\{open}"), &open.to_string());
                }
                return Ok(PerlPattern { source, flags });
            }
            depth -= 1;
        }
    }
    Err(PatternError(format!("no closing `{close}` in `{text}`")))
}

/// Translates a Perl pattern into Rust syntax and picks the engine it needs.
pub fn translate(p: &PerlPattern) -> Result<Translated, PatternError> {
    let flag = |f| p.flags.contains(f);
    let extended = flag('x');
    let multiline = flag('m');
    let mut out = String::with_capacity(p.source.len() + 16);
    let mut fancy = false;
    let chars: Vec<char> = p.source.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    // Position in `out` where the current class's content starts (to allow a leading `]`).
    let mut class_start = 0usize;
    let mut last_class_char: Option<char> = None;
    let mut quoting = false;
    let groups = count_groups(&chars);
    let ascii_words = p.source.is_ascii() && !p.source.contains("\\p") && !p.source.contains("\\P");

    while i < chars.len() {
        let c = chars[i];
        if quoting {
            if c == '\\' && chars.get(i + 1) == Some(&'E') {
                quoting = false;
                i += 2;
            } else {
                push_literal(&mut out, c);
                i += 1;
            }
            continue;
        }
        if c == '\\' {
            let Some(&next) = chars.get(i + 1) else {
                return Err(PatternError("pattern ends with a lone backslash".into()));
            };
            i += 2;
            match next {
                'Q' => quoting = true,
                'E' => {}
                'z' if !in_class => out.push_str(r"\z"),
                'Z' if !in_class => out.push_str(r"(?:\n?\z)"),
                'A' if !in_class => out.push_str(r"\A"),
                'G' | 'K' => return Err(PatternError(format!("\\{next} is not supported"))),
                '<' | '>' => push_literal(&mut out, next),
                'h' => out.push_str(if in_class {
                    r"\t\x20\xA0"
                } else {
                    r"[\t\x20\xA0]"
                }),
                'H' if !in_class => out.push_str(r"[^\t\x20\xA0]"),
                'v' => out.push_str(if in_class {
                    r"\n\x0B\f\r"
                } else {
                    r"[\n\x0B\f\r]"
                }),
                'V' if !in_class => out.push_str(r"[^\n\x0B\f\r]"),
                'R' if !in_class => out.push_str(r"(?:\r\n|[\n\x0B\f\r])"),
                'N' if !in_class && chars.get(i) != Some(&'{') => out.push_str(r"[^\n]"),
                'e' => out.push_str(r"\x1B"),
                'c' => {
                    let ctl = chars.get(i).copied().unwrap_or('@');
                    i += 1;
                    out.push_str(&format!(
                        "\\x{:02X}",
                        (ctl.to_ascii_uppercase() as u32) ^ 0x40
                    ));
                }
                '0' => {
                    // Octal: \0, \012.
                    let mut value = 0u32;
                    let mut n = 0;
                    while n < 2 && chars.get(i).is_some_and(|d| ('0'..='7').contains(d)) {
                        value = value * 8 + chars[i].to_digit(8).unwrap();
                        i += 1;
                        n += 1;
                    }
                    out.push_str(&format!("\\x{{{value:X}}}"));
                }
                '1'..='9' if !in_class && is_backreference(&chars, i - 1, groups) => {
                    fancy = true;
                    out.push('\\');
                    out.push(next);
                    while chars.get(i).is_some_and(|d| d.is_ascii_digit()) {
                        out.push(chars[i]);
                        i += 1;
                    }
                }
                '1'..='7' => {
                    let mut value = next.to_digit(8).unwrap();
                    let mut n = 1;
                    while n < 3 && chars.get(i).is_some_and(|d| ('0'..='7').contains(d)) {
                        value = value * 8 + chars[i].to_digit(8).unwrap();
                        i += 1;
                        n += 1;
                    }
                    out.push_str(&format!("\\x{{{value:X}}}"));
                }
                'g' | 'k' if !in_class => {
                    fancy = true;
                    out.push('\\');
                    out.push(next);
                }
                // Escapes Rust reads the same way.
                'd' | 'D' | 'w' | 'W' | 's' | 'S' | 'b' | 'B' | 't' | 'n' | 'r' | 'f' | 'a'
                | 'x' | 'p' | 'P' => {
                    if in_class && (next == 'b' || next == 'B') {
                        // \b in a class is a backspace in Perl.
                        out.push_str(r"\x08");
                    } else if ascii_words && matches!(next, 'w' | 'W' | 'd' | 'D' | 's' | 'S') {
                        // ASCII classes for ASCII patterns: Perl's byte semantics, and DFAs a
                        // fraction of the size of Unicode ones.
                        out.push_str(match next {
                            'w' => {
                                if in_class {
                                    "0-9A-Za-z_"
                                } else {
                                    "[0-9A-Za-z_]"
                                }
                            }
                            'W' => "[^0-9A-Za-z_]",
                            'd' => {
                                if in_class {
                                    "0-9"
                                } else {
                                    "[0-9]"
                                }
                            }
                            'D' => "[^0-9]",
                            's' => {
                                if in_class {
                                    r"\t\n\x0B\f\r\x20"
                                } else {
                                    r"[\t\n\x0B\f\r\x20]"
                                }
                            }
                            _ => r"[^\t\n\x0B\f\r\x20]",
                        });
                    } else if (next == 'b' || next == 'B') && ascii_words {
                        // An ASCII-only pattern gets ASCII word boundaries, as SpamAssassin's
                        // byte-oriented Perl has them; this also keeps Rust's DFAs usable on
                        // non-ASCII text, where a Unicode \b forces the slow engine.
                        out.push_str(if next == 'b' {
                            r"(?-u:\b)"
                        } else {
                            r"(?-u:\B)"
                        });
                    } else {
                        out.push('\\');
                        out.push(next);
                        // \p{Letter}, \x{200B}: the braces belong to the escape.
                        if matches!(next, 'p' | 'P' | 'x') && chars.get(i) == Some(&'{') {
                            while i < chars.len() {
                                out.push(chars[i]);
                                i += 1;
                                if chars[i - 1] == '}' {
                                    break;
                                }
                            }
                        }
                    }
                }
                ' ' => out.push_str(r"\x20"),
                c if c.is_ascii_alphanumeric() => push_literal(&mut out, c), // Perl: unknown escape = the letter
                c => push_literal(&mut out, c),
            }
            if in_class {
                last_class_char = Some('\\');
            }
            continue;
        }
        if in_class {
            match c {
                ']' if out.len() > class_start => {
                    out.push(']');
                    in_class = false;
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // A POSIX class like [:alpha:]: copy through its closing :].
                    let rest: String = chars[i..].iter().collect();
                    let end = rest
                        .find(":]")
                        .ok_or_else(|| PatternError("unterminated [: :] class".into()))?;
                    out.push_str(&rest[..end + 2]);
                    i += rest[..end + 2].chars().count();
                    last_class_char = Some(']');
                    continue;
                }
                // Rust gives these meaning inside classes (nesting, set operations); Perl does not.
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if last_class_char == Some('-') => out.push_str(r"\-"),
                c => out.push(c),
            }
            last_class_char = Some(c);
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = out.len();
                last_class_char = None;
                continue;
            }
            '$' => {
                if multiline {
                    out.push('$');
                } else {
                    // Perl: end of string, or before a newline that ends it.
                    out.push_str(r"(?:\n?\z)");
                }
            }
            '{' => {
                let rest: String = chars[i..].iter().take(24).collect();
                match quantifier_len(&rest) {
                    Some(len) => {
                        out.push_str(&rest[..len]);
                        i += len;
                        if chars.get(i) == Some(&'+') {
                            fancy = true;
                        }
                        continue;
                    }
                    None => out.push_str(r"\{"),
                }
            }
            '}' => out.push_str(r"\}"),
            '(' if chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars[i..].iter().take(4).collect();
                if rest.starts_with("(?#") {
                    // A comment group: drop it.
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                    continue;
                }
                if rest.starts_with("(?=")
                    || rest.starts_with("(?!")
                    || rest.starts_with("(?<=")
                    || rest.starts_with("(?<!")
                    || rest.starts_with("(?>")
                {
                    fancy = true;
                } else if rest.starts_with("(?|")
                    || rest.starts_with("(?(")
                    || rest.starts_with("(?{")
                    || rest.starts_with("(??")
                    || rest.starts_with("(?R")
                    || rest.starts_with("(?&")
                {
                    return Err(PatternError(format!("`{rest}…` groups are not supported")));
                } else if rest.starts_with("(?'") {
                    out.push_str("(?P<");
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        out.push(chars[i]);
                        i += 1;
                    }
                    out.push('>');
                    i += 1;
                    continue;
                } else if rest.starts_with("(?^") {
                    out.push_str("(?-imsx");
                    i += 3;
                    continue;
                }
                out.push('(');
            }
            c if extended && c.is_whitespace() => {}
            '#' if extended => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            c => {
                out.push(c);
                // Possessive quantifiers (a++, a*+, a?+) need fancy-regex.
                if matches!(c, '+' | '*' | '?')
                    && chars.get(i + 1) == Some(&'+')
                    && i > 0
                    && chars[i - 1] != '\\'
                {
                    fancy = true;
                }
            }
        }
        i += 1;
    }
    if in_class {
        return Err(PatternError("unterminated [character class]".into()));
    }

    let mut prefix = String::new();
    for (perl, rust) in [('i', 'i'), ('m', 'm'), ('s', 's')] {
        if flag(perl) {
            prefix.push(rust);
        }
    }
    if fancy {
        // fancy-regex has its own parser, which does not take the `u` flag.
        out = out.replace(r"(?-u:\b)", r"\b").replace(r"(?-u:\B)", r"\B");
    }
    // Perl's rules see bytes; Kala's see decoded text. "Any byte from 0x80" (8-bit content)
    // is "any character past ASCII" once decoded, not just Latin-1's.
    // So a class range that runs to byte 0xFF runs to the last character.
    static TO_FF: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(\\x(?:[0-7][0-9a-fA-F]|80|\{[0-7]?[0-9a-fA-F]\}|\{80\}))-\\x(?:[fF]{2}|\{[fF]{2}\})",
        )
        .expect("valid")
    });
    out = TO_FF.replace_all(&out, r"$1-\x{10FFFF}").into_owned();
    let pattern = if prefix.is_empty() {
        out
    } else {
        format!("(?{prefix}){out}")
    };
    Ok(Translated {
        pattern,
        engine: if fancy { Engine::Fancy } else { Engine::Regex },
    })
}

/// A pattern for Rust's `regex` that matches at least wherever `pattern` (in fancy-regex
/// syntax) matches: lookarounds dropped, backreferences and `\K`-free constructs widened,
/// atomic groups and possessive quantifiers made ordinary. `None` if that is not possible.
pub fn relax(pattern: &str) -> Option<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let next = *chars.get(i + 1)?;
            if !in_class && (next.is_ascii_digit() && next != '0' || next == 'g' || next == 'k') {
                // A backreference: any text.
                out.push_str("(?s:.*?)");
                i += 2;
                if (next == 'g' || next == 'k') && matches!(chars.get(i), Some('{') | Some('<')) {
                    while i < chars.len() && !matches!(chars[i], '}' | '>') {
                        i += 1;
                    }
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                continue;
            }
            out.push(c);
            out.push(next);
            i += 2;
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push(c);
                i += 1;
                // A leading ] or ^] is literal.
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push(']');
                    i += 1;
                }
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
                if rest.starts_with("(?=")
                    || rest.starts_with("(?!")
                    || rest.starts_with("(?<=")
                    || rest.starts_with("(?<!")
                {
                    i = skip_group(&chars, i)?;
                } else if rest.starts_with("(?>") {
                    out.push_str("(?:");
                    i += 3;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            '+' if i > 0
                && matches!(chars[i - 1], '+' | '*' | '?' | '}')
                && !out.ends_with("\\+") =>
            {
                // The second + of a possessive quantifier.
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The index just past the group that opens at `start` (escapes and classes respected).
pub(super) fn skip_group(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = start;
    let mut in_class = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Capturing groups in the pattern: `(` not escaped, not in a class, not `(?...)`.
fn count_groups(chars: &[char]) -> usize {
    let (mut n, mut i, mut in_class) = (0, 0, false);
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class && chars.get(i + 1) != Some(&'?') => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

/// Perl's rule for `\NNN` (the digits start at `at`): a backreference when it is a single
/// digit or names an existing group, otherwise an octal escape.
fn is_backreference(chars: &[char], at: usize, groups: usize) -> bool {
    let digits: String = chars[at..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.len() == 1 || digits.parse::<usize>().is_ok_and(|n| n <= groups)
}

/// Length of a valid quantifier `{n}`, `{n,}`, `{n,m}` (also `{,m}`) at the start, if any.
fn quantifier_len(s: &str) -> Option<usize> {
    let end = s.find('}')?;
    let inner = &s[1..end];
    let valid = match inner.split_once(',') {
        None => !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()),
        Some((a, b)) => {
            a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
                && !a.is_empty()
        }
    };
    valid.then_some(end + 1)
}

fn push_literal(out: &mut String, c: char) {
    if c == ' ' {
        out.push_str(r"\x20");
    } else if regex_syntax::is_meta_character(c) {
        out.push('\\');
        out.push(c);
    } else {
        // Not every punctuation may be escaped: Rust reads `\<` and `\>` as word boundaries.
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(rule: &str) -> Translated {
        translate(&split_delimited(rule).unwrap()).unwrap()
    }

    fn matches(rule: &str, text: &str) -> bool {
        let t = rust(rule);
        match t.engine {
            Engine::Regex => regex::Regex::new(&t.pattern)
                .unwrap_or_else(|e| panic!("{rule} -> {}: {e}", t.pattern))
                .is_match(text),
            Engine::Fancy => fancy_regex::Regex::new(&t.pattern)
                .unwrap()
                .is_match(text)
                .unwrap(),
        }
    }

    #[test]
    fn delimiters_and_flags() {
        assert_eq!(
            split_delimited("/a\\/b/i").unwrap(),
            PerlPattern {
                source: "a\\/b".into(),
                flags: "i".into()
            }
        );
        assert_eq!(
            split_delimited("m{a{2}b}s").unwrap(),
            PerlPattern {
                source: "a{2}b".into(),
                flags: "s".into()
            }
        );
        assert_eq!(split_delimited("m!a\\!b!").unwrap().source, "a!b");
        assert!(split_delimited("/unclosed").is_err());
        assert!(split_delimited("/x/q").is_err());
    }

    #[test]
    fn perl_meanings_are_kept() {
        assert!(matches("/foo$/", "foo\n"), "$ before a final newline");
        assert!(!matches("/foo$/", "foo\nbar"));
        assert!(matches("/foo$/m", "foo\nbar"));
        assert!(matches("/a\\Z/", "a\n"));
        assert!(matches("/x{/", "x{"), "literal brace");
        assert!(matches("/a{2,}/", "aa"));
        assert!(matches("/[[]/", "["), "literal [ in a class");
        assert!(matches("/[a&&b]/", "&"));
        assert!(matches("/\\<b\\>/", "<b>"), "\\< is a literal <");
        assert!(matches("/a\\hb/", "a b"));
        assert!(matches("/a b # comment\n c/x", "abc"));
        assert!(matches("/[ ]x/x", " x"), "space in a class stays under /x");
        assert!(matches("/\\Qa.b\\E/", "a.b"));
        assert!(!matches("/\\Qa.b\\E/", "axb"));
        assert!(matches("/\\101/", "A"), "octal escape");
        assert!(
            matches(r#"/".*"\s*\</"#, r#""Ana" <a@b>"#),
            "\\< is a literal <"
        );
        assert!(!matches(r"/x\>/", "xy"), "\\> is a literal >");
        assert!(
            matches(r"/[\x80-\xff]/", "a “quote”"),
            "8-bit means any non-ASCII"
        );
        assert!(matches("/fo(?#comment)o/", "foo"));
        assert!(matches("/FREE/i", "free"));
        assert!(matches("/[[:upper:]]{3}/", "ABC"));
        assert!(matches("/\\p{L}x/", "ëx"), "\\p{{..}} outside a class");
        assert!(
            matches("/a\\x{200B}b/", "a\u{200B}b"),
            "\\x{{..}} outside a class"
        );
    }

    #[test]
    fn lookaround_and_backreferences_go_to_fancy() {
        assert_eq!(rust("/(a)\\1/").engine, Engine::Fancy);
        assert!(matches("/(a)\\1/", "aa"));
        assert_eq!(rust("/foo(?!bar)/").engine, Engine::Fancy);
        assert!(matches("/foo(?!bar)/", "foobaz"));
        assert_eq!(rust("/(?<=x)y/").engine, Engine::Fancy);
        assert_eq!(rust("/a/").engine, Engine::Regex);
    }

    #[test]
    fn relaxed_patterns_match_a_superset() {
        assert_eq!(relax(r"foo(?!bar)x").unwrap(), "foox");
        assert_eq!(relax(r"(?<=a)b(?=c)").unwrap(), "b");
        assert_eq!(relax(r"(a)\1").unwrap(), "(a)(?s:.*?)");
        assert_eq!(relax(r"(?>ab)c++").unwrap(), "(?:ab)c+");
        assert_eq!(relax(r"[(?!]x").unwrap(), "[(?!]x");
    }

    #[test]
    fn unsupported_constructs_are_errors() {
        assert!(translate(&split_delimited("/a\\Gb/").unwrap()).is_err());
        assert!(translate(&split_delimited("/(?{ code })/").unwrap()).is_err());
    }
}
