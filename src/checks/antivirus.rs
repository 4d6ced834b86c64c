//! The antivirus check: every attachment, and the whole message once, through a [`Scanner`].
//!
//! Each attachment (every part that is not body text) is streamed on its own, decoded, so a
//! detection names the attachment. The raw message is streamed once more as a safety net:
//! clamd decodes what Kala does not (uuencoded blocks, BinHex, TNEF `winmail.dat`, parts with
//! broken encodings) and sees text bodies, so EICAR pasted into the body is caught too.
//!
//! Outcomes are symbols, and policy decides: `VIRUS` (quarantine by default), `AV_UNCHECKED`
//! when clamd could not answer (tempfail by default), `AV_TOO_LARGE` for content beyond the
//! scanner's stream limit (never passed silently).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;

use super::{Check, Context, Outcome, Phase};
use crate::antivirus::{ScanAnswer, ScanError, Scanner};
use crate::verdict::Symbol;

/// Messages relayed although some of their content was not scanned (process-wide).
pub static PASSED_UNSCANNED: AtomicU64 = AtomicU64::new(0);

/// Scans of one message running at once: clamd has its own thread pool to share.
const SCANS_PER_MESSAGE: usize = 4;

/// Score of `VIRUS`: none. Its action is forced (`antivirus.action`); a score would add to the
/// attachment symbols (a banned `.exe` is 10 already) and could turn the admin's "quarantine"
/// into a reject.
const VIRUS_SCORE: f64 = 0.0;

pub struct Antivirus {
    scanner: Arc<dyn Scanner>,
}

impl Antivirus {
    pub fn new(scanner: Arc<dyn Scanner>) -> Antivirus {
        Antivirus { scanner }
    }
}

/// One thing to stream to the scanner.
struct Target<'a> {
    /// How the attachment is named in symbols and logs.
    label: String,
    bytes: &'a [u8],
}

#[async_trait]
impl Check for Antivirus {
    fn name(&self) -> &'static str {
        "av"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        let mut targets: Vec<Target<'_>> = message
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| Target {
                label: match &a.name {
                    Some(name) => format!("attachment \"{name}\""),
                    None => format!("part {} ({})", i + 1, a.declared_type),
                },
                bytes: &a.bytes,
            })
            .collect();
        // The safety net: the raw message without the bodies just streamed decoded (clamd
        // would decode and scan them again, which tripled the cost of big attachments).
        let safety_net = without_scanned_bodies(message);
        targets.push(Target {
            label: "the message body (or a part Kala does not decode)".into(),
            bytes: &safety_net,
        });

        let mut symbols = Vec::new();
        if message.truncated {
            symbols.push(too_large(format!(
                "only the first {} of {} bytes could be scanned",
                message.raw.len(),
                message.size
            )));
        }
        let limit = self.scanner.max_stream_size();
        let (targets, oversized): (Vec<Target<'_>>, Vec<Target<'_>>) =
            targets.into_iter().partition(|t| t.bytes.len() <= limit);
        for target in oversized {
            symbols.push(too_large(format!(
                "{}: {} bytes, over antivirus.max_stream_size ({limit})",
                target.label,
                target.bytes.len()
            )));
        }
        let mut found: Vec<(String, String)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let scanner = &self.scanner;
        let targets = &targets;
        // Indices rather than references into `targets`: a closure over `&Target` trips the
        // compiler's higher-ranked lifetime check inside async_trait.
        let mut answers = futures::stream::iter(0..targets.len())
            .map(|i| async move { (i, scanner.scan(targets[i].bytes).await) })
            .buffered(SCANS_PER_MESSAGE);
        while let Some((i, answer)) = answers.next().await {
            let target = &targets[i];
            match answer {
                Ok(ScanAnswer::Clean) => {}
                Ok(ScanAnswer::Found(signature)) => found.push((signature, target.label.clone())),
                Err(ScanError::TooLarge { size, limit }) => symbols.push(too_large(format!(
                    "{}: {size} bytes, over the scanner's stream limit ({limit})",
                    target.label
                ))),
                Err(error) => failures.push(format!("{}: {error}", target.label)),
            }
        }
        drop(answers);

        if !found.is_empty() {
            // The safety-net scan repeats what an attachment already showed: name it once.
            let last = found.len() - 1;
            let named: Vec<&str> = found[..last].iter().map(|(s, _)| s.as_str()).collect();
            if found.len() > 1 && named.contains(&found[last].0.as_str()) {
                found.pop();
            }
            let detail: Vec<String> = found
                .iter()
                .map(|(signature, label)| format!("{signature} in {label}"))
                .collect();
            tracing::warn!(
                queue_id = %ctx.envelope.queue_id,
                sender = %ctx.envelope.sender,
                detections = %detail.join("; "),
                "virus found"
            );
            // A detection decides the message; parts left unscanned change nothing.
            symbols.push(
                Symbol::new("VIRUS", VIRUS_SCORE, "ClamAV found malware")
                    .with_detail(detail.join("; ")),
            );
            return Ok(symbols.into());
        }
        if !failures.is_empty() {
            tracing::warn!(failures = %failures.join("; "), "antivirus could not scan");
            symbols.push(
                Symbol::new(
                    "AV_UNCHECKED",
                    0.0,
                    "The virus scanner could not check this message",
                )
                .with_detail(failures.join("; ")),
            );
        }
        Ok(symbols.into())
    }
}

