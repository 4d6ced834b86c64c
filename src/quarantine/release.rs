//! Releasing a held message: re-injecting it into the downstream, byte for byte as it would
//! have been relayed, and recording what the downstream said.

use serde::Serialize;

use super::Quarantine;
use crate::smtp::relay::{self, Downstream};
use crate::store::now;

/// The outcome of one release.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    pub id: String,
    /// The downstream accepted the message (for at least one recipient).
    pub delivered: bool,
    /// The downstream's reply to DATA, or why it never got that far.
    pub reply: String,
    /// Recipients the downstream refused, with its reply.
    pub refused: Vec<(String, String)>,
}

impl Quarantine {
    /// Sends a held message to the downstream. Whatever happens is recorded on the message;
    /// one the downstream does not take stays held, with the reply shown.
    pub async fn release(&self, id: &str, downstream: &Downstream) -> anyhow::Result<Released> {
        let Some(held) = self.get(id).await? else {
            anyhow::bail!("no quarantined message has the id {id}");
        };
        if held.summary.state != super::State::Held {
            anyhow::bail!(
                "message {id} is already {}; only held messages can be released",
                held.summary.state.as_str()
            );
        }
        let Some(raw) = self.raw(id).await? else {
            anyhow::bail!("message {id} has no stored body");
        };
        let record = self.record(id).await?.unwrap_or_default();
        let flag = |name: &str| record["envelope"][name].as_bool().unwrap_or(false);
        let outcome = deliver(
            downstream,
            &held.summary.sender,
            &held.summary.recipients,
            (flag("body_8bitmime"), flag("smtputf8")),
            &raw,
        )
        .await;
        let released = Released {
            id: id.to_string(),
            delivered: outcome.delivered,
            reply: outcome.reply,
            refused: outcome.refused,
        };
        let state = if released.delivered {
            "released"
        } else {
            "held"
        };
        sqlx::query(
            "UPDATE quarantine SET state = $2, downstream_reply = $3, changed_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(&released.reply)
        .bind(now() as i64)
        .execute(self.store().pool())
        .await?;
        if released.delivered {
            tracing::info!(id, reply = %released.reply, "quarantined message released");
            // A reviewer let it through: for spam, that says the filter was wrong.
            if held.summary.category == super::Category::Spam
                && let Err(error) = self.teach_raw(id, &raw, false).await
            {
                tracing::warn!(id, "cannot learn the released message as ham: {error:#}");
            }
        } else {
            tracing::warn!(id, reply = %released.reply, "release refused by the downstream; message stays held");
        }
        Ok(released)
    }
}

struct Delivery {
    delivered: bool,
    reply: String,
    refused: Vec<(String, String)>,
}

async fn deliver(
    downstream: &Downstream,
    sender: &str,
    recipients: &[String],
    flags: (bool, bool),
    raw: &[u8],
) -> Delivery {
    // A pooled connection, so a bulk release does not pay a connection and EHLO per message.
    let conn = match downstream.checkout().await {
        Ok(conn) => conn,
        Err(error) => return Delivery::failed(error.to_string()),
    };
    match attempt(downstream, conn, sender, recipients, flags, raw).await {
        // The downstream closed the pooled connection meanwhile; nothing was sent yet.
        Attempt::Stale => match downstream.connect().await {
            Ok(conn) => match attempt(downstream, conn, sender, recipients, flags, raw).await {
                Attempt::Done(delivery) => delivery,
                Attempt::Stale => Delivery::failed("downstream closed the connection".into()),
            },
            Err(error) => Delivery::failed(error.to_string()),
        },
        Attempt::Done(delivery) => delivery,
    }
}

enum Attempt {
    Done(Delivery),
    /// A pooled connection failed at its first command: try a new one.
    Stale,
}

impl Delivery {
    fn failed(reply: String) -> Delivery {
        Delivery {
            delivered: false,
            reply,
            refused: Vec::new(),
        }
    }
}

async fn attempt(
    downstream: &Downstream,
    mut conn: relay::Connection,
    sender: &str,
    recipients: &[String],
    (body_8bitmime, smtputf8): (bool, bool),
    raw: &[u8],
) -> Attempt {
    let failed = |reply: String| Attempt::Done(Delivery::failed(reply));
    let mail = relay::mail_command(sender, body_8bitmime, smtputf8, &conn.capabilities);
    let reply = match conn.command(&mail).await {
        Ok(reply) => reply,
        Err(_) if conn.reused => return Attempt::Stale,
        Err(error) => return failed(error.to_string()),
    };
    if !reply.is_positive() {
        downstream.finish(conn).await;
        return failed(reply.to_string());
    }
    let mut refused = Vec::new();
    let mut accepted = 0;
    for recipient in recipients {
        match conn.command(&format!("RCPT TO:<{recipient}>")).await {
            Ok(reply) if reply.is_positive() => accepted += 1,
            Ok(reply) => refused.push((recipient.clone(), reply.to_string())),
            Err(error) => return failed(error.to_string()),
        }
    }
    if accepted == 0 {
        downstream.finish(conn).await;
        let reply = refused
            .first()
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "no recipients".into());
        return Attempt::Done(Delivery {
            delivered: false,
            reply,
            refused,
        });
    }
    let reply = match conn
        .data(&[], crate::smtp::spool::SpoolReader::Memory(raw))
        .await
    {
        Ok(reply) => reply,
        Err(error) => return failed(error.to_string()),
    };
    let delivered = reply.is_positive();
    downstream.finish(conn).await;
    Attempt::Done(Delivery {
        delivered,
        reply: reply.to_string(),
        refused,
    })
}
