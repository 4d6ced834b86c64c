//! The header block Kala relays: its `Received:` and `X-Kala-*` headers on top, any
//! `X-Kala-*` header a sender forged removed, and the subject prefix for tagged mail.
//! The body is never touched: it streams from the spool byte for byte.

use crate::envelope::Envelope;
use crate::verdict::{Action, Verdict};

/// Where the header section ends: `header_len` bytes of header fields (each with its CRLF);
/// the body (starting with the empty line) follows.
pub fn header_len(prefix: &[u8], total_len: usize) -> Option<usize> {
    if prefix.starts_with(b"\r\n") {
        return Some(0);
    }
    match memchr::memmem::find(prefix, b"\r\n\r\n") {
        Some(pos) => Some(pos + 2),
        // No empty line: a message of headers only, if we saw all of it.
        None if prefix.len() >= total_len => Some(total_len),
        None => None,
    }
}

/// The `Received:` header for a message Kala accepted (RFC 5321 §4.4).
pub fn received_header(envelope: &Envelope, hostname: &str) -> String {
    let helo = envelope.helo.as_deref().unwrap_or("unknown");
    let protocol = match (envelope.esmtp, envelope.tls.is_some()) {
        (true, true) => "ESMTPS",
        (true, false) => "ESMTP",
        (false, true) => "SMTPS",
        (false, false) => "SMTP",
    };
    let tls = envelope
        .tls
        .as_deref()
        .map(|v| format!(" (using {v})"))
        .unwrap_or_default();
    // Name the recipient only when there is one, so one copy does not reveal the others.
    let recipient = match envelope.recipients.as_slice() {
        [only] => format!("\r\n\tfor <{only}>"),
        _ => String::new(),
    };
    let date = mail_parser::DateTime::from_timestamp(envelope.received_at as i64).to_rfc822();
    // "(name [ip])" as Postfix and sendmail write it: the rules read the name from here.
    let name = envelope.client_name.as_deref().unwrap_or_default();
    format!(
        "Received: from {helo} ({name}{space}[{ip}]){tls}\r\n\tby {hostname} (Kala) with {protocol} id {id}{recipient};\r\n\t{date}\r\n",
        space = if name.is_empty() { "" } else { " " },
        ip = envelope.client_ip,
        id = envelope.queue_id,
    )
}

