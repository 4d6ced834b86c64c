//! The texts rules look at, with SpamAssassin's meaning, built from the parsed [`Message`].
//!
//! - `body`: the Subject, then the decoded text parts and the HTML parts rendered to text, as
//!   paragraphs (one per line, runs of whitespace squeezed to one space).
//! - `rawbody`: the decoded text parts, HTML as source, line by line.
//! - `uri`: every URL found, each on its own (a scheme-less `www.` link also as `http://...`).
//! - `full`: the raw message.
//! - headers: decoded unless `:raw`; all instances of a header joined with newlines.

use std::borrow::Cow;
use std::cell::OnceCell;

use crate::envelope::Envelope;
use crate::message::{HeaderField, Message};
use crate::received::{self, Relays};

use super::parse::{HeaderPart, HeaderSource, View};

/// SpamAssassin's `body_part_scan_size`: body rules see at most this much of each part, which
/// also bounds the time any rule can take.
const PART_SCAN_LIMIT: usize = 50_000;
/// SpamAssassin's `MAX_BODY_LINE_LENGTH`: the size of the pieces rawbody rules see, and the
/// longest paragraph body rules see (a longer one is cut after a space).
const CHUNK: usize = 2048;
/// `rawbody_part_scan_size`.
const RAW_PART_SCAN_LIMIT: usize = 500_000;

/// The texts of one message, each built on first use (a rule set with no `full` rules never
/// pays for the raw message as text) and then shared by all rules.
pub struct Views<'a> {
    message: &'a Message,
    envelope: &'a Envelope,
    body: OnceCell<Vec<String>>,
    rawbody: OnceCell<Vec<&'a str>>,
    uris: OnceCell<Vec<String>>,
    full: OnceCell<Cow<'a, str>>,
    relays: OnceCell<Relays>,
}

