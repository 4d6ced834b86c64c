//! Structural header checks: what RFC 5322 says every message has, and spam often lacks.

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::verdict::Symbol;

/// Missing or duplicated required headers, and bodies with nothing in them.
pub struct HeaderStructure;

#[async_trait]
impl Check for HeaderStructure {
    fn name(&self) -> &'static str {
        "header_structure"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(m) = ctx.message else {
            return Ok(Outcome::default());
        };
        if m.parse_error.is_some() {
            // The pipeline already said MESSAGE_UNPARSEABLE; absent headers would only add noise.
            return Ok(Outcome::default());
        }
        let mut symbols = Vec::new();
        // RFC 5322 §3.6: exactly one Date and one From; Message-ID "SHOULD" be present.
        match m.header_count("Date") {
            0 => symbols.push(Symbol::new(
                "KALA_MISSING_DATE",
                1.0,
                "Message has no Date header",
            )),
            1 => {}
            n => symbols.push(
                Symbol::new(
                    "KALA_MULTIPLE_DATE",
                    1.0,
                    "Message has more than one Date header",
                )
                .with_detail(format!("{n} Date headers")),
            ),
        }
        match m.header_count("From") {
            0 => symbols.push(Symbol::new(
                "KALA_MISSING_FROM",
                2.0,
                "Message has no From header",
            )),
            1 => {}
            n => symbols.push(
                Symbol::new(
                    "KALA_MULTIPLE_FROM",
                    2.0,
                    "Message has more than one From header",
                )
                .with_detail(format!("{n} From headers")),
            ),
        }
        if m.header("Message-ID").is_none_or(|v| v.trim().is_empty()) {
            symbols.push(Symbol::new(
                "KALA_MISSING_MESSAGE_ID",
                1.0,
                "Message has no Message-ID header",
            ));
        }
        if m.header("Subject").is_none() {
            symbols.push(Symbol::new(
                "KALA_MISSING_SUBJECT",
                0.5,
                "Message has no Subject header",
            ));
        }
        let has_text = m.text_parts.iter().any(|t| !t.trim().is_empty())
            || m.html_parts.iter().any(|h| !h.text.trim().is_empty());
        if !has_text && m.attachments.is_empty() {
            symbols.push(Symbol::new(
                "KALA_EMPTY_BODY",
                1.0,
                "Message has no text and no attachments",
            ));
        }
        if m.encoding_problem {
            symbols.push(Symbol::new(
                "KALA_MIME_ENCODING_PROBLEM",
                0.5,
                "A MIME part has a broken transfer encoding or charset",
            ));
        }
        Ok(symbols.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::message::Message;

    async fn names(raw: &[u8]) -> Vec<String> {
        let m = std::sync::Arc::new(Message::parse(raw, raw.len()));
        let e = Envelope::offline("a@example.org", vec![]);
        let ctx = Context {
            phase: Phase::Data,
            envelope: &e,
            message: Some(&m),
            cpu: &super::super::CpuSlots::new(1),
        };
        HeaderStructure
            .check(&ctx)
            .await
            .unwrap()
            .symbols
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[tokio::test]
    async fn complete_message_is_clean() {
        let raw = b"From: a@example.org\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <x@y>\r\nSubject: hi\r\n\r\nhello\r\n";
        assert!(names(raw).await.is_empty());
    }

    #[tokio::test]
    async fn missing_headers_are_named() {
        let got = names(b"Subject: hi\r\n\r\nhello\r\n").await;
        assert_eq!(
            got,
            [
                "KALA_MISSING_DATE",
                "KALA_MISSING_FROM",
                "KALA_MISSING_MESSAGE_ID"
            ]
        );
        let got = names(b"From: a@x\r\nFrom: b@x\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <x@y>\r\n\r\n").await;
        assert_eq!(
            got,
            [
                "KALA_MULTIPLE_FROM",
                "KALA_MISSING_SUBJECT",
                "KALA_EMPTY_BODY"
            ]
        );
    }
}
