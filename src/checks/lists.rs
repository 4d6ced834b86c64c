//! The allow and block lists reviewers build from the quarantine. An allowed sender gets a
//! large negative score, a blocked one a large positive score; neither touches the forced
//! actions, so an allowed sender's virus is still caught.

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::store::Store;
use crate::store::lists::ListKind;
use crate::verdict::Symbol;

/// Scores of the two symbols (overridable in `[policy.scores]`).
pub const ALLOWED_SCORE: f64 = -20.0;
pub const BLOCKED_SCORE: f64 = 20.0;

pub struct SenderLists {
    store: Store,
}

impl SenderLists {
    pub fn new(store: Store) -> SenderLists {
        SenderLists { store }
    }
}

#[async_trait]
impl Check for SenderLists {
    fn name(&self) -> &'static str {
        "sender_lists"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let envelope = ctx.envelope;
        if envelope.sender.is_empty() {
            return Ok(Outcome::default());
        }
        let entries = self
            .store
            .list_matches(&envelope.sender, &envelope.recipients)
            .await?;
        let mut outcome = Outcome::default();
        // A block entry wins over an allow entry for the same message.
        if let Some(entry) = entries.iter().find(|e| e.kind == ListKind::Block) {
            outcome.symbols.push(
                Symbol::new(
                    "KALA_SENDER_BLOCKED",
                    BLOCKED_SCORE,
                    "Sender is on a block list made by IT",
                )
                .with_detail(describe(&entry.sender, &entry.recipient)),
            );
        } else if let Some(entry) = entries.first() {
            outcome.symbols.push(
                Symbol::new(
                    "KALA_SENDER_ALLOWED",
                    ALLOWED_SCORE,
                    "Sender is on an allow list made by IT (viruses are still blocked)",
                )
                .with_detail(describe(&entry.sender, &entry.recipient)),
            );
        }
        Ok(outcome)
    }
}

fn describe(sender: &str, recipient: &str) -> String {
    if recipient.is_empty() {
        format!("{sender} (everyone)")
    } else {
        format!("{sender} (for {recipient})")
    }
}
