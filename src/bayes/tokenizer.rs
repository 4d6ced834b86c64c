//! A message as the classifier sees it: a bounded set of hashed tokens.
//!
//! Words of the subject and of the text (HTML rendered), lower-cased with every Unicode
//! letter kept (ë, ç, š, đ, č, ć, ž and Cyrillic stay themselves), each word and each pair of
//! neighbouring words; a few headers' facts prefixed by their header; link hosts and their
//! registrable domains; attachment types. A token is its text's xxh3 hash, so the model's
//! size does not depend on word lengths and a token never leaks the text it came from.

use std::collections::HashSet;

use crate::message::Message;

/// Tokens kept per message, at most: a huge message teaches no more than a long one.
pub const MAX_TOKENS: usize = 3000;

/// Words longer than this are a "skip" token of their length class and first letters, as
/// SpamAssassin does: base64 debris and long URLs are noise, their shape is not.
const LONGEST_WORD: usize = 24;

/// The hashed tokens of `message`, without repeats, at most [`MAX_TOKENS`].
pub fn tokens(message: &Message) -> Vec<u64> {
    let mut out = Tokens::default();
    // Header facts first: few, and they must survive the cap on long bodies.
    for field in &message.headers {
        let name = field.name.to_ascii_lowercase();
        let value = field.decoded.trim();
        // Which headers a message has says much about what sent it.
        out.push_parts(&["hn:", &name]);
        match name.as_str() {
            "from" | "reply-to" | "return-path" | "sender" | "to" | "cc" => {
                if let Some(domain) = address_domain(value) {
                    out.push(&format!("h:{name}:{domain}"));
                }
                if name == "to" || name == "cc" {
                    let count = value.matches('@').count().min(10);
                    out.push(&format!("h:{name}:count:{count}"));
                }
            }
            "message-id" => {
                if let Some(domain) = address_domain(value) {
                    out.push(&format!("h:mid:{domain}"));
                }
            }
            "received" => received_tokens(&field.raw, &mut out),
            "x-mailer" | "user-agent" => {
                let first: String = value
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(&format!("h:mailer:{}", first.to_lowercase()));
            }
            "content-type" => {
                let lower = value.to_ascii_lowercase();
                let mime = lower.split(';').next().unwrap_or("").trim();
                out.push(&format!("h:ct:{mime}"));
                if let Some((_, charset)) = lower.split_once("charset=") {
                    let charset: String = charset
                        .trim_start_matches('"')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    out.push(&format!("h:charset:{charset}"));
                }
            }
            _ => {}
        }
    }
    if let Some(subject) = &message.subject {
        out.words("s:", subject);
    }
    for text in &message.text_parts {
        out.words("", text);
    }
    for part in &message.html_parts {
        out.words("", &part.text);
    }
    for url in &message.urls {
        if let Some(host) = crate::checks::host_of(&url.url) {
            let host = host.to_ascii_lowercase();
            if let Some(domain) = psl::domain_str(&host) {
                out.push(&format!("d:{domain}"));
            }
            out.push(&format!("u:{host}"));
        }
    }
    for attachment in &message.attachments {
        out.push(&format!(
            "a:t:{}",
            attachment.declared_type.to_ascii_lowercase()
        ));
        if let Some((_, ext)) = attachment.name.as_deref().and_then(|n| n.rsplit_once('.')) {
            out.push(&format!("a:x:{}", ext.to_lowercase()));
        }
    }
    out.hashes
}

#[derive(Default)]
struct Tokens {
    seen: HashSet<u64, super::TokenHasher>,
    hashes: Vec<u64>,
    /// Reused for every token: one allocation per message, not one per word.
    buffer: String,
}

impl Tokens {
    fn push(&mut self, token: &str) {
        self.push_parts(&[token]);
    }

    /// The token that is `parts` joined. One-shot xxh3 over a reused buffer: for tokens this
    /// short, several times faster than the streaming hasher.
    fn push_parts(&mut self, parts: &[&str]) {
        if self.hashes.len() >= MAX_TOKENS {
            return;
        }
        self.buffer.clear();
        for part in parts {
            self.buffer.push_str(part);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(self.buffer.as_bytes());
        if self.seen.insert(hash) {
            self.hashes.push(hash);
        }
    }

    /// Each word of `text`, and each pair of neighbours, with `prefix`.
    fn words(&mut self, prefix: &str, text: &str) {
        let (mut word, mut previous) = (String::new(), String::new());
        for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '$' || c == '€' || c == '\''))
        {
            if !normalise(raw, &mut word) {
                continue;
            }
            self.push_parts(&[prefix, &word]);
            if !previous.is_empty() {
                self.push_parts(&[prefix, &previous, " ", &word]);
            }
            std::mem::swap(&mut previous, &mut word);
            if self.hashes.len() >= MAX_TOKENS {
                return;
            }
        }
    }
}

