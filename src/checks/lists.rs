//! The allow and block lists: the ones reviewers build from the quarantine (in the store,
//! global or per recipient) and the admin's in `[lists]` (global). Entries name a sender
//! address, a sender domain or a client network. An allowed message gets a large negative
//! score, a blocked one a large positive score; neither touches the forced actions, so an
//! allowed sender's virus is still caught.

use async_trait::async_trait;

use std::net::IpAddr;

use super::{Check, Context, Outcome, Phase};
use crate::config::ListsSettings;
use crate::store::Store;
use crate::store::lists::{ListKind, network_entry};
use crate::verdict::Symbol;

/// Scores of the two symbols (overridable in `[policy.scores]`).
pub const ALLOWED_SCORE: f64 = -20.0;
pub const BLOCKED_SCORE: f64 = 20.0;

pub struct SenderLists {
    store: Store,
    /// The lists from the config file; swapped whole by a reload.
    config: arc_swap::ArcSwap<ListsSettings>,
}

impl SenderLists {
    pub fn new(store: Store, config: ListsSettings) -> SenderLists {
        SenderLists {
            store,
            config: arc_swap::ArcSwap::from_pointee(config),
        }
    }

    pub fn config(&self) -> std::sync::Arc<ListsSettings> {
        self.config.load_full()
    }

    pub fn replace_config(&self, config: ListsSettings) {
        self.config.store(std::sync::Arc::new(config));
    }

    /// The first entry of `entries` (from the config) that holds this sender or client.
    fn config_match<'a>(entries: &'a [String], sender: &str, client: IpAddr) -> Option<&'a String> {
        let sender = sender.to_lowercase();
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        entries.iter().find(|entry| {
            if let Some(network) = network_entry(entry) {
                network.contains(&client)
            } else if let Some(listed) = entry.strip_prefix('@') {
                !domain.is_empty() && (domain == listed || domain.ends_with(&format!(".{listed}")))
            } else {
                !sender.is_empty() && **entry == sender
            }
        })
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
        let e = ctx.envelope;
        let symbol = self
            .decide(&e.sender, e.client_ip, &e.recipients)
            .await?
            .map(|found| {
                match found.kind {
                    ListKind::Block => Symbol::new(
                        "KALA_SENDER_BLOCKED",
                        BLOCKED_SCORE,
                        "Sender is on a block list made by IT",
                    ),
                    ListKind::Allow => Symbol::new(
                        "KALA_SENDER_ALLOWED",
                        ALLOWED_SCORE,
                        "Sender is on an allow list made by IT (viruses are still blocked)",
                    ),
                }
                .with_detail(found.detail)
            });
        Ok(symbol.into_iter().collect::<Vec<_>>().into())
    }
}

/// Which list a message is on, and the entry that put it there.
pub struct Listed {
    pub kind: ListKind,
    pub detail: String,
}

impl SenderLists {
    /// The list this sender or client is on for these recipients. A block entry wins over
    /// an allow entry, and the configuration's entries over the reviewers'.
    pub async fn decide(
        &self,
        sender: &str,
        client: IpAddr,
        recipients: &[String],
    ) -> anyhow::Result<Option<Listed>> {
        if let Some(entry) = Self::config_match(&self.config.load().block, sender, client) {
            return Ok(Some(Listed {
                kind: ListKind::Block,
                detail: format!("{entry} (lists.block)"),
            }));
        }
        let mut entries = if sender.is_empty() {
            Vec::new()
        } else {
            self.store.list_matches(sender, recipients).await?
        };
        entries.extend(self.store.list_matches_client(client, recipients).await?);
        if let Some(entry) = entries.iter().find(|e| e.kind == ListKind::Block) {
            return Ok(Some(Listed {
                kind: ListKind::Block,
                detail: describe(&entry.sender, &entry.recipient),
            }));
        }
        if let Some(entry) = Self::config_match(&self.config.load().allow, sender, client) {
            return Ok(Some(Listed {
                kind: ListKind::Allow,
                detail: format!("{entry} (lists.allow)"),
            }));
        }
        Ok(entries.first().map(|entry| Listed {
            kind: ListKind::Allow,
            detail: describe(&entry.sender, &entry.recipient),
        }))
    }
}

fn describe(sender: &str, recipient: &str) -> String {
    if recipient.is_empty() {
        format!("{sender} (everyone)")
    } else {
        format!("{sender} (for {recipient})")
    }
}