impl<'a> Views<'a> {
    pub fn new(message: &'a Message, envelope: &'a Envelope) -> Views<'a> {
        Views {
            message,
            envelope,
            body: OnceCell::new(),
            rawbody: OnceCell::new(),
            uris: OnceCell::new(),
            full: OnceCell::new(),
            relays: OnceCell::new(),
        }
    }

    /// The lines a view's rules run on, one by one.
    pub fn lines(&self, view: View) -> Vec<&str> {
        match view {
            View::Body => self.body().iter().map(String::as_str).collect(),
            View::RawBody => self.rawbody().clone(),
            View::Uri => self.uris().iter().map(String::as_str).collect(),
            View::Full => vec![self.full()],
            View::Header => Vec::new(),
        }
    }

    /// The Subject first (as in SpamAssassin), then each text part and each HTML part
    /// rendered to text, as paragraphs.
    pub fn body(&self) -> &[String] {
        self.body.get_or_init(|| {
            let message = self.message;
            let subject = message.subject.as_deref().unwrap_or("");
            let mut body = vec![subject.split_whitespace().collect::<Vec<_>>().join(" ")];
            // SpamAssassin joins the parts with a line feed, then splits into paragraphs.
            let mut text = String::new();
            let parts = message.text_parts.iter().map(String::as_str);
            for part in parts.chain(message.html_parts.iter().map(|h| h.text.as_str())) {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(truncate(part, PART_SCAN_LIMIT));
            }
            let mut long = Vec::new();
            paragraphs(&text, &mut long);
            for paragraph in long {
                short_lines(paragraph, &mut body);
            }
            body
        })
    }

    /// Decoded text parts and HTML source, in chunks of a few lines (see [`short_chunks`]).
    pub fn rawbody(&self) -> &Vec<&'a str> {
        self.rawbody.get_or_init(|| {
            let message = self.message;
            let mut chunks = Vec::new();
            for part in message
                .text_parts
                .iter()
                .chain(message.html_parts.iter().map(|h| &h.html))
            {
                short_chunks(truncate(part, RAW_PART_SCAN_LIMIT), &mut chunks);
            }
            chunks
        })
    }

    /// Every URL; a scheme-less one (`www.example.org`) also with `http://` in front.
    pub fn uris(&self) -> &[String] {
        self.uris.get_or_init(|| {
            let mut uris = Vec::with_capacity(self.message.urls.len());
            for found in &self.message.urls {
                let url = found.url.as_str();
                let mut forms = vec![url.to_string()];
                if !url.contains("://") && !url.starts_with("mailto:") {
                    forms.push(format!("http://{url}"));
                }
                // Spam hides hosts behind %-escapes and a decoy user name
                // (`http://%31%32@%34%2E...`): rules see those undone too, as in SpamAssassin.
                for i in 0..forms.len() {
                    let decoded = percent_decoded(&forms[i]);
                    if let Some(bare) = without_userinfo(&decoded) {
                        forms.push(bare);
                    }
                    forms.push(decoded);
                }
                for form in forms {
                    if !uris.contains(&form) {
                        uris.push(form);
                    }
                }
            }
            uris
        })
    }

    /// The raw message as text (borrowed when it is valid UTF-8, as most mail is).
    pub fn full(&self) -> &str {
        self.full
            .get_or_init(|| String::from_utf8_lossy(&self.message.raw))
    }

    /// The message's relays, parsed from its Received headers once.
    fn relays(&self) -> &Relays {
        self.relays
            .get_or_init(|| Relays::from_headers(&self.message.headers))
    }

    /// What a header rule reads; `None` when the header is absent.
    pub fn header(&self, source: &HeaderSource, part: HeaderPart) -> Option<String> {
        let headers = &self.message.headers;
        // `ALL` and `ALL-*`: `Name: value` lines.
        let lines = |headers: &[HeaderField]| {
            let raw = matches!(
                part,
                HeaderPart::Raw | HeaderPart::RawAddr | HeaderPart::RawDisplayName
            );
            let mut all = String::new();
            for h in headers {
                all.push_str(&h.name);
                all.push_str(": ");
                all.push_str(if raw { &h.raw } else { &h.decoded });
                all.push('\n');
            }
            all
        };
        let pick = |names: &[&str]| -> Option<String> {
            let values: Vec<String> = headers
                .iter()
                .filter(|h| names.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
                .map(|h| part_of(h, part))
                .collect();
            (!values.is_empty()).then(|| values.join("\n"))
        };
        match source {
            HeaderSource::Named(name) => pick(&[name.as_str()]),
            HeaderSource::ToCc => pick(&["To", "Cc"]),
            HeaderSource::MessageId => pick(&["Message-Id", "Resent-Message-Id", "X-Message-Id"]),
            HeaderSource::EnvelopeFrom => {
                if !self.envelope.sender.is_empty() {
                    Some(self.envelope.sender.clone())
                } else {
                    pick(&["Return-Path"]).map(|v| address(&v))
                }
            }
            HeaderSource::Mime(name) => {
                let values = self.mime_header(name, part);
                (!values.is_empty()).then(|| values.join("\n"))
            }
            HeaderSource::All => Some(lines(headers)),
            HeaderSource::AllBy(trust) => {
                let block = self.relays().header_block(*trust, headers);
                (!block.is_empty()).then(|| lines(block))
            }
            // Always set, if only to the empty string, as in SpamAssassin.
            HeaderSource::Relays(trust) => {
                let text = received::render(self.relays().of(*trust));
                Some(match part {
                    HeaderPart::Addr | HeaderPart::RawAddr => address(&text),
                    HeaderPart::DisplayName | HeaderPart::RawDisplayName => display_name(&text),
                    HeaderPart::Decoded | HeaderPart::Raw => text,
                })
            }
        }
    }

    /// Each value of header `name` in any MIME part, the message's own headers included (as
    /// SpamAssassin's `mimeheader` reads them).
    pub fn mime_header(&self, name: &str, part: HeaderPart) -> Vec<String> {
        self.message
            .part_headers
            .iter()
            .flatten()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| part_of(h, part))
            .collect()
    }

    /// `exists:Name`, pseudo-headers (`ToCc`, `MESSAGEID`, ...) included.
    pub fn has_header(&self, name: &str) -> bool {
        let any = |names: &[&str]| {
            self.message
                .headers
                .iter()
                .any(|h| names.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        };
        match name {
            "ToCc" => any(&["To", "Cc"]),
            "MESSAGEID" => any(&["Message-Id", "Resent-Message-Id", "X-Message-Id"]),
            "EnvelopeFrom" => !self.envelope.sender.is_empty() || any(&["Return-Path"]),
            "ALL" => !self.message.headers.is_empty(),
            n => any(&[n]),
        }
    }
}

