//! The attachment-policy check: each attachment through [`crate::attachments::inspect`]
//! (banned names and types, zips, macros), and the message's MIME shape against its bounds.
//! Zip walking decompresses, so it runs on a CPU slot, off the async runtime.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::attachments::{self, AttachmentPolicy};
use crate::verdict::Symbol;

pub struct Attachments {
    policy: Arc<AttachmentPolicy>,
    /// More MIME parts than this is itself suspicious (and a cost): `MIME_TOO_MANY_PARTS`.
    max_parts: usize,
}

impl Attachments {
    pub fn new(policy: AttachmentPolicy, max_parts: usize) -> Attachments {
        Attachments {
            policy: Arc::new(policy),
            max_parts,
        }
    }
}

#[async_trait]
impl Check for Attachments {
    fn name(&self) -> &'static str {
        "attachments"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        let mut symbols = Vec::new();
        if message.mime_parts > self.max_parts {
            symbols.push(
                Symbol::new(
                    "MIME_TOO_MANY_PARTS",
                    5.0,
                    "The message has an unusual number of MIME parts",
                )
                .with_detail(format!(
                    "{} parts, over {}",
                    message.mime_parts, self.max_parts
                )),
            );
        }
        if message.nesting_exceeded {
            symbols.push(Symbol::new(
                "MIME_TOO_DEEP",
                5.0,
                "Messages are nested in messages deeper than Kala looks",
            ));
        }
        if message.attachments.is_empty() {
            return Ok(symbols.into());
        }
        let (message, policy) = (Arc::clone(message), Arc::clone(&self.policy));
        let findings = ctx
            .cpu
            .run(move || {
                message
                    .attachments
                    .iter()
                    .flat_map(|a| {
                        attachments::inspect(a.name.as_deref(), &a.declared_type, &a.bytes, &policy)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        // One symbol per kind, naming every attachment it was found in.
        for (name, score, description) in attachments::SYMBOLS {
            let details: Vec<&str> = findings
                .iter()
                .filter(|f| f.symbol == *name)
                .map(|f| f.detail.as_str())
                .collect();
            if !details.is_empty() {
                symbols
                    .push(Symbol::new(*name, *score, *description).with_detail(details.join("; ")));
            }
        }
        Ok(symbols.into())
    }
}
