//! The small shared state of the reputation checks, behind two traits so that one gateway
//! keeps it locally and several share it through Redis ([`super::redis::RedisState`]):
//! greylisting entries (in the store: they must survive a restart, or every sender is
//! greylisted again) and rate counters (in memory: a fixed window need not survive a restart,
//! and a commit per SMTP command would cap the message rate at the disk's fsync rate).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::Row;

use super::Store;

/// What greylisting remembers about one key (a triplet, or a client network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreyEntry {
    /// Unix seconds of the first attempt.
    pub first_seen: u64,
    /// The sender retried after the delay: accepted until the entry expires.
    pub passed: bool,
}

#[async_trait]
pub trait GreylistState: Send + Sync {
    /// The entry for `key`, unless it expired before `now`.
    async fn grey_get(&self, key: &str, now: u64) -> anyhow::Result<Option<GreyEntry>>;
    /// Writes the entry for `key`, to be forgotten at `expires_at`.
    async fn grey_put(&self, key: &str, entry: GreyEntry, expires_at: u64) -> anyhow::Result<()>;
    /// Deletes expired entries; returns how many.
    async fn grey_purge(&self, now: u64) -> anyhow::Result<u64>;
}

#[async_trait]
pub trait RateCounters: Send + Sync {
    /// Counts one event for `key` in the fixed window of `window` seconds holding `now`;
    /// returns the events counted in that window so far, this one included.
    async fn count(&self, key: &str, window: u64, now: u64) -> anyhow::Result<u64>;
}

#[async_trait]
impl GreylistState for Store {
    async fn grey_get(&self, key: &str, now: u64) -> anyhow::Result<Option<GreyEntry>> {
        let row = sqlx::query(
            "SELECT first_seen, passed FROM greylist WHERE key = $1 AND expires_at > $2",
        )
        .bind(key)
        .bind(now as i64)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(row) => Some(GreyEntry {
                first_seen: row.try_get::<i64, _>(0)? as u64,
                passed: row.try_get::<i64, _>(1)? != 0,
            }),
            None => None,
        })
    }

    async fn grey_put(&self, key: &str, entry: GreyEntry, expires_at: u64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO greylist (key, first_seen, passed, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen, \
             passed = excluded.passed, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(entry.first_seen as i64)
        .bind(entry.passed as i64)
        .bind(expires_at as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn grey_purge(&self, now: u64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM greylist WHERE expires_at <= $1")
            .bind(now as i64)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// Rate counters of one gateway, in memory.
#[derive(Default)]
pub struct MemoryCounters {
    /// key -> (window start, count).
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

/// Past this many keys, windows that ended are dropped (one sweep, amortised).
const SWEEP_AT: usize = 100_000;

#[async_trait]
impl RateCounters for MemoryCounters {
    async fn count(&self, key: &str, window: u64, now: u64) -> anyhow::Result<u64> {
        let start = now - now % window.max(1);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (s, _)| *s + window > now);
        }
        let slot = windows.entry(key.to_string()).or_insert((start, 0));
        if slot.0 != start {
            *slot = (start, 0);
        }
        slot.1 += 1;
        Ok(slot.1)
    }
}
