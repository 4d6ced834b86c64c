//! A message as the classifier sees it: a bounded set of hashed tokens.
//!
//! Words of the subject and of the text (HTML rendered), lower-cased with every Unicode
//! letter kept (ë, ç, š, đ, č, ć, ž and Cyrillic stay themselves), each word and each pair of
//! neighbouring words; the words of the headers, prefixed by their header; a few headers'
//! facts; link hosts and their registrable domains; attachment types. What the receiving side
//! annotates and what a mailing list adds are left out (see `ListMail`). A token is its text's
//! xxh3 hash, so the model's size does not depend on word lengths and a token never leaks the
//! text it came from.

use std::collections::HashSet;

use crate::message::Message;

/// Which tokens a message makes. Raised whenever a change makes the same message give other
/// tokens, so that a model learned before can be told apart ([`crate::bayes::Model`]).
/// 1 and 2 were never recorded (2 added the header words, session 13); 3 leaves out what
/// mailing lists add and what the receiving side annotates.
pub const TOKENIZER_VERSION: u32 = 3;

/// Tokens kept per message, at most: a huge message teaches no more than a long one.
pub const MAX_TOKENS: usize = 3000;

/// Words longer than this are a "skip" token of their length class and first letters, as
/// SpamAssassin does: base64 debris and long URLs are noise, their shape is not.
const LONGEST_WORD: usize = 24;

