//! The audit log: who did what to which message, user or setting, when, and from where.
//! Nothing in Kala updates or deletes its rows: the UI and the API can only append and read.

use serde::Serialize;
use sqlx::Row;

use super::{Store, now};

/// One audited action.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    /// A user name, `cli:USER` for the command line, or `api:USER` for a token.
    pub actor: String,
    pub ip: String,
    /// `view`, `release`, `delete`, `download`, `mark-spam`, `user-add`, `login`, ...
    pub action: String,
    /// A message id or a user name.
    pub target: String,
    pub detail: String,
}

impl Store {
    /// Appends one entry.
    pub async fn audit(
        &self,
        actor: &str,
        ip: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, ip, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now() as i64)
        .bind(actor)
        .bind(ip)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest entries first; `target` narrows to one message or user.
    pub async fn audit_log(
        &self,
        target: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let rows = match target {
            Some(target) => {
                sqlx::query(
                    "SELECT at, actor, ip, action, target, detail FROM audit_log \
                     WHERE target = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
                )
                .bind(target)
                .bind(i64::from(limit))
                .bind(i64::from(offset))
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT at, actor, ip, action, target, detail FROM audit_log \
                     ORDER BY id DESC LIMIT $1 OFFSET $2",
                )
                .bind(i64::from(limit))
                .bind(i64::from(offset))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    ip: row.try_get("ip")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}
