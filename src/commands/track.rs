//! `kala track`: where did a message go? One search over every message's path.

use std::path::Path;

use kala::store::Store;
use kala::store::tracking::{TrackQuery, parse_when};

use crate::{load_settings, runtime};

#[derive(clap::Args)]
pub struct TrackArgs {
    /// Part of the envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// Part of an envelope recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// Words that must all appear in the subject.
    #[arg(long)]
    subject: Option<String>,
    /// The Message-ID (with or without <>).
    #[arg(long)]
    message_id: Option<String>,
    /// The sending server's address.
    #[arg(long)]
    client_ip: Option<String>,
    /// From this time (UTC, e.g. "2026-11-29 10:00") or this long ago (e.g. 2h).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (UTC) or this long ago.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Option<&Path>, args: TrackArgs) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let now = kala::store::now() as i64;
    let when = |text: &Option<String>| -> anyhow::Result<Option<i64>> {
        text.as_deref()
            .map(|t| parse_when(t, now).map_err(anyhow::Error::msg))
            .transpose()
    };
    let query = TrackQuery {
        since: when(&args.since)?,
        until: when(&args.until)?,
        sender: args.sender,
        recipient: args.recipient,
        subject: args.subject,
        message_id: args.message_id,
        client_ip: args.client_ip,
        limit: args.limit,
    };
    let found = runtime()?.block_on(async {
        let store = Store::open(&settings.store.url).await?;
        store.track_search(&query).await
    })?;
    for t in &found {
        if args.json {
            println!("{}", serde_json::to_string(t)?);
            continue;
        }
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.received_at as u64),
        );
        println!(
            "{when}  {}  {}  from {} [{}] to {}",
            t.queue_id,
            t.action,
            if t.sender.is_empty() { "<>" } else { &t.sender },
            t.client_ip,
            t.recipients.join(", ")
        );
        println!("    subject: {}  message-id: {}", t.subject, t.message_id);
        println!("    score {:.1}: {}", t.score, t.symbols);
        println!("    reply: {}", t.reply);
        if !t.quarantine_id.is_empty() {
            println!("    held: kala quarantine show {}", t.quarantine_id);
        }
    }
    if !args.json {
        println!("{} message(s)", found.len());
    }
    Ok(())
}