/// `message.raw` with the encoded bodies of its cleanly decoded attachments left out; their
/// headers stay, so clamd still sees the MIME structure around them.
fn without_scanned_bodies(message: &crate::message::Message) -> Vec<u8> {
    let mut ranges: Vec<std::ops::Range<usize>> = message
        .attachments
        .iter()
        .filter_map(|a| a.raw_body.clone())
        .filter(|r| r.start <= r.end && r.end <= message.raw.len())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(message.raw.len());
    let mut at = 0;
    for range in ranges {
        if range.start >= at {
            out.extend_from_slice(&message.raw[at..range.start]);
            at = range.end;
        }
    }
    out.extend_from_slice(&message.raw[at.min(message.raw.len())..]);
    out
}

fn too_large(detail: String) -> Symbol {
    Symbol::new(
        "AV_TOO_LARGE",
        0.0,
        "Part of this message is too large for the virus scanner",
    )
    .with_detail(detail)
}

/// The symbol saying some of the message's content was not virus-scanned, if any.
pub fn unscanned(verdict: &crate::verdict::Verdict) -> Option<&Symbol> {
    verdict
        .symbols
        .iter()
        .find(|s| s.name == "AV_UNCHECKED" || s.name == "AV_TOO_LARGE")
}

/// Counts and logs a message relayed with content the scanner did not see.
pub fn note_if_passed_unscanned(verdict: &crate::verdict::Verdict) {
    use crate::verdict::Action;
    if let Some(symbol) = unscanned(verdict)
        && verdict.action <= Action::Tag
    {
        PASSED_UNSCANNED.fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics().passed_unscanned();
        tracing::warn!(
            symbol = %symbol.name,
            detail = %symbol.detail.as_deref().unwrap_or(""),
            passed_unscanned_total = PASSED_UNSCANNED.load(Ordering::Relaxed),
            "message relayed without a complete virus scan (policy allows it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safety_net_leaves_out_bodies_already_scanned() {
        let raw = b"From: a@example.org\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nbegin 644 hidden.exe\r\n\
            --b\r\nContent-Type: application/octet-stream; name=\"x.bin\"\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nQUFBQUFBQUFBQUFBQUFBQQ==\r\n--b--\r\n";
        let message = crate::message::Message::parse(raw, raw.len());
        assert_eq!(message.attachments.len(), 1);
        let net = String::from_utf8(without_scanned_bodies(&message)).unwrap();
        assert!(!net.contains("QUFBQUFB"), "{net}");
        assert!(
            net.contains("begin 644 hidden.exe"),
            "text bodies stay: {net}"
        );
        assert!(net.contains("name=\"x.bin\""), "part headers stay: {net}");
        assert!(net.ends_with("--b--\r\n"), "{net}");
    }
}
