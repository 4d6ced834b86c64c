//! Allow and block lists: an address (`ana@example.org`), a whole domain (`@example.org`,
//! its subdomains included) or a client network (`192.0.2.0/24`, `2001:db8::/32`, or one
//! address), for everyone or for one recipient. Reviewers add entries from the quarantine
//! and the lists page; the `sender_lists` check reads them for every message.

use serde::Serialize;
use sqlx::Row;

use super::{Store, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Allow,
    Block,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub id: i64,
    pub kind: ListKind,
    /// `user@domain` or `@domain`.
    pub sender: String,
    /// Empty: every recipient.
    pub recipient: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A network entry (`192.0.2.0/24`, or one address as /32 or /128), normalised.
pub fn network_entry(entry: &str) -> Option<ipnet::IpNet> {
    entry
        .parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

/// `@domain` for an address's domain, lower-cased.
pub fn domain_entry(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    (!domain.is_empty()).then(|| format!("@{}", domain.to_lowercase()))
}

impl Store {
    /// Adds an entry (`sender` as given: an address, `@domain`, or a network).
    pub async fn list_add(
        &self,
        kind: ListKind,
        sender: &str,
        recipient: &str,
        created_by: &str,
    ) -> anyhow::Result<()> {
        let mut sender = sender.trim().to_lowercase();
        if let Some(network) = network_entry(&sender) {
            sender = network.to_string();
        } else if sender.is_empty() || sender == "@" || !sender.contains('@') {
            anyhow::bail!("`{sender}` is neither an address, @domain nor a network");
        }
        sqlx::query(
            "INSERT INTO sender_lists (kind, sender, recipient, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind.as_str())
        .bind(sender)
        .bind(recipient.trim().to_lowercase())
        .bind(created_by)
        .bind(now() as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn list_remove(&self, id: i64) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM sender_lists WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub async fn list_entries(&self) -> anyhow::Result<Vec<ListEntry>> {
        let rows = sqlx::query(
            "SELECT id, kind, sender, recipient, created_by, created_at FROM sender_lists \
             ORDER BY sender, recipient",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_of).collect()
    }

    /// The entries that apply to a message from `sender` to `recipients`: for the address,
    /// its domain or a parent domain, for everyone or for one of the recipients.
    pub async fn list_matches(
        &self,
        sender: &str,
        recipients: &[String],
    ) -> anyhow::Result<Vec<ListEntry>> {
        let sender = sender.to_lowercase();
        let mut keys = vec![sender.clone()];
        if let Some(domain) = domain_entry(&sender) {
            // @mail.example.org also matches entries for @example.org.
            let mut rest = domain.trim_start_matches('@');
            loop {
                keys.push(format!("@{rest}"));
                match rest.split_once('.') {
                    Some((_, parent)) if parent.contains('.') => rest = parent,
                    _ => break,
                }
            }
        }
        let recipients: Vec<String> = recipients.iter().map(|r| r.to_lowercase()).collect();
        let entries = self.list_entries_for(&keys).await?;
        Ok(entries
            .into_iter()
            .filter(|e| e.recipient.is_empty() || recipients.contains(&e.recipient))
            .collect())
    }

    /// The network entries that hold `client`, for everyone or for one of `recipients`.
    pub async fn list_matches_client(
        &self,
        client: std::net::IpAddr,
        recipients: &[String],
    ) -> anyhow::Result<Vec<ListEntry>> {
        // Networks are few (the admin's partners and own ranges): read them all, match here.
        let rows = sqlx::query(
            "SELECT id, kind, sender, recipient, created_by, created_at FROM sender_lists \
             WHERE sender NOT LIKE '%@%'",
        )
        .fetch_all(self.pool())
        .await?;
        let recipients: Vec<String> = recipients.iter().map(|r| r.to_lowercase()).collect();
        let mut found = Vec::new();
        for row in &rows {
            let entry = entry_of(row)?;
            if network_entry(&entry.sender).is_some_and(|n| n.contains(&client))
                && (entry.recipient.is_empty() || recipients.contains(&entry.recipient))
            {
                found.push(entry);
            }
        }
        Ok(found)
    }

    async fn list_entries_for(&self, senders: &[String]) -> anyhow::Result<Vec<ListEntry>> {
        let mut found = Vec::new();
        for sender in senders {
            let rows = sqlx::query(
                "SELECT id, kind, sender, recipient, created_by, created_at FROM sender_lists \
                 WHERE sender = $1",
            )
            .bind(sender)
            .fetch_all(self.pool())
            .await?;
            for row in &rows {
                found.push(entry_of(row)?);
            }
        }
        Ok(found)
    }
}

fn entry_of(row: &sqlx::any::AnyRow) -> anyhow::Result<ListEntry> {
    let kind: String = row.try_get("kind")?;
    Ok(ListEntry {
        id: row.try_get("id")?,
        kind: if kind == "block" {
            ListKind::Block
        } else {
            ListKind::Allow
        },
        sender: row.try_get("sender")?,
        recipient: row.try_get("recipient")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}