/// Writes the word as the model keeps it into `out`; false for what carries nothing (one or
/// two letters).
fn normalise(raw: &str, out: &mut String) -> bool {
    let word = raw.trim_matches('\'');
    out.clear();
    if word.is_ascii() {
        if word.len() < 3 && !word.contains('$') {
            return false;
        }
        if word.len() > LONGEST_WORD {
            out.push_str("sk:");
            out.extend(word.chars().take(6).map(|c| c.to_ascii_lowercase()));
            out.push_str(&format!(":{}", word.len() / 10 * 10));
        } else {
            out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        }
        return true;
    }
    let length = word.chars().count();
    if length < 3 && !word.contains(['$', '€']) {
        return false;
    }
    let lower = word.to_lowercase();
    if length > LONGEST_WORD {
        let start: String = lower.chars().take(6).collect();
        out.push_str(&format!("sk:{start}:{}", length / 10 * 10));
    } else {
        out.push_str(&lower);
    }
    true
}

/// From a `Received:` field: the registrable domain the sending host named, and the /16 of
/// the addresses in brackets (networks, not hosts: one spam run spans neighbouring hosts).
fn received_tokens(raw: &str, out: &mut Tokens) {
    let lower = raw.to_ascii_lowercase();
    if let Some(rest) = lower.trim_start().strip_prefix("from ") {
        let host: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        if let Some(domain) = psl::domain_str(&host) {
            out.push(&format!("h:rcvd:{domain}"));
        }
    }
    for bracketed in lower.split('[').skip(1) {
        let inside = bracketed.split(']').next().unwrap_or("");
        if let Ok(std::net::IpAddr::V4(ip)) = inside.parse() {
            let [a, b, ..] = ip.octets();
            out.push(&format!("h:rip:{a}.{b}"));
        }
    }
}

/// The domain of the first address in a header value (`Ana <ana@x.example>` → `x.example`).
fn address_domain(value: &str) -> Option<String> {
    let (_, after) = value.rsplit_once('@')?;
    let domain: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(raw: &str) -> Vec<u64> {
        tokens(&Message::parse_owned(raw.as_bytes().to_vec(), raw.len()))
    }

    fn hash(token: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(token.as_bytes())
    }

    #[test]
    fn words_pairs_and_header_facts() {
        let t = of(
            "From: Ana <ana@Sender.Example>\r\nSubject: Fatura e muajit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPagesa për faturën është VONË. Klikoni https://pay.evil.example/x\r\n",
        );
        for token in [
            "pagesa",
            "për",
            "faturën",
            "është",
            "vonë",
            "pagesa për",
            "s:fatura",
            "s:muajit",
            "h:from:sender.example",
            "h:ct:text/plain",
            "u:pay.evil.example",
            "d:evil.example",
        ] {
            assert!(t.contains(&hash(token)), "{token}");
        }
        // Short words carry nothing.
        assert!(!t.contains(&hash("e")));
    }

    #[test]
    fn a_token_hashed_in_parts_is_the_token_hashed_whole() {
        let mut parts = Tokens::default();
        parts.push_parts(&["s:", "fatura", " ", "muajit"]);
        assert_eq!(parts.hashes, [hash("s:fatura muajit")]);
    }

    #[test]
    fn serbian_latin_and_cyrillic_are_kept_as_written() {
        let t = of("Subject: x\r\n\r\nHitno plaćanje računa. Хитно плаћање\r\n");
        for token in ["hitno", "plaćanje", "računa", "хитно", "плаћање"] {
            assert!(t.contains(&hash(token)), "{token}");
        }
    }

    #[test]
    fn long_words_become_skip_tokens_and_the_count_is_bounded() {
        let long = "a".repeat(60);
        let t = of(&format!("Subject: x\r\n\r\n{long}\r\n"));
        assert!(t.contains(&hash("sk:aaaaaa:60")));
        let many: String = (0..10_000).map(|i| format!("word{i} ")).collect();
        assert_eq!(
            of(&format!("Subject: x\r\n\r\n{many}\r\n")).len(),
            MAX_TOKENS
        );
    }
}