/// SpamAssassin's paragraph rule (its `Message.pm`): a whitespace run holding two or more
/// line breaks ends a paragraph, and every other whitespace run becomes one space. Whitespace
/// before a break's first line feed and after its last one stays, as a space at the edge of
/// the paragraph: rules anchored with `^` see it, as they do in SpamAssassin. Words are copied
/// as whole slices: this runs over every byte of every text part.
fn paragraphs(text: &str, out: &mut Vec<String>) {
    let mut current = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(char::is_whitespace) {
        current.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        match (run.find('\n'), run.rfind('\n')) {
            (Some(first), Some(last)) if first != last => {
                // (A carriage return before the line feed is part of the line break.)
                if run[..first].chars().any(|c| c != '\r') {
                    current.push(' ');
                }
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                if last + 1 < run.len() {
                    current.push(' ');
                }
            }
            _ => current.push(' '),
        }
        rest = &rest[start + run_len..];
    }
    current.push_str(rest);
    if !current.is_empty() {
        out.push(current);
    }
}

/// A paragraph longer than [`CHUNK`] bytes in pieces, each cut after its last space within
/// that length (or at it, when there is none), as SpamAssassin's
/// `split_into_array_of_short_lines` does.
fn short_lines(mut paragraph: String, out: &mut Vec<String>) {
    while paragraph.len() > CHUNK {
        let mut cut = match paragraph.as_bytes()[..=CHUNK]
            .iter()
            .rposition(|&b| b == b' ')
        {
            Some(space) if space > 0 => space + 1,
            _ => CHUNK,
        };
        while !paragraph.is_char_boundary(cut) {
            cut -= 1;
        }
        let rest = paragraph.split_off(cut);
        out.push(std::mem::replace(&mut paragraph, rest));
    }
    out.push(paragraph);
}

/// What a header rule with this modifier reads of one header field.
fn part_of(h: &HeaderField, part: HeaderPart) -> String {
    match part {
        HeaderPart::Decoded => h.decoded.clone(),
        HeaderPart::Raw => h.raw.clone(),
        HeaderPart::Addr => address(&h.decoded),
        HeaderPart::DisplayName => display_name(&h.decoded),
        HeaderPart::RawAddr => address(&h.raw),
        HeaderPart::RawDisplayName => display_name(&h.raw),
    }
}