/// The hashed tokens of `message`, without repeats, at most [`MAX_TOKENS`].
pub fn tokens(message: &Message) -> Vec<u64> {
    let mut out = Tokens::default();
    let list = ListMail::of(message);
    // Past a list, only the relays that brought the message to the list say who sent it.
    let skipped_relays = match list {
        Some(_) => message
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("received"))
            .count()
            .saturating_sub(ORIGIN_RELAYS),
        None => 0,
    };
    let mut relay = 0;
    // Header facts first: few, and they must survive the cap on long bodies.
    for field in &message.headers {
        let name = field.name.to_ascii_lowercase();
        // A list's bounce address is the list's, whatever it forwards.
        if is_ignored_header(&name) || (list.is_some() && name == "return-path") {
            continue;
        }
        if name == "received" {
            relay += 1;
            if relay <= skipped_relays {
                continue;
            }
        }
        let value = field.decoded.trim();
        // Which headers a message has says much about what sent it.
        out.push_parts(&["hn:", &name]);
        match name.as_str() {
            "from" | "reply-to" | "return-path" | "to" | "cc" => {
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
        header_words(&name, value, &mut out);
    }
    if let Some(subject) = &message.subject {
        out.words("s:", subject);
    }
    for text in &message.text_parts {
        let text = match list {
            Some(_) => without_list_footer(text),
            None => text,
        };
        out.words("", text);
    }
    for part in &message.html_parts {
        out.words("", &part.text);
    }
    let list_domain = list.as_ref().and_then(|l| l.domain.as_deref());
    for url in &message.urls {
        if let Some(host) = crate::checks::host_of(&url.url) {
            let host = host.to_ascii_lowercase();
            let domain = psl::domain_str(&host);
            if domain.is_some() && domain == list_domain {
                continue;
            }
            if let Some(domain) = domain {
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
        self.words_where(prefix, text, |_| true);
    }

    /// [`Tokens::words`] for the words `keep` accepts (normalised); the others are skipped, so
    /// the words around one make a pair.
    fn words_where(&mut self, prefix: &str, text: &str, keep: impl Fn(&str) -> bool) {
        let (mut word, mut previous) = (String::new(), String::new());
        for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '$' || c == '€' || c == '\''))
        {
            if !normalise(raw, &mut word) || !keep(&word) {
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

/// Headers whose words are not tokens: the subject has its own (`s:`), a date or a Message-ID
/// is a clock or a serial number.
const HEADERS_WITHOUT_WORDS: &[&str] = &["subject", "date", "message-id"];

/// A message a mailing list forwarded. Lists forward spam too, and what the list adds (its
/// headers, its relays, its footer, links to its own site) is the same on the spam as on the
/// ham: learned, it makes "came through a list" a strong ham sign, and the spam a list forwards
/// scores as ham. SpamAssassin's Bayes leaves list headers out for the same reason.
struct ListMail {
    /// The list's registrable domain, from `List-Id`.
    domain: Option<String>,
}

impl ListMail {
    fn of(message: &Message) -> Option<ListMail> {
        let field = |name: &str| {
            message
                .headers
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
        };
        if ["list-id", "list-post", "x-beenthere", "mailing-list"]
            .iter()
            .all(|name| field(name).is_none())
        {
            return None;
        }
        // `List-Id: Description <name.host.example>`
        let domain = field("list-id").and_then(|f| {
            let id = f.decoded.rsplit('<').next()?;
            let id = id.trim().trim_end_matches('>').to_ascii_lowercase();
            psl::domain_str(&id).map(str::to_string)
        });
        Some(ListMail { domain })
    }
}

/// `Received:` fields read, counted from the bottom, on mail that came through a list.
const ORIGIN_RELAYS: usize = 2;

/// A list's footer (the text below a rule of underscores or dashes near the end) is the same on
/// its ham and its spam.
fn without_list_footer(text: &str) -> &str {
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |at, line| {
            let start = *at;
            *at += line.len();
            Some((start, line))
        })
        .collect();
    let tail = lines.len().saturating_sub(FOOTER_LINES);
    lines[tail..]
        .iter()
        .find(|(_, line)| {
            let rule = line.trim_end();
            rule.len() >= 20 && rule.bytes().all(|b| b == b'_' || b == b'-')
        })
        .map_or(text, |&(start, _)| &text[..start])
}

/// How far from the end a list footer may start, in lines.
const FOOTER_LINES: usize = 30;

/// Headers a mailing list adds or rewrites (see [`ListMail`]), by name or name prefix.
const LIST_HEADERS: &[&str] = &[
    "sender",
    "x-sender",
    "precedence",
    "x-beenthere",
    "x-loop",
    "mail-followup-to",
    "errors-to",
];
const LIST_HEADER_PREFIXES: &[&str] = &[
    "list-",
    "x-list",
    "x-mailman",
    "x-egroups",
    "resent-",
    "original-",
    "x-original-",
];

/// Headers the receiving side writes: filters' verdicts (Kala's own among them: learned, they
/// would teach the classifier its own past answers), mailbox flags, delivery notes. They say
/// where a message was kept, not who sent it.
const RECEIVER_HEADERS: &[&str] = &[
    "status",
    "x-status",
    "x-keywords",
    "x-flags",
    "x-uid",
    "x-uidl",
    "x-imapbase",
    "lines",
    "content-length",
    "xref",
    "delivery-date",
    "delivered-to",
    "envelope-to",
    "x-envelope-to",
    "x-mdaemon-deliver-to",
    "x-scanned-by",
    "x-scanner",
    "x-filtered-by",
    "x-antispam",
    "x-bogosity",
];
const RECEIVER_HEADER_PREFIXES: &[&str] = &[
    "x-kala",
    "x-spam",
    "x-virus",
    "x-mailscanner",
    "x-gnus",
    "x-vm-",
];

/// Whether the classifier reads nothing of a header (lower-case `name`), not even its name.
fn is_ignored_header(name: &str) -> bool {
    LIST_HEADERS.contains(&name)
        || RECEIVER_HEADERS.contains(&name)
        || LIST_HEADER_PREFIXES
            .iter()
            .chain(RECEIVER_HEADER_PREFIXES)
            .any(|prefix| name.starts_with(prefix))
}

/// The words of one header, prefixed by its name (`hw:x-mailer:outlook`): the sending
/// software, the relays, the formats it declares. Spam changes its words
/// faster than its tools do, so these outlast the body's vocabulary. Dates are left out, so
/// the model learns who sent a message, not when.
fn header_words(name: &str, value: &str, out: &mut Tokens) {
    if HEADERS_WITHOUT_WORDS.contains(&name) || out.hashes.len() >= MAX_TOKENS {
        return;
    }
    let value = if name == "received" {
        sending_side(value)
    } else {
        value
    };
    out.words_where(&format!("hw:{name}:"), value, |word| !is_date_word(word));
}

/// What a `Received:` field says of the host that handed the message over: its name, its
/// HELO and its address, before the word `by`. The receiving side, the recipient (`for …`)
/// and the date describe the mailbox the message reached, not its sender.
fn sending_side(value: &str) -> &str {
    let mut end = 0;
    for piece in value.split_inclusive(char::is_whitespace) {
        if piece.trim_end().eq_ignore_ascii_case("by") {
            return &value[..end];
        }
        end += piece.len();
    }
    value.split(';').next().unwrap_or(value)
}

/// A weekday, a month or a year (a word as [`normalise`] keeps it): when, not who. Times of
/// day fall apart into two-digit words, which carry nothing anyway.
fn is_date_word(word: &str) -> bool {
    const NAMES: &[&str] = &[
        "mon", "tue", "wed", "thu", "fri", "sat", "sun", "jan", "feb", "mar", "apr", "may", "jun",
        "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    NAMES.contains(&word)
        || (word.len() == 4
            && (word.starts_with("19") || word.starts_with("20"))
            && word.bytes().all(|b| b.is_ascii_digit()))
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
    fn header_words_say_who_sent_not_when_or_to_whom() {
        let t = of(concat!(
            "Received: from mail.sender.example (helo=relay7) [203.0.113.9]\r\n",
            "\tby mx.ours.example with ESMTP for <ana@ours.example>; Sat, 7 Sep 2002 15:00:46 -0700\r\n",
            "X-Mailer: Microsoft Outlook Express 6.00\r\n",
            "X-Originalarrivaltime: 07 Sep 2002 22:00:46.0031 (UTC)\r\n",
            "Delivered-To: ana@ours.example\r\n",
            "Subject: x\r\n\r\nbody\r\n",
        ));
        for token in [
            "hw:received:from",
            "hw:received:mail",
            "hw:received:sender example",
            "hw:received:relay7",
            "hw:received:203",
            "hw:x-mailer:outlook express",
            "hw:x-originalarrivaltime:utc",
        ] {
            assert!(t.contains(&hash(token)), "{token}");
        }
        for token in [
            "hw:received:ours",
            "hw:received:esmtp",
            "hw:received:ana",
            "hw:received:sep",
            "hw:received:2002",
            "hw:x-originalarrivaltime:sep",
            "hw:x-originalarrivaltime:2002",
            "hw:delivered-to:ana",
            "hw:subject:x",
        ] {
            assert!(!t.contains(&hash(token)), "{token}");
        }
    }

    #[test]
    fn what_a_list_adds_to_the_spam_it_forwards_is_not_learned() {
        let message = concat!(
            "Received: from relay.lists.example [198.51.100.7] by mx.ours.example\r\n",
            "Received: from shop.example (helo=pc1) [203.0.113.9] by relay.lists.example\r\n",
            "Received: from pc1 [10.0.0.5] by shop.example\r\n",
            "Return-Path: <talk-bounces@lists.example>\r\n",
            "List-Id: Talk <talk.lists.example>\r\n",
            "Precedence: bulk\r\n",
            "Subject: x\r\n\r\n",
            "Cheap watches at https://shop.example/w\r\n",
            "_______________________________________________\r\n",
            "Talk mailing list https://www.lists.example/listinfo/talk\r\n",
        );
        let t = of(message);
        for token in ["cheap watches", "u:shop.example", "hw:received:helo pc1"] {
            assert!(t.contains(&hash(token)), "{token}");
        }
        for token in [
            "hw:received:relay",
            "hn:list-id",
            "hn:precedence",
            "h:return-path:lists.example",
            "mailing list",
            "u:www.lists.example",
            "d:lists.example",
        ] {
            assert!(!t.contains(&hash(token)), "{token}");
        }
        // The same text sent straight to us keeps its last lines and every relay.
        let direct = of(&message
            .replace("List-Id: Talk <talk.lists.example>\r\n", "")
            .replace("Precedence: bulk\r\n", ""));
        for token in ["mailing list", "d:lists.example", "hw:received:relay"] {
            assert!(direct.contains(&hash(token)), "{token}");
        }
    }

    #[test]
    fn the_receivers_annotations_are_not_learned() {
        let t = of(concat!(
            "X-Kala-Symbols: BAYES_99(5.00)\r\n",
            "X-Spam-Status: Yes\r\n",
            "X-Status: RO\r\n",
            "Delivered-To: ana@ours.example\r\n",
            "Subject: x\r\n\r\nbody\r\n",
        ));
        for token in [
            "hn:x-kala-symbols",
            "hw:x-kala-symbols:bayes_99",
            "hn:x-spam-status",
            "hn:x-status",
            "hn:delivered-to",
        ] {
            assert!(!t.contains(&hash(token)), "{token}");
        }
        assert!(t.contains(&hash("body")));
    }

    #[test]
    fn a_received_field_without_by_is_read_up_to_its_date() {
        assert_eq!(
            sending_side("from a.example [192.0.2.1]; Mon, 1 Jan 2024 00:00:00 +0000"),
            "from a.example [192.0.2.1]"
        );
        assert_eq!(sending_side("by mx.example; Mon, 1 Jan 2024"), "");
        assert_eq!(
            sending_side("from nearby.example\r\n\tBY mx"),
            "from nearby.example\r\n\t"
        );
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