/// The complete header section to relay: trace and verdict headers, then the sender's.
/// `hostname` is our authserv-id: an `Authentication-Results` header claiming it did not
/// come from us and goes (RFC 8601 §5).
pub fn stamped_header(
    received: &str,
    verdict: &Verdict,
    subject_prefix: &str,
    hostname: &str,
    original: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + 512);
    out.extend_from_slice(received.as_bytes());
    for header in &verdict.headers {
        out.extend_from_slice(header.as_bytes());
    }
    let spam = if verdict.action >= Action::Tag {
        "Yes"
    } else {
        "No"
    };
    out.extend_from_slice(
        format!(
            "X-Kala-Status: {spam}, score={:.2}, action={}\r\nX-Kala-Score: {:.2}\r\n",
            verdict.score, verdict.action, verdict.score
        )
        .as_bytes(),
    );
    out.extend_from_slice(fold("X-Kala-Symbols", &verdict.symbol_list()).as_bytes());
    // Relayed with content the virus scanner did not see (fail_open, or too large and tagged).
    if crate::checks::unscanned(verdict).is_some() {
        out.extend_from_slice(b"X-Kala-Virus: unchecked\r\n");
    }

    let tag = verdict.action == Action::Tag && !subject_prefix.is_empty();
    let mut saw_subject = false;
    for field in fields(original) {
        let name_end = field.iter().position(|&b| b == b':').unwrap_or(0);
        let name = &field[..name_end];
        if name.len() >= 7 && name[..7].eq_ignore_ascii_case(b"X-Kala-") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"Authentication-Results")
            && authserv_id(&field[name_end + 1..]).eq_ignore_ascii_case(hostname.as_bytes())
        {
            continue;
        }
        if tag && !saw_subject && name.eq_ignore_ascii_case(b"Subject") {
            saw_subject = true;
            let value = &field[name_end + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            out.extend_from_slice(b"Subject: ");
            if !value.starts_with(subject_prefix.as_bytes()) {
                out.extend_from_slice(subject_prefix.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(value);
            continue;
        }
        out.extend_from_slice(field);
    }
    if tag && !saw_subject {
        out.extend_from_slice(format!("Subject: {subject_prefix}\r\n").as_bytes());
    }
    out
}

/// The first token of an `Authentication-Results` value: who wrote it (RFC 8601 §2.2).
fn authserv_id(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii_start();
    let end = value
        .iter()
        .position(|&b| b == b';' || b.is_ascii_whitespace())
        .unwrap_or(value.len());
    &value[..end]
}

/// Splits a header section into fields, each with its continuation lines and final CRLF.
fn fields(section: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < section.len() {
        let end = memchr::memchr(b'\n', &section[pos..]).map_or(section.len(), |p| pos + p + 1);
        let next_is_continuation = section.get(end).is_some_and(|&b| b == b' ' || b == b'\t');
        if !next_is_continuation {
            fields.push(&section[start..end]);
            start = end;
        }
        pos = end;
    }
    fields
}

/// `Name: a, b, c` folded near 78 columns at the commas (RFC 5322 §2.2.3).
fn fold(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut column = out.len();
    if value.is_empty() {
        out.push_str(" (none)\r\n");
        return out;
    }
    for (i, item) in value.split(", ").enumerate() {
        let piece = if i == 0 {
            item.to_string()
        } else {
            format!(",{item}")
        };
        if i > 0 && column + piece.len() + 1 > 78 {
            out.push_str(",\r\n\t");
            out.push_str(item);
            column = 8 + item.len();
        } else {
            if i > 0 {
                out.push(',');
            }
            out.push(' ');
            out.push_str(item);
            column += item.len() + 2;
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Symbol;

    fn verdict(action: Action) -> Verdict {
        Verdict {
            action,
            score: 6.0,
            symbols: vec![
                Symbol::new("A_RULE", 5.0, ""),
                Symbol::new("B_RULE", 1.0, ""),
            ],
            forced_by: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_received_line_names_the_client_as_the_rules_read_it() {
        let mut envelope = crate::envelope::Envelope::offline("a@b.example", vec![]);
        envelope.client_ip = "192.0.2.44".parse().unwrap();
        envelope.helo = Some("yahoo.com".into());
        let untrusted = |envelope: &crate::envelope::Envelope| {
            let raw = format!(
                "{}Subject: x\r\n\r\nbody\r\n",
                received_header(envelope, "mx.example")
            );
            let message = crate::message::Message::parse(raw.as_bytes(), raw.len());
            let relays = crate::received::Relays::from_headers(&message.headers);
            relays.of(crate::received::Trust::Untrusted)[0].clone()
        };
        let relay = untrusted(&envelope);
        assert_eq!(
            (relay.ip.as_str(), relay.rdns.as_str(), relay.helo.as_str()),
            ("192.0.2.44", "", "yahoo.com")
        );
        envelope.client_name = Some("dsl-192-0-2-44.pool.example.net".into());
        let relay = untrusted(&envelope);
        assert_eq!(relay.rdns, "dsl-192-0-2-44.pool.example.net");
        assert_eq!(
            (relay.helo.as_str(), relay.by.as_str()),
            ("yahoo.com", "mx.example")
        );
    }

    #[test]
    fn finds_the_header_section() {
        assert_eq!(header_len(b"A: b\r\n\r\nbody", 12), Some(6));
        assert_eq!(header_len(b"\r\nbody", 6), Some(0));
        assert_eq!(header_len(b"A: b\r\n", 6), Some(6));
        assert_eq!(header_len(b"A: b\r\n", 600), None);
    }

    #[test]
    fn forged_kala_headers_go_and_tagging_prefixes_the_subject() {
        let original = b"x-kala-status: No, score=-100\r\n\tcontinued\r\nSubject: hello\r\n there\r\nFrom: a@b\r\n";
        let out = String::from_utf8(stamped_header(
            "Received: x\r\n",
            &verdict(Action::Tag),
            "[SPAM]",
            "kala.test",
            original,
        ))
        .unwrap();
        assert!(
            !out.contains("score=-100") && !out.contains("continued"),
            "{out}"
        );
        assert!(
            out.contains("Subject: [SPAM] hello\r\n there\r\nFrom: a@b\r\n"),
            "{out}"
        );
        assert!(
            out.starts_with("Received: x\r\nX-Kala-Status: Yes, score=6.00, action=tag\r\n"),
            "{out}"
        );
        assert!(
            out.contains("X-Kala-Symbols: A_RULE(5.00), B_RULE(1.00)\r\n"),
            "{out}"
        );
    }

    #[test]
    fn our_results_go_on_top_and_forged_ones_in_our_name_go() {
        let mut v = verdict(Action::Accept);
        v.headers = vec!["Authentication-Results: kala.test; spf=pass\r\n".into()];
        let original = b"Authentication-Results: KALA.test; dkim=pass\r\nAuthentication-Results: mx.other.example; dkim=fail\r\nFrom: a@b\r\n";
        let out = String::from_utf8(stamped_header(
            "Received: x\r\n",
            &v,
            "",
            "kala.test",
            original,
        ))
        .unwrap();
        assert!(
            out.starts_with("Received: x\r\nAuthentication-Results: kala.test; spf=pass\r\n"),
            "{out}"
        );
        assert!(!out.contains("dkim=pass"), "{out}");
        assert!(out.contains("mx.other.example; dkim=fail"), "{out}");
    }

    #[test]
    fn long_symbol_lists_fold() {
        let list: Vec<String> = (0..20)
            .map(|i| format!("SYMBOL_NUMBER_{i}(1.00)"))
            .collect();
        let folded = fold("X-Kala-Symbols", &list.join(", "));
        assert!(folded.lines().all(|l| l.len() <= 80), "{folded}");
        assert!(folded.contains(",\r\n\tSYMBOL_NUMBER_"));
    }
}