/// `%XX` escapes decoded (invalid UTF-8 shown as U+FFFD); other text unchanged.
fn percent_decoded(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://user@host/...` as `scheme://host/...`; `None` when there is no user part.
fn without_userinfo(url: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    Some(format!("{}{}", &url[..start], &url[at + 1..]))
}

/// SpamAssassin's rawbody unit: a part of up to [`CHUNK`] bytes is one piece, newlines and
/// all; a longer one is cut into pieces of [`CHUNK`] to twice that, preferably just after a
/// newline, else after a `>` (HTML), else after a space. So a rawbody rule may match across
/// a few lines, and `^`/`$` mean the piece's ends, as they do in SpamAssassin.
fn short_chunks<'t>(text: &'t str, out: &mut Vec<&'t str>) {
    let mut start = 0;
    while text.len() - start > 2 * CHUNK {
        let from = char_boundary(text, start + CHUNK);
        let fits = |at: usize| at + 1 - start <= 2 * CHUNK;
        let end = [b'\n', b'>', b' ']
            .iter()
            .find_map(|&byte| {
                memchr::memchr(byte, &text.as_bytes()[from..])
                    .map(|i| from + i)
                    .filter(|&at| fits(at))
            })
            .map(|at| at + 1)
            .unwrap_or(from);
        out.push(&text[start..end]);
        start = end;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
}

/// `at`, moved forward to the next character boundary.
fn char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first address in a header value: `<a@b>` or a bare `a@b`.
fn address(value: &str) -> String {
    if let Some(start) = value.find('<')
        && let Some(len) = value[start + 1..].find('>')
    {
        return value[start + 1..start + 1 + len].trim().to_string();
    }
    value
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .find(|w| w.contains('@'))
        .unwrap_or("")
        .trim_matches(|c| c == '"' || c == '(' || c == ')')
        .to_string()
}

/// The display name of the first address (`"Ana" <a@b>` → `Ana`), empty when there is none.
fn display_name(value: &str) -> String {
    match value.find('<') {
        Some(start) => value[..start].trim().trim_matches('"').trim().to_string(),
        None => match (value.find('('), value.rfind(')')) {
            (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_string(),
            _ => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_squeeze_whitespace() {
        let mut out = Vec::new();
        paragraphs("line one\nstill one\n\n\nsecond   para\t x\n", &mut out);
        assert_eq!(out, ["line one still one", "second para x "]);
        let mut out = Vec::new();
        paragraphs("\n\nlead\u{a0}nbsp ë\r\n\r\nlast", &mut out);
        assert_eq!(out, ["lead nbsp ë", "last"]);
        // Whitespace around a break's line feeds stays as a space at the paragraph's edge.
        let mut out = Vec::new();
        paragraphs("a \n \n  b", &mut out);
        assert_eq!(out, ["a ", " b"]);
    }

    #[test]
    fn long_paragraphs_are_cut_after_a_space() {
        let mut out = Vec::new();
        short_lines(
            format!("{} {}", "a".repeat(2000), "b".repeat(100)),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].ends_with(' ') && out[1] == "b".repeat(100));
        let mut out = Vec::new();
        short_lines("ë".repeat(1500), &mut out);
        assert!(out.iter().all(|l| l.len() <= CHUNK));
        assert_eq!(out.concat(), "ë".repeat(1500));
    }

    #[test]
    fn rawbody_pieces_keep_short_parts_whole_and_cut_long_ones_after_a_newline() {
        let mut out = Vec::new();
        short_chunks("<a\nonmouseover=x>\nline\n", &mut out);
        assert_eq!(out, ["<a\nonmouseover=x>\nline\n"]);
        let long = format!(
            "{}\n{}\n{}",
            "a".repeat(3000),
            "b".repeat(3000),
            "c".repeat(10)
        );
        let mut out = Vec::new();
        short_chunks(&long, &mut out);
        assert_eq!(out.concat(), long);
        assert_eq!(
            out[0].len(),
            3001,
            "cut just after the first newline past 2048"
        );
        assert!(
            out.iter().all(|c| c.len() <= 2 * CHUNK + 1),
            "{:?}",
            out.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn hidden_hosts_are_uncovered() {
        let url = "http://%31%30@%34%2E%34%37%2E%39%36%2E%31%34%31/m.html";
        assert_eq!(percent_decoded(url), "http://10@4.47.96.141/m.html");
        assert_eq!(
            without_userinfo(&percent_decoded(url)).as_deref(),
            Some("http://4.47.96.141/m.html")
        );
        assert_eq!(without_userinfo("http://a.example/x@y"), None);
        assert_eq!(percent_decoded("100%zz"), "100%zz");
    }

    #[test]
    fn address_and_name() {
        assert_eq!(address("\"Ana H\" <ana@example.org>"), "ana@example.org");
        assert_eq!(address("ana@example.org (Ana)"), "ana@example.org");
        assert_eq!(display_name("\"Ana H\" <ana@example.org>"), "Ana H");
        assert_eq!(display_name("ana@example.org (Ana)"), "Ana");
        assert_eq!(display_name("ana@example.org"), "");
    }
}
