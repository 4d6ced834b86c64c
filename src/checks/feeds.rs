//! Known-bad items from the feed files ([`crate::feeds`]): the hosts a message links to,
//! its sender's domain, its attachments' SHA-256. A hit is `KALA_FEED_<NAME>`.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::feeds::{FeedKind, Feeds, with_parents};
use crate::verdict::Symbol;

pub struct FeedLists {
    feeds: Arc<Feeds>,
    score: f64,
}

impl FeedLists {
    pub fn new(feeds: Arc<Feeds>, score: f64) -> FeedLists {
        FeedLists { feeds, score }
    }
}

/// `KALA_FEED_` and the file's name in symbol form (`phish-2026.hosts` → `KALA_FEED_PHISH_2026`).
fn symbol_name(feed: &str) -> String {
    let name: String = feed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("KALA_FEED_{name}")
}

#[async_trait]
impl Check for FeedLists {
    fn name(&self) -> &'static str {
        "feeds"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        let feeds = self.feeds.current();
        if feeds.is_empty() {
            return Ok(Outcome::default());
        }
        let hosts: Vec<String> = message
            .urls
            .iter()
            .filter_map(|u| super::uribl::host_of(&u.url))
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let from = message
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("From"))
            .map(|h| h.decoded.as_str())
            .unwrap_or("");
        let domains: Vec<String> = [ctx.envelope.sender.as_str(), from]
            .iter()
            .filter_map(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches('>').trim().to_ascii_lowercase())
            .collect();
        let hashes: Vec<String> = message
            .attachments
            .iter()
            .map(|a| hex::encode(ring::digest::digest(&ring::digest::SHA256, &a.bytes)))
            .collect();
        let mut symbols = Vec::new();
        for feed in feeds.iter() {
            // A "maybe" from the filter reads a few KiB of the sorted copy: rare and short
            // enough to do here rather than on a blocking thread.
            let hit = match feed.kind {
                FeedKind::Hosts => hosts
                    .iter()
                    .flat_map(|h| with_parents(h))
                    .find(|h| feed.contains(h))
                    .map(String::from),
                FeedKind::Domains => domains
                    .iter()
                    .flat_map(|d| with_parents(d))
                    .find(|d| feed.contains(d))
                    .map(String::from),
                FeedKind::Sha256 => hashes.iter().find(|h| feed.contains(h)).cloned(),
            };
            if let Some(item) = hit {
                symbols.push(
                    Symbol::new(
                        symbol_name(&feed.name),
                        self.score,
                        format!("Listed in the {} feed", feed.name),
                    )
                    .with_detail(item),
                );
            }
        }
        Ok(symbols.into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn symbol_names_are_screaming_snake() {
        assert_eq!(super::symbol_name("phish-2026"), "KALA_FEED_PHISH_2026");
    }
}
